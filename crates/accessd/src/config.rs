//! Configuration: every setting is a flag and an environment variable.
//!
//! Settings that can carry a secret (the database and mail URLs, API keys,
//! the master key) have `hide_env_values`: `--help` names their variable
//! but never prints its value.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `accessd`: the access service.
#[derive(Parser, Clone)]
#[command(
    name = "accessd",
    version,
    about = "The access service: portal logins of customers, as events"
)]
pub struct Config {
    /// `sqlite://FILE` (created if missing) or `postgres://…`; several
    /// PostgreSQL hosts (`postgres://h1:5432,h2:5432/db`): the one that
    /// accepts writes, followed across a failover.
    #[arg(
        long,
        env = "ACCESS_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://access.db"
    )]
    pub database_url: String,

    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "ACCESS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base of the links in emails; default `http://` + the bound address.
    #[arg(long, env = "ACCESS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Where mail goes: `file:DIR` (one .eml file per message) or `smtp://…`.
    #[arg(
        long,
        env = "ACCESS_MAIL",
        hide_env_values = true,
        default_value = "file:mail"
    )]
    pub mail: String,

    /// Sender of the emails.
    #[arg(
        long,
        env = "ACCESS_MAIL_FROM",
        default_value = "Customer Center <no-reply@localhost>"
    )]
    pub mail_from: String,

    /// Deliver the outbox from this process.
    #[arg(long, env = "ACCESS_MAIL_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub mail_worker: bool,

    /// Delivery attempts before a message is marked failed.
    #[arg(long, env = "ACCESS_MAIL_MAX_ATTEMPTS", default_value_t = 8)]
    pub mail_max_attempts: u32,

    /// Delay before the first retry, in milliseconds (doubles each time,
    /// at most 5 minutes).
    #[arg(long, env = "ACCESS_MAIL_RETRY_MS", default_value_t = 2000)]
    pub mail_retry_ms: u64,

    /// How long a worker holds a message it is sending, in seconds; a
    /// message claimed by a process that died is sent again after this.
    #[arg(long, env = "ACCESS_MAIL_LEASE_SECS", default_value_t = 60)]
    pub mail_lease_secs: u64,

    /// A directory of templates that replace the built-in ones.
    #[arg(long, env = "ACCESS_MAIL_TEMPLATES")]
    pub mail_templates: Option<PathBuf>,

    /// API keys, comma-separated `name:role:secret` (roles: service,
    /// auditor, admin, subscriber).
    #[arg(long, env = "ACCESS_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,

    /// A file with API keys in the same format (commas or one per line;
    /// `#` starts a comment).
    #[arg(long, env = "ACCESS_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// The master key (64 hex characters) that wraps the per-customer keys
    /// of personal data. Required with PostgreSQL; the embedded SQLite
    /// default generates one into `<database file>.key` on first start.
    #[arg(long, env = "ACCESS_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// A file holding the master key.
    #[arg(long, env = "ACCESS_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "ACCESS_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "ACCESS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Lifetime of a password-setup link, in hours.
    #[arg(long, env = "ACCESS_SETUP_LINK_HOURS", default_value_t = 24)]
    pub setup_link_hours: u32,

    /// Lifetime of an email-change validation link, in hours.
    #[arg(long, env = "ACCESS_EMAIL_CHANGE_LINK_HOURS", default_value_t = 24)]
    pub email_change_link_hours: u32,

    /// Lifetime of a customer session, in hours.
    #[arg(long, env = "ACCESS_SESSION_HOURS", default_value_t = 12)]
    pub session_hours: u32,

    /// Database connections (PostgreSQL) or readers (SQLite).
    #[arg(long, env = "ACCESS_DB_POOL", default_value_t = 10)]
    pub db_pool: u32,

    /// Customers whose latest state the command path keeps in memory, so
    /// their next command is decided without reading their events (0:
    /// off). Safe with several replicas: a stale state makes the append
    /// conflict and the command is decided again on fresh state.
    #[arg(long, env = "ACCESS_AGGREGATE_CACHE", default_value_t = 10_000)]
    pub aggregate_cache: usize,

    /// Seconds a cached customer state may be used after it was written
    /// (also how long personal data of a customer forgotten through another
    /// replica can stay in this one's memory).
    #[arg(long, env = "ACCESS_AGGREGATE_CACHE_TTL_SECS", default_value_t = 30)]
    pub aggregate_cache_ttl_secs: u64,

    /// Milliseconds a command waits for the commands before it on the same
    /// customer in this replica (they run one at a time per customer, so
    /// a replica never conflicts with itself); past it the command answers
    /// 409 `concurrent_modification`. 0: no queue (commands race to the
    /// append and retry on conflict, as between replicas).
    #[arg(long, env = "ACCESS_CUSTOMER_QUEUE_WAIT_MS", default_value_t = 5_000)]
    pub customer_queue_wait_ms: u64,

    /// Snapshot a customer every this many events (0: never).
    #[arg(long, env = "ACCESS_SNAPSHOT_INTERVAL", default_value_t = 100)]
    pub snapshot_interval: u64,

    /// How long an audit console session lasts, in hours (1 to 8).
    #[arg(long, env = "ACCESS_AUDIT_SESSION_HOURS", default_value_t = 8)]
    pub audit_session_hours: u32,

    /// The longest an integrity check started from the audit console
    /// runs, in seconds (longer histories: `accessctl audit verify`).
    #[arg(long, env = "ACCESS_AUDIT_VERIFY_SECS", default_value_t = 300)]
    pub audit_verify_secs: u64,

    /// Longest time a request may take, in seconds.
    #[arg(long, env = "ACCESS_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Longest time a client may take to send a request's headers (also
    /// the idle time of a kept-alive connection), in seconds; then the
    /// connection is closed (slow clients hold no connection for long).
    #[arg(long, env = "ACCESS_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Password hashes computed at once (each takes ~20 MiB and a core for
    /// ~20 ms); more requests wait their turn.
    #[arg(long, env = "ACCESS_HASH_CONCURRENCY", default_value_t = 2)]
    pub hash_concurrency: usize,

    /// Requests that may wait for a password hash at once (default: 4 ×
    /// ACCESS_HASH_CONCURRENCY). Beyond it a login is answered 429 and a
    /// command 503, both with Retry-After, at once.
    #[arg(long, env = "ACCESS_HASH_QUEUE")]
    pub hash_queue: Option<usize>,

    /// The longest a request waits for a password hash, in milliseconds;
    /// then it is answered like a full queue.
    #[arg(long, env = "ACCESS_HASH_WAIT_MS", default_value_t = 1_000)]
    pub hash_wait_ms: u64,

    /// argon2id memory cost in KiB (OWASP: 19456). Raising a cost makes
    /// every older hash upgrade at its customer's next successful login.
    #[arg(long, env = "ACCESS_ARGON2_MEMORY_KIB", default_value_t = access_security::OWASP_MEMORY_KIB)]
    pub argon2_memory_kib: u32,

    /// argon2id iterations (OWASP: 2).
    #[arg(long, env = "ACCESS_ARGON2_ITERATIONS", default_value_t = access_security::OWASP_ITERATIONS)]
    pub argon2_iterations: u32,

    /// argon2id lanes (OWASP: 1).
    #[arg(long, env = "ACCESS_ARGON2_PARALLELISM", default_value_t = access_security::OWASP_PARALLELISM)]
    pub argon2_parallelism: u32,

    /// Run the catch-up projector in this process (`false` when another
    /// process projects, or to hold projections still).
    #[arg(long, env = "ACCESS_PROJECTOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub projector: bool,

    /// How long a read waits for the projections to include every event
    /// committed before it (read-your-writes), in milliseconds; after that
    /// it answers 503.
    #[arg(long, env = "ACCESS_READ_WAIT_MS", default_value_t = 3000)]
    pub read_wait_ms: u64,

    /// Wrong passwords per account before each further one makes the next
    /// check wait (1 s, 2 s, 4 s, … at most 15 minutes; a right password
    /// resets).
    #[arg(long, env = "ACCESS_LOGIN_ATTEMPTS_PER_ACCOUNT", default_value_t = 5)]
    pub login_attempts_per_account: u32,

    /// The soonest a wrong password is answered, in milliseconds, counted
    /// from the start of the password check (the answer, 401, waits until
    /// then). Unset: 16 times this process's own argon2id hash as measured
    /// at start (about 530 ms with OWASP's parameters on a 2-core machine),
    /// which covers the slowest imported hash the import accepts (bcrypt
    /// cost 12, about 10.5 times) with room: a wrong password for an
    /// imported customer takes as long as one for an unknown email. 0
    /// turns the floor off (then the verify's own time shows).
    #[arg(long, env = "ACCESS_LOGIN_FAILURE_FLOOR_MS")]
    pub login_failure_floor_ms: Option<u64>,

    /// Load balancers and proxies in front of this service, as
    /// comma-separated CIDRs (e.g. `10.0.0.0/8, ::1/128`); empty: none.
    /// For a request from one of them, the client is the right-most
    /// address of `ACCESS_FORWARDED_HEADER` that is not itself a trusted
    /// proxy; from anyone else the header is ignored.
    #[arg(long, env = "ACCESS_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// The header the trusted proxies append the client's address to
    /// (only this one is read: the other is whatever the client sent).
    #[arg(
        long,
        env = "ACCESS_FORWARDED_HEADER",
        value_enum,
        default_value = "x-forwarded-for"
    )]
    pub forwarded_header: crate::client_ip::ForwardedHeader,

    /// The customers' second factor (TOTP): `optional` (a customer may
    /// enroll one) or `required` (a customer without one must enroll right
    /// after logging in, before anything else).
    #[arg(
        long,
        env = "ACCESS_SECOND_FACTOR",
        value_enum,
        default_value = "optional"
    )]
    pub second_factor: SecondFactorPolicy,

    /// The issuer an authenticator app shows next to the customer's email
    /// (in the `otpauth://` URI of an enrollment).
    #[arg(long, env = "ACCESS_TOTP_ISSUER", default_value = "Customer Center")]
    pub totp_issuer: String,

    /// Password checks allowed per client address per minute (IPv6: per
    /// /64).
    #[arg(long, env = "ACCESS_LOGIN_ATTEMPTS_PER_ADDRESS", default_value_t = 30)]
    pub login_attempts_per_address: u32,

    /// Seconds between heartbeat comments on an idle change-feed stream
    /// (server-sent events), so proxies keep it open.
    #[arg(long, env = "ACCESS_FEED_HEARTBEAT_SECS", default_value_t = 15)]
    pub feed_heartbeat_secs: u64,

    /// How often waiting change-feed readers (long polls, streams, the NATS
    /// relay) look for events committed by other processes, in
    /// milliseconds (this process's own commits wake them at once).
    #[arg(long, env = "ACCESS_FEED_POLL_MS", default_value_t = 100)]
    pub feed_poll_ms: u64,

    /// Relay every event to NATS JetStream at this server (e.g.
    /// `nats://127.0.0.1:4222`); unset: no relay.
    #[arg(long, env = "ACCESS_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// The JetStream stream the relay publishes to (created if missing).
    #[arg(long, env = "ACCESS_NATS_STREAM", default_value = "ACCESS_EVENTS")]
    pub nats_stream: String,

    /// Subjects are `<prefix>.<event_type_snake>.<customer_id>`; the
    /// stream covers `<prefix>.>`.
    #[arg(
        long,
        env = "ACCESS_NATS_SUBJECT_PREFIX",
        default_value = "access.events"
    )]
    pub nats_subject_prefix: String,

    /// How long the stream keeps messages, in days (when the relay creates
    /// it).
    #[arg(long, env = "ACCESS_NATS_MAX_AGE_DAYS", default_value_t = 30)]
    pub nats_max_age_days: u32,

    /// Events the relay publishes per checkpoint move.
    #[arg(long, env = "ACCESS_NATS_BATCH", default_value_t = 1000)]
    pub nats_batch: u32,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets (API keys, a password in the database URL) stay out.
        f.debug_struct("Config")
            .field(
                "database_url",
                &access_store::redact_url(&self.database_url),
            )
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("mail", &access_store::redact_url(&self.mail))
            .field("api_keys", &self.api_keys.as_ref().map(|_| "[REDACTED]"))
            .field("api_keys_file", &self.api_keys_file)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("master_key_file", &self.master_key_file)
            .field("log", &self.log)
            .field(
                "nats_url",
                &self.nats_url.as_deref().map(access_store::redact_url),
            )
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults, as with no flags and no environment (for tests).
    pub fn defaults() -> Self {
        Self::parse_from(["accessd"])
    }
}

/// Whether customers must have a second factor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecondFactorPolicy {
    /// A customer may enroll one.
    #[default]
    Optional,
    /// A customer without one must enroll right after logging in: any
    /// other call answers 403 `second_factor_enrollment_required`.
    Required,
}
