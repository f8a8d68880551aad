//! DNS rebinding cannot work: a host name is resolved and vetted again at every attempt, so
//! an answer that changes from an allowed address to a forbidden one under a running engine
//! stops the next attempt before anything is sent (and a pooled connection to the earlier,
//! allowed address does not help). The engine runs in process on a real SQLite store with a
//! resolver whose answer the test changes; 127.0.0.2 plays a public address
//! (`allowed_private`), 127.0.0.1 stays forbidden.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use zivio_app::metrics::Metrics;
use zivio_app::{Resolver, Services, Settings, SystemClock};
use zivio_core::catalog::Catalog;
use zivio_core::directory::{Placement, Role, Tenant, User};
use zivio_core::ids::{RoleName, TenantId, UserId};
use zivio_core::keys::SecretsKey;
use zivio_core::retry::RetrySchedule;
use zivio_core::secret::SigningSecret;
use zivio_core::url_policy::UrlPolicy;
use zivio_core::webhook::{SealedSecret, Webhook, WebhookId};
use zivio_delivery::{Engine, EngineConfig};
use zivio_store::testing::TestDatabase;
use zivio_store::{AttemptRecord, ConnectOptions, NewEvent, Store};

/// Answers every name with whatever the test last set.
struct Switchable(Mutex<IpAddr>);

#[async_trait::async_trait]
impl Resolver for Switchable {
    async fn resolve(&self, _: &str, _: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(vec![*self.0.lock().unwrap()])
    }
}

