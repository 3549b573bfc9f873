//! Scenario 3, the projection lag: acknowledged commands sampled during
//! scenario 1, each polled in `audit_trail` until its row is visible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::report::Latencies;

/// Samples acknowledged commands (at most one per `interval`) and polls the
/// database until the command's last audit row is visible: the time from
/// the acknowledgement to that moment is the lag.
pub struct LagProbe {
    pool: sqlx::PgPool,
    started: Instant,
    interval_us: u64,
    next_us: AtomicU64,
    results: Arc<Mutex<Latencies>>,
    timeouts: Arc<AtomicU64>,
    polls: Arc<AtomicU64>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

const LAG_POLL: Duration = Duration::from_millis(1);
const LAG_GIVE_UP: Duration = Duration::from_secs(10);

impl LagProbe {
    pub fn new(pool: sqlx::PgPool, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            pool,
            started: Instant::now(),
            interval_us: u64::try_from(interval.as_micros()).unwrap_or(u64::MAX),
            next_us: AtomicU64::new(0),
            results: Arc::new(Mutex::new(Latencies::new())),
            timeouts: Arc::new(AtomicU64::new(0)),
            polls: Arc::new(AtomicU64::new(0)),
            tasks: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn offer(&self, customer_id: &str, sequence: i64, acked: Instant) {
        let now_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let next = self.next_us.load(Ordering::Relaxed);
        if now_us < next
            || self
                .next_us
                .compare_exchange(
                    next,
                    now_us + self.interval_us,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let pool = self.pool.clone();
        let results = self.results.clone();
        let timeouts = self.timeouts.clone();
        let polls = self.polls.clone();
        let customer_id = customer_id.to_string();
        let task = tokio::spawn(async move {
            loop {
                polls.fetch_add(1, Ordering::Relaxed);
                let visible = sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM audit_trail WHERE customer_id = $1 AND sequence = $2)",
                )
                .bind(&customer_id)
                .bind(sequence)
                .fetch_one(&pool)
                .await
                .unwrap_or(false);
                if visible {
                    if let Ok(mut r) = results.lock() {
                        r.record(acked.elapsed());
                    }
                    return;
                }
                if acked.elapsed() > LAG_GIVE_UP {
                    timeouts.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(LAG_POLL).await;
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Queries the probe has sent (each one a database transaction).
    pub fn polls(&self) -> i64 {
        i64::try_from(self.polls.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Waits for the probes in flight; the lags and the number of samples
    /// that never became visible within 10 s.
    pub async fn finish(&self) -> (Latencies, u64) {
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
        let lags = self.results.lock().map(|r| r.clone()).unwrap_or_default();
        (lags, self.timeouts.load(Ordering::Relaxed))
    }
}
