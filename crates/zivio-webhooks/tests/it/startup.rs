//! First start, restarts, configuration errors and shutdown on the embedded database.

use std::os::unix::fs::PermissionsExt;

use crate::support::eventually;
use crate::support::service::{Service, run};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn first_start_bootstraps_once_and_a_restart_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let service = Service::start(&data, &[]).await;
    let banner = service.stdout();
    assert!(banner.contains("Tenant:    demo"), "{banner}");
    assert!(
        banner.contains("Email:     admin@demo.localhost"),
        "{banner}"
    );
    let password_line = banner
        .lines()
        .find(|line| line.contains("Password:"))
        .expect("password printed");
    assert!(
        password_line
            .split_whitespace()
            .nth(1)
            .is_some_and(|p| p.len() >= 20),
        "{password_line}"
    );
    assert!(
        banner.contains(&format!("http://{}/admin/sign-in", service.addr)),
        "{banner}"
    );
    assert!(banner.contains("platform.key"), "{banner}");
    let password = password_line.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        !service
            .logs()
            .iter()
            .any(|line| line.to_string().contains(&password)),
        "the password must not reach the logs"
    );

    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("platform.key")), 0o600);
    assert_eq!(mode(&data.join("secrets.key")), 0o600);
    let platform_key = std::fs::read_to_string(data.join("platform.key")).unwrap();
    let ready = reqwest::get(service.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(service.terminate().await.success(), "SIGTERM exits 0");

    let again = Service::start(&data, &[]).await;
    assert!(
        !again.stdout().contains("Password"),
        "second start prints no password"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("platform.key")).unwrap(),
        platform_key
    );
    assert_eq!(
        reqwest::get(again.url("/readyz")).await.unwrap().status(),
        200
    );
    assert!(again.terminate().await.success());
}

#[tokio::test]
async fn bootstrap_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[("ZIVIO_WEBHOOKS_BOOTSTRAP", "false")]).await;
    assert!(!service.stdout().contains("Password"));
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn invalid_configuration_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = run(
        dir.path(),
        &[
            ("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "banana"),
            ("ZIVIO_WEBHOOKS_LOG_FORMAT", "yaml"),
            ("ZIVIO_WEBHOOKS_EVENT_VALIDATION", "strict"),
        ],
        &["serve"],
    )
    .await;
    assert!(!status.success());
    assert!(
        stderr.contains("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT: `banana` is not a duration"),
        "{stderr}"
    );
    assert!(stderr.contains("ZIVIO_WEBHOOKS_LOG_FORMAT"), "{stderr}");
    assert!(
        stderr.contains("ZIVIO_WEBHOOKS_EVENT_VALIDATION: `strict` is not a mode"),
        "{stderr}"
    );
    assert!(!dir.path().join("zivio.db").exists(), "nothing was created");
}

#[tokio::test]
async fn unknown_and_risky_variables_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        dir.path(),
        &[
            ("ZIVIO_WEBHOOKS_RETRY_SCHEDUEL", "1s"),
            ("ZIVIO_WEBHOOKS_ALLOW_HTTP", "true"),
        ],
    )
    .await;
    let warnings: Vec<String> = service
        .logs()
        .into_iter()
        .filter(|line| line["level"] == "WARN")
        .map(|line| line["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("ZIVIO_WEBHOOKS_RETRY_SCHEDUEL")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("ZIVIO_WEBHOOKS_ALLOW_HTTP")),
        "{warnings:?}"
    );
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn a_configuration_file_is_read_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zivio.env");
    std::fs::write(
        &file,
        "# file\nZIVIO_WEBHOOKS_REQUEST_TIMEOUT=banana\nZIVIO_WEBHOOKS_MAIL_FROM=nonsense\n",
    )
    .unwrap();
    let (status, _, stderr) = run(
        dir.path(),
        &[("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "10s")],
        &["--config", file.to_str().unwrap(), "serve"],
    )
    .await;
    assert!(!status.success());
    assert!(stderr.contains("ZIVIO_WEBHOOKS_MAIL_FROM"), "{stderr}");
    assert!(
        !stderr.contains("REQUEST_TIMEOUT"),
        "the environment overrides the file: {stderr}"
    );
}

#[tokio::test]
async fn migrate_applies_migrations_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let (status, stdout, stderr) = run(dir.path(), &[], &["migrate"]).await;
        assert!(status.success(), "{stderr}");
        assert!(stderr.contains("migrations applied"), "{stderr}");
        assert!(!stdout.contains("Password"), "migrate does not bootstrap");
    }
    assert!(dir.path().join("zivio.db").exists());
}