/// A plain-HTTP receiver that answers 500 to the first request and 200 afterwards, keeping
/// connections alive (so a pooled connection would be there to reuse).
async fn receiver(addr: SocketAddr) -> Arc<AtomicUsize> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counting = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = counting.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 * 1024];
                loop {
                    let mut read = 0;
                    // One request: headers, then `content-length` bytes of body.
                    let total = loop {
                        match stream.read(&mut buffer[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                        let text = String::from_utf8_lossy(&buffer[..read]).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text
                                .lines()
                                .find_map(|line| line.strip_prefix("content-length:"))
                                .and_then(|value| value.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break end + 4 + length;
                        }
                    };
                    while read < total {
                        match stream.read(&mut buffer[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    let status = if count.fetch_add(1, Ordering::SeqCst) == 0 {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    count
}

#[tokio::test]
async fn an_answer_that_turns_forbidden_stops_the_next_attempt() {
    let database = TestDatabase::sqlite();
    let store = zivio_store::connect(&ConnectOptions {
        url: database.url.clone(),
        max_connections: 2,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_millisecond(now.millisecond()).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    store
        .upsert_tenant(
            &Tenant {
                id: tenant.clone(),
                name: "Acme".into(),
            },
            now,
        )
        .await
        .unwrap();
    let role = Role {
        name: RoleName::parse("admin").unwrap(),
        permissions: vec!["webhooks:manage".into()],
    };
    store.upsert_role(&tenant, &role, now).await.unwrap();
    let owner = User {
        id: UserId::parse("u1").unwrap(),
        email: "u1@acme.example".into(),
        name: "U1".into(),
        active: true,
        placement: Placement::default(),
        roles: vec![role.name.clone()],
    };
    store.upsert_user(&tenant, &owner, now).await.unwrap();

    let allowed: IpAddr = "127.0.0.2".parse().unwrap();
    let forbidden: IpAddr = "127.0.0.1".parse().unwrap();
    let listener = std::net::TcpListener::bind((allowed, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let received = receiver(SocketAddr::new(allowed, port)).await;

    let key = SecretsKey::from_bytes([7; 32]);
    let id = WebhookId::new(1_700_000_000_000, [1; 10]);
    let secret = SigningSecret::generate([3; 32]);
    let webhook = Webhook {
        id: id.clone(),
        tenant: tenant.clone(),
        owner: owner.id.clone(),
        name: "rebinding".into(),
        url: format!("http://hook.example:{port}/in"),
        description: String::new(),
        events: vec!["*".into()],
        secret: SealedSecret {
            ciphertext: secret.seal(&key, id.as_str(), [5; 12]),
            key_id: key.id(),
            hint: secret.hint(),
        },
        disabled: None,
        created_at: now,
        updated_at: now,
        version: 0,
    };
    let audit = zivio_core::audit::AuditEntry::new(
        &tenant,
        now,
        "u1",
        zivio_core::audit::AuditAction::WebhookCreated,
    );
    store.create_webhook(&webhook, 10, &audit).await.unwrap();
    let event = NewEvent {
        id: "evt_rebinding".into(),
        event_type: "invoice.paid".into(),
        occurred_at: now,
        accepted_at: now,
        key: None,
        fingerprint: [0; 32],
        resource_id: "1".into(),
        payloads: vec![br#"{"id":"evt_rebinding"}"#.to_vec()],
        deliveries: vec![(id.clone(), 0)],
        source: None,
        is_test: false,
    };
    store
        .publish_events(&tenant, &[event], now, None)
        .await
        .unwrap();

    let resolver = Arc::new(Switchable(Mutex::new(allowed)));
    let services = Services {
        store: store.clone(),
        catalog: Catalog::builtin(),
        secrets_key: key,
        url_policy: UrlPolicy {
            allow_http: true,
            allowed_private: vec!["127.0.0.2/32".parse().unwrap()],
        },
        resolver: resolver.clone(),
        clock: Arc::new(SystemClock),
        settings: Settings {
            max_webhooks_per_tenant: 10,
            sign_in_link_ttl: Duration::from_secs(600),
            public_url: "http://127.0.0.1/".parse().unwrap(),
            retention: Duration::from_secs(86_400),
        },
        metrics: Arc::new(Metrics::new("test")),
        deliveries_queued: Arc::new(Notify::new()),
    };
    let config = EngineConfig {
        instance: "rebinding-test".into(),
        lease: Duration::from_secs(30),
        request_timeout: Duration::from_secs(5),
        schedule: RetrySchedule::parse("1s,1s,1s").unwrap(),
        max_in_flight_per_webhook: 4,
        max_in_flight: 16,
        extra_root_ca: None,
        auto_disable_after: Duration::from_secs(86_400),
        mail_notices: false,
    };
    let engine = Engine::new(services.clone(), config, services.deliveries_queued.clone()).unwrap();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(engine.run(stopped));

    // Attempt 1 reaches the allowed address (and is answered 500).
    let attempts = wait_for_attempts(store.as_ref(), &tenant, &id, 1).await;
    assert_eq!(attempts[0].response_status, Some(500));
    assert_eq!(received.load(Ordering::SeqCst), 1);
    // The name now resolves to a forbidden address: attempt 2 sends nothing.
    *resolver.0.lock().unwrap() = forbidden;
    let attempts = wait_for_attempts(store.as_ref(), &tenant, &id, 2).await;
    assert_eq!(
        attempts[1].error_kind.as_deref(),
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
        received.load(Ordering::SeqCst),
        1,
        "nothing reached any address"
    );
    // Allowed again: attempt 3 is delivered.
    *resolver.0.lock().unwrap() = allowed;
    let attempts = wait_for_attempts(store.as_ref(), &tenant, &id, 3).await;
    assert!(attempts[2].succeeded, "{:?}", attempts[2]);
    assert_eq!(received.load(Ordering::SeqCst), 2);

    stop.send(true).unwrap();
    running.await.unwrap();
    store.close().await;
}

async fn wait_for_attempts(
    store: &dyn Store,
    tenant: &TenantId,
    webhook: &WebhookId,
    count: usize,
) -> Vec<AttemptRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let attempts = store
            .attempts_of(tenant, "evt_rebinding", webhook)
            .await
            .unwrap();
        if attempts.len() >= count {
            return attempts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} attempts recorded",
            attempts.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
