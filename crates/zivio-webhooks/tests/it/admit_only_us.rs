//! Receivers that admit only us (docs/product.md §4): custom credential headers, sent with every
//! attempt and never shown again, and a client certificate presented to receivers that require
//! one (mutual TLS), against real HTTPS receivers.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::api::{Api, Backend, on_both_backends, problem};
use crate::support::receiver::{Receiver, Reply};
use crate::support::sending::{Setup, WAIT, setup_with, verify};

on_both_backends!(
    custom_headers_reach_the_receiver_and_are_never_shown_again,
    custom_headers_never_follow_the_url_to_another_origin,
    a_change_applies_to_retries_already_queued,
    invalid_reserved_and_repeated_headers_are_refused_naming_the_header,
    a_client_certificate_is_presented_to_receivers_that_require_one,
);

/// A credential long enough to have a hint (`WXYZ`), and unlike anything else in the database.
const BEARER: &str = "Bearer tok-9f3c27d1e8b4a6c0-never-in-clear-WXYZ";
const API_KEY: &str = "k-7d2e91";

fn header<'a>(request: &'a crate::support::receiver::Received, name: &str) -> Option<&'a str> {
    request
        .headers
        .get(name)
        .map(|value| value.to_str().unwrap())
}

async fn custom_headers_reach_the_receiver_and_are_never_shown_again(backend: Backend) {
    let Some(setup) = setup_with(backend, "100ms", true, &[("ZIVIO_WEBHOOKS_LOG", "trace")]).await
    else {
        return;
    };
    let api = &setup.api;
    let body = json!({
        "name": "gateway", "url": setup.receiver.url("/gw"), "events": ["*"],
        "headers": {"Authorization": BEARER, "X-Api-Key": API_KEY},
    });
    let created = api.create_webhook(&setup.key, "acme", body).await;
    let (webhook, secret) = (
        created["webhook"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    let shown =
        json!([{"name": "Authorization", "hint": "WXYZ"}, {"name": "X-Api-Key", "hint": null}]);
    assert_eq!(created["webhook"]["headers"], shown);
    let read = setup.get(&format!("/v4/webhooks/{webhook}")).await;
    assert_eq!(read.body["webhook"]["headers"], shown);

    // The first attempt fails and is retried: both carry the headers beside a valid signature.
    setup.receiver.script("/gw", &[Reply::Status(500)]);
    let event = setup.publish().await;
    let received = setup.receiver.wait_for("/gw", 2, WAIT).await;
    for request in &received {
        verify(&secret, request);
        assert_eq!(header(request, "authorization"), Some(BEARER));
        assert_eq!(header(request, "x-api-key"), Some(API_KEY));
        assert_eq!(header(request, "user-agent"), Some("Zivio-Webhooks/1.0"));
    }
    let attempts = setup.attempts(&event, &webhook, 2).await;
    let stored: Value = serde_json::from_str(&attempts[1].request_headers).unwrap();
    assert_eq!(stored["Authorization"], "****WXYZ");
    assert_eq!(stored["X-Api-Key"], "****");
    let detail = setup
        .get(&format!("/v4/deliveries/{}", attempts[1].id))
        .await;
    assert_eq!(
        detail.body["delivery"]["request"]["headers"]["Authorization"],
        "****WXYZ"
    );

    // A resend carries them too; a replacement applies to the next request.
    let resent = setup
        .send(
            Method::POST,
            &format!("/v4/deliveries/{}/resend", attempts[1].id),
            None,
        )
        .await;
    assert_eq!(resent.status, 202, "{}", resent.text);
    let received = setup.receiver.wait_for("/gw", 3, WAIT).await;
    assert_eq!(header(&received[2], "authorization"), Some(BEARER));
    let replaced = setup
        .send(
            Method::PATCH,
            &format!("/v4/webhooks/{webhook}"),
            Some(json!({"headers": {"X-Api-Key": "k-second"}})),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(
        replaced.body["webhook"]["headers"],
        json!([{"name": "X-Api-Key", "hint": null}])
    );
    setup.publish().await;
    let received = setup.receiver.wait_for("/gw", 4, WAIT).await;
    assert_eq!(header(&received[3], "x-api-key"), Some("k-second"));
    assert_eq!(header(&received[3], "authorization"), None);

    // Audit entries name the headers, never their values.
    let audit = setup.get("/v4/audit-log").await;
    let entries = audit.body["entries"].as_array().unwrap();
    let updated = entries
        .iter()
        .find(|e| e["action"] == "webhook.updated")
        .unwrap();
    assert_eq!(
        updated["changes"]["headers"],
        json!({"from": ["Authorization", "X-Api-Key"], "to": ["X-Api-Key"]})
    );
    let created_entry = entries
        .iter()
        .find(|e| e["action"] == "webhook.created")
        .unwrap();
    assert_eq!(
        created_entry["changes"]["headers"],
        json!(["Authorization", "X-Api-Key"])
    );

    // The admin UI shows names and hints.
    let cookie = api.sign_in_by_link("acme", "u1").await;
    let page = api
        .admin_page(&cookie, &format!("/admin/deliveries/{}", attempts[1].id))
        .await;
    assert!(
        page.contains("****WXYZ"),
        "the stored request shows the hint"
    );

    // Nowhere in clear: not in any answer above, the database or the logs (at trace level).
    for text in [
        &created.to_string(),
        &read.text,
        &detail.text,
        &audit.text,
        &page,
    ] {
        assert_no_credential(text, "an answer");
    }
    assert_no_credential(&database_text(api).await, "the database");
    assert_no_credential(&api.service.stdout(), "the logs");
    assert_no_credential(&api.service.stderr(), "the logs");
}

/// Fails if the credential appears as text, hex or base64.
fn assert_no_credential(haystack: &str, place: &str) {
    let secret = BEARER.trim_start_matches("Bearer ");
    let lower = haystack.to_lowercase();
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        !haystack.contains(secret),
        "the credential is in {place} as text"
    );
    assert!(!lower.contains(&hex), "the credential is in {place} as hex");
    // Base64 of the value at each of the three alignments, trimmed of the padded edges.
    for skip in 0..3 {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&secret.as_bytes()[skip..]);
        let inner = &encoded[4..encoded.len() - 4];
        assert!(
            !haystack.contains(inner),
            "the credential is in {place} as base64"
        );
    }
}

/// Everything the database holds, as text: the SQLite files (with the write-ahead log) or a
/// `pg_dump` (byte columns as hex).
async fn database_text(api: &Api) -> String {
    let url = api.database_url();
    if url.starts_with("sqlite://") {
        let mut text = String::new();
        for entry in std::fs::read_dir(api.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("zivio.db")
            {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(path).unwrap()));
            }
        }
        assert!(text.contains("X-Api-Key"), "the header names are stored");
        return text;
    }
    let dump = tokio::process::Command::new("pg_dump")
        .args(["--data-only", url.split('?').next().unwrap()])
        .output()
        .await
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8(dump.stdout).unwrap();
    assert!(text.contains("X-Api-Key"), "the header names are stored");
    text
}

