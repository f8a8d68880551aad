//! `zivio-webhooks listen`: a receiver for development. It serves HTTPS on loopback with a
//! certificate it makes up (writing its CA for the service to trust) or plain HTTP, verifies
//! every request against the webhook's secret exactly as a receiver should, prints each event
//! readably, and can pass verified events on to a local app.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use zivio_core::duration;
use zivio_core::secret::SigningSecret;
use zivio_core::signing;

#[derive(clap::Args)]
pub struct ListenArgs {
    /// Where to listen (loopback).
    #[arg(long, env = "ZIVIO_LISTEN_ADDR", default_value = "127.0.0.1:9999")]
    addr: SocketAddr,
    /// Serve plain HTTP instead of HTTPS (the service must allow it: `serve --dev`).
    #[arg(long)]
    http: bool,
    /// Where to write the CA of the made-up certificate (give it to the service as
    /// ZIVIO_WEBHOOKS_EXTRA_ROOT_CA).
    #[arg(long, value_name = "FILE", default_value = "./zivio-listen-ca.pem")]
    ca_file: PathBuf,
    /// Pass each verified event on (same headers and body) to this URL, and answer with its
    /// status.
    #[arg(long, value_name = "URL", env = "ZIVIO_LISTEN_FORWARD")]
    forward: Option<String>,
    /// A file holding the `whsec_` secret (else the ZIVIO_WEBHOOK_SECRET variable).
    #[arg(long, value_name = "FILE", env = "ZIVIO_WEBHOOK_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// How far `webhook-timestamp` may be from now.
    #[arg(long, default_value = "5m", env = "ZIVIO_WEBHOOK_TOLERANCE")]
    tolerance: String,
}

struct Listener {
    secret: SigningSecret,
    tolerance_seconds: i64,
    forward: Option<String>,
    client: reqwest::Client,
}

pub async fn run(args: &ListenArgs) -> anyhow::Result<()> {
    let secret = crate::verify::read_secret(args.secret_file.as_deref())?;
    let tolerance = duration::parse(&args.tolerance)
        .map_err(|error| anyhow::anyhow!("--tolerance: {error}"))?;
    let listener = Arc::new(Listener {
        secret,
        tolerance_seconds: i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX),
        forward: args.forward.clone(),
        client: reqwest::Client::new(),
    });
    let socket = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = socket.local_addr()?;
    let tls = if args.http {
        println!("listening on http://{addr}/");
        None
    } else {
        let (ca, config) = tls_config()?;
        std::fs::write(&args.ca_file, ca)
            .with_context(|| format!("cannot write {}", args.ca_file.display()))?;
        println!(
            "listening on https://{addr}/ (CA in {}: start the service with ZIVIO_WEBHOOKS_EXTRA_ROOT_CA={})",
            args.ca_file.display(),
            args.ca_file.display()
        );
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    };
    if let Some(forward) = &args.forward {
        println!("verified events are passed on to {forward}");
    }
    loop {
        let (stream, _) = socket.accept().await?;
        let (listener, tls) = (listener.clone(), tls.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let listener = listener.clone();
                async move { Ok::<_, std::convert::Infallible>(listener.receive(request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(error) => {
                        println!("TLS handshake failed: {error}");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
        });
    }
}

impl Listener {
    async fn receive(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return answer(StatusCode::BAD_REQUEST, "the body could not be read"),
        };
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let verdict = signing::verify(
            &self.secret,
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            &body,
            now,
            self.tolerance_seconds,
        );
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let event_type = parsed
            .as_ref()
            .and_then(|v| v["type"].as_str())
            .unwrap_or("?");
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let check = match &verdict {
            Ok(()) => "signature valid".to_owned(),
            Err(reason) => format!("INVALID: {reason}"),
        };
        println!(
            "{time}  {} {}  {}  {event_type}  {check}",
            parts.method,
            parts.uri.path(),
            header("webhook-id").unwrap_or("(no webhook-id)")
        );
        match &parsed {
            Some(value) => println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            ),
            None => println!("{}", String::from_utf8_lossy(&body)),
        }
        if verdict.is_err() {
            // As receivers should: 5xx, so that an event signed during a rotation is retried.
            return answer(StatusCode::SERVICE_UNAVAILABLE, &check);
        }
        match &self.forward {
            None => answer(StatusCode::NO_CONTENT, ""),
            Some(url) => self.forward(url, &parts.headers, body).await,
        }
    }

    async fn forward(
        &self,
        url: &str,
        headers: &hyper::HeaderMap,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let mut request = self.client.post(url).body(body);
        for name in [
            "content-type",
            "user-agent",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        ] {
            if let Some(value) = headers.get(name).and_then(|value| value.to_str().ok()) {
                request = request.header(name, value);
            }
        }
        match request.send().await {
            Ok(response) => {
                println!("  passed on to {url}: {}", response.status());
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                answer(status, "")
            }
            Err(error) => {
                println!("  could not pass on to {url}: {error}");
                answer(StatusCode::BAD_GATEWAY, "the local app did not answer")
            }
        }
    }
}

fn answer(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

/// A CA made up for this run and a `localhost`/127.0.0.1 certificate it signs.
fn tls_config() -> anyhow::Result<(String, rustls::ServerConfig)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let authority_key = KeyPair::generate()?;
    let mut authority = CertificateParams::new(Vec::<String>::new())?;
    authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    authority.distinguished_name.push(
        DnType::CommonName,
        "zivio-webhooks listen (development only)",
    );
    authority.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let authority_pem = authority.self_signed(&authority_key)?.pem();
    let issuer = Issuer::new(authority, authority_key);
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    let server_cert = server.signed_by(&server_key, &issuer)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        server_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key)
        .context("the made-up certificate is not usable")?;
    Ok((authority_pem, config))
}
