//! The v4 API keeps secrets to the one answer that shows them, records every change in the
//! audit log (paged) and serves the event catalog.

use reqwest::Method;
use serde_json::json;

use crate::support::api::{Api, Backend, on_both_backends, problem, webhook_body};

on_both_backends!(
    secrets_never_appear_after_they_are_shown,
    the_audit_log_records_changes_and_pages,
    the_event_catalog_is_served,
);

async fn secrets_never_appear_after_they_are_shown(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let created = api.create_webhook(&key, "acme", webhook_body("ERP")).await;
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v4/webhooks/{id}");
    let rotated = api
        .v4(
            &key,
            "acme",
            Method::POST,
            &format!("{path}/rotate-secret"),
            None,
        )
        .await;
    let secrets = [
        created["secret"].as_str().unwrap().to_owned(),
        rotated.body["secret"].as_str().unwrap().to_owned(),
    ];
    api.v4(
        &key,
        "acme",
        Method::PATCH,
        &path,
        Some(json!({"name": "ERP 2"})),
    )
    .await;
    api.v4(&key, "acme", Method::POST, &format!("{path}/disable"), None)
        .await;

    let answers = [
        api.v4(&key, "acme", Method::GET, &path, None).await.text,
        api.v4(&key, "acme", Method::GET, "/v4/webhooks", None)
            .await
            .text,
        api.v4(&key, "acme", Method::GET, "/v4/audit-log", None)
            .await
            .text,
    ];
    let logs: Vec<String> = api.service.logs().iter().map(ToString::to_string).collect();
    for secret in &secrets {
        let base64_part = &secret["whsec_".len()..];
        for text in answers.iter().chain(&logs) {
            assert!(!text.contains(base64_part), "secret leaked into {text}");
        }
    }
    if backend == Backend::Sqlite {
        let mut stored = Vec::new();
        for entry in std::fs::read_dir(api.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("zivio.db")
            {
                stored.extend(std::fs::read(&path).unwrap());
            }
        }
        assert!(!stored.is_empty());
        for secret in &secrets {
            let needle = &secret.as_bytes()["whsec_".len()..];
            assert!(
                !stored.windows(needle.len()).any(|w| w == needle),
                "secret stored in clear"
            );
        }
    }
}

async fn the_audit_log_records_changes_and_pages(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let created = api.create_webhook(&key, "acme", webhook_body("ERP")).await;
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v4/webhooks/{id}");
    api.v4(
        &key,
        "acme",
        Method::PATCH,
        &path,
        Some(json!({"name": "ERP 2", "url": "https://93.184.216.35/other?key=zzz"})),
    )
    .await;
    api.v4(
        &key,
        "acme",
        Method::POST,
        &format!("{path}/rotate-secret"),
        None,
    )
    .await;
    api.v4(&key, "acme", Method::POST, &format!("{path}/disable"), None)
        .await;
    api.v4(&key, "acme", Method::POST, &format!("{path}/enable"), None)
        .await;
    api.v4(&key, "acme", Method::DELETE, &path, None).await;

    let all = api
        .v4(&key, "acme", Method::GET, "/v4/audit-log", None)
        .await;
    let entries = all.body["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "webhook.deleted",
            "webhook.enabled",
            "webhook.disabled",
            "webhook.secret_rotated",
            "webhook.updated",
            "webhook.created",
            "api_key.created"
        ]
    );
    let updated = &entries[4];
    assert_eq!(updated["actor_id"], "u1");
    assert_eq!(updated["webhook_id"], id.as_str());
    assert_eq!(
        updated["changes"]["name"],
        json!({"from": "ERP", "to": "ERP 2"})
    );
    assert_eq!(
        updated["changes"]["url"],
        json!({"from": "https://93.184.216.34", "to": "https://93.184.216.35", "path_or_query_changed": true})
    );
    assert!(
        !all.text.contains("s3cr3t-path-token") && !all.text.contains("zzz"),
        "URLs are masked"
    );
    assert_eq!(entries[6]["actor_id"], "platform");

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("/v4/audit-log?limit=3&cursor={cursor}"),
            None => "/v4/audit-log?limit=3".to_owned(),
        };
        let page = api.v4(&key, "acme", Method::GET, &query, None).await;
        assert_eq!(page.status, 200, "{}", page.text);
        seen.extend(
            page.body["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["action"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, actions);
    for bad in [
        "/v4/audit-log?limit=0",
        "/v4/audit-log?limit=101",
        "/v4/audit-log?limit=ten",
        "/v4/audit-log?cursor=garbage",
    ] {
        let answer = api.v4(&key, "acme", Method::GET, bad, None).await;
        assert!(
            problem(&answer, 400)["errors"][0]["field"].is_string(),
            "{bad}"
        );
    }
}

async fn the_event_catalog_is_served(backend: Backend) {
    let Some(api) = Api::start(backend, &[]).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    problem(
        &api.send(Method::GET, "/v4/event-types", &[], None).await,
        401,
    );
    let answer = api
        .v4(&key, "acme", Method::GET, "/v4/event-types", None)
        .await;
    assert_eq!(answer.status, 200);
    let categories = answer.body["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 13);
    let invoices = categories
        .iter()
        .find(|c| c["collection"] == "invoices")
        .unwrap();
    assert_eq!(invoices["name"], "Invoices");
    assert_eq!(invoices["wildcard"], "invoices.*");
    let types: Vec<&str> = invoices["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"invoice.paid"));
    let paid = invoices["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "invoice.paid")
        .unwrap();
    assert!(paid["description"].as_str().unwrap().len() > 10);
    assert!(paid["example"]["id"].is_string());
    let total: usize = categories
        .iter()
        .map(|c| c["event_types"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 56);
    assert!(!answer.text.contains("webhook.test"));
}
