//! Access in the store (docs/product.md §8): API keys found by digest, listed and revoked (their
//! digests erased), sign-in links for existing users that work once, admin sessions and the
//! secrets they hold for one showing, and migration 0006, which ends the keys and sessions that
//! earlier versions only suspended. Every behaviour runs on SQLite and, when
//! `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL.

use zivio_core::audit::AuditAction;
use zivio_core::directory::{ApiKey, Revocation, RevokedReason};
use zivio_store::testing::TestDatabase;
use zivio_store::{Backend, KeyHolder, LinkHolder, StoreError};

mod support;
use support::*;

contract!(
    api_keys_are_found_by_digest_listed_and_revoked,
    migration_0006_ends_what_earlier_versions_only_suspended,
    sign_in_links_are_stored_for_existing_users,
    admin_sessions_links_and_pending_secrets,
);

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
        Some(KeyHolder {
            tenant: t.clone(),
            user: user_id("u1"),
            last_used_at: None
        })
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
    assert_eq!(
        used,
        Some(LinkHolder {
            tenant: acme.clone(),
            user: u1.clone()
        })
    );
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
