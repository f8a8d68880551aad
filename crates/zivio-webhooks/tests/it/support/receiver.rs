//! A real HTTPS receiver on loopback: a test CA (written out for `ZIVIO_WEBHOOKS_EXTRA_ROOT_CA`),
//! a leaf for 127.0.0.1 and localhost, HTTP/1.1 and HTTP/2, scripted answers per path, and a
//! record of every request.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use zivio_test_support::pki::TestCa;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
    /// When the request's head arrived.
    pub at: std::time::Instant,
}

/// How to answer one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Answer 200 after this long.
    Delay(Duration),
    /// Answer 200 with a body of this many bytes.
    Large(usize),
    /// Answer with this status and `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    /// The CA that signed the receiver's certificate, as PEM.
    pub ca_path: PathBuf,
    state: Arc<State>,
}

impl Receiver {
    /// Starts on 127.0.0.1:0 and writes its CA to `dir/receiver-ca.pem`.
    pub async fn start(dir: &Path) -> Receiver {
        Self::start_with(dir, None).await
    }

    /// [`Receiver::start`] admitting only clients that present a certificate of `clients`
    /// (mutual TLS).
    pub async fn start_requiring_clients_of(dir: &Path, clients: &TestCa) -> Receiver {
        Self::start_with(dir, Some(clients)).await
    }

    async fn start_with(dir: &Path, clients: Option<&TestCa>) -> Receiver {
        let ca = TestCa::generate();
        let ca_path = dir.join("receiver-ca.pem");
        std::fs::write(&ca_path, &ca.pem).unwrap();
        let config = match clients {
            None => ca.server("localhost", false),
            Some(clients) => ca.server_requiring_clients_of("localhost", clients),
        };
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let serving = state.clone();
        zivio_test_support::receiver::serve_https(listener, acceptor, move |request| {
            answer(serving.clone(), request)
        });
        Receiver {
            addr,
            ca_path,
            state,
        }
    }

    /// `https://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The next requests to `path` get these answers, in order; after that, 200.
    pub fn script(&self, path: &str, replies: &[Reply]) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert(path.to_owned(), replies.iter().copied().collect());
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` received `count` requests; panics after `within`.
    pub async fn wait_for(&self, path: &str, count: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.state.arrived.notified();
            let received = self.received(path);
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{path}: {} of {count} requests arrived within {within:?}",
                    self.received(path).len()
                );
            }
        }
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let at = std::time::Instant::now();
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let body = request.into_body().collect().await?.to_bytes().to_vec();
    let reply = state
        .scripts
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    state.received.lock().unwrap().push(Received {
        path,
        headers,
        body,
        at,
    });
    state.arrived.notify_waiters();
    let mut body = Bytes::from_static(b"{\"received\":true}");
    let status = match reply {
        Some(Reply::Delay(delay)) => {
            // Real time: a slow receiver, as the service's real client sees it.
            tokio::time::sleep(delay).await;
            200
        }
        Some(Reply::Large(size)) => {
            body = Bytes::from(vec![b'x'; size]);
            200
        }
        Some(Reply::Status(status)) => status,
        Some(Reply::RetryAfter(status, _)) => status,
        None => 200,
    };
    let mut response = Response::builder().status(status);
    if let Some(Reply::RetryAfter(_, seconds)) = reply {
        response = response.header("retry-after", seconds.to_string());
    }
    if (300..400).contains(&status) {
        response = response.header("location", "https://elsewhere.example/");
    }
    Ok(response.body(Full::new(body)).unwrap())
}
