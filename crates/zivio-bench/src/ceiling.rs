//! The raw ceiling: the bench receiver driven directly, for a few seconds, by a client that does
//! nothing but send signed requests like the service's (the same body, the Standard Webhooks
//! headers, an HMAC-SHA256 signature computed per request over `id.timestamp.body`) over
//! keep-alive connections, back to back. The ceiling used for ratios is the best run of an
//! optimal client: hyper's own HTTP/1.1 connections driven by hand (and one hyper HTTP/2
//! connection). The same load sent through reqwest, the service's own client, is reported
//! beside it for information: it is what the service could reach with that client if delivering
//! cost nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zivio_core::secret::SigningSecret;

use crate::report::Report;
use crate::service::example_event;
use zivio_test_support::receiver::Receiver;

/// How long each run lasts.
const LENGTH: Duration = Duration::from_secs(5);
/// The service's `user-agent` (`zivio_delivery::USER_AGENT`).
const USER_AGENT: &str = "Zivio-Webhooks/1.0";
const PATH: &str = "/ceiling";

/// One way of driving the receiver.
#[derive(Clone, Copy, Debug)]
enum Client {
    /// hyper HTTP/1.1 connections, each sending one request at a time, back to back.
    HyperHttp1 { connections: usize },
    /// One hyper HTTP/2 connection carrying `streams` requests at a time.
    HyperHttp2 { streams: usize },
    /// reqwest (with rustls), the service's own client, with `senders` requests at a time
    /// (a connection each over HTTP/1.1, one connection over HTTP/2).
    Reqwest { http1: bool, senders: usize },
}

/// The optimal clients: the best of them is the ceiling. On the 2-core development machine
/// 32, 64, 128 and 256 HTTP/1.1 connections were tried: 64 and 128 were the fastest (by less
/// than the noise), HTTP/2 less than half as fast.
const OPTIMAL: [Client; 3] = [
    Client::HyperHttp1 { connections: 64 },
    Client::HyperHttp1 { connections: 128 },
    Client::HyperHttp2 { streams: 64 },
];

/// The service's own client, for information.
const SERVICE_CLIENT: [Client; 2] = [
    Client::Reqwest {
        http1: true,
        senders: 64,
    },
    Client::Reqwest {
        http1: false,
        senders: 64,
    },
];

impl Client {
    fn name(self) -> String {
        match self {
            Client::HyperHttp1 { connections } => {
                format!("hyper HTTP/1.1, {connections} connections")
            }
            Client::HyperHttp2 { streams } => {
                format!("hyper HTTP/2, 1 connection, {streams} streams")
            }
            Client::Reqwest {
                http1: true,
                senders,
            } => format!("via reqwest (service's), HTTP/1.1, {senders} conns"),
            Client::Reqwest {
                http1: false,
                senders,
            } => format!("via reqwest (service's), HTTP/2, {senders} streams"),
        }
    }
}

/// Measures the ceiling and reports every run; the best optimal run becomes `report.ceiling`,
/// so that the service's client runs print their ratio to it.
pub async fn measure(receiver: &Receiver, report: &mut Report) -> anyhow::Result<()> {
    let mut best: f64 = 0.0;
    for client in OPTIMAL {
        let rate = run(receiver, client).await?;
        report.add("ceiling", None, client.name(), rate, "requests/s", None);
        best = best.max(rate);
    }
    report.ceiling = Some(best);
    report.add(
        "ceiling",
        None,
        "raw ceiling: the best of the hyper runs",
        best,
        "requests/s",
        None,
    );
    for client in SERVICE_CLIENT {
        let rate = run(receiver, client).await?;
        report.add("ceiling", None, client.name(), rate, "requests/s", None);
    }
    Ok(())
}

/// One run of `LENGTH`: requests answered per second.
async fn run(receiver: &Receiver, client: Client) -> anyhow::Result<f64> {
    let signed = Signed::new(receiver)?;
    let rate = match client {
        Client::HyperHttp1 { connections } => hyper_http1(receiver, &signed, connections).await,
        Client::HyperHttp2 { streams } => hyper_http2(receiver, &signed, streams).await,
        Client::Reqwest { http1, senders } => reqwest(receiver, &signed, http1, senders).await,
    };
    receiver.take();
    rate.map_err(|error| error.context(client.name()))
}

/// What every request carries, like the service's: the same body, signed with a secret.
#[derive(Clone)]
struct Signed {
    secret: SigningSecret,
    body: Bytes,
    host: HeaderValue,
}

impl Signed {
    fn new(receiver: &Receiver) -> anyhow::Result<Signed> {
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "invoice.paid",
            "timestamp": "2026-11-27T12:00:00Z",
            "data": example_event()["resource"]["data"],
        }))?;
        Ok(Signed {
            secret: SigningSecret::generate([7; 32]),
            body: Bytes::from(body),
            host: HeaderValue::try_from(receiver.addr.to_string())?,
        })
    }

    /// The headers of request `sent` of `sender`, signed now.
    fn headers(&self, sender: usize, sent: u64) -> anyhow::Result<HeaderMap> {
        let id = format!("evt_ceiling_{sender}_{sent}");
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = zivio_core::signing::sign(&self.secret, &id, timestamp, &self.body);
        let mut headers = HeaderMap::with_capacity(6);
        let header = HeaderName::from_static;
        for (name, value) in [
            ("content-type", HeaderValue::from_static("application/json")),
            ("user-agent", HeaderValue::from_static(USER_AGENT)),
            ("webhook-id", HeaderValue::try_from(id)?),
            ("webhook-timestamp", HeaderValue::from(timestamp)),
            ("webhook-signature", HeaderValue::try_from(signature)?),
        ] {
            headers.insert(header(name), value);
        }
        Ok(headers)
    }

    /// Request `sent` of `sender` for a hyper connection (origin-form, with its `host`).
    fn request(&self, sender: usize, sent: u64) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(PATH)
            .body(Full::new(self.body.clone()))?;
        *request.headers_mut() = self.headers(sender, sent)?;
        request
            .headers_mut()
            .insert(hyper::header::HOST, self.host.clone());
        Ok(request)
    }
}

