//! The store contract: every behaviour below runs on SQLite and, when
//! `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL, each in a fresh database.

use std::sync::Arc;

use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::directory::{ApiKey, BootstrapSeed, Revocation, RevokedReason, Role, Tenant};
use zivio_core::ids::{RoleName, TenantId, UserId};
use zivio_core::webhook::{Disabled, DisabledReason, Webhook, WebhookId};
use zivio_store::testing::TestDatabase;
use zivio_store::{AttemptCursor, AttemptFilter, EventTypeFilter, HealthCounts};
use zivio_store::{AttemptRecord, AuditCursor, AutoDisable, ClaimedDelivery, NewEvent, StoreError};
use zivio_store::{Backend, FinishedAttempt, KeyCheck, PublishLease, Store};

mod support;
use support::*;

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
    deleting_a_user_revokes_their_keys_and_ends_their_sessions,
    deactivation_revokes_keys_and_ends_sessions_for_good,
    losing_webhooks_manage_revokes_keys_and_ends_sessions_for_good,
    migration_0006_ends_what_earlier_versions_only_suspended,
    webhooks_round_trip_and_stay_in_their_tenant,
    the_webhook_limit_is_enforced_per_tenant,
    audit_entries_page_newest_first_and_outlive_webhooks,
    sign_in_links_are_stored_for_existing_users,
    audit_purge_removes_only_old_entries,
    published_events_store_each_payload_once_and_queue_enabled_webhooks,
    producer_keys_are_unique_per_tenant_until_their_cutoff,
    due_deliveries_are_leased_once_until_the_lease_expires,
    published_deliveries_can_be_leased_to_the_publisher,
    claims_skip_the_webhooks_asked_to,
    an_ended_lease_leaves_its_holder_only_for_a_claim_that_takes_it,
    claims_take_at_most_so_many_of_one_webhook,
    claims_know_whether_anything_a_send_depends_on_changed,
    a_corrupt_queued_row_fails_alone,
    attempts_move_deliveries_on_or_finish_them,
    the_deliveries_log_filters_and_pages_newest_first,
    every_deliveries_log_filter_is_served_by_a_tenant_index,
    health_counts_follow_the_attempts,
    a_batch_of_attempts_records_as_they_happened_in_order,
    a_webhook_failing_too_long_is_disabled_once_and_its_managers_mailed,
    test_events_reach_a_disabled_webhook,
    retention_deletes_old_history_but_never_pending_work,
    concurrent_writes_commit_together_and_fail_alone,
    recording_and_disabling_at_once_never_deadlock,
    admin_sessions_links_and_pending_secrets,
    cancelled_work_is_never_resumed,
    concurrent_claims_never_share_a_delivery,
    custom_headers_are_stored_sealed_and_travel_with_each_send,
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

    assert!(
        store
            .delete_role(&t, &role_name("admin"), NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_role(&t, &role_name("admin"), NOW)
            .await
            .unwrap()
    );
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

async fn api_keys_are_found_by_digest_listed_and_revoked(
    database: &TestDatabase,
    backend: Backend,
) {
    let store = open(database).await;
    let t = tenant_with_user(&store, "acme").await;
    let key = ApiKey {
        id: "key_1".into(),
        user: user_id("u1"),
        hint: "wxyz".into(),
        created_at: NOW,
        last_used_at: None,
        revoked: None,
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

    let revoked_at = NOW + time::Duration::minutes(10);
    let revoke = audit(&t, revoked_at, AuditAction::ApiKeyRevoked);
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
    assert!(
        !store
            .revoke_api_key(&t, &user_id("u1"), "key_1", &revoke)
            .await
            .unwrap(),
        "a revoked key is no longer live: revoked once, audited once"
    );
    store
        .touch_api_key(&[7; 32], revoked_at + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        store.api_keys(&t, &user_id("u1")).await.unwrap(),
        vec![ApiKey {
            last_used_at: Some(used),
            revoked: Some(Revocation {
                at: revoked_at,
                reason: RevokedReason::Revoked,
            }),
            ..key
        }],
        "a revoked key stays listed, with when and why"
    );
    assert_eq!(
        stored_digests(database, backend).await,
        0,
        "its digest is erased"
    );
    let actions: Vec<String> = store
        .audit_entries(&t, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert_eq!(actions, ["api_key.revoked", "api_key.created"]);
}

/// Issues key `key_<user>_<n>` (digest `[n; 32]`) to `user` and opens session
/// `session-<user>-<n>` for them.
async fn key_and_session(store: &Arc<dyn Store>, t: &TenantId, user: &str, n: u8) {
    let key = ApiKey {
        id: format!("key_{user}_{n}"),
        user: user_id(user),
        hint: format!("h{n:03}"),
        created_at: NOW,
        last_used_at: None,
        revoked: None,
    };
    let created = audit(t, NOW, AuditAction::ApiKeyCreated);
    store
        .create_api_key(t, &key, &[n; 32], &created)
        .await
        .unwrap();
    let signed_in = AuditEntry::new(t, NOW, user, AuditAction::SignedIn);
    let session = format!("session-{user}-{n}");
    store
        .create_session(session.as_bytes(), t, &user_id(user), NOW, &signed_in)
        .await
        .unwrap();
}

/// Whether `user`'s key and session number `n` still work, and the key's revocation as listed.
async fn credentials(
    store: &Arc<dyn Store>,
    t: &TenantId,
    user: &str,
    n: u8,
) -> (bool, bool, Option<Revocation>) {
    let key_works = store.api_key_holder(&[n; 32]).await.unwrap().is_some();
    let session = format!("session-{user}-{n}");
    let session_works = store.session(session.as_bytes()).await.unwrap().is_some();
    let id = format!("key_{user}_{n}");
    let listed = store.api_keys(t, &user_id(user)).await.unwrap();
    let key = listed
        .iter()
        .find(|key| key.id == id)
        .unwrap_or_else(|| panic!("{id} stays listed: {listed:?}"));
    (key_works, session_works, key.revoked)
}

const WORKING: (bool, bool, Option<Revocation>) = (true, true, None);

fn ended(at: OffsetDateTime, reason: RevokedReason) -> (bool, bool, Option<Revocation>) {
    (false, false, Some(Revocation { at, reason }))
}

/// The `user.access_ended` entries of the tenant, oldest first: (user, reason, keys, sessions).
async fn access_ended_entries(
    store: &Arc<dyn Store>,
    t: &TenantId,
) -> Vec<(String, String, serde_json::Value, u64)> {
    let mut entries: Vec<_> = store
        .audit_entries(t, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.entry.action == "user.access_ended")
        .map(|record| {
            assert_eq!(record.entry.actor_id, "platform");
            let changes = record.entry.changes;
            assert_eq!(
                changes["api_keys_revoked"],
                changes["api_key_ids"].as_array().unwrap().len()
            );
            (
                changes["user_id"].as_str().unwrap().to_owned(),
                changes["reason"].as_str().unwrap().to_owned(),
                changes["api_key_ids"].clone(),
                changes["sessions_ended"].as_u64().unwrap(),
            )
        })
        .collect();
    entries.reverse();
    entries
}

async fn deleting_a_user_revokes_their_keys_and_ends_their_sessions(
    database: &TestDatabase,
    backend: Backend,
) {
    let store = open(database).await;
    let t = tenant_with_user(&store, "acme").await;
    key_and_session(&store, &t, "u1", 7).await;
    assert_eq!(credentials(&store, &t, "u1", 7).await, WORKING);
    let later = NOW + time::Duration::minutes(1);
    assert!(store.delete_user(&t, &user_id("u1"), later).await.unwrap());
    assert_eq!(
        credentials(&store, &t, "u1", 7).await,
        ended(later, RevokedReason::UserDeleted)
    );
    assert_eq!(
        access_ended_entries(&store, &t).await,
        [("u1".into(), "user_deleted".into(), json!(["key_u1_7"]), 1)]
    );
    assert_eq!(stored_digests(database, backend).await, 0);
    let orphan = ApiKey {
        id: "key_orphan".into(),
        user: user_id("u1"),
        hint: "wxyz".into(),
        created_at: NOW,
        last_used_at: None,
        revoked: None,
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
    let signed_in = audit(&t, NOW, AuditAction::SignedIn);
    let error = store
        .create_session(b"orphan", &t, &user_id("u1"), NOW, &signed_in)
        .await;
    assert!(
        matches!(error, Err(StoreError::NotFound { .. })),
        "{error:?}"
    );

    // A user created later with the same id finds the old key revoked, not working.
    store
        .upsert_user(&t, &user("u1", &["admin"]), later)
        .await
        .unwrap();
    assert_eq!(
        credentials(&store, &t, "u1", 7).await,
        ended(later, RevokedReason::UserDeleted)
    );
    assert!(
        !store
            .delete_user(&t, &user_id("nobody"), later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_user(&tenant_id("missing"), &user_id("u1"), later)
            .await
            .unwrap()
    );
    assert_eq!(access_ended_entries(&store, &t).await.len(), 1);

    // The tenant takes everything with it.
    assert!(store.delete_tenant(&t).await.unwrap());
    assert!(store.api_keys(&t, &user_id("u1")).await.unwrap().is_empty());
}

async fn deactivation_revokes_keys_and_ends_sessions_for_good(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let t = tenant_with_user(&store, "acme").await;
    let reader = Role {
        name: role_name("reader"),
        permissions: vec!["invoices:read:tenant".into()],
    };
    store.upsert_role(&t, &reader, NOW).await.unwrap();
    store
        .upsert_user(&t, &user("u2", &["admin"]), NOW)
        .await
        .unwrap();
    store
        .upsert_user(&t, &user("u3", &["reader"]), NOW)
        .await
        .unwrap();
    key_and_session(&store, &t, "u1", 1).await;
    key_and_session(&store, &t, "u2", 2).await;
    key_and_session(&store, &t, "u3", 3).await;
    // A sign-in link issued before, still unused when access ends.
    store
        .create_sign_in_link(
            &t,
            &user_id("u1"),
            b"link-before",
            NOW + time::Duration::minutes(10),
            &audit(&t, NOW, AuditAction::SignInLinkIssued),
        )
        .await
        .unwrap();

    let deactivated = NOW + time::Duration::minutes(1);
    let mut inactive = user("u1", &["admin"]);
    inactive.active = false;
    store.upsert_user(&t, &inactive, deactivated).await.unwrap();
    assert_eq!(
        credentials(&store, &t, "u1", 1).await,
        ended(deactivated, RevokedReason::UserDeactivated)
    );
    assert_eq!(
        credentials(&store, &t, "u2", 2).await,
        WORKING,
        "others keep theirs"
    );
    let entries = store.audit_entries(&t, None, 1).await.unwrap();
    assert_eq!(entries[0].entry.at, deactivated);
    assert_eq!(
        entries[0].entry.changes,
        json!({
            "user_id": "u1",
            "reason": "user_deactivated",
            "api_keys_revoked": 1,
            "api_key_ids": ["key_u1_1"],
            "sessions_ended": 1,
            "sign_in_links_deleted": 1,
        }),
        "ids and counts, never a key"
    );

    // Grants to an inactive user are refused, and leave nothing behind.
    let error = store
        .create_api_key(
            &t,
            &ApiKey {
                id: "key_late".into(),
                user: user_id("u1"),
                hint: "late".into(),
                created_at: deactivated,
                last_used_at: None,
                revoked: None,
            },
            &[99; 32],
            &audit(&t, deactivated, AuditAction::ApiKeyCreated),
        )
        .await;
    assert!(
        matches!(error, Err(StoreError::Conflict { .. })),
        "{error:?}"
    );
    let error = store
        .create_session(
            b"late",
            &t,
            &user_id("u1"),
            deactivated,
            &audit(&t, deactivated, AuditAction::SignedIn),
        )
        .await;
    assert!(
        matches!(error, Err(StoreError::Conflict { .. })),
        "{error:?}"
    );
    assert!(store.session(b"late").await.unwrap().is_none());
    assert_eq!(store.api_keys(&t, &user_id("u1")).await.unwrap().len(), 1);

    // Staying inactive changes nothing; reactivation revives nothing.
    let inactive_again = NOW + time::Duration::minutes(2);
    store
        .upsert_user(&t, &inactive, inactive_again)
        .await
        .unwrap();
    let reactivated = NOW + time::Duration::minutes(3);
    store
        .upsert_user(&t, &user("u1", &["admin"]), reactivated)
        .await
        .unwrap();
    assert_eq!(
        credentials(&store, &t, "u1", 1).await,
        ended(deactivated, RevokedReason::UserDeactivated)
    );
    assert!(
        store
            .consume_sign_in_link(b"link-before", reactivated)
            .await
            .unwrap()
            .is_none(),
        "a link from before the deactivation opens nothing"
    );
    // A new key and a new sign-in work.
    key_and_session(&store, &t, "u1", 11).await;
    assert_eq!(credentials(&store, &t, "u1", 11).await, WORKING);

    // Deactivation ends the keys of a user who never managed webhooks too.
    let mut inactive_reader = user("u3", &["reader"]);
    inactive_reader.active = false;
    store
        .upsert_user(&t, &inactive_reader, reactivated)
        .await
        .unwrap();
    assert_eq!(
        credentials(&store, &t, "u3", 3).await,
        ended(reactivated, RevokedReason::UserDeactivated)
    );
    assert_eq!(
        access_ended_entries(&store, &t).await,
        [
            (
                "u1".into(),
                "user_deactivated".into(),
                json!(["key_u1_1"]),
                1
            ),
            (
                "u3".into(),
                "user_deactivated".into(),
                json!(["key_u3_3"]),
                1
            ),
        ]
    );
    assert_eq!(credentials(&store, &t, "u2", 2).await, WORKING);
}

async fn losing_webhooks_manage_revokes_keys_and_ends_sessions_for_good(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let t = tenant_with_user(&store, "acme").await;
    let role = |name: &str, permissions: &[&str]| Role {
        name: role_name(name),
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
    };
    let manage = role("admin", &["webhooks:manage"]);
    let read = role("reader", &["invoices:read:tenant"]);
    store.upsert_role(&t, &read, NOW).await.unwrap();
    store
        .upsert_role(&t, &role("ops", &["webhooks:manage"]), NOW)
        .await
        .unwrap();
    // u2 manages through two roles; u3 holds `admin` without ever managing (inactive).
    store
        .upsert_user(&t, &user("u2", &["admin", "ops"]), NOW)
        .await
        .unwrap();
    key_and_session(&store, &t, "u2", 2).await;

    // 1. The user's roles change.
    key_and_session(&store, &t, "u1", 1).await;
    let first = NOW + time::Duration::minutes(1);
    store
        .upsert_user(&t, &user("u1", &["reader"]), first)
        .await
        .unwrap();
    let lost = ended(first, RevokedReason::PermissionRemoved);
    assert_eq!(credentials(&store, &t, "u1", 1).await, lost);
    store
        .upsert_user(&t, &user("u1", &["admin"]), first)
        .await
        .unwrap();
    assert_eq!(
        credentials(&store, &t, "u1", 1).await,
        lost,
        "regaining the permission revives nothing"
    );

    // 2. A role they hold loses the permission (even briefly).
    key_and_session(&store, &t, "u1", 11).await;
    let second = NOW + time::Duration::minutes(2);
    store
        .upsert_role(&t, &role("admin", &["invoices:read:tenant"]), second)
        .await
        .unwrap();
    store.upsert_role(&t, &manage, second).await.unwrap();
    assert_eq!(
        credentials(&store, &t, "u1", 11).await,
        ended(second, RevokedReason::PermissionRemoved)
    );
    assert_eq!(
        credentials(&store, &t, "u2", 2).await,
        WORKING,
        "another role still grants it"
    );

    // 3. A role they hold is deleted.
    key_and_session(&store, &t, "u1", 21).await;
    let third = NOW + time::Duration::minutes(3);
    assert!(
        store
            .delete_role(&t, &role_name("admin"), third)
            .await
            .unwrap()
    );
    store.upsert_role(&t, &manage, third).await.unwrap();
    assert_eq!(
        credentials(&store, &t, "u1", 21).await,
        ended(third, RevokedReason::PermissionRemoved)
    );
    assert_eq!(credentials(&store, &t, "u2", 2).await, WORKING);

    // Changes that keep the permission, or never gave it, end nothing.
    key_and_session(&store, &t, "u1", 31).await;
    store
        .upsert_role(
            &t,
            &role("admin", &["webhooks:manage", "invoices:read:tenant"]),
            third,
        )
        .await
        .unwrap();
    store
        .upsert_user(&t, &user("u1", &["admin", "reader"]), third)
        .await
        .unwrap();
    store
        .upsert_role(&t, &role("reader", &[]), third)
        .await
        .unwrap();
    assert!(
        store
            .delete_role(&t, &role_name("reader"), third)
            .await
            .unwrap()
    );
    assert_eq!(credentials(&store, &t, "u1", 31).await, WORKING);

    assert_eq!(
        access_ended_entries(&store, &t).await,
        [
            (
                "u1".into(),
                "permission_removed".into(),
                json!(["key_u1_1"]),
                1
            ),
            (
                "u1".into(),
                "permission_removed".into(),
                json!(["key_u1_11"]),
                1
            ),
            (
                "u1".into(),
                "permission_removed".into(),
                json!(["key_u1_21"]),
                1
            ),
        ]
    );
}

/// Keys and sessions of users who were inactive, or without `webhooks:manage`, when 0006 ran
/// had only been suspended: the migration ends them.
async fn migration_0006_ends_what_earlier_versions_only_suspended(
    database: &TestDatabase,
    backend: Backend,
) {
    let (directory, time, blob): (&str, &str, fn(u8) -> String) = match backend {
        Backend::Sqlite => ("migrations/sqlite", "0", |n| format!("x'{n:02x}'")),
        Backend::Postgres => ("migrations/postgres", "now()", |n| {
            format!("decode('{n:02x}', 'hex')")
        }),
    };
    let mut before = sqlx::migrate::Migrator::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(directory),
    )
    .await
    .unwrap();
    before.migrations = before
        .migrations
        .iter()
        .filter(|migration| migration.version < 6)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert_eq!(before.migrations.len(), 5);
    // manager: active with webhooks:manage; gone: inactive; reader: active without it (its key
    // was used); early: active without it, its key issued ahead of a grant and never used.
    let data = format!(
        "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ('t', 'T', {time}, {time});
         INSERT INTO roles (tenant_id, name, updated_at) VALUES ('t', 'admin', {time}), ('t', 'reader', {time});
         INSERT INTO role_permissions (tenant_id, role_name, permission)
             VALUES ('t', 'admin', 'webhooks:manage'), ('t', 'reader', 'invoices:read:tenant');
         INSERT INTO users (tenant_id, id, email, name, active, created_at, updated_at)
             VALUES ('t', 'manager', 'm@x.co', 'M', TRUE, {time}, {time}),
                    ('t', 'gone', 'g@x.co', 'G', FALSE, {time}, {time}),
                    ('t', 'reader', 'r@x.co', 'R', TRUE, {time}, {time}),
                    ('t', 'early', 'e@x.co', 'E', TRUE, {time}, {time});
         INSERT INTO user_roles (tenant_id, user_id, role_name)
             VALUES ('t', 'manager', 'admin'), ('t', 'gone', 'admin'), ('t', 'reader', 'reader'),
                    ('t', 'early', 'reader');
         INSERT INTO api_keys (id, tenant_id, user_id, key_hash, hint, created_at, last_used_at)
             VALUES ('key_manager_1', 't', 'manager', {}, 'h', {time}, {time}),
                    ('key_gone_2', 't', 'gone', {}, 'h', {time}, NULL),
                    ('key_reader_3', 't', 'reader', {}, 'h', {time}, {time}),
                    ('key_early_4', 't', 'early', {}, 'h', {time}, NULL);
         INSERT INTO admin_sessions (id_hash, tenant_id, user_id, created_at, last_seen_at)
             VALUES ({}, 't', 'manager', {time}, {time}),
                    ({}, 't', 'gone', {time}, {time}),
                    ({}, 't', 'reader', {time}, {time});",
        blob(1),
        blob(2),
        blob(3),
        blob(4),
        blob(11),
        blob(12),
        blob(13),
    );
    match backend {
        Backend::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = database.url.parse().unwrap();
            let pool =
                sqlx::SqlitePool::connect_with(options.create_if_missing(true).foreign_keys(true))
                    .await
                    .unwrap();
            before.run(&pool).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(data))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            before.run(&pool).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(data))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }

    let store = open(database).await;
    let t = tenant_id("t");
    let state = |user: &'static str, n: u8, session: u8| {
        let store = store.clone();
        let t = t.clone();
        async move {
            let key_works = store.api_key_holder(&[n]).await.unwrap().is_some();
            let session_works = store.session(&[session]).await.unwrap().is_some();
            let listed = store.api_keys(&t, &user_id(user)).await.unwrap();
            let reason = listed[0].revoked.map(|revoked| revoked.reason);
            (key_works, session_works, reason)
        }
    };
    assert_eq!(state("manager", 1, 11).await, (true, true, None));
    assert_eq!(
        state("early", 4, 14).await,
        (true, false, None),
        "a key never used may have been issued ahead of a grant"
    );
    assert_eq!(
        stored_digests(database, backend).await,
        2,
        "only the live keys keep their digests"
    );
    assert_eq!(
        state("gone", 2, 12).await,
        (false, false, Some(RevokedReason::UserDeactivated))
    );
    assert_eq!(
        state("reader", 3, 13).await,
        (false, false, Some(RevokedReason::PermissionRemoved))
    );
    // Reactivating, or granting the permission, revives nothing.
    store
        .upsert_user(&t, &user("gone", &["admin"]), NOW)
        .await
        .unwrap();
    store
        .upsert_user(&t, &user("reader", &["admin"]), NOW)
        .await
        .unwrap();
    assert_eq!(
        state("gone", 2, 12).await,
        (false, false, Some(RevokedReason::UserDeactivated))
    );
    assert_eq!(
        state("reader", 3, 13).await,
        (false, false, Some(RevokedReason::PermissionRemoved))
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
    store
        .publish_events(&acme, &[event], NOW, None)
        .await
        .unwrap();
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
        .publish_events(
            &acme,
            &[new_event("evt_1", Some("k1"), vec![])],
            cutoff,
            None,
        )
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
            None,
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
        .publish_events(
            &globex,
            &[new_event("evt_4", Some("k1"), vec![])],
            cutoff,
            None,
        )
        .await
        .unwrap();
    // Once the first acceptance is older than the cutoff, the key is free again.
    let later_cutoff = NOW + time::Duration::seconds(1);
    store
        .publish_events(
            &acme,
            &[new_event("evt_5", Some("k1"), vec![])],
            later_cutoff,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.events_by_key(&acme, &["k1".into()]).await.unwrap()[0].id,
        "evt_5"
    );
}

/// A publish may store its deliveries leased to its own instance: it gets their ids, nobody
/// can claim them while the lease holds, and they are claimable again once given back (or when
/// the lease expires). Webhooks disabled before the commit get nothing, as without a lease.
async fn published_deliveries_can_be_leased_to_the_publisher(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let hooks: Vec<Webhook> = (1..=3).map(|i| webhook(&acme, i)).collect();
    for hook in &hooks {
        store
            .create_webhook(hook, 100, &audit(&acme, NOW, AuditAction::WebhookCreated))
            .await
            .unwrap();
    }
    let mut off = hooks[2].clone();
    off.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: NOW,
    });
    store
        .update_webhook(&off, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await
        .unwrap();
    let deliveries = hooks.iter().map(|hook| (hook.id.clone(), 0)).collect();
    let lease = PublishLease {
        token: "me:p1".to_owned(),
        until: NOW + time::Duration::minutes(1),
    };
    let mut leased = store
        .publish_leased(
            &acme,
            &[new_event("evt_l", None, deliveries)],
            NOW,
            &lease,
            None,
        )
        .await
        .unwrap();
    leased.sort_by(|a, b| a.webhook_id.cmp(&b.webhook_id));
    let webhooks: Vec<&WebhookId> = leased.iter().map(|d| &d.webhook_id).collect();
    assert_eq!(
        webhooks,
        [&hooks[0].id, &hooks[1].id],
        "the disabled one gets nothing"
    );
    assert!(leased.iter().all(|d| d.event_id == "evt_l"));
    let claim_until = NOW + time::Duration::minutes(5);
    let taken = store
        .claim_deliveries("other:1", NOW, claim_until, 10, 10, &[])
        .await
        .unwrap();
    assert!(taken.is_empty(), "leased at the publish: {taken:?}");
    store
        .release_deliveries(&lease.token, &[leased[0].id])
        .await
        .unwrap();
    let taken = store
        .claim_deliveries("other:2", NOW, claim_until, 10, 10, &[])
        .await
        .unwrap();
    let ids: Vec<i64> = taken.iter().map(|d| d.id).collect();
    assert_eq!(ids, [leased[0].id], "given back, then claimable");
    let after_lease = lease.until + time::Duration::seconds(1);
    let taken = store
        .claim_deliveries(
            "other:3",
            after_lease,
            after_lease + time::Duration::minutes(1),
            10,
            10,
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = taken.iter().map(|d| d.id).collect();
    assert_eq!(ids, [leased[1].id], "claimable once the lease expired");
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
    assert_eq!(first[0].body.as_ref(), b"{\"full\":true}");
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
        store
            .publish_events(&acme, &[event], NOW, None)
            .await
            .unwrap();
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

/// SQLite (one process owns it) tells a claim whether webhooks or the directory changed since;
/// PostgreSQL never vouches for that (other instances write too).
async fn claims_know_whether_anything_a_send_depends_on_changed(
    database: &TestDatabase,
    backend: Backend,
) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 1, 1, &[])
        .await
        .unwrap();
    let generation = claimed[0].generation;
    match backend {
        Backend::Postgres => {
            assert_eq!(generation, None);
            return;
        }
        Backend::Sqlite => assert_eq!(store.change_generation(), generation),
    }
    let generation = generation.unwrap();
    // The queue's own writes change nothing a send depends on.
    let event = new_event("evt_more", None, vec![(hooks[1].id.clone(), 0)]);
    store
        .publish_events(&acme, &[event], NOW, None)
        .await
        .unwrap();
    let more = store
        .claim_deliveries("a:2", NOW, lease_until, 10, 10, &[])
        .await
        .unwrap();
    store
        .release_deliveries("a:2", &more.iter().map(|c| c.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(
        store.change_generation(),
        Some(generation),
        "publishing and claiming"
    );
    // A change to a webhook (a rotation, say) is one.
    let mut rotated = store.webhook(&acme, &hooks[0].id).await.unwrap().unwrap();
    rotated.secret.hint = "new!".into();
    store
        .update_webhook(
            &rotated,
            &audit(&acme, NOW, AuditAction::WebhookSecretRotated),
        )
        .await
        .unwrap();
    assert_ne!(store.change_generation(), Some(generation));
    let again = store
        .claim_deliveries("a:3", NOW, lease_until, 10, 10, &[])
        .await
        .unwrap();
    let current = again[0].generation.unwrap();
    assert_eq!(store.change_generation(), Some(current));
    // So is a change to the directory.
    store
        .upsert_user(&acme, &user("u9", &["admin"]), NOW)
        .await
        .unwrap();
    assert_ne!(store.change_generation(), Some(current));
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

async fn an_ended_lease_leaves_its_holder_only_for_a_claim_that_takes_it(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let (_, hooks) = queued(&store, 3).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let held = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    // The holder stalls past its lease. A claim that skips every webhook takes nothing, and one
    // allowed a share of one takes one delivery, not all three.
    let later = lease_until + time::Duration::seconds(1);
    let after = later + time::Duration::seconds(30);
    let all: Vec<_> = hooks.iter().map(|hook| hook.id.clone()).collect();
    let skipping = store
        .claim_deliveries("b:1", later, after, 10, 1, &all)
        .await
        .unwrap();
    assert!(skipping.is_empty());
    let taken = store
        .claim_deliveries("b:2", later, after, 10, 1, &[])
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "a share at a time");
    // The late holder still records what was not taken from it, and not what was.
    for delivery in &held {
        let recorded = store
            .record_attempt("a:1", &attempt_of(delivery, true, None), KEEP_ENABLED)
            .await
            .unwrap();
        assert_eq!(
            recorded.moved,
            delivery.id != taken[0].id,
            "{}",
            delivery.id
        );
    }
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
            .record_attempt(
                "a:1",
                &attempt_of(&claimed[0], false, Some(retry_at)),
                KEEP_ENABLED
            )
            .await
            .unwrap()
            .moved
    );
    assert!(
        store
            .record_attempt("a:1", &attempt_of(&claimed[1], true, None), KEEP_ENABLED)
            .await
            .unwrap()
            .moved
    );
    let mut repeat = attempt_of(&claimed[1], true, None);
    repeat.id = "dlv_repeat".into();
    assert!(
        !store
            .record_attempt("a:1", &repeat, KEEP_ENABLED)
            .await
            .unwrap()
            .moved,
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
            .record_attempt("a:3", &attempt_of(&again[0], false, None), KEEP_ENABLED)
            .await
            .unwrap()
            .moved
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
        .record_attempt(
            "a:1",
            &attempt_of(in_flight, false, Some(NOW)),
            KEEP_ENABLED,
        )
        .await
        .unwrap()
        .moved;
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

// --- Deliveries log, health, auto-disable, mail, retention ------------------------------------

/// Claims everything due at `at` under `lease` and records one attempt per claimed delivery,
/// each a millisecond after the last, as `outcome` says.
async fn attempt_all(
    store: &Arc<dyn Store>,
    lease: &str,
    at: OffsetDateTime,
    outcome: impl Fn(&ClaimedDelivery) -> (bool, Option<OffsetDateTime>),
) -> Vec<AttemptRecord> {
    let claimed = store
        .claim_deliveries(lease, at, at + time::Duration::seconds(30), 100, 100, &[])
        .await
        .unwrap();
    let mut recorded = Vec::new();
    for (i, delivery) in claimed.iter().enumerate() {
        let (succeeded, next) = outcome(delivery);
        let mut attempt = attempt_of(delivery, succeeded, next);
        attempt.created_at = at + time::Duration::milliseconds(i as i64);
        store
            .record_attempt(lease, &attempt, KEEP_ENABLED)
            .await
            .unwrap();
        recorded.push(attempt);
    }
    recorded
}

fn filter() -> AttemptFilter {
    AttemptFilter {
        limit: 100,
        ..AttemptFilter::default()
    }
}

async fn ids(store: &Arc<dyn Store>, tenant: &TenantId, filter: &AttemptFilter) -> Vec<String> {
    store
        .delivery_attempts(tenant, filter)
        .await
        .unwrap()
        .into_iter()
        .map(|attempt| attempt.id)
        .collect()
}

async fn the_deliveries_log_filters_and_pages_newest_first(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let mut job = new_event(
        "evt_job",
        None,
        hooks.iter().map(|h| (h.id.clone(), 1)).collect(),
    );
    job.event_type = "job.created".into();
    store
        .publish_events(&acme, &[job], NOW, None)
        .await
        .unwrap();
    // First round: hook 1 fails (and retries), hook 2 succeeds; then hook 1 succeeds.
    let first = attempt_all(&store, "l:1", NOW, |d| {
        let ok = d.webhook_id == hooks[1].id;
        (ok, (!ok).then_some(NOW + time::Duration::minutes(1)))
    })
    .await;
    assert_eq!(first.len(), 4);
    let later = NOW + time::Duration::minutes(1);
    let second = attempt_all(&store, "l:2", later, |_| (true, None)).await;
    assert_eq!(second.len(), 2);
    let all: Vec<&AttemptRecord> = first.iter().chain(&second).collect();
    let newest_first = |keep: &dyn Fn(&AttemptRecord) -> bool| -> Vec<String> {
        let mut kept: Vec<&&AttemptRecord> = all.iter().filter(|a| keep(a)).collect();
        kept.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        kept.iter().map(|a| a.id.clone()).collect()
    };

    assert_eq!(ids(&store, &acme, &filter()).await, newest_first(&|_| true));
    let by_hook = AttemptFilter {
        webhook: Some(hooks[0].id.clone()),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &by_hook).await,
        newest_first(&|a| a.webhook_id == hooks[0].id)
    );
    let failed_of_hook = AttemptFilter {
        succeeded: Some(false),
        ..by_hook.clone()
    };
    assert_eq!(
        ids(&store, &acme, &failed_of_hook).await,
        newest_first(&|a| a.webhook_id == hooks[0].id && !a.succeeded)
    );
    let jobs = AttemptFilter {
        event_type: Some(EventTypeFilter::Exact("job.created".into())),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &jobs).await,
        newest_first(&|a| a.event_type == "job.created")
    );
    let invoices = AttemptFilter {
        event_type: Some(EventTypeFilter::Prefix("invoice".into())),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &invoices).await,
        newest_first(&|a| a.event_type == "invoice.paid")
    );
    let by_event = AttemptFilter {
        event_id: Some("evt_job".into()),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &by_event).await,
        newest_first(&|a| a.event_id == "evt_job")
    );
    let in_range = AttemptFilter {
        from: Some(later),
        to: Some(later + time::Duration::seconds(1)),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &in_range).await,
        newest_first(&|a| a.created_at >= later)
    );
    let other = tenant_with_user(&store, "globex").await;
    assert!(
        ids(&store, &other, &filter()).await.is_empty(),
        "tenants never see each other's attempts"
    );

    // Only the latest attempt of a pending delivery says when the next is due.
    let summaries = store.delivery_attempts(&acme, &filter()).await.unwrap();
    assert!(
        summaries.iter().all(|a| a.next_attempt_at.is_none()),
        "every delivery finished"
    );

    // Pages of two, with a newer attempt arriving between pages: nothing repeats or goes missing.
    let mut page = AttemptFilter {
        limit: 2,
        ..filter()
    };
    let mut seen = Vec::new();
    loop {
        let rows = store.delivery_attempts(&acme, &page).await.unwrap();
        seen.extend(rows.iter().map(|a| a.id.clone()));
        if seen.len() == 2 {
            let mut late = new_event("evt_late", None, vec![(hooks[0].id.clone(), 0)]);
            late.accepted_at = later;
            store
                .publish_events(&acme, &[late], NOW, None)
                .await
                .unwrap();
            attempt_all(&store, "l:3", later + time::Duration::minutes(1), |_| {
                (false, None)
            })
            .await;
        }
        let Some(last) = rows.last().filter(|_| rows.len() == 2) else {
            break;
        };
        page.before = Some(AttemptCursor {
            at: last.created_at,
            id: last.id.clone(),
        });
    }
    assert_eq!(seen, newest_first(&|_| true));

    let detail = store
        .delivery_attempt(&acme, &first[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.summary.id, first[0].id);
    assert_eq!(detail.request_body, b"{\"full\":true}".to_vec());
    assert_eq!(detail.response_body, Some(b"ok".to_vec()));
    assert!(
        store
            .delivery_attempt(&other, &first[0].id)
            .await
            .unwrap()
            .is_none()
    );
}

