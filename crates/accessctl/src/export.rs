//! `accessctl audit export`: the audit trail as a CSV or JSON Lines file.
//!
//! Rows come from the audit-trail projection a page at a time (constant
//! memory), encoded exactly as the HTTP export encodes them. The export is a
//! snapshot: rows projected after it started are left out, so a busy
//! service cannot keep it running. A file is written next to its target and
//! renamed into place, so readers never see half an export.

use access_store::prelude::*;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use access_domain::CustomerId;
use access_projections::export::{encode, ExportFormat};
use access_projections::rows::KINDS;
use access_projections::{db, AuditFilter, LIVE};
use access_store::{Position, Store};
use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::builder::PossibleValuesParser;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// Rows per query.
const PAGE: u32 = 1000;

/// `accessctl audit export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Changes from this instant, inclusive: RFC 3339 (2026-01-31T00:00:00Z)
    /// or a date (midnight UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Changes before this instant (exclusive), as `--from`.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// File format [default: from the output file's extension: .csv or .jsonl].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The file to write (replaced atomically, readable by its owner only),
    /// or `-` for standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// Only this customer (id).
    #[arg(long, value_name = "ID", value_parser = parse_customer)]
    pub customer: Option<CustomerId>,
    /// Only this kind of change.
    #[arg(long, value_parser = PossibleValuesParser::new(KINDS.iter().copied()))]
    pub kind: Option<String>,
    /// Only changes by this API key name, or by this customer (id).
    #[arg(long, value_name = "NAME|ID")]
    pub actor: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A header line, then one row per change.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl From<Format> for ExportFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Csv => ExportFormat::Csv,
            Format::Jsonl => ExportFormat::JsonLines,
        }
    }
}

/// An RFC 3339 instant, or a date meaning its midnight UTC.
fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(
        "expected an RFC 3339 time such as 2026-01-31T00:00:00Z, or a date such as 2026-01-31"
            .into(),
    )
}

fn parse_customer(raw: &str) -> Result<CustomerId, String> {
    raw.parse()
        .map_err(|_| "expected a customer id (a UUID)".to_string())
}

/// The format asked for, or the one the file name implies.
fn format_of(args: &ExportArgs) -> anyhow::Result<Format> {
    if let Some(f) = args.format {
        return Ok(f);
    }
    let ext = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
        _ => anyhow::bail!("give --format csv or --format jsonl (the output name does not say)"),
    }
}

/// Where the rows go: standard output, or a temporary file beside the target.
enum Sink {
    Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>),
    File {
        out: std::io::BufWriter<tempfile::NamedTempFile>,
        target: PathBuf,
    },
}

impl Sink {
    fn open(output: &Path) -> anyhow::Result<Self> {
        if output.as_os_str() == "-" {
            return Ok(Self::Stdout(std::io::BufWriter::new(
                std::io::stdout().lock(),
            )));
        }
        let dir = match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if output.file_name().is_none() {
            anyhow::bail!("--output {} names no file", output.display());
        }
        let tmp = tempfile::Builder::new()
            .prefix(".accessctl-export-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        Ok(Self::File {
            out: std::io::BufWriter::new(tmp),
            target: output.to_path_buf(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Stdout(out) => out.write_all(bytes).context("writing to standard output"),
            Self::File { out, .. } => out.write_all(bytes).context("writing the temporary file"),
        }
    }

    /// Flushes, and moves a file into place (only now does it appear).
    fn finish(self) -> anyhow::Result<()> {
        match self {
            Self::Stdout(mut out) => out.flush().context("writing to standard output"),
            Self::File { out, target } => {
                let tmp = out
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .context("writing the temporary file")?;
                tmp.as_file()
                    .sync_all()
                    .context("syncing the temporary file")?;
                tmp.persist(&target).map_err(|e| e.error).with_context(|| {
                    format!("moving the export into place at {}", target.display())
                })?;
                Ok(())
            }
        }
    }
}

fn progress(hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    // Drawn on stderr, and only when stderr is a terminal.
    let bar = ProgressBar::new_spinner();
    let style =
        ProgressStyle::with_template("{spinner} {human_pos} rows written  {rate}  {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} rows/s", state.per_sec());
                },
            );
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn position(row: &access_projections::AuditRow) -> Position {
    Position {
        tx: row.tx,
        global: row.position,
    }
}

/// Runs `accessctl audit export`.
pub async fn run(store: &Store, shown_url: &str, args: ExportArgs) -> anyhow::Result<()> {
    let format = format_of(&args)?;
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from >= to {
            anyhow::bail!("--from ({from}) must be before --to ({to})");
        }
    }
    let ready = store
        .is_ready()
        .await
        .with_context(|| format!("reading {shown_url}"))?;
    if !ready {
        anyhow::bail!("the store at {shown_url} is not migrated (run `accessctl migrate`)");
    }

    // The snapshot: what the projector had written when we started. The
    // CLI never projects itself (that is the service's projector's job).
    let until = db::checkpoint(store, LIVE.checkpoint)
        .await
        .context("reading the projections' checkpoint")?;
    let head = store.head().await.context("reading the event store")?;
    if until < head {
        let behind = head.global.saturating_sub(until.global).max(1);
        eprintln!(
            "accessctl: warning: the audit trail is behind the events by about {behind} event(s) \
             (projected up to {until}, events up to {head}); the export leaves them out. \
             Is accessd running (its projector)?"
        );
    }

    let to_stdout = args.output.as_os_str() == "-";
    let mut sink = Sink::open(&args.output)?;
    let bar = progress(to_stdout && std::io::stdout().is_terminal());
    let mut filter = AuditFilter {
        customer_id: args.customer,
        kind: args.kind.clone(),
        actor: args.actor.clone(),
        from: args.from,
        to: args.to,
        after: None,
        newest_first: false,
    };
    let mut written: u64 = 0;
    let mut first = true;
    loop {
        let mut rows = db::audit_page(store, &filter, PAGE)
            .await
            .context("reading the audit trail")?;
        let full = rows.len() == PAGE as usize;
        let last = rows.last().map(position);
        let fetched = rows.len();
        rows.retain(|r| position(r) <= until);
        let past_snapshot = rows.len() < fetched;
        if first || !rows.is_empty() {
            // The first chunk carries the CSV header, even with no rows.
            let chunk = encode(&rows, format.into(), first)?;
            sink.write(&chunk)?;
        }
        first = false;
        written += rows.len() as u64;
        bar.set_position(written);
        if !full || past_snapshot {
            break;
        }
        filter.after = last;
    }
    sink.finish()?;
    bar.finish_and_clear();
    if to_stdout {
        eprintln!("exported {written} rows to standard output");
    } else {
        println!("exported {written} rows to {}", args.output.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_dates() {
        assert_eq!(
            parse_time("2026-01-31T10:00:00+01:00").ok(),
            "2026-01-31T09:00:00Z".parse().ok()
        );
        assert_eq!(
            parse_time("2026-01-31").ok(),
            "2026-01-31T00:00:00Z".parse().ok()
        );
        for bad in ["yesterday", "2026-13-01", "31.01.2026", ""] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains("RFC 3339"), "{err}");
        }
    }
}
