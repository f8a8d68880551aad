//! Payload contracts (docs/product.md §5): every event type's JSON Schema is public, delivered
//! payloads conform to it whatever the owner's access, the OpenAPI document carries them in its
//! `webhooks` section and validates as OpenAPI 3.1, and publishing refuses, counts or skips
//! events that do not conform.

use reqwest::Method;
use serde_json::{Value, json};
use zivio_core::catalog::Catalog;
use zivio_core::ids::TenantId;

use crate::support::api::{Api, Backend, on_both_backends, problem};
use crate::support::sending::{WAIT, setup};

on_both_backends!(
    non_conforming_events_are_refused_naming_the_pointer,
    delivered_payloads_conform_to_the_public_schema_for_much_and_little_access,
);

/// A publishable event of `event_type`: the catalog's example as its data.
fn event(event_type: &str) -> Value {
    let data = Catalog::builtin()
        .event_type(event_type)
        .unwrap()
        .example
        .clone();
    json!({
        "type": event_type,
        "resource": {
            "id": data["id"],
            "placement": {"business_unit": "emea", "division": "uk", "department": "finance"},
            "data": data,
        },
    })
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .expect("a valid JSON Schema")
}

fn violations(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| format!("{}: {error}", error.instance_path().as_str()))
        .collect()
}