async fn every_deliveries_log_filter_is_served_by_a_tenant_index(
    database: &TestDatabase,
    backend: Backend,
) {
    let store = open(database).await;
    let (acme, _) = queued(&store, 1).await;
    let claimed = attempt_all(&store, "l:1", NOW, |_| (true, None)).await;
    // Realistic volume: 20 tenants, 40 webhooks, 30,000 attempts, so that the planner weighs
    // indexes against scans as it would in production.
    let generate = match backend {
        Backend::Sqlite => "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
             INSERT INTO delivery_attempts (id, tenant_id, delivery_id, webhook_id, event_id, event_type,
                 event_type_prefix, attempt, succeeded, request_url, request_headers, duration_ms, created_at)
             SELECT 'dlv_' || i, 't' || (i % 20), $1, printf('wh_%032d', i % 40), 'evt_' || (i / 3),
                    CASE i % 3 WHEN 0 THEN 'invoice.paid' WHEN 1 THEN 'job.created' ELSE 'offer.sent' END,
                    CASE i % 3 WHEN 0 THEN 'invoice' WHEN 1 THEN 'job' ELSE 'offer' END,
                    1, i % 4 = 0, 'https://x.example/', '{}', 5, 1700000000000 + i * 1000
             FROM n",
        Backend::Postgres => "INSERT INTO delivery_attempts (id, tenant_id, delivery_id, webhook_id, event_id, event_type,
                 event_type_prefix, attempt, succeeded, request_url, request_headers, duration_ms, created_at)
             SELECT 'dlv_' || i, 't' || (i % 20), $1, 'wh_' || lpad((i % 40)::text, 32, '0'), 'evt_' || (i / 3),
                    CASE i % 3 WHEN 0 THEN 'invoice.paid' WHEN 1 THEN 'job.created' ELSE 'offer.sent' END,
                    CASE i % 3 WHEN 0 THEN 'invoice' WHEN 1 THEN 'job' ELSE 'offer' END,
                    1, i % 4 = 0, 'https://x.example/', '{}', 5,
                    to_timestamp(1700000000 + i)
             FROM generate_series(1, 30000) AS i",
    };
    raw(database, backend, generate, claimed[0].delivery_id).await;
    raw(database, backend, "ANALYZE", 0).await;
    let t = tenant_id("t1");
    let hook = WebhookId::parse("wh_00000000000000000000000000000001").unwrap();
    let cases = [
        (
            "webhook",
            AttemptFilter {
                webhook: Some(hook.clone()),
                ..filter()
            },
            "attempts_webhook_time",
        ),
        (
            "webhook+status",
            AttemptFilter {
                webhook: Some(hook),
                succeeded: Some(true),
                ..filter()
            },
            "attempts_webhook_status_time",
        ),
        (
            "event type",
            AttemptFilter {
                event_type: Some(EventTypeFilter::Exact("job.created".into())),
                ..filter()
            },
            "attempts_type_time",
        ),
        (
            "category",
            AttemptFilter {
                event_type: Some(EventTypeFilter::Prefix("job".into())),
                ..filter()
            },
            "attempts_prefix_time",
        ),
        (
            "event id",
            AttemptFilter {
                event_id: Some("evt_7".into()),
                ..filter()
            },
            "attempts_event_time",
        ),
        (
            "date range",
            AttemptFilter {
                from: Some(datetime!(2023-11-14 0:00 UTC)),
                to: Some(datetime!(2023-11-16 0:00 UTC)),
                ..filter()
            },
            "attempts_tenant_time",
        ),
        (
            "next page",
            AttemptFilter {
                before: Some(AttemptCursor {
                    at: datetime!(2023-11-15 06:00 UTC),
                    id: "dlv_9".into(),
                }),
                ..filter()
            },
            "attempts_tenant_time",
        ),
    ];
    for (name, filter, index) in cases {
        let plan = store.explain_delivery_attempts(&t, &filter).await.unwrap();
        assert!(plan.contains(index), "{name}: expected {index} in\n{plan}");
        for scan in [
            "SCAN a\n",
            "SCAN delivery_attempts",
            "Seq Scan on delivery_attempts",
            "TEMP B-TREE",
            "Sort",
        ] {
            assert!(
                !format!("{plan}\n").contains(scan),
                "{name}: `{scan}` in\n{plan}"
            );
        }
    }
    assert!(!ids(&store, &acme, &filter()).await.is_empty());
}

