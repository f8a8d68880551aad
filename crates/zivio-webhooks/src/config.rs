//! Configuration from `ZIVIO_WEBHOOKS_*` variables (and an optional file mirroring them, which
//! the environment overrides). Everything is parsed into typed values up front; every error
//! names its variable and says what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use url::Url;
use zivio_app::contracts::Checking;
use zivio_core::duration;
use zivio_core::keys::{PlatformKeys, SecretsKey};
use zivio_core::retry::{self, RetrySchedule};
use zivio_delivery::client::{ClientCertificate, ClientCertificateError};
use zivio_store::Backend;

pub const PREFIX: &str = "ZIVIO_WEBHOOKS_";

/// Every variable the service reads, with its default as documented (`None`: no default).
pub const VARIABLES: &[(&str, Option<&str>)] = &[
    ("LISTEN", Some("127.0.0.1:8080")),
    ("DATA_DIR", Some("./zivio-data")),
    ("DATABASE_URL", None),
    ("PLATFORM_KEY", None),
    ("SECRETS_KEY", None),
    ("PUBLIC_URL", None),
    ("TRUSTED_PROXIES", Some("")),
    ("PLATFORM_LISTEN", Some("")),
    ("ALLOW_PRIVATE_CIDRS", Some("")),
    ("ALLOW_HTTP", Some("false")),
    ("EXTRA_ROOT_CA", None),
    ("CLIENT_CERT", None),
    ("CLIENT_KEY", None),
    ("EVENT_VALIDATION", Some("enforce")),
    ("REQUEST_TIMEOUT", Some("30s")),
    ("RETRY_SCHEDULE", Some(retry::DEFAULT_SCHEDULE)),
    ("AUTO_DISABLE_AFTER", Some("5d")),
    ("RATE_LIMIT_MAX_WAIT", Some("24h")),
    ("SMTP_URL", None),
    ("MAIL_FROM", Some("webhooks@localhost")),
    ("RETENTION", Some("30d")),
    ("LOG_FORMAT", Some("text")),
    ("LOG", None),
    ("LEASE", Some("30s")),
    ("MAX_WEBHOOKS_PER_TENANT", Some("100")),
    ("MAX_IN_FLIGHT_PER_WEBHOOK", Some("16")),
    ("MAX_IN_FLIGHT", Some("1024")),
    ("API_RATE_LIMIT", Some("100")),
    ("RATE_LIMIT_IPV6_PREFIX", Some("64")),
    ("CLIENT_TIMEOUT", Some("30s")),
    ("AUDIT_RETENTION", Some("365d")),
    ("BOOTSTRAP", None),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!(
                "`{raw}` is not a log format: expected text or json"
            )),
        }
    }
}

/// Where the database lives.
#[derive(Debug, Clone)]
pub struct Database {
    /// `sqlite://...` or `postgres://...`; may hold a password: never log it unredacted.
    pub url: String,
    pub backend: Backend,
}

impl Database {
    /// Embedded mode: SQLite, where keys may be generated into the data directory.
    pub fn is_embedded(&self) -> bool {
        self.backend == Backend::Sqlite
    }
}

/// The whole, validated configuration. Keys are redacted in `Debug`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: Database,
    pub platform_keys: Option<PlatformKeys>,
    pub secrets_key: Option<SecretsKey>,
    /// The configured public base URL; without one, the bound listen address is used.
    pub public_url: Option<Url>,
    pub trusted_proxies: Vec<IpNet>,
    pub platform_listen: Option<SocketAddr>,
    pub allow_private_cidrs: Vec<IpNet>,
    pub allow_http: bool,
    pub extra_root_ca: Option<PathBuf>,
    /// Presented to receivers that ask for a client certificate (mutual TLS).
    pub client_certificate: Option<ClientCertificate>,
    /// What publishing does with events that do not conform to their type's schema.
    pub event_validation: Checking,
    pub request_timeout: Duration,
    pub retry_schedule: RetrySchedule,
    pub auto_disable_after: Duration,
    /// A delivery waiting longer than this for its webhook's rate limit ends as failed.
    pub rate_limit_max_wait: Duration,
    pub smtp_url: Option<Url>,
    pub mail_from: String,
    pub retention: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub lease: Duration,
    pub max_webhooks_per_tenant: u32,
    pub max_in_flight_per_webhook: u32,
    /// Deliveries one instance sends at once, over all webhooks.
    pub max_in_flight: u32,
    /// v4 API requests per second per API key (and the burst allowed).
    pub api_rate_limit: u32,
    /// IPv6 clients are rate limited per prefix of this many bits (1 to 128).
    pub rate_limit_ipv6_prefix: u8,
    /// How long a client may take to send a request body.
    pub client_timeout: Duration,
    pub audit_retention: Duration,
    pub bootstrap: bool,
}

