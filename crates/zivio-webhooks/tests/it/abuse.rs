//! Abuse limits: API keys are rate limited (429 with `Retry-After`), and a client that sends
//! its body too slowly is cut off instead of holding a request open.

use std::time::Duration;

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::api::{Answer, Api, Backend, problem};

#[tokio::test]
async fn api_keys_are_rate_limited_and_slow_bodies_cut_off() {
    let Some(api) = Api::start(
        Backend::Sqlite,
        &[
            ("ZIVIO_WEBHOOKS_API_RATE_LIMIT", "5"),
            ("ZIVIO_WEBHOOKS_CLIENT_TIMEOUT", "1s"),
        ],
    )
    .await
    else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let other = api.issue_key("acme", "u1").await;
    let (served, limited) = until_limited(&api, &key, 200).await;
    assert!(served >= 5, "only {served} of a burst of 5 served");
    problem(&limited, 429);
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        api.v4(&other, "acme", Method::GET, "/v4/webhooks", None)
            .await
            .status,
        200,
        "another key has its own budget"
    );
    // Unknown keys are limited too, before any lookup.
    let (refused, limited) = until_limited(&api, "zk_guess", 401).await;
    assert!(refused >= 5, "only {refused} of a burst of 5 answered");
    problem(&limited, 429);

    // A body that never finishes: answered (and closed) after the client timeout.
    let mut stream = tokio::net::TcpStream::connect(api.service.addr)
        .await
        .unwrap();
    let platform_key = api.var("ZIVIO_WEBHOOKS_PLATFORM_KEY").unwrap().to_owned();
    let head = format!(
        "POST /platform/v4/tenants/acme/events HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {platform_key}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"type\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = vec![0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers instead of waiting forever")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Sends `GET /v4/webhooks` with `key` until it is answered 429; returns how many were answered
/// `status` before, and the 429. The budget is 5 a second with a burst of 5: in `t` seconds at
/// most 5 + 5t pass (counted against the time taken, since a busy machine sends slowly).
async fn until_limited(api: &Api, key: &str, status: u16) -> (usize, Answer) {
    let started = tokio::time::Instant::now();
    for answered in 0..100 {
        let answer = api.v4(key, "acme", Method::GET, "/v4/webhooks", None).await;
        if answer.status == 429 {
            let allowed = 5.0 + 5.0 * started.elapsed().as_secs_f64();
            assert!(
                answered as f64 <= allowed.ceil(),
                "{answered} answered in {:?}",
                started.elapsed()
            );
            return (answered, answer);
        }
        assert_eq!(answer.status, status, "{}", answer.text);
    }
    panic!("100 requests without a 429");
}