/// How many API key digests the database holds.
async fn stored_digests(database: &TestDatabase, backend: Backend) -> i64 {
    const SQL: &str = "SELECT COUNT(*) FROM api_keys WHERE key_hash IS NOT NULL";
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            let count = sqlx::query_scalar(SQL).fetch_one(&pool).await.unwrap();
            pool.close().await;
            count
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            let count = sqlx::query_scalar(SQL).fetch_one(&pool).await.unwrap();
            pool.close().await;
            count
        }
    }
}

/// Runs one statement on the test database directly, binding `$1`.
async fn raw(database: &TestDatabase, backend: Backend, sql: &'static str, bind: i64) {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            sqlx::query(sql).bind(bind).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            let query = sqlx::query(sql);
            let query = if sql.contains("$1") {
                query.bind(bind)
            } else {
                query
            };
            query.execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

async fn health_counts_follow_the_attempts(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let health = |store: Arc<dyn Store>, acme: TenantId, at: OffsetDateTime| async move {
        store
            .webhook_health(
                &acme,
                None,
                at - time::Duration::days(7),
                at - time::Duration::hours(24),
            )
            .await
            .unwrap()
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>()
    };
    let before = health(store.clone(), acme.clone(), NOW).await;
    assert_eq!(before.len(), 2);
    assert_eq!(before[&hooks[0].id], HealthCounts::default());

    // Hook 1 fails twice (two days apart), then succeeds; hook 2 only fails.
    let day = time::Duration::days(1);
    let streak_start = attempt_all(&store, "l:1", NOW, |_| (false, Some(NOW + day)))
        .await
        .into_iter()
        .find(|a| a.webhook_id == hooks[1].id)
        .unwrap()
        .created_at;
    attempt_all(&store, "l:2", NOW + day, |d| {
        (
            false,
            (d.webhook_id == hooks[0].id).then_some(NOW + 2 * day),
        )
    })
    .await;
    let end = NOW + 2 * day;
    attempt_all(&store, "l:3", end, |_| (true, None)).await;
    let after = health(
        store.clone(),
        acme.clone(),
        end + time::Duration::minutes(5),
    )
    .await;
    let first = &after[&hooks[0].id];
    assert_eq!(first.last_attempt_at, Some(end));
    assert_eq!(first.last_succeeded, Some(true));
    assert_eq!(
        first.failing_since, None,
        "a success ends the failure streak"
    );
    assert_eq!((first.succeeded_7d, first.attempts_7d), (1, 3));
    assert_eq!((first.succeeded_24h, first.attempts_24h), (1, 1));
    let second = &after[&hooks[1].id];
    assert_eq!(second.last_succeeded, Some(false));
    assert_eq!(
        second.failing_since,
        Some(streak_start),
        "the first failure since the last success"
    );
    assert_eq!((second.succeeded_7d, second.attempts_7d), (0, 2));
    assert_eq!(
        (second.succeeded_24h, second.attempts_24h),
        (0, 0),
        "its last attempt was 24 hours and 5 minutes ago"
    );
    let only = store
        .webhook_health(&acme, Some(&hooks[1].id), end - 7 * day, end - day)
        .await
        .unwrap();
    assert_eq!(only.len(), 1);

    // Counters older than their window go; the latest attempt stays on the webhook.
    assert_eq!(store.purge_health_counters(NOW + day).await.unwrap(), 2);
    let purged = health(store.clone(), acme.clone(), NOW + day).await;
    assert_eq!(purged[&hooks[1].id].attempts_7d, 1);
    assert_eq!(purged[&hooks[1].id].failing_since, Some(streak_start));

    // Enabling again clears the failure streak.
    let mut disabled = store.webhook(&acme, &hooks[1].id).await.unwrap().unwrap();
    disabled.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: end,
    });
    store
        .update_webhook(&disabled, &audit(&acme, end, AuditAction::WebhookDisabled))
        .await
        .unwrap();
    let mut enabled = store.webhook(&acme, &hooks[1].id).await.unwrap().unwrap();
    enabled.disabled = None;
    store
        .update_webhook(&enabled, &audit(&acme, end, AuditAction::WebhookEnabled))
        .await
        .unwrap();
    assert_eq!(
        health(store.clone(), acme, end).await[&hooks[1].id].failing_since,
        None
    );
}