/// A TLS configuration trusting the receiver's CA and offering `alpn`.
fn tls_config(receiver: &Receiver, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(receiver.ca.pem.as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(tls)
}

/// A TLS connection to the receiver (TCP without Nagle, as the service's).
async fn connect(
    receiver: &Receiver,
    connector: &TlsConnector,
) -> anyhow::Result<TokioIo<TlsStream<TcpStream>>> {
    let tcp = TcpStream::connect(receiver.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector
        .connect(ServerName::from(receiver.addr.ip()), tcp)
        .await?;
    Ok(TokioIo::new(tls))
}

/// Opens `count` connections at once (before the clock starts).
async fn connect_all(
    receiver: &Receiver,
    alpn: &[u8],
    count: usize,
) -> anyhow::Result<Vec<TokioIo<TlsStream<TcpStream>>>> {
    let connector = TlsConnector::from(Arc::new(tls_config(receiver, &[alpn])?));
    let mut connecting = Vec::with_capacity(count);
    for _ in 0..count {
        connecting.push(connect(receiver, &connector));
    }
    let mut connections = Vec::with_capacity(count);
    for connection in connecting {
        connections.push(connection.await?);
    }
    Ok(connections)
}

/// Waits for every sender and returns the requests answered per second since `started`.
async fn rate(
    receiver: &Receiver,
    base: usize,
    started: Instant,
    mut senders: JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<f64> {
    while let Some(done) = senders.join_next().await {
        done??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((receiver.count() - base) as f64 / elapsed)
}

/// `connections` hyper HTTP/1.1 connections, each with a task that sends requests back to back
/// and reads each (empty) response body before the next.
async fn hyper_http1(
    receiver: &Receiver,
    signed: &Signed,
    connections: usize,
) -> anyhow::Result<f64> {
    let connections = connect_all(receiver, b"http/1.1", connections).await?;
    let base = receiver.count();
    let started = Instant::now();
    let until = started + LENGTH;
    let mut senders = JoinSet::new();
    for (sender, io) in connections.into_iter().enumerate() {
        let signed = signed.clone();
        senders.spawn(async move {
            let (mut send, connection) = hyper::client::conn::http1::handshake(io).await?;
            // Its own task, as hyper suggests: driving it in the sender's task cost more CPU
            // per request here.
            let driving = tokio::spawn(connection);
            let mut sent = 0u64;
            while Instant::now() < until {
                send.ready().await?;
                let response = send.send_request(signed.request(sender, sent)?).await?;
                anyhow::ensure!(response.status().is_success(), "{}", response.status());
                response.into_body().collect().await?;
                sent += 1;
            }
            drop(send);
            Ok(driving.await??)
        });
    }
    rate(receiver, base, started, senders).await
}

/// One hyper HTTP/2 connection with `streams` tasks sending requests on it back to back.
async fn hyper_http2(receiver: &Receiver, signed: &Signed, streams: usize) -> anyhow::Result<f64> {
    let io = connect_all(receiver, b"h2", 1).await?.remove(0);
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
    let driving = tokio::spawn(connection);
    let base = receiver.count();
    let started = Instant::now();
    let until = started + LENGTH;
    let mut senders = JoinSet::new();
    for sender in 0..streams {
        let (signed, mut send) = (signed.clone(), send.clone());
        senders.spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < until {
                send.ready().await?;
                let response = send.send_request(signed.request(sender, sent)?).await?;
                anyhow::ensure!(response.status().is_success(), "{}", response.status());
                response.into_body().collect().await?;
                sent += 1;
            }
            Ok(())
        });
    }
    drop(send);
    let rate = rate(receiver, base, started, senders).await?;
    driving.await??;
    Ok(rate)
}

/// reqwest with `senders` tasks sending requests back to back, as the service's client would:
/// a pool of keep-alive HTTP/1.1 connections, or one HTTP/2 connection (ALPN). Connections are
/// opened on the clock, as the service's are.
async fn reqwest(
    receiver: &Receiver,
    signed: &Signed,
    http1: bool,
    senders: usize,
) -> anyhow::Result<f64> {
    let alpn: &[&[u8]] = match http1 {
        true => &[b"http/1.1"],
        false => &[b"h2", b"http/1.1"],
    };
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(receiver, alpn)?)
        .pool_max_idle_per_host(senders)
        .tcp_nodelay(true)
        .no_proxy()
        .build()?;
    let url = receiver.url(PATH);
    let base = receiver.count();
    let started = Instant::now();
    let until = started + LENGTH;
    let mut tasks = JoinSet::new();
    for sender in 0..senders {
        let (client, signed, url) = (client.clone(), signed.clone(), url.clone());
        tasks.spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < until {
                let response = client
                    .post(&url)
                    .headers(signed.headers(sender, sent)?)
                    .body(signed.body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(response.status().is_success(), "{}", response.status());
                response.bytes().await?;
                sent += 1;
            }
            Ok(())
        });
    }
    rate(receiver, base, started, tasks).await
}