/// One invalid variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// Every invalid variable at once, so that one run tells an operator everything to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads variables, remembering the first error of each so all can be reported together.
struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    /// The variable's value, or its documented default; an empty value counts as unset.
    fn raw(&self, name: &str) -> Option<&str> {
        self.vars
            .get(&format!("{PREFIX}{name}"))
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
            .or_else(|| default_of(name))
    }

    /// Parses the variable with `parse`, recording a failure under the variable's name.
    fn parse<T, E: fmt::Display>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let raw = self.raw(name)?;
        match parse(raw) {
            Ok(value) => Some(value),
            Err(error) => {
                self.fail(name, error.to_string());
                None
            }
        }
    }

    fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            variable: format!("{PREFIX}{name}"),
            message: message.into(),
        });
    }

    /// Parses a variable that has a documented default. When its value is invalid, the failure
    /// is recorded and the default stands in, so that reading can go on.
    fn required<T, E: fmt::Display>(
        &mut self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> T {
        let default = default_of(name).expect("a required variable has a documented default");
        match self.parse(name, &parse) {
            Some(value) => value,
            None => parse(default).ok().expect("documented defaults are valid"),
        }
    }

    fn cidrs(&mut self, name: &str) -> Vec<IpNet> {
        self.parse(name, |raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(parse_cidr)
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default()
    }
}

fn default_of(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .find(|(variable, _)| *variable == name)
        .and_then(|(_, default)| *default)
        .filter(|default| !default.is_empty())
}

fn positive_duration(raw: &str) -> Result<Duration, String> {
    match duration::parse(raw) {
        Ok(value) if value.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(value) => Ok(value),
        Err(error) => Err(error.to_string()),
    }
}

fn positive(raw: &str) -> Result<u32, String> {
    match raw.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!("`{raw}` is not a whole number of at least 1")),
        Ok(value) => Ok(value),
    }
}