/// A batch recorded at once (handed over out of order) ends where recording its attempts one
/// by one in time order would: latest attempt, failure streak and counters per webhook, and a
/// webhook disabled once, at its latest failure.
async fn a_batch_of_attempts_records_as_they_happened_in_order(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    for event in ["evt_2", "evt_3"] {
        let deliveries = hooks.iter().map(|hook| (hook.id.clone(), 0)).collect();
        store
            .publish_events(&acme, &[new_event(event, None, deliveries)], NOW, None)
            .await
            .unwrap();
    }
    let claimed = store
        .claim_deliveries("b:1", NOW, NOW + time::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 6);
    let second = time::Duration::seconds(1);
    let retry = Some(NOW + time::Duration::hours(1));
    // (webhook, succeeded, seconds after NOW, retried)
    let plan = [
        (0, false, 2, true),
        (1, true, 0, false),
        (0, false, 0, true),
        (1, false, 2, false),
        (0, true, 1, false),
        (1, false, 1, true),
    ];
    let mut taken = [0, 0];
    let batch: Vec<FinishedAttempt> = plan
        .iter()
        .map(|&(hook, succeeded, after, retried)| {
            let delivery = claimed
                .iter()
                .filter(|c| c.webhook_id == hooks[hook].id)
                .nth(taken[hook])
                .unwrap();
            taken[hook] += 1;
            let mut record = attempt_of(delivery, succeeded, retried.then_some(retry).flatten());
            record.created_at = NOW + second * after;
            FinishedAttempt {
                lease: "b:1".into(),
                record,
                // Hook 1 fails since NOW + 1 s, hook 0 only since NOW + 2 s.
                auto_disable: AutoDisable {
                    failing_before: NOW + time::Duration::milliseconds(1500),
                    mail: false,
                },
            }
        })
        .collect();
    let outcomes = store.record_attempts(batch).await.unwrap();
    assert!(outcomes.iter().all(|outcome| outcome.moved));
    let disabled: Vec<usize> = (0..plan.len())
        .filter(|&i| outcomes[i].auto_disabled)
        .collect();
    assert_eq!(disabled, [3], "hook 1, once, at its latest failure");

    let health: std::collections::HashMap<_, _> = store
        .webhook_health(
            &acme,
            None,
            NOW - time::Duration::days(7),
            NOW - time::Duration::days(1),
        )
        .await
        .unwrap()
        .into_iter()
        .collect();
    let first = &health[&hooks[0].id];
    assert_eq!(first.last_attempt_at, Some(NOW + 2 * second));
    assert_eq!(first.last_succeeded, Some(false));
    assert_eq!(
        first.failing_since,
        Some(NOW + 2 * second),
        "since the failure after the success"
    );
    assert_eq!((first.succeeded_24h, first.attempts_24h), (1, 3));
    let second_hook = &health[&hooks[1].id];
    assert_eq!(second_hook.last_attempt_at, Some(NOW + 2 * second));
    assert_eq!(second_hook.failing_since, Some(NOW + second));
    assert_eq!(
        (second_hook.succeeded_24h, second_hook.attempts_24h),
        (1, 3)
    );
    assert!(
        store
            .webhook(&acme, &hooks[1].id)
            .await
            .unwrap()
            .unwrap()
            .disabled
            .is_some()
    );
    assert!(
        store
            .webhook(&acme, &hooks[0].id)
            .await
            .unwrap()
            .unwrap()
            .disabled
            .is_none()
    );
    // Hook 0's retries wait; hook 1's was cancelled by the disable.
    let due = store
        .claim_deliveries(
            "b:2",
            NOW + time::Duration::hours(2),
            NOW + time::Duration::hours(3),
            10,
            10,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|d| d.webhook_id == hooks[0].id));
}

