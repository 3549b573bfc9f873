//! Prometheus metrics (prometheus-client: one registry per service, no
//! global state, so tests can run several services in one process).
//!
//! One label name for what happened: `outcome` (commands: `ok` or an error
//! code; mail: `sent`, `retry`, `failed`, …; the aggregate cache: `hit`,
//! `miss`, `stale`). The service's own metrics are prefixed `access_`; the
//! process metrics have the usual unprefixed `process_` names.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

/// The commit the binary was built from (`build.rs`: `git` when the
/// sources are a checkout, else `unknown`).
pub const GIT_COMMIT: &str = env!("ACCESS_GIT_COMMIT");

/// The process metrics of the Prometheus client guidelines (resident and
/// virtual memory, CPU seconds, open and maximum file descriptors, start
/// time), read from `/proc` at each scrape by the `procfs` crate. Absent
/// where there is no `/proc`.
#[derive(Debug)]
struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;

        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        let Ok(stat) = me.stat() else {
            return Ok(());
        };
        let ticks = procfs::ticks_per_second() as f64;
        let page = procfs::page_size();
        let cpu = (stat.utime + stat.stime) as f64 / ticks;
        let counter = ConstCounter::new(cpu);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?)?;
        let gauges: [(&str, &str, Option<f64>); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                Some((stat.rss * page) as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                Some(stat.vsize as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                me.fd_count().ok().map(|n| n as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                me.limits()
                    .ok()
                    .and_then(|l| match l.max_open_files.soft_limit {
                        procfs::process::LimitValue::Value(n) => Some(n as f64),
                        procfs::process::LimitValue::Unlimited => None,
                    }),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                procfs::boot_time_secs()
                    .ok()
                    .map(|boot| boot as f64 + stat.starttime as f64 / ticks),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                ConstGauge::new(value).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        Ok(())
    }
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The service's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    commands: Family<CommandLabels, Counter>,
    store_errors: Family<KindLabels, Counter>,
    mail: Family<OutcomeLabels, Counter>,
    projector_lag_events: Gauge,
    projector_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    projector_position: Gauge,
    projector_failed: Gauge,
    aggregate_cache: Family<OutcomeLabels, Counter>,
    relay_lag_events: Gauge,
    relay_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    relay_position: Gauge,
    relay_leader: Gauge,
    relay_errors: Counter,
    /// The relay's error count as last exported.
    relay_errors_seen: Arc<std::sync::atomic::AtomicU64>,
    /// The cache's counters as last exported (the store counts; each
    /// scrape adds what is new).
    aggregate_cache_seen: Arc<std::sync::Mutex<access_store::CacheStats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("access");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                commit: GIT_COMMIT.to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: version and git commit (always 1)",
            build_info,
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let commands = Family::<CommandLabels, Counter>::default();
        let store_errors = Family::<KindLabels, Counter>::default();
        let mail = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "commands",
            "Commands by name and outcome (ok or an error code)",
            commands.clone(),
        );
        registry.register(
            "store_errors",
            "Store failures by kind",
            store_errors.clone(),
        );
        registry.register("mail", "Mail delivery attempts by outcome", mail.clone());
        let projector_lag_events = Gauge::default();
        let projector_lag_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let projector_position = Gauge::default();
        let projector_failed = Gauge::default();
        registry.register(
            "projector_lag_events",
            "Events committed but not yet in the projections (approximate)",
            projector_lag_events.clone(),
        );
        registry.register(
            "projector_lag_seconds",
            "Age of the newest projected event while the projector is behind (0 when caught up)",
            projector_lag_seconds.clone(),
        );
        registry.register(
            "projector_position",
            "Global position of the projector's checkpoint",
            projector_position.clone(),
        );
        registry.register(
            "projector_failed",
            "1 when the projector stopped on an error",
            projector_failed.clone(),
        );
        let aggregate_cache = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "aggregate_cache",
            "Commands since start decided on a cached customer state (hit), on state read from the database (miss), and cached states found stale (stale)",
            aggregate_cache.clone(),
        );
        let relay_lag_events = Gauge::default();
        let relay_lag_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let relay_position = Gauge::default();
        let relay_leader = Gauge::default();
        let relay_errors = Counter::default();
        registry.register(
            "relay_lag_events",
            "Events committed but not yet acknowledged by NATS JetStream (approximate)",
            relay_lag_events.clone(),
        );
        registry.register(
            "relay_lag_seconds",
            "Age of the oldest event not yet in JetStream (0 when caught up)",
            relay_lag_seconds.clone(),
        );
        registry.register(
            "relay_position",
            "Global position of the NATS relay's checkpoint",
            relay_position.clone(),
        );
        registry.register(
            "relay_leader",
            "1 when this process holds the NATS relay (one replica at a time)",
            relay_leader.clone(),
        );
        registry.register(
            "relay_errors",
            "Failed NATS relay attempts (connect, publish, acknowledgement, database); each is retried",
            relay_errors.clone(),
        );
        Self {
            registry: Arc::new(root),
            relay_lag_events,
            relay_lag_seconds,
            relay_position,
            relay_leader,
            relay_errors,
            relay_errors_seen: Arc::default(),
            requests,
            latency,
            commands,
            store_errors,
            mail,
            projector_lag_events,
            projector_lag_seconds,
            projector_position,
            projector_failed,
            aggregate_cache,
            aggregate_cache_seen: Arc::default(),
        }
    }

    /// Records the aggregate cache's counters (called when metrics are
    /// read).
    pub fn aggregate_cache(&self, stats: access_store::CacheStats) {
        let mut seen = self
            .aggregate_cache_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (outcome, now, before) in [
            ("hit", stats.hits, seen.hits),
            ("miss", stats.misses, seen.misses),
            ("stale", stats.stale, seen.stale),
        ] {
            self.aggregate_cache
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_string(),
                })
                .inc_by(now.saturating_sub(before));
        }
        *seen = stats;
    }

    /// Records where the projector is (called when metrics are read).
    pub fn projector(
        &self,
        status: &access_projections::Status,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let behind = status.events_behind();
        self.projector_lag_events
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
        let seconds = match (behind, status.last_event_at) {
            (0, _) => 0.0,
            (_, Some(at)) => (now - at).num_milliseconds().max(0) as f64 / 1000.0,
            (_, None) => 0.0,
        };
        self.projector_lag_seconds.set(seconds);
        self.projector_position.set(status.checkpoint.global);
        self.projector_failed
            .set(i64::from(status.failed.is_some()));
    }

    /// Records where the NATS relay is (called when metrics are read).
    pub fn relay(&self, status: &crate::relay::RelayStatus, now: chrono::DateTime<chrono::Utc>) {
        let behind = status.events_behind();
        self.relay_lag_events
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
        // The age of the oldest event not yet in the stream (0 caught up).
        let seconds = status.pending_since.map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        self.relay_lag_seconds.set(seconds);
        self.relay_position.set(status.checkpoint.global);
        self.relay_leader.set(i64::from(status.leader));
        let before = self
            .relay_errors_seen
            .swap(status.errors, std::sync::atomic::Ordering::Relaxed);
        self.relay_errors
            .inc_by(status.errors.saturating_sub(before));
    }

    pub fn command(&self, command: &str, outcome: &str) {
        self.commands
            .get_or_create(&CommandLabels {
                command: command.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn store_error(&self, kind: &str) {
        self.store_errors
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn mail(&self, outcome: &str) {
        self.mail
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Middleware: counts every request and times it, by matched route.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method,
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    if response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        metrics.store_error("unavailable");
    }
    response
}
