//! The v4 webhook API: the full lifecycle, validation, URL policy, tenant isolation and the
//! privilege boundary (secrets, the audit log and the catalog: `secrets_and_audit.rs`).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::api::{Api, Backend, on_both_backends, problem, webhook_body};

on_both_backends!(
    webhooks_go_through_their_whole_lifecycle,
    webhook_fields_are_validated,
    every_forbidden_url_form_is_refused,
    the_webhook_limit_per_tenant_holds,
    other_tenants_webhooks_do_not_exist,
    the_privilege_boundary_holds_both_ways,
);

async fn webhooks_go_through_their_whole_lifecycle(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let created = api
        .v4(
            &key,
            "acme",
            Method::POST,
            "/v4/webhooks",
            Some(webhook_body("ERP")),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.headers["cache-control"], "no-store");
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 6 + 44,
        "{secret}"
    );
    let webhook = &created.body["webhook"];
    let id = webhook["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"));
    assert_eq!(
        webhook["events"],
        json!(["invoices.*", "job.created"]),
        "alias stored canonically"
    );
    assert_eq!(webhook["secret_hint"], secret[secret.len() - 4..]);
    assert_eq!(webhook["owner_id"], "u1");
    assert_eq!(webhook["owner_active"], true);
    assert_eq!(webhook["enabled"], true);
    assert_eq!(webhook["disabled_reason"], Value::Null);
    assert_eq!(webhook["health"]["success_rate_24h"], Value::Null);
    assert!(webhook.get("secret").is_none());

    let path = format!("/v4/webhooks/{id}");
    let fetched = api.v4(&key, "acme", Method::GET, &path, None).await;
    assert_eq!(fetched.body["webhook"], *webhook);
    let listed = api
        .v4(&key, "acme", Method::GET, "/v4/webhooks", None)
        .await;
    assert_eq!(listed.body["webhooks"], json!([webhook]));

    let patched = api
        .v4(&key, "acme", Method::PATCH, &path, Some(json!({"name": "ERP (prod)", "events": ["*"], "description": "", "url": "https://[2606:4700:4700::1111]/hook"})))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["webhook"]["name"], "ERP (prod)");
    assert_eq!(patched.body["webhook"]["events"], json!(["*"]));
    assert_eq!(patched.body["webhook"]["description"], "");
    assert_eq!(
        patched.body["webhook"]["url"],
        "https://[2606:4700:4700::1111]/hook"
    );

    let disabled = api
        .v4(&key, "acme", Method::POST, &format!("{path}/disable"), None)
        .await;
    assert_eq!(disabled.status, 200);
    assert_eq!(disabled.body["webhook"]["enabled"], false);
    assert_eq!(disabled.body["webhook"]["disabled_reason"], "manual");
    assert_eq!(disabled.body["webhook"]["disabled_by"], "u1");
    assert!(disabled.body["webhook"]["disabled_at"].is_string());
    let enabled = api
        .v4(&key, "acme", Method::POST, &format!("{path}/enable"), None)
        .await;
    assert_eq!(enabled.body["webhook"]["enabled"], true);
    assert_eq!(enabled.body["webhook"]["disabled_by"], Value::Null);

    let rotated = api
        .v4(
            &key,
            "acme",
            Method::POST,
            &format!("{path}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200);
    assert_eq!(rotated.headers["cache-control"], "no-store");
    let new_secret = rotated.body["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(
        rotated.body["webhook"]["secret_hint"],
        new_secret[new_secret.len() - 4..]
    );

    assert_eq!(
        api.v4(&key, "acme", Method::DELETE, &path, None)
            .await
            .status,
        204
    );
    problem(&api.v4(&key, "acme", Method::GET, &path, None).await, 404);
    problem(
        &api.v4(&key, "acme", Method::DELETE, &path, None).await,
        404,
    );
}

async fn webhook_fields_are_validated(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let create = |body: Value| {
        let (api, key) = (&api, key.clone());
        async move {
            api.v4(&key, "acme", Method::POST, "/v4/webhooks", Some(body))
                .await
        }
    };
    let field_of = |answer: &crate::support::api::Answer| -> Vec<String> {
        problem(answer, 422)["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    };
    let with = |key: &str, value: Value| {
        let mut body = webhook_body("ERP");
        body[key] = value;
        body
    };
    assert_eq!(field_of(&create(with("name", json!(""))).await), ["name"]);
    assert_eq!(
        field_of(&create(with("name", json!("n".repeat(101)))).await),
        ["name"]
    );
    assert_eq!(
        create(with("name", json!("n".repeat(100)))).await.status,
        201
    );
    assert_eq!(
        field_of(&create(with("description", json!("d".repeat(1_001)))).await),
        ["description"]
    );
    assert_eq!(
        field_of(&create(with("events", json!([]))).await),
        ["events"]
    );
    let test_event = create(with("events", json!(["invoice.paid", "webhook.test"]))).await;
    assert_eq!(field_of(&test_event), ["events[1]"]);
    assert!(test_event.text.contains("webhook.test"));
    assert_eq!(
        field_of(&create(with("events", json!(["invoice.exploded"]))).await),
        ["events[0]"]
    );
    assert_eq!(
        field_of(&create(with("events", json!(["gadgets.*"]))).await),
        ["events[0]"]
    );
    assert_eq!(
        field_of(&create(with("events", json!("invoice.paid"))).await),
        ["events"]
    );
    assert_eq!(
        field_of(&create(with("surprise", json!(1))).await),
        ["surprise"]
    );
    let mut missing = webhook_body("ERP");
    missing.as_object_mut().unwrap().remove("url");
    assert_eq!(field_of(&create(missing).await), ["url"]);
    let garbage = api
        .client
        .post(api.service.url("/v4/webhooks"))
        .header("x-api-key", &key)
        .header("zivio-tenant-id", "acme")
        .header("content-type", "application/json")
        .body(format!("{}trailing", webhook_body("ERP")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        garbage.status(),
        400,
        "trailing garbage makes the body malformed"
    );
    let many = create(json!({"name": "", "url": "http://x.example", "events": []})).await;
    assert_eq!(field_of(&many), ["name", "events", "url"]);

    let id = api.create_webhook(&key, "acme", webhook_body("ERP")).await["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patch = api
        .v4(
            &key,
            "acme",
            Method::PATCH,
            &format!("/v4/webhooks/{id}"),
            Some(json!({"events": ["webhook.test"]})),
        )
        .await;
    assert_eq!(field_of(&patch), ["events[0]"]);
    let unchanged = api
        .v4(
            &key,
            "acme",
            Method::GET,
            &format!("/v4/webhooks/{id}"),
            None,
        )
        .await;
    assert_eq!(
        unchanged.body["webhook"]["events"],
        json!(["invoices.*", "job.created"]),
        "a refused edit changes nothing"
    );
}

async fn every_forbidden_url_form_is_refused(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let refused = [
        "http://93.184.216.34/hook",
        "ftp://93.184.216.34/hook",
        "https://user:pass@93.184.216.34/",
        "https://127.0.0.1/",
        "https://0x7f.0.0.1/",
        "https://0177.0.0.1/",
        "https://2130706433/",
        "https://localhost/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://10.1.2.3/",
        "https://172.16.0.1/",
        "https://192.168.0.1/",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "https://192.0.0.1/",
        "https://192.0.2.1/",
        "https://198.18.0.1/",
        "https://198.51.100.1/",
        "https://203.0.113.1/",
        "https://224.0.0.1/",
        "https://240.0.0.1/",
        "https://255.255.255.255/",
        "https://[::]/",
        "https://[::7f00:1]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[64:ff9b:1::1]/",
        "https://[2002::1]/",
        "https://[2001::1]/",
        "https://[2001:db8::1]/",
        "https://[fc00::1]/",
        "https://[fe80::1]/",
        "https://[fec0::1]/",
        "https://[ff02::1]/",
        "https://nowhere.invalid/",
        "not a url",
        "",
    ];
    for url in refused {
        let mut body = webhook_body("ERP");
        body["url"] = json!(url);
        let answer = api
            .v4(&key, "acme", Method::POST, "/v4/webhooks", Some(body))
            .await;
        assert_eq!(
            problem(&answer, 422)["errors"][0]["field"],
            "url",
            "{url}: {}",
            answer.text
        );
    }
    let mut long = webhook_body("ERP");
    long["url"] = json!(format!("https://93.184.216.34/{}", "a".repeat(2_048)));
    problem(
        &api.v4(&key, "acme", Method::POST, "/v4/webhooks", Some(long))
            .await,
        422,
    );
    let listed = api
        .v4(&key, "acme", Method::GET, "/v4/webhooks", None)
        .await;
    assert_eq!(listed.body["webhooks"], json!([]), "nothing was created");
}

async fn the_webhook_limit_per_tenant_holds(backend: Backend) {
    let Some(api) = Api::start(backend, &[("ZIVIO_WEBHOOKS_MAX_WEBHOOKS_PER_TENANT", "2")]).await
    else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let other = api.tenant_with_admin("globex", "g1").await;
    api.create_webhook(&key, "acme", webhook_body("one")).await;
    api.create_webhook(&key, "acme", webhook_body("two")).await;
    let third = api
        .v4(
            &key,
            "acme",
            Method::POST,
            "/v4/webhooks",
            Some(webhook_body("three")),
        )
        .await;
    assert!(
        problem(&third, 409)["detail"]
            .as_str()
            .unwrap()
            .contains("maximum of 2")
    );
    api.create_webhook(&other, "globex", webhook_body("elsewhere"))
        .await;
}

async fn other_tenants_webhooks_do_not_exist(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let acme = api.tenant_with_admin("acme", "u1").await;
    let globex = api.tenant_with_admin("globex", "u1").await;
    let id = api.create_webhook(&acme, "acme", webhook_body("ERP")).await["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v4/webhooks/{id}");
    let attempts = [
        (Method::GET, path.clone(), None),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"name": "mine now"})),
        ),
        (Method::DELETE, path.clone(), None),
        (Method::POST, format!("{path}/rotate-secret"), None),
        (Method::POST, format!("{path}/disable"), None),
        (Method::POST, format!("{path}/enable"), None),
    ];
    for (method, path, body) in attempts {
        let answer = api.v4(&globex, "globex", method.clone(), &path, body).await;
        assert_eq!(
            problem(&answer, 404)["detail"],
            "No such webhook.",
            "{method} {path}"
        );
    }
    let listed = api
        .v4(&globex, "globex", Method::GET, "/v4/webhooks", None)
        .await;
    assert_eq!(listed.body["webhooks"], json!([]));
    let audit = api
        .v4(&globex, "globex", Method::GET, "/v4/audit-log", None)
        .await;
    assert!(!audit.text.contains(&id));
    let still = api.v4(&acme, "acme", Method::GET, &path, None).await;
    assert_eq!(still.body["webhook"]["name"], "ERP");
    assert_eq!(still.body["webhook"]["enabled"], true);
}

async fn the_privilege_boundary_holds_both_ways(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let owner = api.tenant_with_admin("acme", "owner").await;
    api.put_role(
        "acme",
        "junior",
        &["webhooks:manage", "invoices:read:division"],
    )
    .await;
    api.put_user("acme", "junior", true, &["junior"]).await;
    let junior = api.issue_key("acme", "junior").await;
    api.put_user("acme", "peer", true, &["admin"]).await;
    let peer = api.issue_key("acme", "peer").await;

    let created = api
        .create_webhook(&owner, "acme", webhook_body("Finance ERP"))
        .await;
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v4/webhooks/{id}");

    let seen = api.v4(&junior, "acme", Method::GET, &path, None).await;
    assert_eq!(
        seen.body["webhook"]["url"], "https://93.184.216.34",
        "scheme and host only"
    );
    let listed = api
        .v4(&junior, "acme", Method::GET, "/v4/webhooks", None)
        .await;
    assert!(!listed.text.contains("s3cr3t-path-token"));

    for (method, suffix, body) in [
        (
            Method::PATCH,
            "",
            Some(json!({"url": "https://93.184.216.35/mine"})),
        ),
        (Method::PATCH, "", Some(json!({"events": ["*"]}))),
        (Method::POST, "/rotate-secret", None),
        (Method::DELETE, "", None),
    ] {
        let answer = api
            .v4(
                &junior,
                "acme",
                method.clone(),
                &format!("{path}{suffix}"),
                body,
            )
            .await;
        let detail = problem(&answer, 403)["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains("covers the owner"),
            "{method} {suffix}: {detail}"
        );
        assert!(
            detail.contains(":read:tenant") || detail.contains(":fields:"),
            "says why: {detail}"
        );
    }
    let renamed = api
        .v4(
            &junior,
            "acme",
            Method::PATCH,
            &path,
            Some(json!({"name": "Finance ERP (watched)", "description": "noted"})),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(renamed.body["webhook"]["url"], "https://93.184.216.34");
    let disabled = api
        .v4(
            &junior,
            "acme",
            Method::POST,
            &format!("{path}/disable"),
            None,
        )
        .await;
    assert_eq!(
        disabled.body["webhook"]["disabled_by"], "junior",
        "the safety valve is open to all"
    );
    problem(
        &api.v4(
            &junior,
            "acme",
            Method::POST,
            &format!("{path}/enable"),
            None,
        )
        .await,
        403,
    );

    // A peer whose access covers the owner's may do everything, and sees the whole URL.
    let full = api.v4(&peer, "acme", Method::GET, &path, None).await;
    assert_eq!(
        full.body["webhook"]["url"],
        "https://93.184.216.34/zivio/hook?token=s3cr3t-path-token"
    );
    assert_eq!(
        api.v4(&peer, "acme", Method::POST, &format!("{path}/enable"), None)
            .await
            .status,
        200
    );

    // The owner's access counts while they are inactive; the webhook shows it.
    api.put_user("acme", "owner", false, &["admin"]).await;
    let inactive = api.v4(&peer, "acme", Method::GET, &path, None).await;
    assert_eq!(inactive.body["webhook"]["owner_active"], false);
    problem(
        &api.v4(
            &junior,
            "acme",
            Method::POST,
            &format!("{path}/rotate-secret"),
            None,
        )
        .await,
        403,
    );
    assert_eq!(
        api.v4(
            &peer,
            "acme",
            Method::POST,
            &format!("{path}/rotate-secret"),
            None
        )
        .await
        .status,
        200
    );

    // The junior's own webhook: the owner covers themselves.
    let mut own = webhook_body("Junior hook");
    own["events"] = json!(["invoices.*"]);
    let mine = api.create_webhook(&junior, "acme", own).await;
    let mine = format!("/v4/webhooks/{}", mine["webhook"]["id"].as_str().unwrap());
    assert_eq!(
        api.v4(
            &junior,
            "acme",
            Method::POST,
            &format!("{mine}/rotate-secret"),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.v4(&peer, "acme", Method::DELETE, &mine, None)
            .await
            .status,
        204,
        "a wider admin covers a narrower owner"
    );
}