async fn a_webhook_failing_too_long_is_disabled_once_and_its_managers_mailed(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
    // A second manager, an inactive one and a user without webhooks:manage.
    store
        .upsert_user(&acme, &user("u2", &["admin"]), NOW)
        .await
        .unwrap();
    let mut gone = user("u3", &["admin"]);
    gone.active = false;
    store.upsert_user(&acme, &gone, NOW).await.unwrap();
    store
        .upsert_user(&acme, &user("u4", &[]), NOW)
        .await
        .unwrap();
    let mut second = new_event("evt_2", None, vec![(hooks[0].id.clone(), 0)]);
    second.accepted_at = NOW + time::Duration::days(3);
    store
        .publish_events(&acme, &[second], NOW, None)
        .await
        .unwrap();

    let policy = |at: OffsetDateTime| AutoDisable {
        failing_before: at - time::Duration::days(5),
        mail: true,
    };
    let claimed = store
        .claim_deliveries("l:1", NOW, NOW + time::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    let first = attempt_of(&claimed[0], false, Some(NOW + time::Duration::days(6)));
    let outcome = store
        .record_attempt("l:1", &first, policy(NOW))
        .await
        .unwrap();
    assert!(!outcome.auto_disabled, "the streak just began");

    let later = NOW + time::Duration::days(6);
    let claimed = store
        .claim_deliveries(
            "l:2",
            later,
            later + time::Duration::seconds(30),
            10,
            10,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let mut failure = attempt_of(&claimed[0], false, Some(later + time::Duration::hours(1)));
    failure.created_at = later;
    failure.error_detail = Some("the receiver answered 503".into());
    let outcome = store
        .record_attempt("l:2", &failure, policy(later))
        .await
        .unwrap();
    assert!(outcome.auto_disabled && outcome.moved);
    let mut again = attempt_of(&claimed[1], false, None);
    again.created_at = later;
    let outcome = store
        .record_attempt("l:2", &again, policy(later))
        .await
        .unwrap();
    assert!(!outcome.auto_disabled, "it happens once");

    let webhook = store.webhook(&acme, &hooks[0].id).await.unwrap().unwrap();
    let disabled = webhook.disabled.unwrap();
    assert_eq!(
        (disabled.reason, disabled.by, disabled.at),
        (DisabledReason::Auto, None, later)
    );
    let states: Vec<String> = store
        .deliveries_of_event(&acme, "evt_q")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.state)
        .collect();
    assert_eq!(states, ["cancelled"], "its pending retries stop");
    let entries = store.audit_entries(&acme, None, 10).await.unwrap();
    let entry = entries
        .iter()
        .find(|e| e.entry.action == "webhook.disabled")
        .unwrap();
    assert_eq!(entry.entry.actor_id, "system");
    assert_eq!(entry.entry.changes["reason"], "auto");

    let mut mails = store
        .claim_mail(later, later + time::Duration::minutes(2), 10)
        .await
        .unwrap();
    mails.sort_by(|a, b| a.recipient.cmp(&b.recipient));
    let recipients: Vec<&str> = mails.iter().map(|m| m.recipient.as_str()).collect();
    assert_eq!(
        recipients,
        ["u1@example.com", "u2@example.com"],
        "active managers only"
    );
    let notice: zivio_core::notice::AutoDisabledNotice =
        serde_json::from_str(&mails[0].notice).unwrap();
    assert_eq!(
        notice.url, "https://hooks.example.com",
        "scheme and host only"
    );
    assert_eq!(notice.failing_since, NOW);
    assert_eq!(
        notice.last_error_detail.as_deref(),
        Some("the receiver answered 503")
    );
    assert!(
        store.claim_mail(later, later, 10).await.unwrap().is_empty(),
        "leased"
    );

    // A failed send comes back after its retry time; a sent one never does.
    store
        .mail_failed(
            mails[0].id,
            "connection refused",
            later + time::Duration::seconds(4),
        )
        .await
        .unwrap();
    store.mail_sent(mails[1].id, later).await.unwrap();
    let retry_at = later + time::Duration::seconds(4);
    let retried = store
        .claim_mail(retry_at, retry_at + time::Duration::minutes(2), 10)
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].id, retried[0].attempts), (mails[0].id, 1));
}

