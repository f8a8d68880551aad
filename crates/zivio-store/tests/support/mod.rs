//! What every store test file shares: a fresh store per backend, the `contract!` macro that
//! runs each behaviour on both, small fixtures, and direct reads of the test database (`sql`).
#![allow(dead_code)] // each test file uses its own part

use std::sync::Arc;

use time::OffsetDateTime;
use time::macros::datetime;
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::delivery::AttemptId;
use zivio_core::directory::{Placement, Role, Tenant, User};
use zivio_core::event::EventId;
use zivio_core::ids::{RoleName, TenantId, UserId};
use zivio_core::webhook::{SealedSecret, Webhook, WebhookId};
use zivio_store::testing::TestDatabase;
use zivio_store::{AttemptRecord, AutoDisable, ClaimedDelivery, ConnectOptions, NewEvent, Store};

mod sql;
#[allow(unused_imports)] // as above: each test file uses its own part
pub use sql::*;

pub const NOW: OffsetDateTime = datetime!(2026-11-27 10:00 UTC);

/// Failures never disable a webhook automatically.
pub const KEEP_ENABLED: AutoDisable = AutoDisable {
    failing_before: OffsetDateTime::UNIX_EPOCH,
    mail: false,
};

pub async fn open(database: &TestDatabase) -> Arc<dyn Store> {
    let store = zivio_store::connect(&ConnectOptions {
        url: database.url.clone(),
        max_connections: 4,
    })
    .await
    .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

pub fn tenant_id(text: &str) -> TenantId {
    TenantId::parse(text).unwrap()
}

pub fn user_id(text: &str) -> UserId {
    UserId::parse(text).unwrap()
}

pub fn role_name(text: &str) -> RoleName {
    RoleName::parse(text).unwrap()
}

pub fn user(id: &str, roles: &[&str]) -> User {
    User {
        id: user_id(id),
        email: format!("{id}@example.com"),
        name: format!("User {id}"),
        active: true,
        placement: Placement {
            business_unit: Some("emea".into()),
            division: Some("uk".into()),
            department: None,
        },
        roles: roles.iter().map(|role| role_name(role)).collect(),
    }
}

/// A tenant `t` (or the given id) with one manager `u1` holding role `admin`.
pub async fn tenant_with_user(store: &Arc<dyn Store>, tenant: &str) -> TenantId {
    let id = tenant_id(tenant);
    store
        .upsert_tenant(
            &Tenant {
                id: id.clone(),
                name: tenant.to_uppercase(),
            },
            NOW,
        )
        .await
        .unwrap();
    let role = Role {
        name: role_name("admin"),
        permissions: vec!["webhooks:manage".into()],
    };
    store.upsert_role(&id, &role, NOW).await.unwrap();
    store
        .upsert_user(&id, &user("u1", &["admin"]), NOW)
        .await
        .unwrap();
    id
}

pub fn audit(tenant: &TenantId, at: OffsetDateTime, action: AuditAction) -> AuditEntry {
    AuditEntry::new(tenant, at, "u1", action)
}

pub fn webhook(tenant: &TenantId, n: u64) -> Webhook {
    Webhook {
        id: WebhookId::new(1_700_000_000_000 + n, [n as u8; 10]),
        tenant: tenant.clone(),
        owner: user_id("u1"),
        name: format!("Hook {n}"),
        url: format!("https://hooks.example.com/{n}"),
        description: String::new(),
        events: vec!["invoices.*".into(), "job.created".into()],
        secret: SealedSecret {
            ciphertext: vec![1, 2, 3, n as u8],
            key_id: "k1".into(),
            hint: "abcd".into(),
        },
        headers: Vec::new(),
        rate_limit: None,
        disabled: None,
        created_at: NOW + time::Duration::seconds(n as i64),
        updated_at: NOW + time::Duration::seconds(n as i64),
        version: 0,
    }
}

/// An event id written short, as tests do.
pub fn evt(text: &str) -> EventId {
    EventId::parse(text).expect("an event id")
}

pub fn new_event(id: &str, key: Option<&str>, deliveries: Vec<(WebhookId, usize)>) -> NewEvent {
    NewEvent {
        id: evt(id),
        event_type: "invoice.paid".into(),
        occurred_at: NOW,
        accepted_at: NOW,
        key: key.map(str::to_owned),
        fingerprint: Some([1; 32]),
        resource_id: "12345".into(),
        payloads: vec![b"{\"full\":true}".to_vec(), b"{\"shaped\":true}".to_vec()],
        deliveries,
        source: Some(b"{\"data\":{}}".to_vec()),
        is_test: false,
        resend_of: None,
    }
}

/// A tenant with webhooks 1..=n (all enabled) and one event queued to each.
pub async fn queued(store: &Arc<dyn Store>, n: u64) -> (TenantId, Vec<Webhook>) {
    let acme = tenant_with_user(store, "acme").await;
    let hooks: Vec<Webhook> = (1..=n).map(|i| webhook(&acme, i)).collect();
    for hook in &hooks {
        store
            .create_webhook(hook, 100, &audit(&acme, NOW, AuditAction::WebhookCreated))
            .await
            .unwrap();
    }
    let deliveries = hooks.iter().map(|hook| (hook.id.clone(), 0)).collect();
    store
        .publish_events(&acme, &[new_event("evt_q", None, deliveries)], NOW, None)
        .await
        .unwrap();
    (acme, hooks)
}

pub fn attempt_of(
    claimed: &ClaimedDelivery,
    succeeded: bool,
    next: Option<OffsetDateTime>,
) -> AttemptRecord {
    AttemptRecord {
        id: AttemptId::parse(&format!("dlv_{}_{}", claimed.id, claimed.attempt)).unwrap(),
        queue_entry: claimed.id,
        tenant: claimed.tenant.clone(),
        webhook_id: claimed.webhook_id.clone(),
        event_id: claimed.event_id.clone(),
        event_type: claimed.event_type.clone(),
        attempt: claimed.attempt,
        succeeded,
        request_url: claimed.url.clone(),
        request_headers: "{}".into(),
        response_status: Some(if succeeded { 200 } else { 503 }),
        response_headers: Some("{}".into()),
        response_body: Some(b"ok".to_vec()),
        response_truncated: false,
        duration_ms: 12,
        error_kind: (!succeeded).then_some(zivio_core::error_kind::ErrorKind::HttpStatus),
        error_detail: None,
        created_at: NOW,
        next_attempt_at: next,
    }
}

/// Instantiates each behaviour once per backend.
#[macro_export]
macro_rules! contract {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let database = zivio_store::testing::TestDatabase::sqlite();
                    super::$behaviour(&database, zivio_store::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(database) = zivio_store::testing::TestDatabase::postgres().await else {
                        eprintln!("ZIVIO_TEST_DATABASE_URL is not set: PostgreSQL case skipped");
                        return;
                    };
                    super::$behaviour(&database, zivio_store::Backend::Postgres).await;
                }
            )*
        }
    };
}
