//! Test support: the real `zivio-webhooks` binary started as a child process on port 0, with its
//! output captured and its logs (JSON lines) parsed to learn the bound address.

pub mod api;
pub mod browser;
pub mod receiver;
pub mod sending;
pub mod service;
pub mod smtp;

use std::future::Future;
use std::time::Duration;

/// Asks `check` until it answers `Ok`, every 50 ms for at most `within`, and returns its answer;
/// panics with `what` and the last `Err` it gave. The one place where the tests wait in real time
/// for the service (a separate process, on the machine's clock) to catch up.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(answer) => return answer,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {within:?} ({last})"
            ),
        }
        // Real time: the service is another process, whose progress is looked at every 50 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An event id the service returned, as the store takes it.
pub fn event_id(text: &str) -> zivio_core::event::EventId {
    zivio_core::event::EventId::parse(text).expect("an event id")
}
