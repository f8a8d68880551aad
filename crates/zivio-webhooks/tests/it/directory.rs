//! The platform API: authentication, directory validation, API keys and sign-in links, and
//! access changes taking effect at once.

use reqwest::Method;
use serde_json::json;

use crate::support::api::{Api, Backend, on_both_backends, problem};

on_both_backends!(
    platform_api_needs_a_platform_key,
    directory_input_is_validated_field_by_field,
    api_keys_are_shown_once_listed_by_hint_and_revoked,
    access_changes_stop_api_keys_at_once,
    sign_in_links_are_issued_for_active_users_only,
);

async fn platform_api_needs_a_platform_key(backend: Backend) {
    let Some(api) = Api::start(
        backend,
        &[(
            "ZIVIO_WEBHOOKS_PLATFORM_KEY",
            "first-platform-key-0001,second-platform-key-002",
        )],
    )
    .await
    else {
        return;
    };
    let body = Some(json!({"name": "Acme"}));
    let missing = api
        .send(Method::PUT, "/platform/v4/tenants/acme", &[], body.clone())
        .await;
    assert_eq!(problem(&missing, 401)["status"], 401);
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    let wrong = api
        .send(
            Method::PUT,
            "/platform/v4/tenants/acme",
            &[("authorization", "Bearer first-platform-key-0002")],
            body.clone(),
        )
        .await;
    problem(&wrong, 401);
    for key in ["first-platform-key-0001", "second-platform-key-002"] {
        let auth = format!("Bearer {key}");
        let ok = api
            .send(
                Method::PUT,
                "/platform/v4/tenants/acme",
                &[("authorization", &auth)],
                body.clone(),
            )
            .await;
        assert_eq!(ok.status, 204, "both keys of a rotation work: {}", ok.text);
    }
}

async fn directory_input_is_validated_field_by_field(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    api.put_tenant("acme").await;

    let role = api
        .platform(
            Method::PUT,
            "acme/roles/clerk",
            Some(json!({"permissions": ["webhooks:manage", "widgets:read:tenant", "invoices:read:galaxy", "invoices:fields:banking"]})),
        )
        .await;
    let errors = problem(&role, 422)["errors"].as_array().unwrap().clone();
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["permissions[1]", "permissions[2]", "permissions[3]"]
    );
    assert!(errors[0]["message"].as_str().unwrap().contains("widgets"));
    assert!(errors[1]["message"].as_str().unwrap().contains("galaxy"));
    assert!(errors[2]["message"].as_str().unwrap().contains("banking"));

    let user = api
        .platform(
            Method::PUT,
            "acme/users/u1",
            Some(
                json!({"email": "not-an-email", "name": "", "active": true, "roles": ["bad role"]}),
            ),
        )
        .await;
    let fields: Vec<String> = problem(&user, 422)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["email", "name", "roles[0]"]);

    let missing_field = api
        .platform(
            Method::PUT,
            "acme/users/u1",
            Some(json!({"email": "a@b.co", "name": "A"})),
        )
        .await;
    assert_eq!(problem(&missing_field, 422)["errors"][0]["field"], "active");
    let wrong_type = api
        .platform(
            Method::PUT,
            "acme/users/u1",
            Some(json!({"email": "a@b.co", "name": "A", "active": "yes"})),
        )
        .await;
    assert_eq!(problem(&wrong_type, 422)["errors"][0]["field"], "active");

    let unknown_tenant = api
        .platform(
            Method::PUT,
            "nobody/users/u1",
            Some(json!({"email": "a@b.co", "name": "A", "active": true})),
        )
        .await;
    problem(&unknown_tenant, 404);
    let bad_id = api
        .platform(Method::PUT, "acme%20corp", Some(json!({"name": "x"})))
        .await;
    assert_eq!(problem(&bad_id, 422)["errors"][0]["field"], "tenant_id");

    let auth = "Bearer zpk_integration_tests_platform_key";
    let malformed = api
        .client
        .put(api.service.url("/platform/v4/tenants/acme"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.headers()["content-type"],
        "application/problem+json"
    );
    let not_json = api
        .client
        .put(api.service.url("/platform/v4/tenants/acme"))
        .header("authorization", auth)
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);

    let short = api
        .platform(
            Method::PUT,
            "acme/users/u1/password",
            Some(json!({"password": "short"})),
        )
        .await;
    problem(&short, 422);
    let no_user = api
        .platform(
            Method::PUT,
            "acme/users/ghost/password",
            Some(json!({"password": "long enough password"})),
        )
        .await;
    problem(&no_user, 404);
    assert_eq!(
        problem(
            &api.platform(Method::DELETE, "acme/roles/none", None).await,
            404
        )["status"],
        404
    );
    assert_eq!(api.platform(Method::DELETE, "acme", None).await.status, 204);
    problem(&api.platform(Method::DELETE, "acme", None).await, 404);
}

