//! The fastest receiver we can write: HTTPS on loopback (hyper + rustls, HTTP/1.1 and HTTP/2,
//! keep-alive), answering 200 with an empty body at once and recording, per request, the path,
//! the event id (`webhook-id`) and the arrival time. Paths starting with `/hang` never answer
//! (the sender's timeout ends them); paths starting with `/refuse` are answered 400 (a
//! permanent failure).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::pki::TestCa;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub path: String,
    pub event_id: String,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    arrivals: Mutex<Vec<Arrival>>,
    count: AtomicUsize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    /// The CA that signed the receiver's certificate, as a PEM file.
    pub ca_path: PathBuf,
    pub ca: Arc<TestCa>,
    state: Arc<State>,
}

impl Receiver {
    /// Starts on 127.0.0.1:0 and writes its CA to `dir/receiver-ca.pem`.
    pub async fn start(dir: &Path) -> anyhow::Result<Receiver> {
        let ca = Arc::new(TestCa::generate());
        let ca_path = dir.join("receiver-ca.pem");
        std::fs::write(&ca_path, &ca.pem).context("write the receiver's CA")?;
        let acceptor = TlsAcceptor::from(ca.server("localhost", false));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let serving = state.clone();
        serve_https(listener, acceptor, move |request| {
            answer(serving.clone(), request)
        });
        Ok(Receiver {
            addr,
            ca_path,
            ca,
            state,
        })
    }

    /// `https://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Requests answered so far (hanging ones are not counted).
    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::Relaxed)
    }

    /// Everything recorded so far, leaving the record empty.
    pub fn take(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.state.arrivals.lock().expect("not poisoned"))
    }

    /// Waits until `count` requests were answered (in all, since start) and returns when the
    /// last of them arrived; an error after `within`.
    pub async fn wait_for(&self, count: usize, within: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        while self.count() < count {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {count} requests arrived within {within:?}",
                self.count()
            );
            // Real time: requests arrive from another process; counted every millisecond.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let arrivals = self.state.arrivals.lock().expect("not poisoned");
        Ok(arrivals
            .iter()
            .map(|arrival| arrival.at)
            .max()
            .unwrap_or_else(Instant::now))
    }
}

/// Serves HTTPS on `listener` until the runtime ends: each connection is TLS-accepted and its
/// requests (HTTP/1.1 or HTTP/2, keep-alive) answered by `answer`.
pub fn serve_https<F, Fut, B>(listener: TcpListener, acceptor: TlsAcceptor, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, hyper::Error>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).into_fallible().await {
                    Ok(tls) => tls,
                    Err((_, tcp)) => return linger(tcp).await,
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), hyper::service::service_fn(answer))
                    .await;
            });
        }
    });
}

/// Closes a connection whose handshake failed as careful servers do: the alert already sent,
/// our side is shut and what the client still sends is read and dropped for a moment. Closing
/// with unread data would reset the connection, and the client could see the reset instead of
/// the alert that says why it was refused.
async fn linger(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0; 4096];
    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(1..)) {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    let event_id = request
        .headers()
        .get("webhook-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    request.into_body().collect().await?;
    let at = Instant::now();
    if path.starts_with("/hang") {
        std::future::pending::<()>().await;
    }
    let refused = path.starts_with("/refuse");
    state
        .arrivals
        .lock()
        .expect("not poisoned")
        .push(Arrival { path, event_id, at });
    state.count.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Empty::new());
    if refused {
        *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
    }
    Ok(response)
}
