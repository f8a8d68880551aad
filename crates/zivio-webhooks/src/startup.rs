//! Building and running the service: open and migrate the store, check keys, bootstrap an empty
//! embedded database, bind the listeners, serve until asked to stop. `App::build` binds before
//! returning, so tests and `main` both learn the real address (port 0 works).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zivio_app::contracts::PayloadContracts;
use zivio_app::metrics::Metrics;
use zivio_app::{Services, Settings, SystemClock, SystemResolver, unix_millis};
use zivio_core::catalog::Catalog;
use zivio_core::directory::BootstrapSeed;
use zivio_core::password;
use zivio_core::url_policy::UrlPolicy;
use zivio_core::webhook::time_ordered_hex;
use zivio_delivery::mail::Mailer;
use zivio_delivery::{Engine, EngineConfig};
use zivio_http::{AppState, Routers};
use zivio_store::{ConnectOptions, KeyCheck, Store};

use crate::config::Config;
use crate::keys::{self, KeySource, ServiceKeys};

/// How long a sign-in link issued by the platform stays valid.
const SIGN_IN_LINK_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// How often retention runs at most (it also runs at start); short retention periods (tests,
/// demos) are checked more often.
const MAINTENANCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60 * 60);

pub struct App {
    /// Held while serving an embedded database: it has exactly one instance.
    _instance_lock: Option<std::fs::File>,
    instance: String,
    /// How long a recovery stays leased to this instance without a renewal.
    lease: std::time::Duration,
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    services: Services,
    retention: Retention,
    /// When the client certificate presented to receivers expires, if one is configured.
    certificate_expires_at: Option<OffsetDateTime>,
    mailer: Option<Mailer>,
    /// How long a client may take to send a request's headers (and, in the router, its body).
    client_timeout: std::time::Duration,
    routers: Routers,
    public: TcpListener,
    platform: Option<TcpListener>,
}

impl App {
    pub async fn build(config: &Config) -> anyhow::Result<App> {
        let instance_lock = lock_embedded_database(config)?;
        let store = open_store(config).await?;
        let keys = prepare_keys(config, store.as_ref()).await?;
        let public = bind(config.listen).await?;
        let public_url = match &config.public_url {
            Some(url) => url.clone(),
            None => url_of(public.local_addr()?),
        };
        if config.bootstrap {
            bootstrap(&public_url, store.as_ref(), &keys).await?;
        }
        let services = services_of(config, store.clone(), &keys, public_url);
        // Names this instance in leases (deliveries, recoveries).
        let instance = time_ordered_hex(unix_millis(OffsetDateTime::now_utc()), keys::random());
        let engine = Engine::new(
            services.clone(),
            engine_config(config, &instance),
            services.deliveries_queued.clone(),
        )
        .context("cannot set up the delivery engine")?;
        let mailer = match &config.smtp_url {
            Some(url) => Some(Mailer::new(services.clone(), url, &config.mail_from)?),
            None => {
                tracing::warn!(
                    "mail is off (ZIVIO_WEBHOOKS_SMTP_URL is not set): webhooks disabled automatically are logged and audited, and nobody is mailed"
                );
                None
            }
        };
        let state = http_state(config, &services, &keys);
        let routers = zivio_http::routers(state, config.platform_listen.is_some());
        let platform = match config.platform_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(App {
            _instance_lock: instance_lock,
            instance,
            lease: config.lease,
            engine,
            store,
            services,
            retention: Retention {
                events: config.retention,
                audit: config.audit_retention,
            },
            certificate_expires_at: config.client_certificate.as_ref().map(|c| c.expires_at),
            mailer,
            client_timeout: config.client_timeout,
            routers,
            public,
            platform,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// and closes the database.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopped = CancellationToken::new();
        let stop = stopped.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            stop.cancel();
        });
        // Everything but the listeners: each ends soon after `stopped`, and the database is
        // closed only when all have.
        let background = TaskTracker::new();
        background.spawn(self.engine.clone().run(stopped.clone()));
        background.spawn(maintain(
            self.services.clone(),
            self.retention,
            self.certificate_expires_at,
            stopped.clone(),
        ));
        background.spawn(zivio_app::recoveries::worker::run(
            self.services.clone(),
            self.instance.clone(),
            self.lease,
            stopped.clone(),
        ));
        if let Some(mailer) = self.mailer.take() {
            background.spawn(mailer.run(stopped.clone()));
        }
        background.close();
        // "listening" comes last: it tells tests and operators that everything is up.
        if let Some(listener) = &self.platform {
            tracing::info!(addr = %listener.local_addr()?, "platform API and metrics listening");
        }
        tracing::info!(addr = %self.addr(), "listening");
        let public = serve(
            self.public,
            self.routers.public,
            stopped.clone(),
            self.client_timeout,
        );
        match (self.platform, self.routers.platform) {
            (Some(listener), Some(router)) => {
                let platform = serve(listener, router, stopped, self.client_timeout);
                tokio::try_join!(public, platform)?;
            }
            _ => public.await?,
        }
        background.wait().await;
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Retention {
    events: std::time::Duration,
    audit: std::time::Duration,
}

/// Periodic housekeeping until shutdown: retention of events, attempts, audit entries and
/// health counters, and a daily warning while the client certificate nears its expiry.
async fn maintain(
    services: Services,
    retention: Retention,
    certificate_expires_at: Option<OffsetDateTime>,
    stopped: CancellationToken,
) {
    let every = (retention.events.min(retention.audit) / 4)
        .clamp(std::time::Duration::from_secs(1), MAINTENANCE_INTERVAL);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_on = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let now = services.now();
                if let Some(expires_at) = certificate_expires_at
                    && warned_on != Some(now.date())
                    && let Some(warning) = zivio_delivery::client::expiry_warning(expires_at, now)
                {
                    tracing::warn!("{warning}");
                    warned_on = Some(now.date());
                }
                match zivio_app::retention::purge(&services, retention.events, retention.audit).await {
                    Ok(purged) if purged == Default::default() => {}
                    Ok(purged) => tracing::info!(events = purged.events, audit_entries = purged.audit_entries, "deleted history past its retention"),
                    Err(error) => tracing::warn!(error = %error, "retention failed; retrying at the next pass"),
                }
            },
            () = stopped.cancelled() => return,
        }
    }
}

