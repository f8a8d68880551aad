//! Security checks across the service: with logging at `trace`, no secret, key, password,
//! session id or token reaches the output; none is stored in clear in the database; injection
//! attempts through filters and path parameters are plain invalid input.

use reqwest::Method;
use serde_json::json;

use crate::support::api::{Api, Backend};

#[tokio::test]
async fn secrets_never_reach_logs_or_the_database_in_clear() {
    let Some(api) = Api::start(
        Backend::Sqlite,
        &[
            ("ZIVIO_WEBHOOKS_LOG", "trace"),
            ("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8"),
        ],
    )
    .await
    else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let password = "orange staple horse battery";
    let set = api
        .platform(
            Method::PUT,
            "acme/users/u1/password",
            Some(json!({"password": password})),
        )
        .await;
    assert_eq!(set.status, 204);
    // A webhook to a closed loopback port: attempts fail, and are logged.
    let created = api
        .create_webhook(&key, "acme", json!({"name": "h", "url": "https://127.0.0.1:9/hook?token=path-secret", "events": ["*"]}))
        .await;
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    let first_secret = created["secret"].as_str().unwrap().to_owned();
    let rotated = api
        .v4(
            &key,
            "acme",
            Method::POST,
            &format!("/v4/webhooks/{id}/rotate-secret"),
            None,
        )
        .await;
    let second_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    api.v4(
        &key,
        "acme",
        Method::POST,
        &format!("/v4/webhooks/{id}/test"),
        None,
    )
    .await;
    let link = api
        .platform(Method::POST, "acme/users/u1/sign-in-links", None)
        .await;
    let link = link.body["url"].as_str().unwrap().to_owned();
    let token = link.rsplit('/').next().unwrap().to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let opened = client
        .get(api.service.url(&format!("/admin/sign-in/link/{token}")))
        .send()
        .await
        .unwrap();
    let session = opened.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("zivio_session=")
        .to_owned();
    let signed_in = client
        .post(api.service.url("/admin/sign-in"))
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "tenant=acme&email=u1%40acme.example.com&password={}",
            password.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let output = api.service.stdout()
        + &api
            .service
            .logs()
            .iter()
            .map(ToString::to_string)
            .collect::<String>();
    assert!(output.len() > 10_000, "trace logging is on");
    let platform_key = api.var("ZIVIO_WEBHOOKS_PLATFORM_KEY").unwrap().to_owned();
    let secrets = [
        ("first signing secret", first_secret.as_str()),
        ("rotated signing secret", second_secret.as_str()),
        ("API key", key.as_str()),
        ("password", password),
        ("sign-in token", token.as_str()),
        ("session id", session.as_str()),
        ("platform key", platform_key.as_str()),
        ("URL query", "path-secret"),
    ];
    for (what, secret) in secrets {
        assert!(!output.contains(secret), "the {what} is in the output");
    }
    // The database holds digests and ciphertexts only (the URL itself is configuration).
    let database = std::fs::read(api.dir.path().join("zivio.db")).unwrap();
    let wal = std::fs::read(api.dir.path().join("zivio.db-wal")).unwrap_or_default();
    for (what, secret) in &secrets[..7] {
        let needle = secret.as_bytes();
        for bytes in [&database, &wal] {
            assert!(
                !bytes.windows(needle.len()).any(|window| window == needle),
                "the {what} is stored in clear"
            );
        }
    }
}

#[tokio::test]
async fn injection_attempts_are_just_invalid_input() {
    let Some(api) = Api::start(Backend::Sqlite, &[]).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let attempts = [
        "' OR '1'='1",
        "1; DROP TABLE webhooks; --",
        "\") OR 1=1 --",
        "%27%20OR%201%3D1",
    ];
    for attempt in attempts {
        let encoded: String = url::form_urlencoded::byte_serialize(attempt.as_bytes()).collect();
        for path in [
            format!("/v4/deliveries?webhook_id={encoded}"),
            format!("/v4/deliveries?event_id={encoded}"),
            format!("/v4/deliveries?event_type={encoded}"),
            format!("/v4/deliveries?cursor={encoded}"),
            format!("/v4/webhooks/{encoded}"),
            format!("/v4/deliveries/{encoded}"),
            format!("/v4/audit-log?cursor={encoded}"),
        ] {
            let answer = api.v4(&key, "acme", Method::GET, &path, None).await;
            assert!(
                matches!(answer.status.as_u16(), 200 | 400 | 404),
                "{path}: {}",
                answer.text
            );
        }
    }
    // Everything is still there and answers.
    assert_eq!(
        api.v4(&key, "acme", Method::GET, "/v4/webhooks", None)
            .await
            .status,
        200
    );
    assert_eq!(
        api.v4(&key, "acme", Method::GET, "/v4/deliveries", None)
            .await
            .status,
        200
    );
}