fn flag(raw: &str) -> Result<bool, String> {
    match raw {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{raw}` is not a boolean: expected true or false")),
    }
}

fn socket_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse::<SocketAddr>()
        .map_err(|_| format!("`{raw}` is not an address: expected IP:port such as 127.0.0.1:8080"))
}

fn ipv6_prefix(raw: &str) -> Result<u8, String> {
    match raw.strip_prefix('/').unwrap_or(raw).parse::<u8>() {
        Ok(bits @ 1..=128) => Ok(bits),
        _ => Err(format!("`{raw}` is not a prefix length: expected 1 to 128")),
    }
}

fn parse_secrets_key(raw: &str) -> Result<SecretsKey, String> {
    SecretsKey::parse(raw)
        .map_err(|error| format!("{error} (generate one with `openssl rand -base64 32`)"))
}

/// Several instances share one PostgreSQL database, so they must share keys: none may invent
/// its own.
fn require_shared_keys(read: &mut Reader<'_>) {
    for name in ["PLATFORM_KEY", "SECRETS_KEY"] {
        if read.raw(name).is_none() {
            read.fail(
                name,
                "is required with a PostgreSQL database (keys are generated only in embedded SQLite mode)",
            );
        }
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not a CIDR such as 10.0.0.0/8 or fd00::/8"))
}

impl Config {
    /// Parses `vars` (the environment, merged over a configuration file). Returns the config
    /// and warnings to log once logging is up.
    pub fn from_vars(
        vars: &BTreeMap<String, String>,
    ) -> Result<(Config, Vec<String>), ConfigErrors> {
        let mut read = Reader {
            vars,
            errors: Vec::new(),
        };
        let listen = read.required("LISTEN", socket_addr);
        let data_dir = PathBuf::from(read.raw("DATA_DIR").unwrap_or("./zivio-data"));
        let database = read_database(&mut read, &data_dir);
        let embedded = database.as_ref().is_none_or(Database::is_embedded);
        // Each variable with a default reads as its default when invalid, so that reading goes
        // on and every error is reported at once.
        let config = Config {
            listen,
            data_dir,
            database: database.unwrap_or_else(|| Database {
                url: String::new(),
                backend: Backend::Sqlite,
            }),
            platform_keys: read.parse("PLATFORM_KEY", PlatformKeys::parse),
            secrets_key: read.parse("SECRETS_KEY", parse_secrets_key),
            public_url: read.parse("PUBLIC_URL", parse_public_url),
            trusted_proxies: read.cidrs("TRUSTED_PROXIES"),
            platform_listen: read.parse("PLATFORM_LISTEN", socket_addr),
            allow_private_cidrs: read.cidrs("ALLOW_PRIVATE_CIDRS"),
            allow_http: read.required("ALLOW_HTTP", flag),
            extra_root_ca: read.parse("EXTRA_ROOT_CA", check_root_ca),
            client_certificate: read_client_certificate(&mut read),
            event_validation: read.required("EVENT_VALIDATION", Checking::parse),
            request_timeout: read.required("REQUEST_TIMEOUT", positive_duration),
            retry_schedule: read.required("RETRY_SCHEDULE", RetrySchedule::parse),
            auto_disable_after: read.required("AUTO_DISABLE_AFTER", positive_duration),
            rate_limit_max_wait: read.required("RATE_LIMIT_MAX_WAIT", positive_duration),
            smtp_url: read.parse("SMTP_URL", parse_smtp_url),
            mail_from: read.required("MAIL_FROM", parse_mail_address),
            retention: read.required("RETENTION", positive_duration),
            log_format: read.required("LOG_FORMAT", LogFormat::parse),
            log_filter: read_log_filter(&mut read),
            lease: read.required("LEASE", positive_duration),
            max_webhooks_per_tenant: read.required("MAX_WEBHOOKS_PER_TENANT", positive),
            max_in_flight_per_webhook: read.required("MAX_IN_FLIGHT_PER_WEBHOOK", positive),
            max_in_flight: read.required("MAX_IN_FLIGHT", positive),
            api_rate_limit: read.required("API_RATE_LIMIT", positive),
            rate_limit_ipv6_prefix: read.required("RATE_LIMIT_IPV6_PREFIX", ipv6_prefix),
            client_timeout: read.required("CLIENT_TIMEOUT", positive_duration),
            audit_retention: read.required("AUDIT_RETENTION", positive_duration),
            bootstrap: read.parse("BOOTSTRAP", flag).unwrap_or(embedded),
        };
        if !embedded {
            require_shared_keys(&mut read);
        }
        if !read.errors.is_empty() {
            return Err(ConfigErrors(read.errors));
        }
        let warnings = config.warnings(vars);
        Ok((config, warnings))
    }

    /// The effective settings as structured log fields, for the start-up log line. Keys and
    /// database passwords are left out.
    pub fn log_summary(&self) {
        let cidrs = |list: &[IpNet]| {
            list.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        tracing::info!(
            listen = %self.listen,
            platform_listen = ?self.platform_listen,
            database = %zivio_store::redact_url(&self.database.url),
            data_dir = %self.data_dir.display(),
            public_url = ?self.public_url.as_ref().map(Url::as_str),
            trusted_proxies = %cidrs(&self.trusted_proxies),
            allow_private_cidrs = %cidrs(&self.allow_private_cidrs),
            allow_http = self.allow_http,
            extra_root_ca = ?self.extra_root_ca,
            event_validation = ?self.event_validation,
            client_certificate_expires_at = ?self.client_certificate.as_ref().map(|c| c.expires_at.unix_timestamp()),
            request_timeout = %duration::format(self.request_timeout),
            max_attempts = self.retry_schedule.max_attempts(),
            auto_disable_after = %duration::format(self.auto_disable_after),
            rate_limit_max_wait = %duration::format(self.rate_limit_max_wait),
            smtp = %self.smtp_url.as_ref().map_or("off".to_owned(), |url| zivio_store::redact_url(url.as_str())),
            mail_from = %self.mail_from,
            retention = %duration::format(self.retention),
            audit_retention = %duration::format(self.audit_retention),
            lease = %duration::format(self.lease),
            max_webhooks_per_tenant = self.max_webhooks_per_tenant,
            max_in_flight_per_webhook = self.max_in_flight_per_webhook,
            max_in_flight = self.max_in_flight,
            api_rate_limit = self.api_rate_limit,
            rate_limit_ipv6_prefix = self.rate_limit_ipv6_prefix,
            client_timeout = %duration::format(self.client_timeout),
            "configuration"
        );
    }

    /// Risky settings and unknown variables, to be logged loudly at start-up.
    fn warnings(&self, vars: &BTreeMap<String, String>) -> Vec<String> {
        let mut warnings: Vec<String> = vars
            .keys()
            .filter_map(|key| key.strip_prefix(PREFIX))
            .filter(|name| !VARIABLES.iter().any(|(known, _)| known == name))
            .map(|name| format!("unknown variable {PREFIX}{name} is ignored (a typo?)"))
            .collect();
        if self.allow_http {
            warnings.push(
                "ZIVIO_WEBHOOKS_ALLOW_HTTP is on: webhook URLs may use plain http, so payloads \
                 and signatures can be read in transit. Use this for development only."
                    .to_owned(),
            );
        }
        if !self.allow_private_cidrs.is_empty() {
            let ranges: Vec<String> = self
                .allow_private_cidrs
                .iter()
                .map(ToString::to_string)
                .collect();
            warnings.push(format!(
                "ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS exempts {} from the public-address rule: \
                 webhooks may reach these internal networks.",
                ranges.join(", ")
            ));
        }
        if self.smtp_url.is_some() && self.public_url.is_none() {
            warnings.push(
                "ZIVIO_WEBHOOKS_SMTP_URL is set without ZIVIO_WEBHOOKS_PUBLIC_URL: links in mails \
                 point at the listen address, which recipients may not reach."
                    .to_owned(),
            );
        }
        warnings
    }
}

fn read_database(read: &mut Reader<'_>, data_dir: &std::path::Path) -> Option<Database> {
    let Some(url) = read.raw("DATABASE_URL").map(str::to_owned) else {
        return Some(Database {
            url: format!("sqlite://{}", data_dir.join("zivio.db").display()),
            backend: Backend::Sqlite,
        });
    };
    match zivio_store::backend_of(&url) {
        Some(backend) => Some(Database { url, backend }),
        None => {
            read.fail(
                "DATABASE_URL",
                format!(
                    "`{}` is not a database URL: expected sqlite://<path> or postgres://...",
                    zivio_store::redact_url(&url)
                ),
            );
            None
        }
    }
}

fn parse_public_url(raw: &str) -> Result<Url, String> {
    let mut url = Url::parse(raw).map_err(|_| format!("`{raw}` is not an absolute URL"))?;
    // A base under a path prefix (`https://corp.example/zivio`) must end with `/`, or joining
    // `admin/...` onto it would drop the prefix.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{raw}` must start with https:// (or http://)"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "`{raw}` must be a base URL without credentials, query or fragment"
        ));
    }
    Ok(url)
}

