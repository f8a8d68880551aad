//! Retries follow the service's clock, which these tests set instead of waiting: a retry goes
//! out when the clock reaches its time, and one that falls due after its webhook was disabled
//! or its owner deactivated is not sent at all.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use time::Duration;
use zivio_app::{Clock, Resolver};
use zivio_core::delivery::DeliveryState;
use zivio_core::event::EventId;
use zivio_core::secret::SigningSecret;
use zivio_core::webhook::{Disabled, DisabledReason};

use support::{EVENT_ID, World, free_port, receiver};

/// Answers every name with 127.0.0.2, which plays a public address.
struct Public;

#[async_trait::async_trait]
impl Resolver for Public {
    async fn resolve(&self, _: &str, _: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(vec!["127.0.0.2".parse().unwrap()])
    }
}

#[tokio::test]
async fn a_retry_goes_out_when_the_clock_reaches_it() {
    let address: IpAddr = "127.0.0.2".parse().unwrap();
    let port = free_port(address);
    let received = receiver(SocketAddr::new(address, port), "503 Service Unavailable").await;
    let world = World::new(port, &SigningSecret::generate([3; 32])).await;
    let (stop, running) = world.start_engine(Arc::new(Public));

    let first = world.attempts(1).await;
    let due = first[0].next_attempt_at.expect("a 503 is retried");
    assert!(due > world.clock.now(), "later than the first attempt");
    world.set_clock(due);
    let attempts = world.attempts(2).await;
    assert!(attempts[1].succeeded, "{:?}", attempts[1]);
    assert_eq!(attempts[1].created_at, due, "sent at the clock's time");
    assert_eq!(received.requests.lock().unwrap().len(), 2);

    stop.cancel();
    running.await.unwrap();
    world.store.close().await;
}

#[tokio::test]
async fn a_retry_falling_due_after_its_webhook_was_disabled_is_not_sent() {
    nothing_after(|world| async move {
        let mut webhook = world.webhook.clone();
        let now = world.clock.now();
        webhook.disabled = Some(Disabled {
            reason: DisabledReason::Manual,
            by: Some(webhook.owner.clone()),
            at: now,
        });
        webhook.updated_at = now;
        let audit = zivio_core::audit::AuditEntry::new(
            &world.tenant,
            now,
            "u1",
            zivio_core::audit::AuditAction::WebhookDisabled,
        );
        world.store.update_webhook(&webhook, &audit).await.unwrap();
        world
    })
    .await;
}

#[tokio::test]
async fn a_retry_falling_due_after_its_owner_was_deactivated_is_not_sent() {
    nothing_after(|world| async move {
        world.put_user("u1", false).await;
        world
    })
    .await;
}

/// The first attempt fails; `change` then happens, and the clock moves past the retry's time.
/// The proof that the retry was passed over, not just late: the engine sends one request at a
/// time and claims due work oldest first, so a later event to another webhook (the barrier)
/// goes out only after the retry would have.
async fn nothing_after<F, Fut>(change: F)
where
    F: FnOnce(World) -> Fut,
    Fut: Future<Output = World>,
{
    let address: IpAddr = "127.0.0.2".parse().unwrap();
    let port = free_port(address);
    let received = receiver(SocketAddr::new(address, port), "503 Service Unavailable").await;
    let secret = SigningSecret::generate([3; 32]);
    let world = World::new(port, &secret).await;
    let (stop, running) = world.start_engine_sending_at_most(Arc::new(Public), 1);
    let first = world.attempts(1).await;
    let due = first[0].next_attempt_at.expect("a 503 is retried");

    let world = change(world).await;
    world.put_user("u2", true).await;
    let url = format!("http://hook.example:{port}/barrier");
    let barrier = world.add_webhook(2, "u2", &url, &secret).await;
    world.set_clock(due + Duration::seconds(1));
    world.queue_event("evt_barrier", &barrier.id).await;
    world.set_clock(due + Duration::seconds(2));
    world.attempts_of("evt_barrier", &barrier.id, 1).await;

    let paths: Vec<String> = received
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|request| request.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/in", "/barrier"], "no retry before the barrier");
    let deliveries = world
        .store
        .deliveries_of_event(&world.tenant, &EventId::parse(EVENT_ID).unwrap())
        .await
        .unwrap();
    assert_eq!(deliveries[0].state, DeliveryState::Cancelled);
    assert_eq!(world.attempts(1).await.len(), 1);

    stop.cancel();
    running.await.unwrap();
    world.store.close().await;
}
