//! An engine running in process on a real SQLite store, one webhook with one queued event, a
//! resolver and a clock the test controls, and a plain-HTTP receiver that keeps connections
//! alive. Each test file uses a part of it.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zivio_app::metrics::Metrics;
use zivio_app::{Clock, Resolver, Services, Settings};
use zivio_core::catalog::Catalog;
use zivio_core::directory::{Placement, Role, Tenant, User};
use zivio_core::event::EventId;
use zivio_core::ids::{RoleName, TenantId, UserId};
use zivio_core::keys::SecretsKey;
use zivio_core::retry::RetrySchedule;
use zivio_core::secret::SigningSecret;
use zivio_core::url_policy::UrlPolicy;
use zivio_core::webhook::{SealedSecret, Webhook, WebhookId};
use zivio_delivery::{Engine, EngineConfig};
use zivio_store::testing::TestDatabase;
use zivio_store::{AttemptRecord, ConnectOptions, NewEvent, Store};

pub const EVENT_ID: &str = "evt_engine_test";

/// The service's clock, set by the test: retries fall due when the test says so.
pub struct ManualClock(Mutex<OffsetDateTime>);

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// What a receiver got: every request's text (head and body), in order.
#[derive(Default)]
pub struct Received {
    pub count: AtomicUsize,
    pub requests: Mutex<Vec<String>>,
}

