//! The command-line tools against the real service: `verify` checks a request the service
//! really sent, and says which check failed when it does not verify.

use std::process::Command;

use serde_json::json;

use crate::support::api::Backend;
use crate::support::sending::{WAIT, setup};

/// Runs `zivio-webhooks verify` on a capture; returns the exit code and what it printed.
fn verify(dir: &std::path::Path, headers: &str, body: &[u8], secret: &str) -> (i32, String) {
    std::fs::write(dir.join("headers.txt"), headers).unwrap();
    std::fs::write(dir.join("body.json"), body).unwrap();
    std::fs::write(dir.join("secret"), secret).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_zivio-webhooks"))
        .args(["verify", "--headers"])
        .arg(dir.join("headers.txt"))
        .arg("--body")
        .arg(dir.join("body.json"))
        .arg("--secret-file")
        .arg(dir.join("secret"))
        .env_remove("ZIVIO_WEBHOOK_SECRET")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn verify_accepts_a_real_request_and_names_what_fails() {
    let Some(setup) = setup(Backend::Sqlite, "1h", true).await else {
        return;
    };
    let body = json!({"name": "cli", "url": setup.receiver.url("/cli"), "events": ["*"]});
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    let (id, secret) = (
        created["webhook"]["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    let sent = setup
        .api
        .v4(
            &setup.key,
            "acme",
            reqwest::Method::POST,
            &format!("/v4/webhooks/{id}/test"),
            None,
        )
        .await;
    assert_eq!(sent.status, 202);
    let request = setup.receiver.wait_for("/cli", 1, WAIT).await.remove(0);
    let headers: String = request
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", value.to_str().unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();

    let (code, out) = verify(dir.path(), &headers, &request.body, secret);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("valid: evt_test_") && out.contains("webhook.test"),
        "{out}"
    );

    let mut tampered = request.body.clone();
    tampered.extend_from_slice(b" ");
    let (code, out) = verify(dir.path(), &headers, &tampered, secret);
    assert_eq!(
        (code, out.trim()),
        (
            1,
            "invalid: no `v1` signature in `webhook-signature` matches this secret and body"
        )
    );

    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (code, out) = verify(dir.path(), &headers, &request.body, other);
    assert_eq!(code, 1);
    assert!(out.contains("no `v1` signature"), "{out}");

    let stale = headers
        .lines()
        .map(|line| {
            if line.starts_with("webhook-timestamp") {
                "webhook-timestamp: 1000000000".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (code, out) = verify(dir.path(), &stale, &request.body, secret);
    assert_eq!(code, 1);
    assert!(
        out.contains("invalid: the timestamp is") && out.contains("more than the 300 s allowed"),
        "{out}"
    );

    let unsigned: String = headers
        .lines()
        .filter(|line| !line.starts_with("webhook-signature"))
        .map(|line| format!("{line}\n"))
        .collect();
    let (code, out) = verify(dir.path(), &unsigned, &request.body, secret);
    assert_eq!(
        (code, out.trim()),
        (1, "invalid: the `webhook-signature` header is missing")
    );

    let (code, out) = verify(dir.path(), &headers, &request.body, "not-a-secret");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("the secret is not valid"), "{out}");
}
