//! The one HTTP client every attempt goes through: rustls (system roots plus the operator's
//! extra root CA), HTTP/1.1 only (several keep-alive connections per host, so webhooks sharing
//! a host do not share one connection), no redirects, no proxies from the environment, a whole-attempt timeout, and a resolver that vets every
//! address a host resolves to, at every new connection, so connections only ever go to vetted
//! addresses (DNS rebinding cannot work). IP-literal hosts skip resolvers; the engine vets them
//! before sending. With a client certificate configured, every connection offers it to
//! receivers that ask for one (mutual TLS).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use zivio_app::Resolver;
use zivio_core::url_policy::{UrlError, UrlPolicy};

/// Why building the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the extra root certificates in {path}: {detail}")]
    RootCa { path: String, detail: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// The certificate this deployment presents to receivers that ask for one, with its key.
pub struct ClientCertificate {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// When the chain stops being valid: the earliest expiry of its certificates.
    pub expires_at: OffsetDateTime,
}

/// What is wrong with a client certificate pair, by file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientCertificateError {
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    Key(String),
}

impl Clone for ClientCertificate {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            expires_at: self.expires_at,
        }
    }
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("certificates", &self.chain.len())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Reads a PEM certificate chain (the client's certificate first) and its PEM private key,
    /// and makes sure the key belongs to the certificate.
    pub fn load(certificate: &Path, key: &Path) -> Result<Self, ClientCertificateError> {
        let cert_error = |detail: String| {
            ClientCertificateError::Certificate(format!("`{}`: {detail}", certificate.display()))
        };
        let chain = CertificateDer::pem_file_iter(certificate)
            .map_err(|error| cert_error(format!("cannot be read: {error}")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| cert_error(format!("is not a PEM certificate file: {error}")))?;
        if chain.is_empty() {
            return Err(cert_error("holds no PEM certificate".to_owned()));
        }
        // The chain stops working when its first certificate expires, intermediates included.
        let mut expires_at = None;
        for certificate in &chain {
            let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
                .map_err(|error| cert_error(format!("holds an unreadable certificate: {error}")))?;
            let not_after =
                OffsetDateTime::from_unix_timestamp(parsed.validity().not_after.timestamp())
                    .map_err(|error| cert_error(format!("has an impossible expiry: {error}")))?;
            expires_at = Some(expires_at.map_or(not_after, |earliest: OffsetDateTime| {
                earliest.min(not_after)
            }));
        }
        let expires_at = expires_at.expect("the chain is not empty");
        let key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
            ClientCertificateError::Key(format!(
                "`{}` is not a readable PEM private key: {error}",
                key.display()
            ))
        })?;
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |error| {
                ClientCertificateError::Key(format!(
                    "the key does not belong to the certificate in `{}`: {error}",
                    certificate.display()
                ))
            },
        )?;
        Ok(Self {
            chain,
            key,
            expires_at,
        })
    }
}

/// How long before its expiry the log warns about the client certificate.
pub const EXPIRY_WARNING: time::Duration = time::Duration::days(30);

/// The warning to log about a client certificate expiring at `expires_at`, if it is due.
pub fn expiry_warning(expires_at: OffsetDateTime, now: OffsetDateTime) -> Option<String> {
    let left = expires_at - now;
    let at = expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| expires_at.to_string());
    if left <= time::Duration::ZERO {
        Some(format!(
            "the client certificate (ZIVIO_WEBHOOKS_CLIENT_CERT) expired at {at}: receivers that require one refuse every delivery; renew it and restart"
        ))
    } else if left <= EXPIRY_WARNING {
        Some(format!(
            "the client certificate (ZIVIO_WEBHOOKS_CLIENT_CERT) expires at {at}, in {} days: renew it and restart before then",
            left.whole_days()
        ))
    } else {
        None
    }
}

/// The resolver's refusal, found again in a failed request's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub UrlError);

/// A host name that could not be resolved, found again in a failed request's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{host} could not be resolved: {source}")]
pub struct Unresolved {
    pub host: String,
    #[source]
    pub source: std::io::Error,
}

/// Resolves `host` and vets every address: the check made at every attempt and every new
/// connection.
pub async fn resolve_vetted(
    resolver: &dyn Resolver,
    policy: &UrlPolicy,
    host: &str,
) -> Result<Vec<std::net::IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let addresses = resolver
        .resolve(host, 0)
        .await
        .map_err(|source| Unresolved {
            host: host.to_owned(),
            source,
        })?;
    policy.vet(host, &addresses).map_err(Refused)?;
    Ok(addresses)
}

pub fn build(
    policy: UrlPolicy,
    resolver: Arc<dyn Resolver>,
    extra_root_ca: Option<&Path>,
    client_certificate: Option<&ClientCertificate>,
    timeout: Duration,
    max_in_flight: usize,
) -> Result<reqwest::Client, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra_roots = match extra_root_ca {
        Some(path) => read_roots(path)?,
        None => Vec::new(),
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(|error| ClientError::Tls(error.to_string()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut tls = match client_certificate {
        Some(certificate) => builder
            .with_client_auth_cert(certificate.chain.clone(), certificate.key.clone_key())
            .map_err(|error| ClientError::Tls(error.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(Arc::new(VettingResolver { policy, resolver }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        // Every connection that was needed at once may stay open: with HTTP/1.1 a connection
        // closed after its request means a new TLS handshake for the next one.
        .pool_max_idle_per_host(max_in_flight)
        .tcp_nodelay(true)
        .build()?)
}

fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let failed = |detail: String| ClientError::RootCa {
        path: path.display().to_string(),
        detail,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|error| failed(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(error.to_string()))
}

/// Resolves with the service's resolver and refuses the host unless every address is allowed.
struct VettingResolver {
    policy: UrlPolicy,
    resolver: Arc<dyn Resolver>,
}

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let resolver = self.resolver.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = resolve_vetted(resolver.as_ref(), &policy, &host).await?;
            let addrs: Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_expiry_warning_starts_thirty_days_ahead() {
        let expires = datetime!(2027-01-31 00:00 UTC);
        assert_eq!(
            expiry_warning(expires, datetime!(2026-12-31 23:59 UTC)),
            None
        );
        let soon = expiry_warning(expires, datetime!(2027-01-01 00:00 UTC)).unwrap();
        assert!(soon.contains("in 30 days"), "{soon}");
        let past = expiry_warning(expires, datetime!(2027-02-01 00:00 UTC)).unwrap();
        assert!(past.contains("expired"), "{past}");
    }
}
