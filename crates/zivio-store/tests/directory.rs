//! The directory in the store (docs/product.md §3): migrations that run twice harmlessly, the
//! ping, the key check, the bootstrap seed created once however many instances start, and
//! tenants, roles and users: upserts that replace, deletes that cascade, emails unique per
//! tenant. Every behaviour runs on SQLite and, when `ZIVIO_TEST_DATABASE_URL` is set, on
//! PostgreSQL.

use zivio_core::directory::{BootstrapSeed, Role, Tenant};
use zivio_core::ids::{RoleName, TenantId, UserId};
use zivio_store::testing::TestDatabase;
use zivio_store::{Backend, KeyCheck, StoreError, UserWithRoles};

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
    let UserWithRoles { user: found, roles } = store
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
            .roles
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
