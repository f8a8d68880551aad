//! Hostile receivers on loopback: silence, a byte per second, an endless body, garbage instead
//! of HTTP, a connection reset mid-request, expired and wrong-host certificates, 200 after 10 s to
//! half the requests. Each attempt is recorded with the right outcome and error kind and retried
//! where the rules say so, a healthy webhook keeps its pace meanwhile, and the service's memory
//! stays bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use zivio_test_support::pki::TestCa;

use crate::support::api::{Api, Backend};
use crate::support::eventually;
use crate::support::receiver::{Receiver, Reply};
use crate::support::sending::WAIT;

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Accepts the connection and never says anything (no TLS handshake either).
    Silent,
    /// Answers one byte per second.
    Dribble,
    /// Answers 200 with a body that never ends.
    Endless,
    /// Answers bytes that are not HTTP, then closes.
    Garbage,
}

/// Serves `behaviour` (over TLS with `tls`) on a port of its own; returns its address.
async fn hostile(behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            match (behaviour, &tls) {
                (Behaviour::Silent, _) => held.push(tcp),
                (_, Some(config)) => {
                    let acceptor = TlsAcceptor::from(config.clone());
                    tokio::spawn(async move {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            misbehave(behaviour, stream).await;
                        }
                    });
                }
                (_, None) => {
                    tokio::spawn(misbehave(behaviour, tcp));
                }
            }
        }
    });
    addr
}

async fn misbehave<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    behaviour: Behaviour,
    mut stream: S,
) {
    let mut request = vec![0; 512];
    let _ = stream.read(&mut request).await;
    match behaviour {
        Behaviour::Silent => {}
        Behaviour::Dribble => {
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                // Real time: the engine's timeouts are measured on the machine's clock.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Behaviour::Endless => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "x".repeat(16 * 1024));
            while stream.write_all(chunk.as_bytes()).await.is_ok() {}
        }
        Behaviour::Garbage => {
            let _ = stream
                .write_all(b"SMTP? no: \x00\x01\x02 definitely not HTTP\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Resets (RST) a plain TCP connection after reading a little of the request.
async fn resetting() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let tcp: TcpStream = tcp;
                let mut first = [0u8; 16];
                let _ = tcp.readable().await;
                let _ = tcp.try_read(&mut first);
                let _ = tcp.set_zero_linger();
                drop(tcp);
            });
        }
    });
    addr
}

