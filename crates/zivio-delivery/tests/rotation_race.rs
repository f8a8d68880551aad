//! A rotation applies to every request signed after it commits, even when it commits while
//! the attempt is resolving the receiver's name: the engine reads the secret after vetting.
//! The resolver here rotates the webhook's secret (a real committed write) before it answers.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use zivio_app::Resolver;
use zivio_core::secret::SigningSecret;
use zivio_core::signing::verify;
use zivio_core::webhook::Webhook;
use zivio_store::Store;

use support::{World, free_port, receiver, sealed};

/// Resolves to 127.0.0.2, rotating the webhook's secret first (once).
struct RotatingWhileResolving {
    store: Arc<dyn Store>,
    rotated: Webhook,
    done: AtomicBool,
}

#[async_trait::async_trait]
impl Resolver for RotatingWhileResolving {
    async fn resolve(&self, _: &str, _: u16) -> std::io::Result<Vec<IpAddr>> {
        if !self.done.swap(true, Ordering::SeqCst) {
            let audit = zivio_core::audit::AuditEntry::new(
                &self.rotated.tenant,
                self.rotated.updated_at,
                "u1",
                zivio_core::audit::AuditAction::WebhookSecretRotated,
            );
            self.store
                .update_webhook(&self.rotated, &audit)
                .await
                .unwrap();
        }
        Ok(vec!["127.0.0.2".parse().unwrap()])
    }
}

#[tokio::test]
async fn a_rotation_committed_while_resolving_signs_that_request() {
    let address: IpAddr = "127.0.0.2".parse().unwrap();
    let port = free_port(address);
    let received = receiver(SocketAddr::new(address, port), "200 OK").await;
    let old = SigningSecret::generate([3; 32]);
    let new = SigningSecret::generate([4; 32]);
    let world = World::new(port, &old).await;
    let mut rotated = world.webhook.clone();
    rotated.secret = sealed(&new, &world.key, &rotated.id);
    let resolver = Arc::new(RotatingWhileResolving {
        store: world.store.clone(),
        rotated,
        done: AtomicBool::new(false),
    });
    let (stop, running) = world.start_engine(resolver.clone());

    let attempts = world.attempts(1).await;
    assert!(attempts[0].succeeded, "{:?}", attempts[0]);
    assert!(
        resolver.done.load(Ordering::SeqCst),
        "rotated while resolving"
    );
    let request = received.requests.lock().unwrap()[0].clone();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let check = |secret: &SigningSecret| {
        let now: i64 = timestamp.as_deref().unwrap().parse().unwrap();
        verify(
            secret,
            id.as_deref(),
            timestamp.as_deref(),
            signature.as_deref(),
            body.as_bytes(),
            now,
            300,
        )
    };
    assert!(
        check(&new).is_ok(),
        "signed with the secret of after the rotation"
    );
    assert!(check(&old).is_err(), "never with the one before it");

    stop.cancel();
    running.await.unwrap();
    world.store.close().await;
}
