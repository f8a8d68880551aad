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
    ending_access_revokes_api_keys_and_ends_sessions_for_good,
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
    assert!(entry["revoked_at"].is_null() && entry["revoked_reason"].is_null());

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
    let revoked = api_key_entry(&api, "acme", "u1", &id).await;
    assert_eq!(revoked["revoked_reason"], "revoked", "it stays listed");
    assert!(revoked["revoked_at"].is_string());
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

/// The key's entry in its user's key list.
async fn api_key_entry(api: &Api, tenant: &str, user: &str, id: &str) -> serde_json::Value {
    let listed = api
        .platform(
            Method::GET,
            &format!("{tenant}/users/{user}/api-keys"),
            None,
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    listed.body["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["id"] == id)
        .unwrap_or_else(|| panic!("{id} is listed: {}", listed.text))
        .clone()
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

    // A key of a user who never held webhooks:manage: 403 with a reason; it works once the
    // permission is granted (keys may be issued ahead of it).
    api.put_role("acme", "reader", &["invoices:read:tenant"])
        .await;
    api.put_user("acme", "u2", true, &["reader"]).await;
    let early = api.issue_key("acme", "u2").await;
    let forbidden = list(early.clone(), "acme").await;
    assert!(
        problem(&forbidden, 403)["detail"]
            .as_str()
            .unwrap()
            .contains("webhooks:manage")
    );
    api.put_user("acme", "u2", true, &["reader", "admin"]).await;
    assert_eq!(list(early, "acme").await.status, 200);

    // Deletion: 401 at once, and a user created again with the same id finds the key revoked.
    assert_eq!(
        api.platform(Method::DELETE, "acme/users/u1", None)
            .await
            .status,
        204
    );
    problem(&list(key.clone(), "acme").await, 401);
    api.put_user("acme", "u1", true, &["admin"]).await;
    problem(&list(key, "acme").await, 401);
    let listed = api
        .platform(Method::GET, "acme/users/u1/api-keys", None)
        .await;
    let keys = listed.body["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{}", listed.text);
    assert_eq!(keys[0]["revoked_reason"], "user_deleted");
    let fresh = api.issue_key("acme", "u1").await;
    assert_eq!(list(fresh, "acme").await.status, 200, "a new key works");
}

/// docs/product.md §8: deactivating a user or removing their `webhooks:manage` ends their sessions
/// and API keys at once, for good: reactivating them or giving the permission back later does
/// not revive an old key or an old admin UI session.
async fn ending_access_revokes_api_keys_and_ends_sessions_for_good(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let mut key = api.tenant_with_admin("acme", "u1").await;
    let second_key = api.issue_key("acme", "u1").await;
    api.put_role("acme", "reader", &["invoices:read:tenant"])
        .await;
    api.put_user("acme", "u2", true, &["admin"]).await;
    let other = api.issue_key("acme", "u2").await;
    let everything: Vec<String> = zivio_core::permission::Permission::all()
        .iter()
        .map(ToString::to_string)
        .collect();
    let everything: Vec<&str> = everything.iter().map(String::as_str).collect();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A new admin UI session of u1 by sign-in link: its cookie (`zivio_session=...`).
    let signed_in = || api.sign_in_by_link("acme", "u1");
    // (v4 API with the key, admin UI page with the session): 200 and 200 while they work.
    let works = |key: String, session: String| {
        let (api, client) = (&api, no_redirects.clone());
        async move {
            let listed = api
                .v4(&key, "acme", Method::GET, "/v4/webhooks", None)
                .await;
            let page = client
                .get(api.service.url("/admin/webhooks"))
                .header("cookie", session)
                .send()
                .await
                .unwrap();
            let location = page
                .headers()
                .get("location")
                .map(|value| value.to_str().unwrap().to_owned());
            (listed.status.as_u16(), page.status().as_u16(), location)
        }
    };
    const WORKING: (u16, u16, Option<String>) = (200, 200, None);
    let ended = || (401, 303, Some("/admin/sign-in".to_owned()));
    let revoked_because = |key: String, reason: &'static str| {
        let api = &api;
        async move {
            let issued = api
                .platform(Method::GET, "acme/users/u1/api-keys", None)
                .await;
            let hint = &key[key.len() - 4..];
            let entry = issued.body["api_keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|entry| entry["hint"] == hint)
                .unwrap()
                .clone();
            assert_eq!(entry["revoked_reason"], reason, "{entry}");
            let at = entry["revoked_at"].as_str().unwrap();
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .unwrap();
        }
    };

    // 1. Deactivation, then reactivation.
    let session = signed_in().await;
    assert_eq!(works(key.clone(), session.clone()).await, WORKING);
    api.put_user("acme", "u1", false, &["admin"]).await;
    assert_eq!(works(key.clone(), session.clone()).await, ended());
    api.put_user("acme", "u1", true, &["admin"]).await;
    assert_eq!(
        works(key.clone(), session.clone()).await,
        ended(),
        "reactivation revives neither the key nor the session"
    );
    revoked_because(key.clone(), "user_deactivated").await;
    revoked_because(second_key, "user_deactivated").await;

    // 2. webhooks:manage removed by a change of the user's roles, then given back.
    key = api.issue_key("acme", "u1").await;
    let session = signed_in().await;
    assert_eq!(works(key.clone(), session.clone()).await, WORKING);
    api.put_user("acme", "u1", true, &["reader"]).await;
    assert_eq!(works(key.clone(), session.clone()).await, ended());
    api.put_user("acme", "u1", true, &["admin"]).await;
    assert_eq!(works(key.clone(), session.clone()).await, ended());
    revoked_because(key.clone(), "permission_removed").await;

    // 3. webhooks:manage removed from a role the user holds, then given back.
    key = api.issue_key("acme", "u1").await;
    let session = signed_in().await;
    assert_eq!(works(key.clone(), session.clone()).await, WORKING);
    api.put_role("acme", "admin", &["invoices:read:tenant"])
        .await;
    assert_eq!(works(key.clone(), session.clone()).await, ended());
    api.put_role("acme", "admin", &everything).await;
    assert_eq!(works(key.clone(), session.clone()).await, ended());
    revoked_because(key.clone(), "permission_removed").await;

    // 4. The role deleted, then defined again.
    key = api.issue_key("acme", "u1").await;
    let session = signed_in().await;
    assert_eq!(works(key.clone(), session.clone()).await, WORKING);
    assert_eq!(
        api.platform(Method::DELETE, "acme/roles/admin", None)
            .await
            .status,
        204
    );
    assert_eq!(works(key.clone(), session.clone()).await, ended());
    api.put_role("acme", "admin", &everything).await;
    assert_eq!(works(key.clone(), session.clone()).await, ended());
    revoked_because(key.clone(), "permission_removed").await;

    // A new key and a new sign-in work; u2 lost theirs with the role and got nothing back.
    let key = api.issue_key("acme", "u1").await;
    let session = signed_in().await;
    assert_eq!(works(key.clone(), session).await, WORKING);
    problem(
        &api.v4(&other, "acme", Method::GET, "/v4/webhooks", None)
            .await,
        401,
    );

    // Each ending is audited: the platform ended it, with what it revoked; never a key.
    let audit = api
        .v4(&key, "acme", Method::GET, "/v4/audit-log?limit=100", None)
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let endings: Vec<(String, String, u64, u64)> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "user.access_ended")
        .map(|entry| {
            assert_eq!(entry["actor_id"], "platform");
            let changes = &entry["changes"];
            (
                changes["user_id"].as_str().unwrap().to_owned(),
                changes["reason"].as_str().unwrap().to_owned(),
                changes["api_keys_revoked"].as_u64().unwrap(),
                changes["sessions_ended"].as_u64().unwrap(),
            )
        })
        .rev()
        .collect();
    let entry = |user: &str, reason: &str, keys, sessions| {
        (user.to_owned(), reason.to_owned(), keys, sessions)
    };
    assert_eq!(
        endings,
        [
            entry("u1", "user_deactivated", 2, 1),
            entry("u1", "permission_removed", 1, 1),
            entry("u1", "permission_removed", 1, 1),
            entry("u2", "permission_removed", 1, 0),
            entry("u1", "permission_removed", 1, 1),
        ]
    );
    assert!(!audit.text.contains(&key) && !audit.text.contains(&other));
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