/// Serves the router until shutdown, then lets open requests finish. Like `axum::serve`, plus a
/// timeout on reading request headers (axum's server sets none): a slow client (slowloris)
/// cannot hold a connection open by dribbling them.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    stopped: CancellationToken,
    header_timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped.cancelled() => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The URL a browser on this machine reaches a listener at (a wildcard address becomes loopback).
fn url_of(addr: SocketAddr) -> url::Url {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    url::Url::parse(&format!("http://{}", SocketAddr::new(ip, addr.port())))
        .expect("a socket address makes a URL")
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Connects and migrates; an embedded database gets its data directory first.
/// An embedded SQLite database is served by one process: a second one would free the first
/// one's leases at start and send its in-flight work again. The OS releases the lock when the
/// process ends, however it ends.
fn lock_embedded_database(config: &Config) -> anyhow::Result<Option<std::fs::File>> {
    if !config.database.is_embedded() {
        return Ok(None);
    }
    keys::prepare_data_dir(&config.data_dir)?;
    let path = config.data_dir.join("instance.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another zivio-webhooks instance is serving {} (an embedded database has exactly one \
             instance; use PostgreSQL to run several)",
            config.data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let needs_data_dir = config.database.is_embedded()
        && (config.platform_keys.is_none()
            || config.secrets_key.is_none()
            || is_default_database(config));
    if needs_data_dir {
        keys::prepare_data_dir(&config.data_dir)?;
    }
    let redacted = zivio_store::redact_url(&config.database.url);
    let store = zivio_store::connect(&ConnectOptions {
        url: config.database.url.clone(),
        max_connections: 16,
    })
    .await
    .with_context(|| format!("cannot open the database {redacted}"))?;
    store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate the database {redacted}"))?;
    tracing::info!(database = %redacted, "database ready");
    Ok(store)
}

fn is_default_database(config: &Config) -> bool {
    config
        .database
        .url
        .starts_with(&format!("sqlite://{}", config.data_dir.display()))
}

/// Loads the keys and makes sure the database was set up with this secrets key.
async fn prepare_keys(config: &Config, store: &dyn Store) -> anyhow::Result<ServiceKeys> {
    let keys = keys::load(config)?;
    match store
        .claim_key_check(&keys.secrets.check_value())
        .await
        .context("cannot check the secrets key against the database")?
    {
        KeyCheck::Recorded => {
            tracing::info!(key_id = %keys.secrets.id(), "recorded the secrets key's check value")
        }
        KeyCheck::Matches => {}
        KeyCheck::Mismatch => bail!(
            "ZIVIO_WEBHOOKS_SECRETS_KEY does not match the key this database was set up with: \
             start with the original key (or re-encrypt the secrets with the new one)"
        ),
    }
    tracing::info!(
        platform_keys = keys.platform.len(),
        secrets_key_id = %keys.secrets.id(),
        "keys loaded"
    );
    Ok(keys)
}

/// On an empty database, creates tenant `demo` with an all-access admin and prints the admin's
/// password once. Later starts print nothing and change nothing.
async fn bootstrap(
    public_url: &url::Url,
    store: &dyn Store,
    keys: &ServiceKeys,
) -> anyhow::Result<()> {
    let plain = password::generate(keys::random());
    let hash = tokio::task::spawn_blocking({
        let plain = plain.clone();
        move || password::hash(&plain, keys::random())
    })
    .await
    .context("password hashing failed")?;
    let seed = BootstrapSeed::demo(hash);
    if !store
        .bootstrap(&seed, OffsetDateTime::now_utc())
        .await
        .context("cannot bootstrap the database")?
    {
        return Ok(());
    }
    let sign_in = public_url.join("admin/sign-in").context("sign-in URL")?;
    let platform_key = match &keys.platform_source {
        KeySource::Configured => "from ZIVIO_WEBHOOKS_PLATFORM_KEY".to_owned(),
        KeySource::File(path) => format!("in {}", path.display()),
    };
    println!(
        "\nZivio Webhooks is set up. Sign in as the administrator of tenant `{tenant}`:\n\
         \n  Tenant:    {tenant}\n  Email:     {email}\n  Password:  {plain}   (shown this once only)\n  \
         Sign in:   {sign_in}\n\nThe platform API key is {platform_key}.\n",
        tenant = seed.tenant.id,
        email = seed.admin.email,
    );
    tracing::info!(tenant = %seed.tenant.id, user = %seed.admin.id, "bootstrapped an empty database");
    Ok(())
}

/// What the app's operations share, from the configuration.
fn services_of(
    config: &Config,
    store: Arc<dyn Store>,
    keys: &ServiceKeys,
    public_url: url::Url,
) -> Services {
    Services {
        store,
        catalog: Catalog::builtin(),
        secrets_key: keys.secrets.clone(),
        url_policy: UrlPolicy {
            allow_http: config.allow_http,
            allowed_private: config.allow_private_cidrs.clone(),
        },
        resolver: Arc::new(SystemResolver),
        clock: Arc::new(SystemClock),
        deliveries_queued: Arc::new(tokio::sync::Notify::new()),
        fanouts: Default::default(),
        handoff: Default::default(),
        contracts: Arc::new(PayloadContracts::new(
            Catalog::builtin(),
            config.event_validation,
        )),
        metrics: Arc::new(
            Metrics::new(env!("CARGO_PKG_VERSION")).with_client_certificate_expiry(
                config
                    .client_certificate
                    .as_ref()
                    .map(|certificate| certificate.expires_at.unix_timestamp()),
            ),
        ),
        settings: Settings {
            max_webhooks_per_tenant: config.max_webhooks_per_tenant,
            sign_in_link_ttl: SIGN_IN_LINK_TTL,
            retention: config.retention,
            public_url,
        },
    }
}

/// The delivery engine's settings, leases named by `instance`.
fn engine_config(config: &Config, instance: &str) -> EngineConfig {
    EngineConfig {
        instance: instance.to_owned(),
        lease: config.lease,
        request_timeout: config.request_timeout,
        schedule: config.retry_schedule.clone(),
        max_in_flight_per_webhook: config.max_in_flight_per_webhook as usize,
        max_in_flight: config.max_in_flight as usize,
        extra_root_ca: config.extra_root_ca.clone(),
        client_certificate: config.client_certificate.clone(),
        auto_disable_after: config.auto_disable_after,
        mail_notices: config.smtp_url.is_some(),
        rate_limit_max_wait: config.rate_limit_max_wait,
    }
}

/// What the HTTP layer needs besides the services: keys, proxies, limiters.
fn http_state(config: &Config, services: &Services, keys: &ServiceKeys) -> AppState {
    AppState {
        services: services.clone(),
        platform_keys: keys.platform.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        sign_in_limiter: Arc::new(zivio_http::admin::SignInLimiter::new(
            config.rate_limit_ipv6_prefix,
        )),
        api_limiter: Arc::new(zivio_http::limits::RateLimiter::new(
            f64::from(config.api_rate_limit),
            config.api_rate_limit,
        )),
        api_key_failures: Arc::new(zivio_http::limits::FailedKeyLimiter::new(
            config.rate_limit_ipv6_prefix,
        )),
        client_timeout: config.client_timeout,
    }
}