/// A plain-HTTP receiver that answers `first` to the first request and 200 afterwards, keeping
/// connections alive (so a pooled connection would be there to reuse).
pub async fn receiver(addr: SocketAddr, first: &'static str) -> Arc<Received> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let received = Arc::new(Received::default());
    let counting = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let received = counting.clone();
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
                    let request = String::from_utf8_lossy(&buffer[..total]).into_owned();
                    received.requests.lock().unwrap().push(request);
                    let status = if received.count.fetch_add(1, Ordering::SeqCst) == 0 {
                        first
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
    received
}

/// A free port on `address`.
pub fn free_port(address: IpAddr) -> u16 {
    let listener = std::net::TcpListener::bind((address, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// A store with tenant `acme`, its owner `u1`, one webhook to `http://hook.example:{port}/in`
/// (signed with `secret`, sealed under `key`), and one event queued for it.
pub struct World {
    pub database: TestDatabase,
    pub store: Arc<dyn Store>,
    pub tenant: TenantId,
    pub webhook: Webhook,
    pub key: SecretsKey,
    pub clock: Arc<ManualClock>,
    /// Wakes the engine, as publishing does.
    pub wake: Arc<Notify>,
}

impl World {
    pub async fn new(port: u16, secret: &SigningSecret) -> World {
        let database = TestDatabase::sqlite();
        let store = zivio_store::connect(&ConnectOptions {
            url: database.url.clone(),
            max_connections: 2,
        })
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let now = OffsetDateTime::now_utc();
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
        let key = SecretsKey::from_bytes([7; 32]);
        let url = format!("http://hook.example:{port}/in");
        let webhook = new_webhook(&tenant, &key, 1, "u1", &url, secret, now);
        let world = World {
            database,
            store,
            tenant,
            webhook,
            key,
            clock: Arc::new(ManualClock(Mutex::new(now))),
            wake: Arc::new(Notify::new()),
        };
        world.put_user("u1", true).await;
        world.create_webhook(&world.webhook).await;
        world.queue_event(EVENT_ID, &world.webhook.id).await;
        world
    }

    /// Creates or replaces user `id` (an admin), active or not, at the clock's time.
    pub async fn put_user(&self, id: &str, active: bool) {
        let user = admin(id, active);
        let now = self.clock.now();
        self.store
            .upsert_user(&self.tenant, &user, now)
            .await
            .unwrap();
    }

    /// Creates a webhook for every event type, owned by `owner`, signing with `secret`;
    /// `number` makes its id.
    pub async fn add_webhook(
        &self,
        number: u8,
        owner: &str,
        url: &str,
        secret: &SigningSecret,
    ) -> Webhook {
        let now = self.clock.now();
        let webhook = new_webhook(&self.tenant, &self.key, number, owner, url, secret, now);
        self.create_webhook(&webhook).await;
        webhook
    }

    async fn create_webhook(&self, webhook: &Webhook) {
        let audit = zivio_core::audit::AuditEntry::new(
            &self.tenant,
            webhook.created_at,
            webhook.owner.as_str(),
            zivio_core::audit::AuditAction::WebhookCreated,
        );
        self.store
            .create_webhook(webhook, 10, &audit)
            .await
            .unwrap();
    }

    /// Publishes event `id` for `webhook` at the clock's time, without handing it over: the
    /// engine claims it from the store.
    pub async fn queue_event(&self, id: &str, webhook: &WebhookId) {
        let now = self.clock.now();
        let event = NewEvent {
            id: EventId::parse(id).unwrap(),
            event_type: "invoice.paid".into(),
            occurred_at: now,
            accepted_at: now,
            key: None,
            fingerprint: None,
            resource_id: "1".into(),
            payloads: vec![format!(r#"{{"id":"{id}"}}"#).into_bytes()],
            deliveries: vec![(webhook.clone(), 0)],
            source: None,
            is_test: false,
            resend_of: None,
        };
        self.store
            .publish_events(&self.tenant, &[event], now, None)
            .await
            .unwrap();
    }

    /// Sets the clock to `at` and wakes the engine, which then sends what is due by then.
    pub fn set_clock(&self, at: OffsetDateTime) {
        *self.clock.0.lock().unwrap() = at;
        self.wake.notify_one();
    }

    /// Starts an engine that resolves every name through `resolver`, where 127.0.0.2 plays a
    /// public address (`allowed_private`) and 127.0.0.1 stays forbidden. Cancel the token to stop
    /// it.
    pub fn start_engine(
        &self,
        resolver: Arc<dyn Resolver>,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        self.start_engine_sending_at_most(resolver, 16)
    }

    /// Like `start_engine`, with at most `max_in_flight` requests in flight at once.
    pub fn start_engine_sending_at_most(
        &self,
        resolver: Arc<dyn Resolver>,
        max_in_flight: usize,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let services = Services {
            store: self.store.clone(),
            catalog: Catalog::builtin(),
            secrets_key: self.key.clone(),
            url_policy: UrlPolicy {
                allow_http: true,
                allowed_private: vec!["127.0.0.2/32".parse().unwrap()],
            },
            resolver,
            clock: self.clock.clone(),
            settings: Settings {
                max_webhooks_per_tenant: 10,
                sign_in_link_ttl: Duration::from_secs(600),
                public_url: "http://127.0.0.1/".parse().unwrap(),
                retention: Duration::from_secs(86_400),
            },
            metrics: Arc::new(Metrics::new("test")),
            deliveries_queued: self.wake.clone(),
            fanouts: Default::default(),
            handoff: Default::default(),
            contracts: Arc::new(zivio_app::contracts::PayloadContracts::new(
                Catalog::builtin(),
                zivio_app::contracts::Checking::Enforce,
            )),
        };
        let config = EngineConfig {
            instance: "engine-test".into(),
            lease: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            // An hour apart: a retry is sent within a test only if the engine follows the
            // test's clock.
            schedule: RetrySchedule::parse("1h,1h,1h").unwrap(),
            max_in_flight_per_webhook: 4,
            max_in_flight,
            extra_root_ca: None,
            client_certificate: None,
            auto_disable_after: Duration::from_secs(86_400),
            mail_notices: false,
            rate_limit_max_wait: Duration::from_secs(24 * 3600),
        };
        let engine =
            Engine::new(services.clone(), config, services.deliveries_queued.clone()).unwrap();
        let stop = CancellationToken::new();
        (stop.clone(), tokio::spawn(engine.run(stop)))
    }

    /// Waits until at least `count` attempts of the event are recorded.
    pub async fn attempts(&self, count: usize) -> Vec<AttemptRecord> {
        self.attempts_of(EVENT_ID, &self.webhook.id, count).await
    }

    /// Waits until at least `count` attempts of `event` to `webhook` are recorded.
    pub async fn attempts_of(
        &self,
        event: &str,
        webhook: &WebhookId,
        count: usize,
    ) -> Vec<AttemptRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let attempts = self
                .store
                .attempts_of(&self.tenant, &EventId::parse(event).unwrap(), webhook)
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
            // Real time: the engine records on its own tasks; the store is looked at every 20 ms.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// User `id` of the tenant, an admin, active or not.
pub fn admin(id: &str, active: bool) -> User {
    User {
        id: UserId::parse(id).unwrap(),
        email: format!("{id}@acme.example"),
        name: id.to_uppercase(),
        active,
        placement: Placement::default(),
        roles: vec![RoleName::parse("admin").unwrap()],
    }
}

/// A webhook of `tenant` for every event type, owned by `owner`, signing with `secret` (sealed
/// under `key`); `number` makes its id.
fn new_webhook(
    tenant: &TenantId,
    key: &SecretsKey,
    number: u8,
    owner: &str,
    url: &str,
    secret: &SigningSecret,
    now: OffsetDateTime,
) -> Webhook {
    let id = WebhookId::new(1_700_000_000_000, [number; 10]);
    Webhook {
        secret: sealed(secret, key, &id),
        id,
        tenant: tenant.clone(),
        owner: UserId::parse(owner).unwrap(),
        name: format!("engine test {number}"),
        url: url.to_owned(),
        description: String::new(),
        events: vec!["*".into()],
        headers: Vec::new(),
        rate_limit: None,
        disabled: None,
        created_at: now,
        updated_at: now,
        version: 0,
    }
}

/// `secret` sealed for webhook `id`.
pub fn sealed(secret: &SigningSecret, key: &SecretsKey, id: &WebhookId) -> SealedSecret {
    SealedSecret {
        ciphertext: secret.seal(key, id.as_str(), [5; 12]),
        key_id: key.id(),
        hint: secret.hint(),
    }
}