async fn test_events_reach_a_disabled_webhook(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
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
    let mut ordinary = new_event("evt_plain", None, vec![(hooks[0].id.clone(), 0)]);
    ordinary.event_type = "invoice.paid".into();
    let mut test = new_event("evt_test_1", None, vec![(hooks[0].id.clone(), 0)]);
    test.event_type = "webhook.test".into();
    test.is_test = true;
    let sent = audit(&acme, NOW, AuditAction::TestEventSent);
    store
        .publish_events(&acme, &[ordinary, test], NOW, Some(&sent))
        .await
        .unwrap();
    assert!(
        store
            .deliveries_of_event(&acme, "evt_plain")
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = store
        .claim_deliveries("l:1", NOW, NOW + time::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event_id, "evt_test_1");
    let target = store
        .begin_attempt("l:1", claimed[0].id, NOW, NOW + time::Duration::seconds(30))
        .await
        .unwrap();
    assert!(
        target.is_some(),
        "a test event is sent to a disabled webhook"
    );
    let entries = store.audit_entries(&acme, None, 10).await.unwrap();
    assert_eq!(
        entries[0].entry.action, "webhook.test_sent",
        "audited with the event"
    );
    let stored = store.event(&acme, "evt_plain").await.unwrap().unwrap();
    assert_eq!(stored.source.as_deref(), Some(&b"{\"data\":{}}"[..]));
}

async fn retention_deletes_old_history_but_never_pending_work(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
    // evt_q (accepted at NOW) is pending; evt_old finished; evt_new is recent.
    let mut old = new_event("evt_old", Some("k-old"), vec![(hooks[0].id.clone(), 0)]);
    old.accepted_at = NOW - time::Duration::days(40);
    let mut new = new_event("evt_new", None, vec![]);
    new.accepted_at = NOW + time::Duration::days(35);
    store
        .publish_events(&acme, &[old, new], NOW, None)
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("l:1", NOW, NOW + time::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    let old_delivery = claimed.iter().find(|c| c.event_id == "evt_old").unwrap();
    store
        .record_attempt("l:1", &attempt_of(old_delivery, true, None), KEEP_ENABLED)
        .await
        .unwrap();
    store.release_all_leases().await.unwrap();

    let cutoff = NOW + time::Duration::days(30);
    assert_eq!(
        store.purge_events(cutoff).await.unwrap(),
        1,
        "only the finished old event"
    );
    assert!(store.event(&acme, "evt_old").await.unwrap().is_none());
    assert!(
        store
            .attempts_of(&acme, "evt_old", &hooks[0].id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store.event(&acme, "evt_q").await.unwrap().is_some(),
        "pending work is kept"
    );
    assert_eq!(
        store.deliveries_of_event(&acme, "evt_q").await.unwrap()[0].state,
        "pending"
    );
    assert!(store.event(&acme, "evt_new").await.unwrap().is_some());
    assert!(
        store
            .events_by_key(&acme, &["k-old".into()])
            .await
            .unwrap()
            .is_empty(),
        "its key is free again"
    );
    assert_eq!(store.purge_events(cutoff).await.unwrap(), 0);
}

async fn concurrent_writes_commit_together_and_fail_alone(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
    store
        .publish_events(
            &acme,
            &[new_event("evt_taken", Some("taken"), vec![])],
            NOW,
            None,
        )
        .await
        .unwrap();
    // Forty publishes at once (on SQLite they share commits); one reuses a taken key.
    let writes = (0..40).map(|i| {
        let (store, acme, hook) = (store.clone(), acme.clone(), hooks[0].id.clone());
        tokio::spawn(async move {
            let key = if i == 17 {
                "taken".to_owned()
            } else {
                format!("k{i}")
            };
            let event = new_event(&format!("evt_c{i}"), Some(&key), vec![(hook, 0)]);
            store.publish_events(&acme, &[event], NOW, None).await
        })
    });
    let results: Vec<_> = futures_join(writes.collect()).await;
    for (i, result) in results.iter().enumerate() {
        if i == 17 {
            assert!(
                matches!(result, Err(StoreError::Conflict { .. })),
                "{result:?}"
            );
        } else {
            assert!(result.is_ok(), "write {i}: {result:?}");
        }
    }
    for i in 0..40 {
        let queued = store
            .deliveries_of_event(&acme, &format!("evt_c{i}"))
            .await
            .unwrap();
        assert_eq!(
            queued.len(),
            usize::from(i != 17),
            "evt_c{i}: only the refused write left nothing"
        );
    }
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

async fn recording_and_disabling_at_once_never_deadlock(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
    let events: Vec<NewEvent> = (0..20)
        .map(|i| new_event(&format!("evt_d{i}"), None, vec![(hooks[0].id.clone(), 0)]))
        .collect();
    store
        .publish_events(&acme, &events, NOW, None)
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("l:1", NOW, NOW + time::Duration::seconds(30), 100, 100, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 21);
    // Every failure may disable the webhook (its streak began long enough ago), while an admin
    // disables it by hand: the writes lock rows in one order, so all of them finish.
    let disable_now = AutoDisable {
        failing_before: NOW + time::Duration::days(1),
        mail: true,
    };
    let mut tasks = Vec::new();
    for delivery in claimed {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let attempt = attempt_of(&delivery, false, Some(NOW + time::Duration::minutes(1)));
            store
                .record_attempt("l:1", &attempt, disable_now)
                .await
                .map(|outcome| outcome.auto_disabled)
        }));
    }
    let mut manual = hooks[0].clone();
    manual.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: NOW,
    });
    let by_hand = store
        .update_webhook(&manual, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await;
    assert!(
        matches!(by_hand, Ok(()) | Err(StoreError::Conflict { .. })),
        "{by_hand:?}"
    );
    let mut auto = 0;
    for task in tasks {
        auto += usize::from(task.await.unwrap().expect("no deadlock, no error"));
    }
    assert!(auto <= 1, "disabled automatically at most once");
    assert!(
        store
            .webhook(&acme, &hooks[0].id)
            .await
            .unwrap()
            .unwrap()
            .disabled
            .is_some()
    );
}

