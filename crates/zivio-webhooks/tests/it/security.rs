//! Security checks across the service: with logging at `trace`, no secret, key, password,
//! session id or token reaches the output; none is stored in clear in the database; injection
//! attempts through filters and path parameters are plain invalid input.

use reqwest::Method;
use serde_json::json;

use crate::support::api::{Api, Backend};
use crate::support::eventually;
use crate::support::sending::WAIT;

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
    api.sign_in("acme", "u1@acme.example.com", password).await;
    // The log lines of every request above are out once those of a later one are.
    let barrier = "log-barrier-after-sign-in";
    client
        .get(api.service.url("/healthz"))
        .header("x-request-id", barrier)
        .send()
        .await
        .unwrap();
    let output = eventually(WAIT, "the last request logged", || async {
        let output = api.service.stdout()
            + &api
                .service
                .logs()
                .iter()
                .map(ToString::to_string)
                .collect::<String>();
        if output.contains(barrier) {
            Ok(output)
        } else {
            Err(format!("{} bytes of output", output.len()))
        }
    })
    .await;
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

/// Another tenant's admin, on every v4 route that names a webhook or a delivery, gets 404 (never
/// 403, which would confirm the id) and changes nothing; lists never show the other tenant.
#[tokio::test]
async fn no_route_reaches_another_tenant() {
    let Some(setup) = crate::support::sending::setup(Backend::Sqlite, "1h", true).await else {
        return;
    };
    let api = &setup.api;
    let (hook, _) = setup.webhook("/acme").await;
    let event = setup.publish().await;
    let attempt = setup.attempts(&event, &hook, 1).await.remove(0).id;
    let intruder = api.tenant_with_admin("globex", "g1").await;
    let routes = [
        (Method::GET, format!("/v4/webhooks/{hook}")),
        (Method::PATCH, format!("/v4/webhooks/{hook}")),
        (Method::DELETE, format!("/v4/webhooks/{hook}")),
        (Method::POST, format!("/v4/webhooks/{hook}/rotate-secret")),
        (Method::POST, format!("/v4/webhooks/{hook}/disable")),
        (Method::POST, format!("/v4/webhooks/{hook}/enable")),
        (Method::POST, format!("/v4/webhooks/{hook}/test")),
        (
            Method::GET,
            format!("/v4/webhooks/{hook}/preview?event_type=invoice.paid"),
        ),
        (Method::GET, format!("/v4/deliveries/{attempt}")),
        (Method::POST, format!("/v4/deliveries/{attempt}/resend")),
    ];
    for (method, path) in routes {
        let body = (method == Method::PATCH).then(|| json!({"name": "taken over"}));
        let answer = api
            .v4(&intruder, "globex", method.clone(), &path, body)
            .await;
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.text);
    }
    for path in [
        "/v4/webhooks".to_owned(),
        format!("/v4/deliveries?webhook_id={hook}"),
        format!("/v4/deliveries?event_id={event}"),
        "/v4/audit-log".to_owned(),
    ] {
        let answer = api.v4(&intruder, "globex", Method::GET, &path, None).await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(
            !answer.text.contains(&hook) && !answer.text.contains(&event),
            "{path}: {}",
            answer.text
        );
    }
    // Nor do the admin pages, read or write.
    let set = api
        .platform(
            Method::PUT,
            "globex/users/g1/password",
            Some(json!({"password": "globex pass phrase"})),
        )
        .await;
    assert_eq!(set.status, 204);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let id = api
        .sign_in("globex", "g1@globex.example.com", "globex pass phrase")
        .await;
    let session = format!("zivio_session={id}");
    let token = zivio_app::sessions::form_token(&id);
    for path in [
        format!("/admin/webhooks/{hook}"),
        format!("/admin/deliveries/{attempt}"),
    ] {
        let page = client
            .get(api.service.url(&path))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 404, "{path}");
    }
    let disable = api
        .post_form(
            &format!("/admin/webhooks/{hook}/disable"),
            Some(&session),
            &[("_token", token.as_str())],
        )
        .await;
    assert_eq!(disable.status(), 404);

    // The API key of one tenant does not work for the other at all.
    let answer = api
        .v4(&intruder, "acme", Method::GET, "/v4/webhooks", None)
        .await;
    assert_eq!(answer.status, 401);
    let webhook = api
        .v4(
            &setup.key,
            "acme",
            Method::GET,
            &format!("/v4/webhooks/{hook}"),
            None,
        )
        .await;
    assert_eq!(webhook.body["webhook"]["enabled"], true, "nothing changed");
    assert_eq!(webhook.body["webhook"]["name"], "/acme");
    assert_eq!(
        setup.receiver.received("/acme").len(),
        1,
        "nothing more was sent"
    );
}
