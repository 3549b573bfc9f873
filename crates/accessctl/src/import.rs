//! `accessctl import FILE [--format csv|jsonl] [--dry-run] [--source NAME]`:
//! customers from an older system, with their password hashes (see
//! docs/import.md). The file is read as a stream (constant memory: one
//! 64-bit hash per email for the duplicate check, and the batches in
//! flight); each row is one `ImportCustomer` command decided by the
//! aggregate, and the new customers of each batch of rows are written in
//! one transaction (`Store::import_lines`), a few batches at a time. Per-line problems go to stderr (line, field, code,
//! reason; never the hash), the summary to stdout. Exit 0 only when every
//! line was imported or was already there.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_domain::{Actor, CommandMetadata, CustomerServices, ImportSource, LinkLifetimes};
use access_store::import::{self, ImportRow, PendingRow, RowError, RowResult, SeenEmails, Summary};
use access_store::{OutboxInput, OutboxMessage, Store};
use anyhow::{bail, Context};
use futures::stream::{FuturesOrdered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// CSV with a header row (`email,name,customer_id,external_id,access,
    /// password_hash,must_change_password,send_notification`) or JSON lines
    /// of the same fields.
    pub file: PathBuf,
    /// Default: from the file's extension (`.csv`; `.jsonl`, `.ndjson`).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Check every line against the store and the rules; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Which old system the customers come from (kept in each event).
    #[arg(long, default_value = "accessctl import")]
    pub source: String,
    /// Rows per batch (one transaction for the new customers of a batch).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=10000))]
    pub batch_size: u16,
    /// Batches written at the same time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
}

/// One line read: a row, or why it could not be read.
type Read1 = (u64, Result<ImportRow, RowError>);

fn format_of(args: &ImportArgs) -> anyhow::Result<Format> {
    if let Some(format) = args.format {
        return Ok(format);
    }
    match args.file.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => Ok(Format::Csv),
        Some(e)
            if ["jsonl", "ndjson"]
                .iter()
                .any(|j| e.eq_ignore_ascii_case(j)) =>
        {
            Ok(Format::Jsonl)
        }
        _ => bail!(
            "cannot tell the format of {} from its name: give --format csv or --format jsonl",
            args.file.display()
        ),
    }
}

use import::unreadable;

/// The rows of a CSV file, with their line numbers.
fn csv_rows(file: impl Read + 'static) -> anyhow::Result<Box<dyn Iterator<Item = Read1>>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(file);
    let headers = reader
        .headers()
        .context("reading the CSV header row")?
        .clone();
    let mut record = csv::StringRecord::new();
    let iter = std::iter::from_fn(move || match reader.read_record(&mut record) {
        Ok(false) => None,
        Ok(true) => {
            let line = record.position().map_or(0, |p| p.line());
            let row = record
                .deserialize::<ImportRow>(Some(&headers))
                .map_err(|e| {
                    // The value is not quoted (it may be a hash): the column.
                    let csv::ErrorKind::Deserialize { err, .. } = e.kind() else {
                        return unreadable("not a record of the header's columns".to_string());
                    };
                    let column = err
                        .field()
                        .and_then(|i| headers.get(i as usize))
                        .map_or_else(|| "a column".to_string(), |h| format!("column `{h}`"));
                    let what = match err.kind() {
                        csv::DeserializeErrorKind::Message(m) if m.contains("unknown field") => {
                            m.clone()
                        }
                        _ => format!("{column} does not hold a valid value"),
                    };
                    unreadable(what)
                });
            Some((line, row))
        }
        Err(e) => {
            let line = e.position().map_or(0, |p| p.line());
            let reason = if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                format!("reading the file: {e}")
            } else {
                "not a CSV record with the header's columns".to_string()
            };
            Some((line, Err(unreadable(reason))))
        }
    });
    Ok(Box::new(iter))
}

/// The rows of a JSON-lines file (blank lines skipped).
fn jsonl_rows(file: impl Read + 'static) -> Box<dyn Iterator<Item = Read1>> {
    let mut lines = BufReader::new(file).lines();
    let mut n = 0u64;
    Box::new(std::iter::from_fn(move || loop {
        n += 1;
        match lines.next()? {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => return Some((n, import::parse_json_row(&text))),
            Err(e) => return Some((n, Err(unreadable(format!("reading the file: {e}"))))),
        }
    }))
}

