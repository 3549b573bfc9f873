//! Start-up: store, keys, hasher, mail, the listener; then serve until
//! told to stop, finishing requests in flight.

use access_store::prelude::*;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use access_domain::{CustomerServices, LinkLifetimes, Password, PasswordHasher, TokenGenerator};
use access_security::{AdmissionLimits, Argon2idHasher, OsRandomTokens, SystemClock};
use access_store::keys::MasterKeySource;
use access_store::{Store, StoreError, StoreOptions, StoredApiKey};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth::{ApiKey, ApiKeys, KeySpecError};
use crate::command_mail::CommandMail;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::{AppState, Inner};
use crate::throttle::Throttle;

/// Why the service could not start. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("API keys: {0}")]
    Keys(#[from] KeySpecError),
    #[error("API keys file {path}: {source}")]
    KeysFile {
        path: String,
        source: std::io::Error,
    },
    #[error("mail: {0}")]
    Mail(#[from] access_mail::MailError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ACCESS_PUBLIC_URL `{0}` must start with http:// or https://")]
    PublicUrl(String),
    #[error("password hasher: {0}")]
    Hasher(String),
    #[error(transparent)]
    TrustedProxies(#[from] crate::client_ip::TrustedProxiesError),
    #[error("master key: {0}")]
    MasterKey(#[from] access_store::keys::MasterKeyError),
    #[error("audit console: {0}")]
    Console(#[from] crate::usecase::console::SettingsError),
}

/// The name of the admin key created on first start.
pub const FIRST_ADMIN_KEY: &str = "admin";

/// The soonest a wrong password is answered: as configured, or
/// [`access_security::foreign::FAILED_LOGIN_FLOOR_FACTOR`] times `own_hash`
/// (one hash with this process's parameters, timed at start, scaled up to
/// OWASP's parameters when they are cheaper) but at most half the request
/// time limit. It must leave the request time to answer.
fn login_failure_floor(config: &Config, own_hash: Duration) -> Result<Duration, StartupError> {
    let limit = Duration::from_secs(config.request_timeout_secs);
    // The import's bounds are set against OWASP's parameters, whatever
    // this process hashes with: cheaper settings do not make an imported
    // hash cheaper, so the measured hash is scaled up to OWASP's work
    // (argon2's time follows memory × passes).
    let owasp_work =
        f64::from(access_security::OWASP_MEMORY_KIB) * f64::from(access_security::OWASP_ITERATIONS);
    let own_work =
        f64::from(config.argon2_memory_kib.max(1)) * f64::from(config.argon2_iterations.max(1));
    let at_owasp = own_hash.mul_f64((owasp_work / own_work).max(1.0));
    let floor = match config.login_failure_floor_ms {
        Some(ms) => Duration::from_millis(ms),
        None => (at_owasp * access_security::foreign::FAILED_LOGIN_FLOOR_FACTOR).min(limit / 2),
    };
    if floor >= limit {
        return Err(StartupError::Hasher(format!(
            "ACCESS_LOGIN_FAILURE_FLOOR_MS ({} ms) must be less than ACCESS_REQUEST_TIMEOUT_SECS ({} s)",
            floor.as_millis(),
            config.request_timeout_secs
        )));
    }
    tracing::info!(
        floor_ms = floor.as_millis() as u64,
        own_hash_ms = own_hash.as_millis() as u64,
        configured = config.login_failure_floor_ms.is_some(),
        "a wrong password is answered no sooner than the floor after its request arrived"
    );
    Ok(floor)
}

/// A running service.
pub struct Running {
    pub addr: SocketAddr,
    pub public_url: String,
    /// The admin key created on this start (shown once), if one was.
    pub created_admin_key: Option<String>,
    pub state: AppState,
    server: JoinHandle<std::io::Result<()>>,
    janitor: JoinHandle<()>,
}

impl Running {
    /// Waits until the server stops (after the shutdown signal, once the
    /// requests in flight are done).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self
            .server
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.janitor.abort();
        result
    }
}

async fn load_keys(
    config: &Config,
    store: &Store,
) -> Result<(ApiKeys, Option<String>), StartupError> {
    let mut keys = Vec::new();
    if let Some(spec) = &config.api_keys {
        keys.extend(ApiKey::parse_list(spec)?);
    }
    if let Some(path) = &config.api_keys_file {
        let text = std::fs::read_to_string(path).map_err(|source| StartupError::KeysFile {
            path: path.display().to_string(),
            source,
        })?;
        for key in ApiKey::parse_list(&text)? {
            if keys.iter().any(|k: &ApiKey| k.name == key.name) {
                return Err(KeySpecError::Duplicate { name: key.name }.into());
            }
            keys.push(key);
        }
    }
    let store_error = |source| StartupError::Store {
        url: access_store::redact_url(&config.database_url),
        source,
    };
    let mut stored = store.api_keys().await.map_err(store_error)?;
    let mut created = None;
    if keys.is_empty() && stored.is_empty() {
        let secret = format!("ak_{}", OsRandomTokens.generate().expose());
        let key = StoredApiKey {
            name: FIRST_ADMIN_KEY.into(),
            role: "admin".into(),
            secret_digest: hex::encode(crate::auth::digest(&secret)),
            created_at: Utc::now(),
        };
        store.insert_api_key(&key).await.map_err(store_error)?;
        stored.push(key);
        created = Some(secret);
    }
    for s in stored {
        let role = access_domain::ApiRole::parse(&s.role);
        match role.and_then(|role| ApiKey::from_digest(s.name.clone(), role, &s.secret_digest)) {
            Some(key) if !keys.iter().any(|k| k.name == key.name) => keys.push(key),
            Some(_) => {
                tracing::warn!(name = %s.name, "a configured API key has the name of a stored one; the configured one wins")
            }
            None => tracing::warn!(name = %s.name, "stored API key unreadable; ignored"),
        }
    }
    Ok((ApiKeys::new(keys), created))
}

/// Largest request head (request line and headers) accepted; a larger
/// one is answered 431 by hyper and the connection closed.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets
/// the connections finish their requests in flight.
///
/// Our own accept loop rather than `axum::serve`, which runs hyper without
/// a timer and so without a header read timeout: a client sending its
/// headers a byte at a time (slowloris) would hold its connection forever.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_timeout: Duration,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request.map(axum::body::Body::new)
            },
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_header_size(MAX_HEADER_BYTES)
            .max_headers(100)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Starts the service; it stops when `shutdown` completes.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartupError> {
    let trusted_proxies = Arc::new(crate::client_ip::TrustedProxies::new(
        &config.trusted_proxies,
        config.forwarded_header,
    )?);
    let console = crate::usecase::console::ConsoleSettings::new(
        config.audit_session_hours,
        config.audit_verify_secs,
    )?;
    let shown_url = access_store::redact_url(&config.database_url);
    let store_error = |source| StartupError::Store {
        url: shown_url.clone(),
        source,
    };
    let store = Store::connect(
        &config.database_url,
        StoreOptions {
            max_connections: config.db_pool,
            snapshot_interval: config.snapshot_interval,
            seal_personal_data: true,
            aggregate_cache: config.aggregate_cache,
            aggregate_cache_ttl: Duration::from_secs(config.aggregate_cache_ttl_secs),
            customer_queue_wait: Duration::from_millis(config.customer_queue_wait_ms),
        },
    )
    .await
    .map_err(store_error)?;
    store.migrate().await.map_err(store_error)?;
    let (master, source) = access_store::keys::master_key_for(
        &config.database_url,
        config.master_key.as_deref(),
        config.master_key_file.as_deref(),
    )?;
    match &source {
        MasterKeySource::Generated(path) => tracing::warn!(
            path = %path.display(),
            "GENERATED A NEW MASTER KEY for the embedded database and wrote it to this file \
             (mode 0600). Every customer's personal data is encrypted under it: back it up \
             with the database, keep it apart from database backups, and never lose it"
        ),
        MasterKeySource::Ephemeral => {
            tracing::warn!("in-memory database: its master key lives only as long as this process")
        }
        MasterKeySource::File(path) => {
            tracing::info!(path = %path.display(), "master key read from file")
        }
        MasterKeySource::Given => tracing::info!("master key from ACCESS_MASTER_KEY"),
    }
    let store = store.unlock(master).await.map_err(store_error)?;
    tracing::info!(
        store = store.kind(),
        url = %shown_url,
        master_key_id = store.keyring().map(|k| k.master_key_id().to_string()).unwrap_or_default(),
        "store ready"
    );

    let (keys, created_admin_key) = load_keys(&config, &store).await?;

    let params = access_security::Argon2Params::new(
        config.argon2_memory_kib,
        config.argon2_iterations,
        config.argon2_parallelism,
        None,
    )
    .map_err(|e| {
        StartupError::Hasher(format!(
            "ACCESS_ARGON2_MEMORY_KIB / _ITERATIONS / _PARALLELISM: {e}"
        ))
    })?;
    if params.m_cost() < access_security::OWASP_MEMORY_KIB
        || params.t_cost() < access_security::OWASP_ITERATIONS
    {
        tracing::warn!(
            memory_kib = params.m_cost(),
            iterations = params.t_cost(),
            "argon2id costs below OWASP's recommendation (19456 KiB, 2 iterations)"
        );
    }
    // A login that waits for the hasher until its request times out would
    // count against the account without ever being checked.
    if config.hash_wait_ms >= config.request_timeout_secs.saturating_mul(1000) {
        return Err(StartupError::Hasher(format!(
            "ACCESS_HASH_WAIT_MS ({}) must be less than ACCESS_REQUEST_TIMEOUT_SECS ({} s)",
            config.hash_wait_ms, config.request_timeout_secs
        )));
    }
    let hasher = Arc::new(
        Argon2idHasher::with_params(params, config.hash_concurrency).with_admission(
            AdmissionLimits {
                queue: config
                    .hash_queue
                    .unwrap_or(4 * config.hash_concurrency.max(1)),
                wait: Duration::from_millis(config.hash_wait_ms.max(1)),
            },
        ),
    );
    let decoy_password = Password::parse(
        &format!("Decoy-{}", OsRandomTokens.generate().expose()),
        &[],
    )
    .map_err(|e| StartupError::Hasher(e.to_string()))?;
    let hash_admission = hasher.admission().clone();
    let hashing = std::time::Instant::now();
    let decoy_hash = hasher
        .hash(&decoy_password)
        .await
        .map_err(|e| StartupError::Hasher(e.to_string()))?;
    let login_failure_floor = login_failure_floor(&config, hashing.elapsed())?;
    let services = CustomerServices::new(
        hasher,
        Arc::new(OsRandomTokens),
        Arc::new(SystemClock),
        LinkLifetimes {
            setup_link: chrono::Duration::hours(i64::from(config.setup_link_hours.max(1))),
            email_change: chrono::Duration::hours(i64::from(config.email_change_link_hours.max(1))),
        },
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartupError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartupError::Bind {
        addr: config.listen,
        source,
    })?;
    let public_url = match &config.public_url {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            url.trim_end_matches('/').to_string()
        }
        Some(url) => return Err(StartupError::PublicUrl(url.clone())),
        None => format!("http://{addr}"),
    };

    let target = access_mail::MailTarget::from_str(&config.mail)?;
    let templates = match &config.mail_templates {
        Some(dir) => access_mail::Templates::with_override_dir(dir)?,
        None => access_mail::Templates::embedded(),
    };
    let settings = access_mail::MailSettings {
        from: config.mail_from.clone(),
        ..access_mail::MailSettings::default()
    };
    let transport = target.transport()?;

    let store_for_projector = store.clone();
    let store_for_relay = store.clone();
    let feed = crate::feed::FeedHub::spawn(
        store.clone(),
        Duration::from_millis(config.feed_poll_ms.max(1)),
    );
    let metrics = Metrics::new();
    let worker = config.mail_worker.then(|| {
        access_mail::outbox::OutboxWorker::spawn(
            store.clone(),
            transport.clone(),
            access_mail::outbox::RetryPolicy {
                max_attempts: config.mail_max_attempts.max(1),
                first_delay: Duration::from_millis(config.mail_retry_ms.max(1)),
                lease: Duration::from_secs(config.mail_lease_secs.max(1)),
                ..access_mail::outbox::RetryPolicy::default()
            },
            crate::command_mail::outcome_counter(metrics.clone()),
        )
    });
    let mail = CommandMail::new(templates, settings, public_url.clone(), worker);
    let throttle = Throttle::new(
        store.clone(),
        config.login_attempts_per_account,
        config.login_attempts_per_address,
    );
    let state = AppState::new(Inner {
        store,
        services,
        keys,
        mail,
        metrics,
        throttle,
        trusted_proxies,
        keys_in_flight: Default::default(),
        login_checks_in_flight: Default::default(),
        session_ttl: chrono::Duration::hours(i64::from(config.session_hours.max(1))),
        decoy_hash,
        login_failure_floor,
        second_factor: config.second_factor,
        totp_issuer: config.totp_issuer.clone(),
        hash_admission,
        projector: config.projector.then(|| {
            access_projections::Projector::spawn(
                store_for_projector,
                access_projections::ProjectorOptions::default(),
            )
        }),
        read_wait: Duration::from_millis(config.read_wait_ms.max(1)),
        feed: feed.clone(),
        feed_heartbeat: Duration::from_secs(config.feed_heartbeat_secs.max(1)),
        feed_max_wait: Duration::from_secs(config.request_timeout_secs.max(2) - 1),
        console,
        relay: config.nats_url.as_ref().map(|url| {
            crate::relay::Relay::spawn(
                store_for_relay,
                feed.clone(),
                crate::relay::RelayOptions {
                    max_age: Duration::from_secs(
                        u64::from(config.nats_max_age_days.max(1)) * 86_400,
                    ),
                    batch: config.nats_batch.clamp(1, 10_000),
                    ..crate::relay::RelayOptions::new(
                        url.clone(),
                        config.nats_stream.clone(),
                        config.nats_subject_prefix.clone(),
                    )
                },
            )
        }),
    });

    let janitor = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(300));
            loop {
                tick.tick().await;
                state.throttle().shrink(Utc::now()).await;
                if let Err(e) = state.store().purge_expired_sessions(Utc::now()).await {
                    tracing::warn!(error = %e, "could not purge expired sessions");
                }
                crate::usecase::console::purge_expired(&state).await;
            }
        })
    };

    // The pages and the OpenAPI document sit above the API's routes (they
    // use its handlers and extractors), so they are put together here.
    let others = axum::Router::new()
        .route("/openapi.json", axum::routing::get(crate::openapi::openapi))
        .merge(crate::pages::router());
    let router = crate::http::router(
        state.clone(),
        Duration::from_secs(config.request_timeout_secs.max(1)),
        others,
    );
    // Open change-feed streams end when the service stops (else the
    // graceful shutdown would wait for them forever).
    let closing = feed.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    let server = tokio::spawn(serve(
        listener,
        router,
        shutdown,
        Duration::from_secs(config.header_timeout_secs.max(1)),
    ));
    tracing::info!(%addr, %public_url, "accessd listening");
    Ok(Running {
        addr,
        public_url,
        created_admin_key,
        state,
        server,
        janitor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_floor_is_the_measured_hash_times_the_factor_within_the_time_limit() {
        let mut config = Config::defaults();
        config.request_timeout_secs = 30;
        let own = Duration::from_millis(33);
        assert_eq!(
            login_failure_floor(&config, own).unwrap(),
            own * access_security::foreign::FAILED_LOGIN_FLOOR_FACTOR
        );
        // A start on a very busy machine: at most half the time limit.
        assert_eq!(
            login_failure_floor(&config, Duration::from_secs(10)).unwrap(),
            Duration::from_secs(15)
        );
        // Cheaper argon2 settings: scaled up to OWASP's work (the import's
        // bounds do not shrink with them).
        config.argon2_memory_kib = access_security::OWASP_MEMORY_KIB / 4;
        assert_eq!(
            login_failure_floor(&config, own).unwrap(),
            own * 4 * access_security::foreign::FAILED_LOGIN_FLOOR_FACTOR
        );
        config.login_failure_floor_ms = Some(0);
        assert_eq!(login_failure_floor(&config, own).unwrap(), Duration::ZERO);
        config.login_failure_floor_ms = Some(30_000);
        let refused = login_failure_floor(&config, own).unwrap_err().to_string();
        assert!(
            refused.contains("ACCESS_LOGIN_FAILURE_FLOOR_MS (30000 ms) must be less than"),
            "{refused}"
        );
    }
}