async fn admin_sessions_links_and_pending_secrets(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let u1 = user_id("u1");
    assert_eq!(
        store.user_by_email(&acme, "U1@Example.com").await.unwrap(),
        Some(u1.clone())
    );
    assert_eq!(
        store
            .user_by_email(&acme, "nobody@example.com")
            .await
            .unwrap(),
        None
    );

    // A link works once, and not after it expires.
    let issued = audit(&acme, NOW, AuditAction::SignInLinkIssued);
    store
        .create_sign_in_link(
            &acme,
            &u1,
            b"link-1",
            NOW + time::Duration::minutes(10),
            &issued,
        )
        .await
        .unwrap();
    store
        .create_sign_in_link(
            &acme,
            &u1,
            b"link-2",
            NOW + time::Duration::minutes(10),
            &issued,
        )
        .await
        .unwrap();
    let used = store.consume_sign_in_link(b"link-1", NOW).await.unwrap();
    assert_eq!(used, Some((acme.clone(), u1.clone())));
    assert_eq!(
        store.consume_sign_in_link(b"link-1", NOW).await.unwrap(),
        None,
        "single use"
    );
    let late = NOW + time::Duration::minutes(11);
    assert_eq!(
        store.consume_sign_in_link(b"link-2", late).await.unwrap(),
        None,
        "expired"
    );

    // Sessions by digest, touched, with a secret kept once.
    let about_one = audit(&acme, NOW, AuditAction::WebhookCreated).webhook("wh_1");
    store
        .create_sign_in_link(&acme, &u1, b"link-3", NOW, &about_one)
        .await
        .unwrap();
    let entries = store
        .webhook_audit_entries(&acme, "wh_1", 10)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "only the entry about that webhook");
    assert_eq!(entries[0].entry.webhook_id.as_deref(), Some("wh_1"));
    let signed_in = audit(&acme, NOW, AuditAction::SignedIn);
    store
        .create_session(b"session-1", &acme, &u1, NOW, &signed_in)
        .await
        .unwrap();
    let session = store.session(b"session-1").await.unwrap().unwrap();
    assert_eq!(
        (session.tenant, session.user, session.created_at),
        (acme.clone(), u1.clone(), NOW)
    );
    let later = NOW + time::Duration::minutes(5);
    store.touch_session(b"session-1", later).await.unwrap();
    assert_eq!(
        store
            .session(b"session-1")
            .await
            .unwrap()
            .unwrap()
            .last_seen_at,
        later
    );
    store
        .set_pending_secret(b"session-1", "wh_1", b"sealed")
        .await
        .unwrap();
    assert_eq!(
        store
            .take_pending_secret(b"session-1", "wh_2")
            .await
            .unwrap(),
        None,
        "another webhook's, and asking does not clear this one"
    );
    assert_eq!(
        store
            .take_pending_secret(b"session-1", "wh_1")
            .await
            .unwrap(),
        Some(b"sealed".to_vec())
    );
    assert_eq!(
        store
            .take_pending_secret(b"session-1", "wh_1")
            .await
            .unwrap(),
        None,
        "shown once"
    );
    assert_eq!(
        store.audit_entries(&acme, None, 1).await.unwrap()[0]
            .entry
            .action,
        "user.signed_in"
    );

    // Idle sessions are purged; signing out deletes one; deleting the user ends them all.
    store
        .create_session(b"session-2", &acme, &u1, NOW, &signed_in)
        .await
        .unwrap();
    assert_eq!(
        store
            .purge_sessions(NOW + time::Duration::minutes(1))
            .await
            .unwrap(),
        1
    );
    assert!(store.session(b"session-2").await.unwrap().is_none());
    assert!(store.session(b"session-1").await.unwrap().is_some());
    store.delete_session(b"session-1").await.unwrap();
    assert!(store.session(b"session-1").await.unwrap().is_none());
    store
        .create_session(b"session-3", &acme, &u1, NOW, &signed_in)
        .await
        .unwrap();
    store.delete_user(&acme, &u1, NOW).await.unwrap();
    assert!(store.session(b"session-3").await.unwrap().is_none());
}

