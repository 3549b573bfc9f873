//! Latency histograms, tables, machine facts.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies in microseconds, 1 µs to 10 minutes, 3 significant digits.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // Valid bounds (low 1, high 600 s in µs, 3 digits): cannot fail.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        Self(h)
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us);
    }

    pub fn add(&mut self, other: &Latencies) {
        // Same bounds on both sides: cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0..=1) in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }
}

/// Prints rows as an aligned table (first row is the header; the first
/// column left-aligned, the others right-aligned).
pub fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
}

/// The latency columns of a table: quantiles in milliseconds, then errors.
pub const LATENCY_COLUMNS: [&str; 4] = ["p50 ms", "p99 ms", "p99.9 ms", "errors"];
/// The CPU columns of a table: the service's and the benchmark's own.
pub const CPU_COLUMNS: [&str; 2] = ["accessd CPU s", "bench CPU s"];

/// The cells under [`LATENCY_COLUMNS`].
pub fn latency_cells(latencies: &Latencies, errors: u64) -> [String; 4] {
    [
        f2(latencies.ms(0.5)),
        f2(latencies.ms(0.99)),
        f2(latencies.ms(0.999)),
        errors.to_string(),
    ]
}

/// The cells under [`CPU_COLUMNS`]: the service's CPU seconds (`-` when
/// not measured) and the benchmark's own.
pub fn cpu_cells(service: Option<f64>, own: f64) -> [String; 2] {
    [
        service.map_or("-".into(), |c| format!("{c:.1}")),
        format!("{own:.1}"),
    ]
}

/// A table's header row, from its groups of column names in order.
pub fn header(groups: &[&[&str]]) -> Vec<String> {
    groups.concat().into_iter().map(str::to_string).collect()
}

/// `count` per second over `elapsed` (a zero duration counts as 1 ns).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn f0(x: f64) -> String {
    format!("{x:.0}")
}

pub fn f2(x: f64) -> String {
    format!("{x:.2}")
}

pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