async fn custom_headers_never_follow_the_url_to_another_origin(backend: Backend) {
    let Some(setup) = setup_with(backend, "1h", true, &[]).await else {
        return;
    };
    let body = json!({
        "name": "moving", "url": setup.receiver.url("/a"), "events": ["*"],
        "headers": {"X-Api-Key": API_KEY},
    });
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    let path = format!(
        "/v4/webhooks/{}",
        created["webhook"]["id"].as_str().unwrap()
    );
    let patch = |body: Value| setup.send(Method::PATCH, &path, Some(body));

    // Same scheme, host and port: the headers stay.
    let moved = patch(json!({"url": setup.receiver.url("/b")})).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(
        moved.body["webhook"]["headers"].as_array().unwrap().len(),
        1
    );
    // Another host (the same receiver by name): they go, and the audit log says why.
    let elsewhere = format!("https://localhost:{}/c", setup.receiver.addr.port());
    let moved = patch(json!({"url": elsewhere})).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(moved.body["webhook"]["headers"], json!([]));
    let audit = setup.get("/v4/audit-log").await;
    let change = &audit.body["entries"][0]["changes"]["headers"];
    assert_eq!(change["from"], json!(["X-Api-Key"]));
    assert_eq!(change["to"], json!([]));
    assert_eq!(change["removed_because"], "the URL moved to another origin");
    // New headers given with the move stay.
    let moved =
        patch(json!({"url": setup.receiver.url("/d"), "headers": {"X-Api-Key": "k-new"}})).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(
        moved.body["webhook"]["headers"],
        json!([{"name": "X-Api-Key", "hint": null}])
    );

    // Headers are the owner's credentials: an admin who does not cover the owner may not set
    // them (but may still rename the webhook).
    let api = &setup.api;
    api.put_role("acme", "narrow", &["webhooks:manage", "invoices:read:own"])
        .await;
    api.put_user("acme", "narrow", true, &["narrow"]).await;
    let narrow = api.issue_key("acme", "narrow").await;
    let as_narrow = |body: Value| api.v4(&narrow, "acme", Method::PATCH, &path, Some(body));
    let refused = as_narrow(json!({"headers": {}})).await;
    let refusal = problem(&refused, 403);
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("custom headers"),
        "{refusal}"
    );
    let renamed = as_narrow(json!({"name": "renamed"})).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(
        renamed.body["webhook"]["headers"].as_array().unwrap().len(),
        1
    );
}

