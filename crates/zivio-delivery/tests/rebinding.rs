//! DNS rebinding cannot work: a host name is resolved and vetted again at every attempt, so
//! an answer that changes from an allowed address to a forbidden one under a running engine
//! stops the next attempt before anything is sent (and a pooled connection to the earlier,
//! allowed address does not help). The engine runs in process on a real SQLite store with a
//! resolver whose answer the test changes; 127.0.0.2 plays a public address
//! (`allowed_private`), 127.0.0.1 stays forbidden.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use zivio_app::Resolver;
use zivio_core::secret::SigningSecret;

use support::{World, free_port, receiver};

/// Answers every name with whatever the test last set.
struct Switchable(Mutex<IpAddr>);

#[async_trait::async_trait]
impl Resolver for Switchable {
    async fn resolve(&self, _: &str, _: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(vec![*self.0.lock().unwrap()])
    }
}

#[tokio::test]
async fn an_answer_that_turns_forbidden_stops_the_next_attempt() {
    let allowed: IpAddr = "127.0.0.2".parse().unwrap();
    let forbidden: IpAddr = "127.0.0.1".parse().unwrap();
    let port = free_port(allowed);
    let received = receiver(SocketAddr::new(allowed, port), "500 Internal Server Error").await;
    let world = World::new(port, &SigningSecret::generate([3; 32])).await;
    let resolver = Arc::new(Switchable(Mutex::new(allowed)));
    let (stop, running) = world.start_engine(resolver.clone());

    // Attempt 1 reaches the allowed address (and is answered 500).
    let attempts = world.attempts(1).await;
    assert_eq!(attempts[0].response_status, Some(500));
    assert_eq!(received.count.load(Ordering::SeqCst), 1);
    // The name now resolves to a forbidden address: attempt 2 sends nothing.
    *resolver.0.lock().unwrap() = forbidden;
    world.set_clock(attempts[0].next_attempt_at.unwrap());
    let attempts = world.attempts(2).await;
    assert_eq!(
        attempts[1].error_kind.map(|kind| kind.as_str()),
        Some("refused_destination"),
        "{:?}",
        attempts[1]
    );
    assert!(
        attempts[1]
            .error_detail
            .as_deref()
            .unwrap()
            .contains("127.0.0.1"),
        "{:?}",
        attempts[1].error_detail
    );
    assert!(
        attempts[1].next_attempt_at.is_some(),
        "a refused destination is retried"
    );
    assert_eq!(
        received.count.load(Ordering::SeqCst),
        1,
        "nothing reached any address"
    );
    // Allowed again: attempt 3 is delivered.
    *resolver.0.lock().unwrap() = allowed;
    world.set_clock(attempts[1].next_attempt_at.unwrap());
    let attempts = world.attempts(3).await;
    assert!(attempts[2].succeeded, "{:?}", attempts[2]);
    assert_eq!(received.count.load(Ordering::SeqCst), 2);

    stop.cancel();
    running.await.unwrap();
    world.store.close().await;
}
