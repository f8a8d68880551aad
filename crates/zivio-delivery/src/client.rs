//! The one HTTP client every attempt goes through: rustls (system roots plus the operator's
//! extra root CA), HTTP/1.1 only (several keep-alive connections per host, so webhooks sharing
//! a host do not share one connection), no redirects, no proxies from the environment, a whole-attempt timeout, and a resolver that vets every
//! address a host resolves to, at every new connection, so connections only ever go to vetted
//! addresses (DNS rebinding cannot work). IP-literal hosts skip resolvers; the engine vets them
//! before sending.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
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
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
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
