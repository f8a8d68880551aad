//! Access that ends in the store (docs/product.md §8, "Ending access"): deleting a user,
//! deactivating them, or their losing `webhooks:manage` (through their roles, a role's
//! permissions or a deleted role) revokes their API keys and ends their sessions and sign-in
//! links for good, in the same transaction, with one `user.access_ended` audit entry. Every
//! behaviour runs on SQLite and, when `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL.

use std::sync::Arc;

use serde_json::json;
use time::OffsetDateTime;
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::directory::{ApiKey, Revocation, RevokedReason, Role};
use zivio_core::ids::TenantId;
use zivio_store::testing::TestDatabase;
use zivio_store::{Backend, Store, StoreError};

mod support;
use support::*;

contract!(
    deleting_a_user_revokes_their_keys_and_ends_their_sessions,
    deactivation_revokes_keys_and_ends_sessions_for_good,
    losing_webhooks_manage_revokes_keys_and_ends_sessions_for_good,
);

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