#[tokio::test]
async fn hostile_receivers_are_recorded_right_and_hurt_nobody_else() {
    let ca = TestCa::generate();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let healthy = Receiver::start(dir.path()).await;
    // The service trusts both the hostile servers' CA and the healthy receiver's.
    let both = dir.path().join("both.pem");
    std::fs::write(
        &both,
        format!(
            "{}\n{}",
            ca.pem,
            std::fs::read_to_string(&healthy.ca_path).unwrap()
        ),
    )
    .unwrap();
    let Some(api) = Api::start(
        Backend::Sqlite,
        &[
            ("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8"),
            ("ZIVIO_WEBHOOKS_EXTRA_ROOT_CA", both.to_str().unwrap()),
            ("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "2s"),
            ("ZIVIO_WEBHOOKS_RETRY_SCHEDULE", "1h"),
        ],
    )
    .await
    else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    // The hostile servers speak HTTP/1.1 by hand: they must not offer HTTP/2.
    let http1 = |config: Arc<rustls::ServerConfig>| {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    };
    let good = http1(ca.server("localhost", false));
    // (name, address, expected outcome: succeeded, error kind)
    let cases: Vec<(&str, SocketAddr, bool, Option<&str>)> = vec![
        (
            "silent",
            hostile(Behaviour::Silent, None).await,
            false,
            Some("timeout"),
        ),
        (
            "dribble",
            hostile(Behaviour::Dribble, Some(good.clone())).await,
            false,
            Some("timeout"),
        ),
        (
            "endless",
            hostile(Behaviour::Endless, Some(good.clone())).await,
            true,
            None,
        ),
        (
            "garbage",
            hostile(Behaviour::Garbage, Some(good.clone())).await,
            false,
            Some("connection"),
        ),
        ("reset", resetting().await, false, None),
        (
            "expired",
            hostile(
                Behaviour::Garbage,
                Some(http1(ca.server("localhost", true))),
            )
            .await,
            false,
            Some("tls"),
        ),
        (
            "wrong-host",
            hostile(
                Behaviour::Garbage,
                Some(http1(ca.server("wrong.example", false))),
            )
            .await,
            false,
            Some("tls"),
        ),
    ];
    let mut webhooks = Vec::new();
    for (name, addr, ..) in &cases {
        let body = json!({"name": name, "url": format!("https://{addr}/hook"), "events": ["*"]});
        let created = api.create_webhook(&key, "acme", body).await;
        webhooks.push(created["webhook"]["id"].as_str().unwrap().to_owned());
    }
    let body = json!({"name": "healthy", "url": healthy.url("/ok"), "events": ["*"]});
    api.create_webhook(&key, "acme", body).await;

    let started = tokio::time::Instant::now();
    let published = api
        .platform(
            reqwest::Method::POST,
            "acme/events",
            Some(json!({"type": "job.created", "resource": {"id": "1", "data": {"id": "1"}}})),
        )
        .await;
    assert_eq!(published.status, 202, "{}", published.text);
    let event = published.body["id"].as_str().unwrap().to_owned();
    healthy.wait_for("/ok", 1, WAIT).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the healthy webhook waited: {:?}",
        started.elapsed()
    );

    let store = api.store().await;
    let tenant = zivio_core::ids::TenantId::parse("acme").unwrap();
    for ((name, _, succeeded, kind), id) in cases.iter().zip(&webhooks) {
        let webhook = zivio_core::webhook::WebhookId::parse(id).unwrap();
        let attempt = eventually(WAIT, name, || async {
            let mut attempts = store
                .attempts_of(&tenant, &crate::support::event_id(&event), &webhook)
                .await
                .unwrap();
            attempts
                .pop()
                .ok_or_else(|| "no attempt recorded".to_owned())
        })
        .await;
        assert_eq!(attempt.succeeded, *succeeded, "{name}: {attempt:?}");
        match kind {
            Some(kind) => assert_eq!(
                attempt.error_kind.map(|kind| kind.as_str()),
                Some(*kind),
                "{name}: {attempt:?}"
            ),
            // A reset may surface while connecting or while sending, depending on timing.
            None if !succeeded => assert!(
                matches!(
                    attempt.error_kind.map(|kind| kind.as_str()),
                    Some("connection" | "connect")
                ),
                "{name}: {attempt:?}"
            ),
            None => {}
        }
        assert!(
            attempt.duration_ms <= 2_500,
            "{name}: the whole-attempt timeout holds: {attempt:?}"
        );
        if !succeeded {
            assert!(
                attempt.error_detail.is_some(),
                "{name}: a detail in plain words"
            );
            assert!(attempt.next_attempt_at.is_some(), "{name}: retried");
        }
        if *name == "endless" {
            assert!(
                attempt.response_truncated
                    && attempt.response_body.as_ref().unwrap().len() == 64 * 1024,
                "{name}"
            );
        }
    }
    // Peak memory of the service process stays small although one receiver sent without end.
    let status = std::fs::read_to_string(format!("/proc/{}/status", api.service.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
}

/// A receiver that answers 200 after 10 s to half the requests and at once to the others, under
/// the default 30 s request timeout: every attempt succeeds the first time (the slow half after
/// about 10 s), nothing is retried, and another webhook keeps its pace meanwhile.
#[tokio::test]
async fn a_receiver_slow_to_half_the_requests_is_waited_for_and_hurts_nobody_else() {
    let Some(setup) = crate::support::sending::setup(Backend::Sqlite, "1s", true).await else {
        return;
    };
    let slow = Reply::Delay(Duration::from_secs(10));
    let fast = Reply::Status(200);
    setup
        .receiver
        .script("/half", &[slow, fast, slow, fast, slow, fast]);
    let (half, _) = setup.webhook("/half").await;
    let mut events = Vec::new();
    for _ in 0..6 {
        events.push(setup.publish().await);
    }
    // Created afterwards: its event must arrive while the slow requests are still waiting.
    setup.webhook("/ok").await;
    let started = tokio::time::Instant::now();
    setup.publish().await;
    setup.receiver.wait_for("/ok", 1, WAIT).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the other webhook waited: {:?}",
        started.elapsed()
    );
    let mut durations = Vec::new();
    for event in &events {
        let attempts = setup.attempts(event, &half, 1).await;
        assert_eq!(attempts.len(), 1, "no retry: {attempts:?}");
        assert!(attempts[0].succeeded, "{:?}", attempts[0]);
        durations.push(attempts[0].duration_ms);
    }
    durations.sort_unstable();
    assert!(durations[..3].iter().all(|&ms| ms < 2_000), "{durations:?}");
    assert!(
        durations[3..]
            .iter()
            .all(|&ms| (9_900..15_000).contains(&ms)),
        "{durations:?}"
    );
}
