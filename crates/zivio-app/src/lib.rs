//! Use cases of Zivio Webhooks: one function per user intent, shared by the v4 API, the platform
//! API and (later) the admin UI, so they cannot drift apart. Permission and privilege-boundary
//! decisions are made here, by calling `zivio_core::access`; handlers only translate.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use url::Url;
use zivio_core::catalog::Catalog;
use zivio_core::keys::SecretsKey;
use zivio_core::url_policy::UrlPolicy;
use zivio_store::Store;

pub mod audit;
pub mod caller;
pub mod contracts;
pub mod cursor;
pub mod deliveries;
pub mod directory;
pub mod error;
pub mod events;
pub mod handoff;
pub mod metrics;
pub mod passwords;
pub mod recoveries;
mod resending;
pub mod retention;
pub mod sessions;
mod webhook_access;
pub mod webhook_headers;
pub mod webhook_preview;
mod webhook_status;
mod webhook_url;
pub mod webhooks;

pub use caller::Caller;
pub use error::{AppError, AppResult, FieldError};

/// The current time, truncated to milliseconds so that both backends store it exactly.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        now.replace_millisecond(now.millisecond()).unwrap_or(now)
    }
}

/// Name resolution for URL vetting; the delivery engine uses the same one at every attempt.
#[async_trait::async_trait]
pub trait Resolver: Send + Sync {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (`/etc/hosts`, DNS), bounded in time.
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        let lookup = tokio::net::lookup_host((host, port));
        let addresses = tokio::time::timeout(Duration::from_secs(5), lookup)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "name resolution timed out")
            })??;
        let mut ips: Vec<IpAddr> = addresses.map(|address| address.ip()).collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
    }
}

/// Limits and settings the use cases need from configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_webhooks_per_tenant: u32,
    pub sign_in_link_ttl: Duration,
    /// Base of sign-in links.
    pub public_url: Url,
    /// How long events are kept; producer keys are remembered as long.
    pub retention: Duration,
}

/// Everything the use cases work with.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub catalog: &'static Catalog,
    pub secrets_key: SecretsKey,
    pub url_policy: UrlPolicy,
    pub resolver: Arc<dyn Resolver>,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
    pub metrics: Arc<metrics::Metrics>,
    /// Told when new deliveries are queued, so the engine starts at once instead of polling.
    pub deliveries_queued: Arc<tokio::sync::Notify>,
    /// Each tenant's fan-out while nothing it depends on changed (see `events::FanoutCache`).
    pub fanouts: Arc<events::FanoutCache>,
    /// Publishing hands the deliveries it leased to this instance's engine here.
    pub handoff: Arc<handoff::HandOff>,
    /// The event types' schemas, and how publishing checks events against them.
    pub contracts: Arc<contracts::PayloadContracts>,
}

impl Services {
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}

/// `N` bytes from the operating system's generator.
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes
}

/// The SHA-256 digest under which keys and tokens are stored and looked up.
pub fn digest(secret: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// A time as the API shows it (RFC 3339, UTC).
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times format as RFC 3339")
}

/// Milliseconds since the epoch, for time-ordered ids.
pub fn unix_millis(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}
