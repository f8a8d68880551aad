//! The service on PostgreSQL: required keys, the key check, concurrent starts. Skipped (with a
//! message) when `ZIVIO_TEST_DATABASE_URL` is unset; CI always sets it.

use zivio_core::keys::SecretsKey;
use zivio_store::testing::TestDatabase;

use crate::support::service::{Service, run};

const PLATFORM_KEY: &str = "zpk_test_platform_key_0123456789";

async fn database() -> Option<TestDatabase> {
    let database = TestDatabase::postgres().await;
    if database.is_none() {
        eprintln!("ZIVIO_TEST_DATABASE_URL is not set: PostgreSQL case skipped");
    }
    database
}

#[tokio::test]
async fn postgres_refuses_to_start_without_configured_keys() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = run(
        dir.path(),
        &[("ZIVIO_WEBHOOKS_DATABASE_URL", &db.url)],
        &["serve"],
    )
    .await;
    assert!(!status.success());
    assert!(
        stderr.contains("ZIVIO_WEBHOOKS_PLATFORM_KEY: is required with a PostgreSQL database"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ZIVIO_WEBHOOKS_SECRETS_KEY: is required"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no key files are generated"
    );
}

#[tokio::test]
async fn postgres_serves_and_refuses_a_different_secrets_key() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = SecretsKey::from_bytes([1; 32]).to_base64();
    let env = [
        ("ZIVIO_WEBHOOKS_DATABASE_URL", db.url.as_str()),
        ("ZIVIO_WEBHOOKS_PLATFORM_KEY", PLATFORM_KEY),
        ("ZIVIO_WEBHOOKS_SECRETS_KEY", key.as_str()),
    ];
    let service = Service::start(dir.path(), &env).await;
    assert!(
        !service.stdout().contains("Password"),
        "no bootstrap by default on PostgreSQL"
    );
    assert_eq!(
        reqwest::get(service.url("/readyz")).await.unwrap().status(),
        200
    );
    assert!(service.terminate().await.success());

    let other = SecretsKey::from_bytes([2; 32]).to_base64();
    let mut wrong = env;
    wrong[2].1 = &other;
    let (status, _, stderr) = run(dir.path(), &wrong, &["serve"]).await;
    assert!(!status.success());
    assert!(
        stderr.contains("ZIVIO_WEBHOOKS_SECRETS_KEY does not match"),
        "{stderr}"
    );
}

#[tokio::test]
async fn several_instances_start_at_once_and_bootstrap_once() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = SecretsKey::from_bytes([3; 32]).to_base64();
    let env = [
        ("ZIVIO_WEBHOOKS_DATABASE_URL", db.url.as_str()),
        ("ZIVIO_WEBHOOKS_PLATFORM_KEY", PLATFORM_KEY),
        ("ZIVIO_WEBHOOKS_SECRETS_KEY", key.as_str()),
        ("ZIVIO_WEBHOOKS_BOOTSTRAP", "true"),
    ];
    let (a, b, c) = tokio::join!(
        Service::start(dir.path(), &env),
        Service::start(dir.path(), &env),
        Service::start(dir.path(), &env)
    );
    let banners = [&a, &b, &c]
        .iter()
        .filter(|s| s.stdout().contains("Password:"))
        .count();
    assert_eq!(banners, 1, "exactly one instance bootstraps");
    for service in [a, b, c] {
        assert_eq!(
            reqwest::get(service.url("/readyz")).await.unwrap().status(),
            200
        );
        assert!(service.terminate().await.success());
    }
}