fn parse_smtp_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|_| "is not a URL: expected smtp://host:port".to_owned())?;
    if !matches!(url.scheme(), "smtp" | "smtps") || url.host().is_none() {
        return Err("expected smtp://host:port or smtps://host:port".to_owned());
    }
    Ok(url)
}

fn parse_mail_address(raw: &str) -> Result<String, String> {
    let valid = raw.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    }) && !raw
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c));
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "`{raw}` is not a plain email address such as webhooks@example.com"
        ))
    }
}

fn read_log_filter(read: &mut Reader<'_>) -> String {
    let filter = read
        .raw("LOG")
        .map(str::to_owned)
        .or_else(|| read.vars.get("RUST_LOG").cloned())
        .unwrap_or_else(|| "info".to_owned());
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&filter) {
        read.fail("LOG", format!("`{filter}` is not a log filter: {error}"));
    }
    filter
}

/// The extra root CA file must exist and hold at least one PEM certificate.
/// Both files or neither; each error names the variable of the file at fault.
fn read_client_certificate(read: &mut Reader) -> Option<ClientCertificate> {
    match (read.raw("CLIENT_CERT"), read.raw("CLIENT_KEY")) {
        (None, None) => None,
        (Some(_), None) => {
            read.fail("CLIENT_KEY", "is required with ZIVIO_WEBHOOKS_CLIENT_CERT: the private key of that certificate, as a PEM file");
            None
        }
        (None, Some(_)) => {
            read.fail("CLIENT_CERT", "is required with ZIVIO_WEBHOOKS_CLIENT_KEY: the certificate of that key, as a PEM file");
            None
        }
        (Some(certificate), Some(key)) => {
            match ClientCertificate::load(Path::new(certificate), Path::new(key)) {
                Ok(loaded) => Some(loaded),
                Err(ClientCertificateError::Certificate(message)) => {
                    read.fail("CLIENT_CERT", message);
                    None
                }
                Err(ClientCertificateError::Key(message)) => {
                    read.fail("CLIENT_KEY", message);
                    None
                }
            }
        }
    }
}

fn check_root_ca(raw: &str) -> Result<PathBuf, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let path = PathBuf::from(raw);
    let certificates = CertificateDer::pem_file_iter(&path)
        .map_err(|error| format!("cannot read `{raw}`: {error}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("`{raw}` is not a PEM certificate file: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("`{raw}` holds no PEM certificate"));
    }
    Ok(path)
}

/// Reads `KEY=VALUE` lines (blank lines and `#` comments ignored, values optionally quoted).
pub fn parse_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=VALUE", index + 1))?;
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        vars.insert(key.trim().to_owned(), unquoted.to_owned());
    }
    Ok(vars)
}

#[cfg(test)]
mod tests;