/// Counts bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    // Drawn on stderr, and only when stderr is a terminal.
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {bytes}/{total_bytes} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn report(result: &RowResult, summary: &mut Summary, bar: &ProgressBar) {
    summary.add(result);
    if let Some(error) = &result.error {
        bar.suspend(|| {
            eprintln!(
                "line {}: {}: {}: {}",
                result.line, error.field, error.code, error.reason
            );
        });
    }
}

/// The mail of an imported row: none (rows that call for a setup link are
/// refused above; the service sends those).
fn no_mail(_: &OutboxInput<'_>) -> Result<Vec<OutboxMessage>, String> {
    Ok(Vec::new())
}

/// `accessctl import`.
pub async fn run(store: &Store, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let format = format_of(args)?;
    let source = ImportSource::parse(&args.source).context("--source")?;
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = Counting {
        inner: file,
        read: read.clone(),
    };
    let rows = match format {
        Format::Csv => csv_rows(counting)?,
        Format::Jsonl => jsonl_rows(counting),
    };
    // Imported hashes are stored, never computed: the hasher is only there
    // so that the aggregate can check their formats.
    let services = CustomerServices::new(
        Arc::new(access_security::Argon2idHasher::owasp(1)),
        Arc::new(access_security::OsRandomTokens),
        Arc::new(access_security::SystemClock),
        LinkLifetimes::default(),
    );
    let started = Instant::now();
    let bar = progress_bar(total);
    let keyring = store.keyring()?;
    let mut seen = SeenEmails::default();
    let mut summary = Summary::default();
    let mut running = FuturesOrdered::new();
    let limit = usize::from(args.concurrency);
    let batch_size = usize::from(args.batch_size);
    let run_id = format!("accessctl-import-{}", chrono::Utc::now().timestamp_millis());
    let actor = Actor::System {
        name: "accessctl".into(),
    };
    let reason = format!("imported from {source}");
    let mut batch: Vec<(u64, Result<PendingRow, RowError>)> = Vec::with_capacity(batch_size);
    let mut rows = rows.peekable();
    let mut batches = 0u64;
    while let Some((line, row)) = rows.next() {
        let parsed = row.and_then(|row| {
            let command = import::parse_row(&row, &source, keyring)?;
            if row.send_notification == Some(true) {
                return Err(RowError {
                    field: "send_notification",
                    code: "invalid_import".to_string(),
                    reason: "setup links are sent by the service: import these rows through \
                             POST /v1/customers/import"
                        .to_string(),
                });
            }
            match seen.first_line(&command.email, line) {
                Some(first) => Err(import::duplicate_email(first)),
                None => Ok(PendingRow {
                    line,
                    import: command,
                    metadata: CommandMetadata::new(actor.clone(), format!("{run_id}-line-{line}"))
                        .with_reason(Some(reason.clone())),
                }),
            }
        });
        batch.push((line, parsed));
        if batch.len() < batch_size && rows.peek().is_some() {
            continue;
        }
        let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
        batches += 1;
        // The tables grew since the planner last looked (inside the batch's
        // future: the batches in flight keep being driven meanwhile, and
        // one of them may hold SQLite's one writer connection).
        let analyze = batches.is_power_of_two() && !args.dry_run;
        let services = &services;
        let dry_run = args.dry_run;
        running.push_back(async move {
            if analyze {
                store.import_statistics().await?;
            }
            store
                .import_lines(services, full, dry_run, &no_mail)
                .await
                .map(|done| (line, done))
        });
        if running.len() >= limit {
            if let Some(done) = running.next().await {
                let (last, done) = done.with_context(|| format!("importing near line {line}"))?;
                for result in &done {
                    report(result, &mut summary, &bar);
                }
                bar.set_position(read.load(std::sync::atomic::Ordering::Relaxed));
                bar.set_message(format!("{} rows, to line {last}", summary.rows()));
            }
        }
    }
    while let Some(done) = running.next().await {
        let (_, done) = done.context("importing the last rows")?;
        for result in &done {
            report(result, &mut summary, &bar);
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let rate = summary.rows() as f64 / seconds.max(1e-9);
    let verb = if args.dry_run {
        "checked (dry run)"
    } else {
        "imported"
    };
    println!(
        "{} rows {verb} in {seconds:.1} s ({rate:.0} rows/s): {} imported, {} would import, {} unchanged, {} conflict, {} refused",
        summary.rows(),
        summary.imported,
        summary.would_import,
        summary.unchanged,
        summary.conflict,
        summary.refused
    );
    Ok(if summary.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