async fn api_keys_are_shown_once_listed_by_hint_and_revoked(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    api.tenant_with_admin("acme", "u1").await;
    let issued = api
        .platform(Method::POST, "acme/users/u1/api-keys", None)
        .await;
    assert_eq!(issued.status, 201);
    assert_eq!(issued.headers["cache-control"], "no-store");
    let key = issued.body["key"].as_str().unwrap().to_owned();
    let id = issued.body["id"].as_str().unwrap().to_owned();

    assert_eq!(
        api.v4(&key, "acme", Method::GET, "/v4/webhooks", None)
            .await
            .status,
        200
    );
    let listed = api
        .platform(Method::GET, "acme/users/u1/api-keys", None)
        .await;
    assert_eq!(listed.status, 200);
    assert!(!listed.text.contains(&key), "keys are never listed");
    let entry = listed.body["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["hint"], key[key.len() - 4..]);
    assert!(entry["created_at"].is_string());
    assert!(entry["last_used_at"].is_string(), "use is recorded");

    assert_eq!(
        api.platform(
            Method::DELETE,
            &format!("acme/users/u1/api-keys/{id}"),
            None
        )
        .await
        .status,
        204
    );
    problem(
        &api.v4(&key, "acme", Method::GET, "/v4/webhooks", None)
            .await,
        401,
    );
    problem(
        &api.platform(
            Method::DELETE,
            &format!("acme/users/u1/api-keys/{id}"),
            None,
        )
        .await,
        404,
    );
    problem(
        &api.platform(Method::POST, "acme/users/ghost/api-keys", None)
            .await,
        404,
    );
}

async fn access_changes_stop_api_keys_at_once(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    api.tenant_with_admin("globex", "g1").await;
    let list = |key: String, tenant: &'static str| {
        let api = &api;
        async move {
            api.v4(&key, tenant, Method::GET, "/v4/webhooks", None)
                .await
        }
    };
    assert_eq!(list(key.clone(), "acme").await.status, 200);
    problem(&list(key.clone(), "globex").await, 401);
    problem(&list("zk_made_up".into(), "acme").await, 401);
    let no_tenant = api
        .send(Method::GET, "/v4/webhooks", &[("x-api-key", &key)], None)
        .await;
    problem(&no_tenant, 401);

    // Losing webhooks:manage: 403 with a reason, at once.
    api.put_role("acme", "reader", &["invoices:read:tenant"])
        .await;
    api.put_user("acme", "u1", true, &["reader"]).await;
    let forbidden = list(key.clone(), "acme").await;
    assert!(
        problem(&forbidden, 403)["detail"]
            .as_str()
            .unwrap()
            .contains("webhooks:manage")
    );
    api.put_user("acme", "u1", true, &["admin"]).await;
    assert_eq!(list(key.clone(), "acme").await.status, 200);

    // Deactivation and deletion: 401 at once.
    api.put_user("acme", "u1", false, &["admin"]).await;
    problem(&list(key.clone(), "acme").await, 401);
    api.put_user("acme", "u1", true, &["admin"]).await;
    assert_eq!(list(key.clone(), "acme").await.status, 200);
    assert_eq!(
        api.platform(Method::DELETE, "acme/users/u1", None)
            .await
            .status,
        204
    );
    problem(&list(key.clone(), "acme").await, 401);
    api.put_user("acme", "u1", true, &["admin"]).await;
    problem(&list(key, "acme").await, 401);
}

async fn sign_in_links_are_issued_for_active_users_only(backend: Backend) {
    let Some(api) = Api::start(
        backend,
        &[("ZIVIO_WEBHOOKS_PUBLIC_URL", "https://hooks.example.com")],
    )
    .await
    else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let link = api
        .platform(Method::POST, "acme/users/u1/sign-in-links", None)
        .await;
    assert_eq!(link.status, 201, "{}", link.text);
    assert_eq!(link.headers["cache-control"], "no-store");
    let url = link.body["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://hooks.example.com/admin/sign-in/link/"),
        "{url}"
    );
    let token = url.rsplit('/').next().unwrap();
    assert!(token.len() >= 43, "256 random bits");
    let again = api
        .platform(Method::POST, "acme/users/u1/sign-in-links", None)
        .await;
    assert_ne!(again.body["url"], link.body["url"]);

    api.put_user("acme", "u2", false, &["admin"]).await;
    problem(
        &api.platform(Method::POST, "acme/users/u2/sign-in-links", None)
            .await,
        409,
    );
    problem(
        &api.platform(Method::POST, "acme/users/u2/api-keys", None)
            .await,
        409,
    );
    problem(
        &api.platform(Method::POST, "acme/users/ghost/sign-in-links", None)
            .await,
        404,
    );

    let audit = api
        .v4(&key, "acme", Method::GET, "/v4/audit-log", None)
        .await;
    assert!(
        !audit.text.contains(token),
        "the token is never shown again"
    );
    let actions: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "sign_in_link.issued")
            .count(),
        2
    );
    assert!(
        !api.service
            .logs()
            .iter()
            .any(|line| line.to_string().contains(token)),
        "never logged"
    );
}