/// Retries read URL, secret and headers as they are when each attempt starts: a retry queued
/// before a change follows the change, and credentials never go to the new origin.
async fn a_change_applies_to_retries_already_queued(backend: Backend) {
    let Some(setup) = setup_with(backend, "2s,2s", true, &[]).await else {
        return;
    };
    let body = json!({
        "name": "retrying", "url": setup.receiver.url("/first"), "events": ["*"],
        "headers": {"X-Api-Key": API_KEY},
    });
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    let path = format!(
        "/v4/webhooks/{}",
        created["webhook"]["id"].as_str().unwrap()
    );
    setup.receiver.script("/first", &[Reply::Status(503)]);
    let elsewhere = format!("https://localhost:{}/second", setup.receiver.addr.port());
    setup.receiver.script("/second", &[Reply::Status(503)]);
    setup.publish().await;
    let first = setup.receiver.wait_for("/first", 1, WAIT).await;
    assert_eq!(header(&first[0], "x-api-key"), Some(API_KEY));

    // The retry is queued; the URL moves to another origin without new headers.
    let moved = setup
        .send(Method::PATCH, &path, Some(json!({"url": elsewhere})))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let second = setup.receiver.wait_for("/second", 1, WAIT).await;
    assert_eq!(
        header(&second[0], "x-api-key"),
        None,
        "no credential follows the URL"
    );

    // The next retry is queued; new headers are set.
    let set = setup
        .send(
            Method::PATCH,
            &path,
            Some(json!({"headers": {"X-Api-Key": "k-after"}})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
    let third = setup.receiver.wait_for("/second", 2, WAIT).await;
    assert_eq!(header(&third[1], "x-api-key"), Some("k-after"));
}

async fn invalid_reserved_and_repeated_headers_are_refused_naming_the_header(backend: Backend) {
    let Some(setup) = setup_with(backend, "1h", true, &[]).await else {
        return;
    };
    let create = |headers: Value| {
        let body = json!({"name": "h", "url": setup.receiver.url("/h"), "events": ["*"], "headers": headers});
        setup.send(Method::POST, "/v4/webhooks", Some(body))
    };
    for (headers, field) in [
        (json!({"Host": "evil.example"}), "headers.Host"),
        (
            json!({"Content-Type": "text/plain"}),
            "headers.Content-Type",
        ),
        (
            json!({"Webhook-Signature": "v1,forged"}),
            "headers.Webhook-Signature",
        ),
        (
            json!({"X-Forwarded-For": "10.0.0.1"}),
            "headers.X-Forwarded-For",
        ),
        (
            json!({"X-Api-Key": "a", "x-api-key": "b"}),
            "headers.x-api-key",
        ),
        (
            json!({"X-Api-Key": "a\r\nInjected: yes"}),
            "headers.X-Api-Key",
        ),
        (json!({"X-Api-Key": "v".repeat(4097)}), "headers.X-Api-Key"),
    ] {
        let answer = create(headers.clone()).await;
        let refusal = problem(&answer, 400);
        assert_eq!(refusal["errors"][0]["field"], field, "{headers}");
        let name = field.trim_start_matches("headers.");
        assert!(
            refusal["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(name),
            "{refusal}"
        );
    }
    // An invalid name is pointed at, never repeated (it may be a credential put in the wrong place).
    let answer = create(json!({"X-Ok": "v", "Authorization: Bearer s3cr3t": "v"})).await;
    let refusal = problem(&answer, 400);
    assert_eq!(refusal["errors"][0]["field"], "headers");
    assert!(
        refusal["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("header 2 of 2"),
        "{refusal}"
    );
    assert!(!answer.text.contains("s3cr3t"));
    // A wrongly typed field is a 422, as for every field, and never quotes what was sent.
    let answer = create(json!("Bearer s3cr3t")).await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    assert!(!answer.text.contains("s3cr3t"), "{}", answer.text);
    let eleven: serde_json::Map<String, Value> = (0..11)
        .map(|i| (format!("X-Key-{i}"), json!("v")))
        .collect();
    let answer = create(Value::Object(eleven)).await;
    assert_eq!(problem(&answer, 400)["errors"][0]["field"], "headers");
    let listed = setup.get("/v4/webhooks").await;
    assert_eq!(listed.body["webhooks"], json!([]), "nothing was created");
}

async fn a_client_certificate_is_presented_to_receivers_that_require_one(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let clients = zivio_test_support::pki::TestCa::generate();
    let receiver = Receiver::start_requiring_clients_of(dir.path(), &clients).await;
    let (cert, key) = clients.client("zivio-webhooks.test");
    let (cert_path, key_path) = (
        dir.path().join("client.pem"),
        dir.path().join("client-key.pem"),
    );
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let ca = receiver.ca_path.to_str().unwrap().to_owned();
    let env = [
        ("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8"),
        ("ZIVIO_WEBHOOKS_RETRY_SCHEDULE", "1h"),
        ("ZIVIO_WEBHOOKS_EXTRA_ROOT_CA", ca.as_str()),
    ];
    let Some(api) = Api::start(backend, &env).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let mut setup = Setup::new(api, receiver, key, dir);
    let (webhook, secret) = setup.webhook("/mtls").await;

    // Without a certificate the receiver refuses the connection.
    let refused = setup.publish().await;
    let attempt = setup.attempts(&refused, &webhook, 1).await.remove(0);
    assert!(!attempt.succeeded);
    let kind = attempt.error_kind.map(|kind| kind.as_str()).unwrap();
    assert!(matches!(kind, "tls" | "connect" | "connection"), "{kind}");
    let detail = attempt.error_detail.unwrap();
    assert!(detail.contains("client certificate"), "{kind}: {detail}");
    assert!(setup.receiver.received("/mtls").is_empty());

    // With one configured, it admits us; the signature is still there to check.
    setup
        .api
        .restart_with(&[
            ("ZIVIO_WEBHOOKS_CLIENT_CERT", cert_path.to_str().unwrap()),
            ("ZIVIO_WEBHOOKS_CLIENT_KEY", key_path.to_str().unwrap()),
        ])
        .await;
    let admitted = setup.publish().await;
    let received = setup.receiver.wait_for("/mtls", 1, WAIT).await;
    verify(&secret, &received[0]);
    assert!(setup.attempts(&admitted, &webhook, 1).await[0].succeeded);
    let metrics = setup.api.service.text("/metrics").await;
    let expiry = metrics
        .lines()
        .find(|line| line.starts_with("zivio_client_certificate_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("{metrics}"));
    let seconds: i64 = expiry.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        seconds > time::OffsetDateTime::now_utc().unix_timestamp(),
        "{expiry}"
    );
}
