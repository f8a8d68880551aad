//! The store contract: every behaviour below runs on SQLite and, when
//! `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL, each in a fresh database.

use std::sync::Arc;

use time::OffsetDateTime;
use time::macros::datetime;
use zivio_core::directory::BootstrapSeed;
use zivio_core::ids::{RoleName, TenantId, UserId};
use zivio_store::testing::TestDatabase;
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
