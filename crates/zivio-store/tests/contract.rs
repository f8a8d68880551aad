//! The store contract: every behaviour below runs on SQLite and, when
//! `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL, each in a fresh database.

use std::sync::Arc;

use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::directory::{ApiKey, BootstrapSeed, Placement, Role, Tenant, User};
use zivio_core::ids::{RoleName, TenantId, UserId};
use zivio_core::webhook::{Disabled, DisabledReason, SealedSecret, Webhook, WebhookId};
use zivio_store::testing::TestDatabase;
use zivio_store::{AttemptRecord, AuditCursor, ClaimedDelivery, NewEvent, StoreError};
use zivio_store::{Backend, ConnectOptions, KeyCheck, Store};

const NOW: OffsetDateTime = datetime!(2026-11-27 10:00 UTC);

async fn open(database: &TestDatabase) -> Arc<dyn Store> {
    let store = zivio_store::connect(&ConnectOptions {
        url: database.url.clone(),
        max_connections: 4,
    })
    .await
    .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// Instantiates each behaviour once per backend.
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

contract!(
    migrations_run_twice_harmlessly,
    ping_answers,
    key_check_is_recorded_once_then_compared,
    bootstrap_creates_the_seed_once,
    concurrent_bootstraps_create_one_seed,
    unknown_directory_entries_are_absent,
    directory_upserts_replace_and_deletes_cascade,
    user_emails_are_unique_per_tenant,
    directory_writes_need_the_tenant,
    api_keys_are_found_by_digest_listed_and_revoked,
    deleting_a_user_removes_their_keys,
    webhooks_round_trip_and_stay_in_their_tenant,
    the_webhook_limit_is_enforced_per_tenant,
    audit_entries_page_newest_first_and_outlive_webhooks,
    sign_in_links_are_stored_for_existing_users,
    audit_purge_removes_only_old_entries,
    published_events_store_each_payload_once_and_queue_enabled_webhooks,
    producer_keys_are_unique_per_tenant_until_their_cutoff,
    due_deliveries_are_leased_once_until_the_lease_expires,
    claims_skip_the_webhooks_asked_to,
    claims_take_at_most_so_many_of_one_webhook,
    a_corrupt_queued_row_fails_alone,
    attempts_move_deliveries_on_or_finish_them,
    cancelled_work_is_never_resumed,
    concurrent_claims_never_share_a_delivery,
);

async fn migrations_run_twice_harmlessly(database: &TestDatabase, backend: Backend) {
    let store = open(database).await;
    assert_eq!(store.backend(), backend);
    store.migrate().await.expect("second migration run");
    let again = open(database).await;
    again
        .migrate()
        .await
        .expect("migration from a second connection");
}

async fn ping_answers(database: &TestDatabase, _: Backend) {
    open(database).await.ping().await.expect("ping");
}

async fn key_check_is_recorded_once_then_compared(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    assert_eq!(
        store.claim_key_check("first").await.unwrap(),
        KeyCheck::Recorded
    );
    assert_eq!(
        store.claim_key_check("first").await.unwrap(),
        KeyCheck::Matches
    );
    assert_eq!(
        store.claim_key_check("second").await.unwrap(),
        KeyCheck::Mismatch
    );
    assert_eq!(
        store.claim_key_check("first").await.unwrap(),
        KeyCheck::Matches
    );
}

async fn bootstrap_creates_the_seed_once(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let seed = BootstrapSeed::demo("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
    assert!(store.bootstrap(&seed, NOW).await.unwrap());

    let tenant = store
        .tenant(&seed.tenant.id)
        .await
        .unwrap()
        .expect("tenant");
    assert_eq!(tenant, seed.tenant);
    let role = store
        .role(&seed.tenant.id, &seed.role.name)
        .await
        .unwrap()
        .expect("role");
    let mut expected = seed.role.permissions.clone();
    expected.sort();
    assert_eq!(role.permissions, expected);
    let admin = store
        .user(&seed.tenant.id, &seed.admin.id)
        .await
        .unwrap()
        .expect("admin");
    assert_eq!(admin, seed.admin);
    let hash = store
        .password_hash(&seed.tenant.id, &seed.admin.id)
        .await
        .unwrap();
    assert_eq!(hash.as_deref(), Some(seed.password_hash.as_str()));

    let other = BootstrapSeed::demo("other".into());
    assert!(
        !store.bootstrap(&other, NOW).await.unwrap(),
        "second bootstrap"
    );
    let hash = store
        .password_hash(&seed.tenant.id, &seed.admin.id)
        .await
        .unwrap();
    assert_eq!(
        hash.as_deref(),
        Some(seed.password_hash.as_str()),
        "unchanged"
    );
}

async fn concurrent_bootstraps_create_one_seed(database: &TestDatabase, _: Backend) {
    let (a, b, c) = (
        open(database).await,
        open(database).await,
        open(database).await,
    );
    let seed = BootstrapSeed::demo("hash".into());
    let results = tokio::join!(
        a.bootstrap(&seed, NOW),
        b.bootstrap(&seed, NOW),
        c.bootstrap(&seed, NOW)
    );
    let results = [results.0, results.1, results.2];
    let created = results
        .iter()
        .filter(|result| *result.as_ref().unwrap())
        .count();
    assert_eq!(created, 1, "{results:?}");
}

async fn unknown_directory_entries_are_absent(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let tenant = TenantId::parse("nobody").unwrap();
    assert!(store.tenant(&tenant).await.unwrap().is_none());
    let role = RoleName::parse("none").unwrap();
    assert!(store.role(&tenant, &role).await.unwrap().is_none());
    let user = UserId::parse("ghost").unwrap();
    assert!(store.user(&tenant, &user).await.unwrap().is_none());
    assert!(store.password_hash(&tenant, &user).await.unwrap().is_none());
}

fn tenant_id(text: &str) -> TenantId {
    TenantId::parse(text).unwrap()
}

fn user_id(text: &str) -> UserId {
    UserId::parse(text).unwrap()
}

fn role_name(text: &str) -> RoleName {
    RoleName::parse(text).unwrap()
}

fn user(id: &str, roles: &[&str]) -> User {
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
async fn tenant_with_user(store: &Arc<dyn Store>, tenant: &str) -> TenantId {
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

fn audit(tenant: &TenantId, at: OffsetDateTime, action: AuditAction) -> AuditEntry {
    AuditEntry::new(tenant, at, "u1", action)
}

fn webhook(tenant: &TenantId, n: u64) -> Webhook {
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
        disabled: None,
        created_at: NOW + time::Duration::seconds(n as i64),
        updated_at: NOW + time::Duration::seconds(n as i64),
        version: 0,
    }
}

async fn directory_upserts_replace_and_deletes_cascade(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let t = tenant_with_user(&store, "acme").await;
    store
        .upsert_tenant(
            &Tenant {
                id: t.clone(),
                name: "Acme Ltd".into(),
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(store.tenant(&t).await.unwrap().unwrap().name, "Acme Ltd");

    let replaced = Role {
        name: role_name("admin"),
        permissions: vec!["invoices:read:tenant".into()],
    };
    store.upsert_role(&t, &replaced, NOW).await.unwrap();
    assert_eq!(
        store.role(&t, &role_name("admin")).await.unwrap(),
        Some(replaced.clone())
    );

    let mut changed = user("u1", &["admin", "ghost-role"]);
    changed.active = false;
    changed.placement.department = Some("finance".into());
    store.upsert_user(&t, &changed, NOW).await.unwrap();
    let (found, roles) = store
        .user_with_roles(&t, &user_id("u1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, changed);
    assert_eq!(
        roles,
        vec![replaced],
        "roles that do not exist grant nothing"
    );

    assert!(
        store
            .set_password(&t, &user_id("u1"), "$argon2id$x", NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_password(&t, &user_id("nobody"), "$argon2id$x", NOW)
            .await
            .unwrap()
    );
    store.upsert_user(&t, &changed, NOW).await.unwrap();
    assert_eq!(
        store
            .password_hash(&t, &user_id("u1"))
            .await
            .unwrap()
            .as_deref(),
        Some("$argon2id$x"),
        "a directory upsert never touches the password"
    );

    assert!(store.delete_role(&t, &role_name("admin")).await.unwrap());
    assert!(!store.delete_role(&t, &role_name("admin")).await.unwrap());
    assert!(
        store
            .user_with_roles(&t, &user_id("u1"))
            .await
            .unwrap()
            .unwrap()
            .1
            .is_empty()
    );

    assert!(store.delete_tenant(&t).await.unwrap());
    assert!(store.tenant(&t).await.unwrap().is_none());
    assert!(
        store.user(&t, &user_id("u1")).await.unwrap().is_none(),
        "users go with the tenant"
    );
    assert!(!store.delete_tenant(&t).await.unwrap());
}

async fn user_emails_are_unique_per_tenant(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let t = tenant_with_user(&store, "acme").await;
    let mut twin = user("u2", &[]);
    twin.email = "U1@EXAMPLE.COM".into();
    let error = store.upsert_user(&t, &twin, NOW).await.unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
    let other = tenant_with_user(&store, "globex").await;
    assert!(
        store.user(&other, &user_id("u1")).await.unwrap().is_some(),
        "same email in another tenant"
    );
}

async fn directory_writes_need_the_tenant(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let missing = tenant_id("missing");
    let role = Role {
        name: role_name("r"),
        permissions: vec![],
    };
    let error = store.upsert_role(&missing, &role, NOW).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { what: "tenant" }),
        "{error:?}"
    );
    let error = store
        .upsert_user(&missing, &user("u1", &[]), NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { what: "tenant" }),
        "{error:?}"
    );
}

async fn api_keys_are_found_by_digest_listed_and_revoked(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let t = tenant_with_user(&store, "acme").await;
    let key = ApiKey {
        id: "key_1".into(),
        user: user_id("u1"),
        hint: "wxyz".into(),
        created_at: NOW,
        last_used_at: None,
    };
    store
        .create_api_key(
            &t,
            &key,
            &[7; 32],
            &audit(&t, NOW, AuditAction::ApiKeyCreated),
        )
        .await
        .unwrap();
    assert_eq!(
        store.api_keys(&t, &user_id("u1")).await.unwrap(),
        vec![key.clone()]
    );

    let used = NOW + time::Duration::minutes(5);
    assert_eq!(
        store.api_key_holder(&[7; 32]).await.unwrap(),
        Some((t.clone(), user_id("u1"), None))
    );
    assert_eq!(store.api_key_holder(&[8; 32]).await.unwrap(), None);
    store.touch_api_key(&[7; 32], used).await.unwrap();
    let listed = store.api_keys(&t, &user_id("u1")).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(used));

    let revoke = audit(&t, NOW, AuditAction::ApiKeyRevoked);
    assert!(
        !store
            .revoke_api_key(&t, &user_id("other"), "key_1", &revoke)
            .await
            .unwrap(),
        "only the holder's"
    );
    assert!(
        store
            .revoke_api_key(&t, &user_id("u1"), "key_1", &revoke)
            .await
            .unwrap()
    );
    assert_eq!(store.api_key_holder(&[7; 32]).await.unwrap(), None);
    let actions: Vec<String> = store
        .audit_entries(&t, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert_eq!(actions, ["api_key.revoked", "api_key.created"]);
}

async fn deleting_a_user_removes_their_keys(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let t = tenant_with_user(&store, "acme").await;
    let key = ApiKey {
        id: "key_1".into(),
        user: user_id("u1"),
        hint: "wxyz".into(),
        created_at: NOW,
        last_used_at: None,
    };
    store
        .create_api_key(
            &t,
            &key,
            &[7; 32],
            &audit(&t, NOW, AuditAction::ApiKeyCreated),
        )
        .await
        .unwrap();
    assert!(store.delete_user(&t, &user_id("u1")).await.unwrap());
    assert_eq!(store.api_key_holder(&[7; 32]).await.unwrap(), None);
    let orphan = ApiKey {
        id: "key_2".into(),
        ..key
    };
    let error = store
        .create_api_key(
            &t,
            &orphan,
            &[9; 32],
            &audit(&t, NOW, AuditAction::ApiKeyCreated),
        )
        .await;
    assert!(
        matches!(error, Err(StoreError::NotFound { .. })),
        "{error:?}"
    );
}

async fn webhooks_round_trip_and_stay_in_their_tenant(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let globex = tenant_with_user(&store, "globex").await;
    let first = webhook(&acme, 1);
    let second = webhook(&acme, 2);
    for hook in [&first, &second] {
        store
            .create_webhook(
                hook,
                100,
                &audit(&acme, NOW, AuditAction::WebhookCreated).webhook(hook.id.as_str()),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.webhooks(&acme).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        store.webhook(&acme, &first.id).await.unwrap(),
        Some(first.clone())
    );
    assert!(
        store.webhook(&globex, &first.id).await.unwrap().is_none(),
        "tenant isolation"
    );
    assert!(store.webhooks(&globex).await.unwrap().is_empty());

    let mut disabled = first.clone();
    disabled.name = "Renamed".into();
    disabled.events = vec!["*".into()];
    disabled.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: Some(user_id("u1")),
        at: NOW,
    });
    disabled.updated_at = NOW + time::Duration::minutes(1);
    store
        .update_webhook(&disabled, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await
        .unwrap();
    disabled.version = 1;
    assert_eq!(
        store.webhook(&acme, &first.id).await.unwrap(),
        Some(disabled.clone())
    );

    // A copy read before that update is stale: writing it back would undo the disable.
    let mut stale = first.clone();
    stale.name = "Stale rename".into();
    let error = store
        .update_webhook(&stale, &audit(&acme, NOW, AuditAction::WebhookUpdated))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
    assert_eq!(
        store.webhook(&acme, &first.id).await.unwrap(),
        Some(disabled.clone())
    );

    let mut foreign = disabled.clone();
    foreign.tenant = globex.clone();
    let error = store
        .update_webhook(&foreign, &audit(&globex, NOW, AuditAction::WebhookUpdated))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");

    let delete = audit(&acme, NOW, AuditAction::WebhookDeleted);
    assert!(
        !store
            .delete_webhook(&globex, &first.id, &delete)
            .await
            .unwrap(),
        "not across tenants"
    );
    assert!(
        store
            .delete_webhook(&acme, &first.id, &delete)
            .await
            .unwrap()
    );
    assert!(store.webhook(&acme, &first.id).await.unwrap().is_none());
    assert_eq!(store.webhooks(&acme).await.unwrap(), vec![second]);
}

async fn the_webhook_limit_is_enforced_per_tenant(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let globex = tenant_with_user(&store, "globex").await;
    let created = audit(&acme, NOW, AuditAction::WebhookCreated);
    store
        .create_webhook(&webhook(&acme, 1), 2, &created)
        .await
        .unwrap();
    store
        .create_webhook(&webhook(&acme, 2), 2, &created)
        .await
        .unwrap();
    let error = store
        .create_webhook(&webhook(&acme, 3), 2, &created)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Conflict {
                what: "webhook limit"
            }
        ),
        "{error:?}"
    );
    store
        .create_webhook(
            &webhook(&globex, 4),
            2,
            &audit(&globex, NOW, AuditAction::WebhookCreated),
        )
        .await
        .unwrap();
    let error = store
        .create_webhook(&webhook(&tenant_id("nobody"), 5), 2, &created)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
}

async fn audit_entries_page_newest_first_and_outlive_webhooks(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let hook = webhook(&acme, 1);
    let created = audit(&acme, NOW, AuditAction::WebhookCreated)
        .webhook(hook.id.as_str())
        .changes(json!({"name": {"to": "Hook 1"}}));
    store.create_webhook(&hook, 10, &created).await.unwrap();
    // Two entries at the same instant: the id keeps their order.
    let later = NOW + time::Duration::seconds(1);
    let mut hook = hook;
    for action in [AuditAction::WebhookUpdated, AuditAction::WebhookDisabled] {
        store
            .update_webhook(
                &hook,
                &audit(&acme, later, action).webhook(hook.id.as_str()),
            )
            .await
            .unwrap();
        hook.version += 1;
    }
    store
        .delete_webhook(
            &acme,
            &hook.id,
            &audit(&acme, later, AuditAction::WebhookDeleted).webhook(hook.id.as_str()),
        )
        .await
        .unwrap();

    let first = store.audit_entries(&acme, None, 3).await.unwrap();
    let actions: Vec<&str> = first.iter().map(|r| r.entry.action.as_str()).collect();
    assert_eq!(
        actions,
        ["webhook.deleted", "webhook.disabled", "webhook.updated"]
    );
    let last = first.last().unwrap();
    let cursor = AuditCursor {
        at: last.entry.at,
        id: last.id,
    };
    let rest = store.audit_entries(&acme, Some(cursor), 3).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(
        rest[0].entry, created,
        "entries outlive the webhook and keep their changes"
    );
    assert!(
        store
            .audit_entries(&tenant_id("globex"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn sign_in_links_are_stored_for_existing_users(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let issued = audit(&acme, NOW, AuditAction::SignInLinkIssued);
    let expires = NOW + time::Duration::minutes(10);
    store
        .create_sign_in_link(&acme, &user_id("u1"), &[1; 32], expires, &issued)
        .await
        .unwrap();
    let error = store
        .create_sign_in_link(&acme, &user_id("ghost"), &[2; 32], expires, &issued)
        .await;
    assert!(
        matches!(error, Err(StoreError::NotFound { .. })),
        "{error:?}"
    );
    let actions: Vec<String> = store
        .audit_entries(&acme, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert_eq!(actions, ["sign_in_link.issued"]);
}

async fn audit_purge_removes_only_old_entries(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let old = webhook(&acme, 1);
    store
        .create_webhook(
            &old,
            10,
            &audit(
                &acme,
                NOW - time::Duration::days(400),
                AuditAction::WebhookCreated,
            ),
        )
        .await
        .unwrap();
    store
        .create_webhook(
            &webhook(&acme, 2),
            10,
            &audit(&acme, NOW, AuditAction::WebhookCreated),
        )
        .await
        .unwrap();
    let purged = store
        .purge_audit(NOW - time::Duration::days(365))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let left = store.audit_entries(&acme, None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].entry.at, NOW);
    assert_eq!(
        store
            .purge_audit(NOW - time::Duration::days(365))
            .await
            .unwrap(),
        0
    );
}

fn new_event(id: &str, key: Option<&str>, deliveries: Vec<(WebhookId, usize)>) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        event_type: "invoice.paid".into(),
        occurred_at: NOW,
        accepted_at: NOW,
        key: key.map(str::to_owned),
        fingerprint: [1; 32],
        resource_id: "12345".into(),
        payloads: vec![b"{\"full\":true}".to_vec(), b"{\"shaped\":true}".to_vec()],
        deliveries,
    }
}

async fn published_events_store_each_payload_once_and_queue_enabled_webhooks(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let hooks: Vec<Webhook> = (1..=3).map(|n| webhook(&acme, n)).collect();
    for hook in &hooks {
        store
            .create_webhook(hook, 10, &audit(&acme, NOW, AuditAction::WebhookCreated))
            .await
            .unwrap();
    }
    let mut disabled = hooks[2].clone();
    disabled.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: NOW,
    });
    store
        .update_webhook(&disabled, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await
        .unwrap();

    let event = new_event(
        "evt_1",
        None,
        vec![
            (hooks[0].id.clone(), 0),
            (hooks[1].id.clone(), 1),
            (hooks[2].id.clone(), 0),
        ],
    );
    store.publish_events(&acme, &[event], NOW).await.unwrap();
    let queued = store.deliveries_of_event(&acme, "evt_1").await.unwrap();
    let mut expected = vec![
        (hooks[0].id.clone(), b"{\"full\":true}".to_vec()),
        (hooks[1].id.clone(), b"{\"shaped\":true}".to_vec()),
    ];
    expected.sort();
    let found: Vec<(WebhookId, Vec<u8>)> = queued
        .iter()
        .map(|d| (d.webhook_id.clone(), d.body.clone()))
        .collect();
    assert_eq!(found, expected, "the disabled webhook gets nothing");
    assert!(queued.iter().all(|d| d.state == "pending"));
    assert!(
        store
            .deliveries_of_event(&tenant_id("globex"), "evt_1")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn producer_keys_are_unique_per_tenant_until_their_cutoff(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let globex = tenant_with_user(&store, "globex").await;
    let cutoff = NOW - time::Duration::days(30);
    store
        .publish_events(&acme, &[new_event("evt_1", Some("k1"), vec![])], cutoff)
        .await
        .unwrap();
    let found = store
        .events_by_key(&acme, &["k1".into(), "k2".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].id.as_str(), found[0].fingerprint.as_slice()),
        ("evt_1", [1u8; 32].as_slice())
    );
    assert!(
        store
            .events_by_key(&globex, &["k1".into()])
            .await
            .unwrap()
            .is_empty()
    );

    let error = store
        .publish_events(
            &acme,
            &[
                new_event("evt_2", None, vec![]),
                new_event("evt_3", Some("k1"), vec![]),
            ],
            cutoff,
        )
        .await;
    assert!(
        matches!(error, Err(StoreError::Conflict { .. })),
        "{error:?}"
    );
    assert!(
        store
            .deliveries_of_event(&acme, "evt_2")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store.events_by_key(&acme, &["k1".into()]).await.unwrap()[0].id == "evt_1",
        "nothing of the batch was stored"
    );

    store
        .publish_events(&globex, &[new_event("evt_4", Some("k1"), vec![])], cutoff)
        .await
        .unwrap();
    // Once the first acceptance is older than the cutoff, the key is free again.
    let later_cutoff = NOW + time::Duration::seconds(1);
    store
        .publish_events(
            &acme,
            &[new_event("evt_5", Some("k1"), vec![])],
            later_cutoff,
        )
        .await
        .unwrap();
    assert_eq!(
        store.events_by_key(&acme, &["k1".into()]).await.unwrap()[0].id,
        "evt_5"
    );
}

/// A tenant with webhooks 1..=n (all enabled) and one event queued to each.
async fn queued(store: &Arc<dyn Store>, n: u64) -> (TenantId, Vec<Webhook>) {
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
        .publish_events(&acme, &[new_event("evt_q", None, deliveries)], NOW)
        .await
        .unwrap();
    (acme, hooks)
}

fn attempt_of(
    claimed: &ClaimedDelivery,
    succeeded: bool,
    next: Option<OffsetDateTime>,
) -> AttemptRecord {
    AttemptRecord {
        id: format!("dlv_{}_{}", claimed.id, claimed.attempt),
        delivery_id: claimed.id,
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
        error_kind: (!succeeded).then(|| "http_status".to_owned()),
        error_detail: None,
        created_at: NOW,
        next_attempt_at: next,
    }
}

async fn due_deliveries_are_leased_once_until_the_lease_expires(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    queued(&store, 3).await;
    let lease_until = NOW + time::Duration::seconds(30);
    assert!(
        store
            .claim_deliveries(
                "early",
                NOW - time::Duration::seconds(1),
                lease_until,
                10,
                100,
                &[]
            )
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let first = store
        .claim_deliveries("a:1", NOW, lease_until, 2, 100, &[])
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].attempt, 1);
    assert_eq!(first[0].body, b"{\"full\":true}");
    assert_eq!(first[0].event_type, "invoice.paid");
    assert_eq!(first[0].secret_ciphertext, vec![1, 2, 3, 1]);
    let second = store
        .claim_deliveries("b:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "leased work is not handed out twice");
    assert!(
        store
            .claim_deliveries("c:1", NOW, lease_until, 10, 100, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store
        .claim_deliveries(
            "c:2",
            lease_until,
            lease_until + time::Duration::seconds(30),
            10,
            100,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        expired.len(),
        3,
        "expired leases return the work to the queue"
    );

    store
        .release_deliveries("c:2", &[expired[0].id])
        .await
        .unwrap();
    assert_eq!(store.release_all_leases().await.unwrap(), 2);
    assert_eq!(store.next_due().await.unwrap(), Some(NOW));
    assert_eq!(
        store
            .claim_deliveries("d:1", NOW, lease_until, 10, 100, &[])
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn claims_take_at_most_so_many_of_one_webhook(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    // A backlog of three more events for the first webhook, older than everything else.
    for n in 0..3 {
        let mut event = new_event(
            &format!("evt_backlog_{n}"),
            None,
            vec![(hooks[0].id.clone(), 0)],
        );
        event.accepted_at = NOW - time::Duration::minutes(10 - n);
        store.publish_events(&acme, &[event], NOW).await.unwrap();
    }
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 3, 2, &[])
        .await
        .unwrap();
    let first = claimed
        .iter()
        .filter(|c| c.webhook_id == hooks[0].id)
        .count();
    assert_eq!(first, 2, "at most two of the backlogged webhook");
    assert!(
        claimed.iter().any(|c| c.webhook_id == hooks[1].id),
        "the other webhook is not crowded out"
    );
}

async fn claims_skip_the_webhooks_asked_to(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (_, hooks) = queued(&store, 3).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let skip = [hooks[0].id.clone(), hooks[2].id.clone()];
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &skip)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].webhook_id, hooks[1].id);
}

async fn attempts_move_deliveries_on_or_finish_them(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    let retry_at = NOW + time::Duration::seconds(5);
    assert!(
        store
            .record_attempt("a:1", &attempt_of(&claimed[0], false, Some(retry_at)))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_attempt("a:1", &attempt_of(&claimed[1], true, None))
            .await
            .unwrap()
    );
    let mut repeat = attempt_of(&claimed[1], true, None);
    repeat.id = "dlv_repeat".into();
    assert!(
        !store.record_attempt("a:1", &repeat).await.unwrap(),
        "a finished delivery stays finished"
    );
    assert!(
        store
            .claim_deliveries("a:2", NOW, lease_until, 10, 100, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_deliveries("a:3", retry_at, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (claimed[0].id, 2));
    assert!(
        store
            .record_attempt("a:3", &attempt_of(&again[0], false, None))
            .await
            .unwrap()
    );

    let history = store
        .attempts_of(&acme, "evt_q", &claimed[0].webhook_id)
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0], attempt_of(&claimed[0], false, Some(retry_at)));
    assert_eq!(history[1].next_attempt_at, None);
    let states: Vec<String> = store
        .deliveries_of_event(&acme, "evt_q")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.state)
        .collect();
    let succeeded = usize::from(claimed[1].webhook_id != hooks[0].id);
    assert_eq!(states[succeeded], "succeeded");
    assert_eq!(states[1 - succeeded], "failed");
    assert_eq!(store.next_due().await.unwrap(), None);
}

async fn cancelled_work_is_never_resumed(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    let in_flight = claimed
        .iter()
        .find(|c| c.webhook_id == hooks[0].id)
        .unwrap();
    let mut disabled = hooks[0].clone();
    disabled.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: NOW,
    });
    store
        .update_webhook(&disabled, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await
        .unwrap();
    let moved = store
        .record_attempt("a:1", &attempt_of(in_flight, false, Some(NOW)))
        .await
        .unwrap();
    assert!(
        !moved,
        "the in-flight attempt finishes but cannot revive the delivery"
    );
    let history = store
        .attempts_of(&acme, "evt_q", &hooks[0].id)
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "the attempt is still on record");
    assert_eq!(history[0].next_attempt_at, None);

    // The owner of the other webhook becomes inactive: their pending work is cancelled.
    store.release_all_leases().await.unwrap();
    let mut inactive = user("u1", &["admin"]);
    inactive.active = false;
    store.upsert_user(&acme, &inactive, NOW).await.unwrap();
    assert!(
        store
            .claim_deliveries(
                "b:1",
                NOW + time::Duration::days(1),
                lease_until + time::Duration::days(1),
                10,
                100,
                &[]
            )
            .await
            .unwrap()
            .is_empty()
    );
    let states: Vec<String> = store
        .deliveries_of_event(&acme, "evt_q")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.state)
        .collect();
    assert_eq!(states, ["cancelled", "cancelled"]);
}

async fn concurrent_claims_never_share_a_delivery(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    queued(&store, 30).await;
    let other = open(database).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let (a, b) = tokio::join!(
        store.claim_deliveries("a:1", NOW, lease_until, 20, 100, &[]),
        other.claim_deliveries("b:1", NOW, lease_until, 20, 100, &[])
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 30);
    assert!(a.iter().all(|x| b.iter().all(|y| x.id != y.id)));
}

async fn a_corrupt_queued_row_fails_alone(database: &TestDatabase, backend: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    // Damage one row behind the store's back, as a bad migration or manual edit might.
    let damage = "UPDATE deliveries SET tenant_id = 'not a tenant id!' WHERE webhook_id = $1";
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            sqlx::query(damage)
                .bind(hooks[0].id.as_str())
                .execute(&pool)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            sqlx::query(damage)
                .bind(hooks[0].id.as_str())
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the readable delivery still goes out");
    assert_eq!(claimed[0].webhook_id, hooks[1].id);
    let states: Vec<String> = store
        .deliveries_of_event(&acme, "evt_q")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.state)
        .collect();
    assert_eq!(
        states,
        ["pending"],
        "only the readable delivery is left in the tenant's queue"
    );
}
