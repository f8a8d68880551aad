//! Retries follow the service's clock, which these tests set instead of waiting (retries are an
//! hour apart: one is sent within a test only if the engine follows the test's clock). And a
//! retry already claimed when its webhook is disabled or its owner deactivated is not sent: the
//! engine checks again just before sending.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use time::Duration;
use zivio_app::{Clock, Resolver};
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::delivery::DeliveryState;
use zivio_core::event::EventId;
use zivio_core::ids::TenantId;
use zivio_core::secret::SigningSecret;
use zivio_core::webhook::{Disabled, DisabledReason, Webhook};
use zivio_store::Store;

use support::{EVENT_ID, World, admin, free_port, receiver};

/// What happens to the first webhook while its retry is being sent.
#[derive(Clone)]
enum Change {
    Disable(Box<Webhook>),
    DeactivateOwner,
}

/// Resolves every name to 127.0.0.2, which plays a public address. Once armed, the next
/// resolution (vetting a send already claimed, before its pre-send check) commits `change`
/// first.
struct Resolving {
    store: Arc<dyn Store>,
    tenant: TenantId,
    change: Option<Change>,
    armed: AtomicBool,
    changed: AtomicBool,
}

#[async_trait::async_trait]
impl Resolver for Resolving {
    async fn resolve(&self, _: &str, _: u16) -> std::io::Result<Vec<IpAddr>> {
        if self.armed.swap(false, Ordering::SeqCst) {
            match &self.change {
                Some(Change::Disable(webhook)) => {
                    let audit = AuditEntry::new(
                        &self.tenant,
                        webhook.updated_at,
                        "u1",
                        AuditAction::WebhookDisabled,
                    );
                    self.store.update_webhook(webhook, &audit).await.unwrap();
                }
                Some(Change::DeactivateOwner) => {
                    let at = time::OffsetDateTime::UNIX_EPOCH;
                    let owner = admin("u1", false);
                    self.store
                        .upsert_user(&self.tenant, &owner, at)
                        .await
                        .unwrap();
                }
                None => {}
            }
            self.changed.store(true, Ordering::SeqCst);
        }
        Ok(vec!["127.0.0.2".parse().unwrap()])
    }
}

fn resolving(world: &World, change: Option<Change>) -> Arc<Resolving> {
    Arc::new(Resolving {
        store: world.store.clone(),
        tenant: world.tenant.clone(),
        change,
        armed: AtomicBool::new(false),
        changed: AtomicBool::new(false),
    })
}

#[tokio::test]
async fn a_retry_goes_out_when_the_clock_reaches_it() {
    let address: IpAddr = "127.0.0.2".parse().unwrap();
    let port = free_port(address);
    let received = receiver(SocketAddr::new(address, port), "503 Service Unavailable").await;
    let world = World::new(port, &SigningSecret::generate([3; 32])).await;
    let (stop, running) = world.start_engine(resolving(&world, None));

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
async fn a_claimed_retry_of_a_webhook_disabled_meanwhile_is_not_sent() {
    nothing_after(|world| {
        let mut webhook = world.webhook.clone();
        let at = world.clock.now();
        webhook.disabled = Some(Disabled {
            reason: DisabledReason::Manual,
            by: Some(webhook.owner.clone()),
            at,
        });
        webhook.updated_at = at;
        Change::Disable(Box::new(webhook))
    })
    .await;
}

#[tokio::test]
async fn a_claimed_retry_of_an_owner_deactivated_meanwhile_is_not_sent() {
    nothing_after(|_| Change::DeactivateOwner).await;
}

/// The first attempt fails; the clock moves past the retry's time and the engine claims the
/// retry, and while it resolves the receiver's name (the next resolution) `change` commits. The proof that the retry
/// was then dropped, not merely late: the engine sends one request at a time and claims due work
/// oldest first, so a later event to another webhook (the barrier) goes out only once the retry
/// is done with.
async fn nothing_after(change: impl FnOnce(&World) -> Change) {
    let address: IpAddr = "127.0.0.2".parse().unwrap();
    let port = free_port(address);
    let received = receiver(SocketAddr::new(address, port), "503 Service Unavailable").await;
    let secret = SigningSecret::generate([3; 32]);
    let world = World::new(port, &secret).await;
    let resolver = resolving(&world, Some(change(&world)));
    let (stop, running) = world.start_engine_sending_at_most(resolver.clone(), 1);
    let first = world.attempts(1).await;
    let due = first[0].next_attempt_at.expect("a 503 is retried");
    resolver.armed.store(true, Ordering::SeqCst);

    world.put_user("u2", true).await;
    let url = format!("http://hook.example:{port}/barrier");
    let barrier = world.add_webhook(2, "u2", &url, &secret).await;
    world.set_clock(due + Duration::seconds(1));
    world.queue_event("evt_barrier", &barrier.id).await;
    world.set_clock(due + Duration::seconds(2));
    world.attempts_of("evt_barrier", &barrier.id, 1).await;

    assert!(
        resolver.changed.load(Ordering::SeqCst),
        "changed while the claimed retry was being vetted"
    );
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