async fn custom_headers_are_stored_sealed_and_travel_with_each_send(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let sealed = |name: &str, n: u8| zivio_core::custom_header::SealedHeader {
        name: name.to_owned(),
        ciphertext: vec![n; 40],
        key_id: "k1".into(),
        hint: (n > 1).then(|| "WXYZ".to_owned()),
    };
    let mut hook = webhook(&acme, 1);
    hook.headers = vec![sealed("Authorization", 1), sealed("X-Api-Key", 2)];
    store
        .create_webhook(&hook, 100, &audit(&acme, NOW, AuditAction::WebhookCreated))
        .await
        .unwrap();
    let read = store.webhook(&acme, &hook.id).await.unwrap().unwrap();
    assert_eq!(read.headers, hook.headers);

    let mut changed = read.clone();
    changed.headers = vec![sealed("X-Other", 3)];
    store
        .update_webhook(&changed, &audit(&acme, NOW, AuditAction::WebhookUpdated))
        .await
        .unwrap();
    let read = store.webhook(&acme, &hook.id).await.unwrap().unwrap();
    assert_eq!(read.headers, changed.headers);

    store
        .publish_events(
            &acme,
            &[new_event("evt_h", None, vec![(hook.id.clone(), 0)])],
            NOW,
            None,
        )
        .await
        .unwrap();
    let lease_until = NOW + time::Duration::seconds(60);
    let claimed = store
        .claim_deliveries("h:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(claimed[0].headers, changed.headers, "a claim carries them");
    let targets = store
        .begin_attempts(&[("h:1".to_owned(), claimed[0].id)], NOW, lease_until)
        .await
        .unwrap();
    let target = targets[0].as_ref().expect("still ours");
    assert_eq!(
        target.headers, changed.headers,
        "the pre-send check reads them"
    );
    assert_eq!(target.secret_ciphertext, hook.secret.ciphertext);
}