#[tokio::test]
async fn version_and_help_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, _) = run(dir.path(), &[], &["--version"]).await;
    assert!(status.success());
    assert!(stdout.starts_with("zivio-webhooks "), "{stdout}");
    let (status, stdout, _) = run(dir.path(), &[], &["--help"]).await;
    assert!(status.success());
    for command in ["serve", "migrate"] {
        assert!(stdout.contains(command), "{stdout}");
    }
}

#[tokio::test]
async fn an_embedded_database_is_served_by_one_instance_only() {
    let dir = tempfile::tempdir().unwrap();
    let first = Service::start(dir.path(), &[]).await;
    let (status, _, stderr) = run(dir.path(), &[], &["serve"]).await;
    assert!(!status.success());
    assert!(
        stderr.contains("another zivio-webhooks instance is serving"),
        "{stderr}"
    );
    assert!(first.terminate().await.success());
    let again = Service::start(dir.path(), &[]).await;
    assert!(
        again.terminate().await.success(),
        "the lock goes with the process"
    );
}

#[tokio::test]
async fn a_missing_unreadable_or_mismatched_client_certificate_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = zivio_test_support::pki::TestCa::generate();
    let (cert, key) = ca.client("one");
    let (_, other_key) = ca.client("two");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key, other_key) = (
        write("cert.pem", &cert),
        write("key.pem", &key),
        write("other-key.pem", &other_key),
    );
    let missing = dir.path().join("missing.pem").to_str().unwrap().to_owned();
    let not_a_key = write("not-a-key.pem", "hello");
    for (vars, expected) in [
        (
            vec![("ZIVIO_WEBHOOKS_CLIENT_CERT", cert.as_str())],
            "ZIVIO_WEBHOOKS_CLIENT_KEY: is required",
        ),
        (
            vec![("ZIVIO_WEBHOOKS_CLIENT_KEY", key.as_str())],
            "ZIVIO_WEBHOOKS_CLIENT_CERT: is required",
        ),
        (
            vec![
                ("ZIVIO_WEBHOOKS_CLIENT_CERT", missing.as_str()),
                ("ZIVIO_WEBHOOKS_CLIENT_KEY", key.as_str()),
            ],
            "ZIVIO_WEBHOOKS_CLIENT_CERT: `",
        ),
        (
            vec![
                ("ZIVIO_WEBHOOKS_CLIENT_CERT", cert.as_str()),
                ("ZIVIO_WEBHOOKS_CLIENT_KEY", not_a_key.as_str()),
            ],
            "ZIVIO_WEBHOOKS_CLIENT_KEY: `",
        ),
        (
            vec![
                ("ZIVIO_WEBHOOKS_CLIENT_CERT", cert.as_str()),
                ("ZIVIO_WEBHOOKS_CLIENT_KEY", other_key.as_str()),
            ],
            "ZIVIO_WEBHOOKS_CLIENT_KEY: the key does not belong to the certificate",
        ),
    ] {
        let data = tempfile::tempdir().unwrap();
        let (status, _, stderr) = run(data.path(), &vars, &["serve"]).await;
        assert!(!status.success(), "{vars:?}");
        assert!(stderr.contains(expected), "{vars:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_client_certificate_near_its_expiry_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    let (cert, key) =
        zivio_test_support::pki::TestCa::generate().client_valid_until("soon", expires);
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let data = dir.path().join("data");
    let service = Service::start(
        &data,
        &[
            ("ZIVIO_WEBHOOKS_CLIENT_CERT", cert_path.to_str().unwrap()),
            ("ZIVIO_WEBHOOKS_CLIENT_KEY", key_path.to_str().unwrap()),
        ],
    )
    .await;
    let within = std::time::Duration::from_secs(20);
    eventually(within, "the expiry warning", || async {
        let warned = service.logs().into_iter().any(|line| {
            line["level"] == "WARN"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("client certificate") && m.contains("in 9 days"))
        });
        if warned {
            Ok(())
        } else {
            Err(service.stderr())
        }
    })
    .await;
}