async fn non_conforming_events_are_refused_naming_the_pointer(backend: Backend) {
    let Some(setup) = setup(backend, "1h", true).await else {
        return;
    };
    let (webhook, _) = setup.webhook("/c").await;
    let api = &setup.api;
    let mut bad = event("invoice.paid");
    bad["resource"]["data"]["total"] = json!(98765.4321);
    let refused = api.platform(Method::POST, "acme/events", Some(bad)).await;
    let refusal = problem(&refused, 400);
    assert_eq!(refusal["errors"][0]["field"], "/resource/data/total");
    assert_eq!(
        refusal["errors"][0]["message"],
        "must be of type string or null"
    );
    assert!(
        !refused.text.contains("98765"),
        "never the value: {}",
        refused.text
    );

    // A batch: each violation by its event's index; nothing of the batch is stored.
    let mut items = event("invoice.paid");
    items["key"] = json!("batch-0");
    items["resource"]["data"]["invoice_items"] = json!({"id": "1"});
    let mut no_id = event("job.created");
    no_id["resource"]["data"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    let mut good = event("invoice.paid");
    good["key"] = json!("batch-good");
    let batch = json!({"events": [good, items, no_id]});
    let refused = api
        .platform(Method::POST, "acme/events/batch", Some(batch))
        .await;
    let errors = problem(&refused, 400)["errors"].as_array().unwrap().clone();
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "/events/1/resource/data/invoice_items",
            "/events/2/resource/data"
        ]
    );
    assert_eq!(
        errors[1]["message"],
        "is missing the required property `id`"
    );
    let stored = api
        .store()
        .await
        .events_by_key(&TenantId::parse("acme").unwrap(), &["batch-good".into()])
        .await
        .unwrap();
    assert!(stored.is_empty(), "nothing of a refused batch is stored");

    // At most 100 violations are listed.
    let many: Vec<Value> = (0..150)
        .map(|_| {
            let mut bad = event("invoice.paid");
            bad["resource"]["data"]["total"] = json!(1);
            bad
        })
        .collect();
    let refused = api
        .platform(
            Method::POST,
            "acme/events/batch",
            Some(json!({"events": many})),
        )
        .await;
    assert_eq!(
        problem(&refused, 400)["errors"].as_array().unwrap().len(),
        100
    );

    // Only the conforming event published afterwards arrives.
    let conforming = setup.publish().await;
    setup.attempts(&conforming, &webhook, 1).await;
    let listed = setup.get("/v4/deliveries").await;
    assert_eq!(listed.body["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(setup.receiver.received("/c").len(), 1);
}

async fn delivered_payloads_conform_to_the_public_schema_for_much_and_little_access(
    backend: Backend,
) {
    let Some(setup) = setup(backend, "1h", true).await else {
        return;
    };
    let api = &setup.api;
    // One owner sees everything; another sees invoices of the tenant without any field group
    // and no users, so embedded users shrink to their ids.
    setup.webhook("/much").await;
    api.put_role(
        "acme",
        "narrow",
        &["webhooks:manage", "invoices:read:tenant"],
    )
    .await;
    api.put_user("acme", "narrow", true, &["narrow"]).await;
    let narrow = api.issue_key("acme", "narrow").await;
    let body = json!({"name": "little", "url": setup.receiver.url("/little"), "events": ["*"]});
    api.create_webhook(&narrow, "acme", body).await;
    setup.publish().await;
    let much = setup.receiver.wait_for("/much", 1, WAIT).await;
    let little = setup.receiver.wait_for("/little", 1, WAIT).await;

    let schema = reqwest::get(api.service.url("/v4/event-types/invoice.paid/schema"))
        .await
        .unwrap();
    assert_eq!(schema.status(), 200, "served without authentication");
    assert_eq!(schema.headers()["content-type"], "application/schema+json");
    let schema: Value = schema.json().await.unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let validator = validator(&schema);
    let (much, little): (Value, Value) = (
        serde_json::from_slice(&much[0].body).unwrap(),
        serde_json::from_slice(&little[0].body).unwrap(),
    );
    assert_ne!(much["data"], little["data"], "shaped differently");
    assert_eq!(
        little["data"]["created_by"],
        json!({"id": much["data"]["created_by"]["id"]})
    );
    assert_eq!(violations(&validator, &much), Vec::<String>::new());
    assert_eq!(violations(&validator, &little), Vec::<String>::new());

    let listed = setup.get("/v4/event-types").await;
    assert_eq!(
        listed.body["categories"][0]["event_types"][0]["schema"],
        "/v4/event-types/job.created/schema"
    );
    let test = reqwest::get(api.service.url("/v4/event-types/webhook.test/schema"))
        .await
        .unwrap();
    assert_eq!(test.status(), 200);
    let missing = reqwest::get(api.service.url("/v4/event-types/invoice.exploded/schema"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// The OpenAPI document validates against the OpenAPI Initiative's schema of OpenAPI 3.1, and
/// each `webhooks` entry describes a real delivery of its type.
#[tokio::test]
async fn the_openapi_webhooks_describe_real_deliveries_of_every_type() {
    let Some(setup) = setup(Backend::Sqlite, "1h", true).await else {
        return;
    };
    let document: Value =
        serde_json::from_str(&setup.api.service.text("/v4/openapi.json").await).unwrap();
    let oas: Value = serde_json::from_str(include_str!("../data/openapi-3.1.schema.json")).unwrap();
    assert_eq!(
        violations(&validator(&oas), &document),
        Vec::<String>::new()
    );

    // The admin UI's Event Types page shows each schema, folded, with a link to it.
    let cookie = setup.api.sign_in_by_link("acme", "u1").await;
    let page = setup.api.admin_page(&cookie, "/admin/event-types").await;
    assert!(page.contains(r#"<a href="/v4/event-types/invoice.paid/schema">"#));
    assert!(page.contains(r#"<details class="schema" id="schema-invoices">"#));
    assert!(!page.contains("<details open"), "folded by default");

    let (webhook, secret) = setup.webhook("/all").await;
    let types: Vec<String> = Catalog::builtin()
        .collections()
        .iter()
        .flat_map(|c| c.event_types.iter().map(|t| t.name.clone()))
        .collect();
    let events: Vec<Value> = types.iter().map(|t| event(t)).collect();
    let published = setup
        .api
        .platform(
            Method::POST,
            "acme/events/batch",
            Some(json!({"events": events})),
        )
        .await;
    assert_eq!(published.status, 202, "{}", published.text);
    let test = setup
        .send(Method::POST, &format!("/v4/webhooks/{webhook}/test"), None)
        .await;
    assert_eq!(test.status, 202, "{}", test.text);
    let received = setup.receiver.wait_for("/all", types.len() + 1, WAIT).await;
    assert_eq!(
        document["webhooks"].as_object().unwrap().len(),
        types.len() + 1,
        "one entry per type, webhook.test included"
    );
    for request in &received {
        crate::support::sending::verify(&secret, request);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let event_type = body["type"].as_str().unwrap();
        let entry = &document["webhooks"][event_type]["post"];
        let parameters: Vec<&str> = entry["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            parameters,
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        );
        // The envelope refers to `#/components/schemas/...`: validate it with them beside it.
        let mut schema = entry["requestBody"]["content"]["application/json"]["schema"].clone();
        schema["components"] = document["components"].clone();
        assert_eq!(
            violations(&validator(&schema), &body),
            Vec::<String>::new(),
            "{event_type}"
        );
    }
}

#[tokio::test]
async fn warn_accepts_logs_and_counts_and_off_does_not_check() {
    let env = [
        ("ZIVIO_WEBHOOKS_EVENT_VALIDATION", "warn"),
        ("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32"),
    ];
    let Some(mut api) = Api::start(Backend::Sqlite, &env).await else {
        return;
    };
    api.tenant_with_admin("acme", "u1").await;
    let mut bad = event("invoice.paid");
    bad["resource"]["data"]["total"] = json!(98765.4321);
    let accepted = api
        .platform(Method::POST, "acme/events", Some(bad.clone()))
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let metrics = api.service.text("/metrics").await;
    assert!(
        metrics.contains("zivio_events_nonconforming_total{type=\"invoice.paid\"} 1"),
        "{metrics}"
    );
    let logs = api.service.stderr();
    let warned = logs
        .lines()
        .find(|line| line.contains("does not conform"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        warned.contains("/total") && warned.contains("must be of type"),
        "{warned}"
    );
    assert!(!logs.contains("98765"), "never the value");

    api.restart_with(&[("ZIVIO_WEBHOOKS_EVENT_VALIDATION", "off")])
        .await;
    let accepted = api.platform(Method::POST, "acme/events", Some(bad)).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let metrics = api.service.text("/metrics").await;
    assert!(
        !metrics.contains("zivio_events_nonconforming_total{"),
        "not checked at all"
    );
}
