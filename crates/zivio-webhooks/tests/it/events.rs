//! Publishing events: validation, idempotency, fan-out to exactly the right webhooks, and
//! payloads shaped exactly as each owner sees the resource. What is queued is read from the
//! service's database (delivery itself is tested with the engine).

use reqwest::Method;
use serde_json::{Value, json};
use zivio_core::ids::TenantId;

use crate::support::api::{Api, Backend, on_both_backends, problem};
use crate::support::event_id;

on_both_backends!(
    bad_events_are_refused_naming_the_field,
    events_reach_exactly_the_owners_who_may_see_them_shaped_for_each,
    producer_keys_make_publishing_idempotent,
    the_payload_preview_is_shaped_and_guarded,
);

/// Publishing here queues real deliveries: point them at a closed loopback port (the discard
/// port, where nothing listens), never at an address off this machine.
const LOOPBACK_ONLY: &[(&str, &str)] = &[("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32")];

fn invoice(key: Option<&str>, owners: &[&str]) -> Value {
    let data = zivio_core::catalog::Catalog::builtin()
        .event_type("invoice.paid")
        .unwrap()
        .example
        .clone();
    let mut event = json!({
        "type": "invoice.paid",
        "occurred_at": "2026-03-14T09:30:00+02:00",
        "resource": {
            "id": data["id"],
            "placement": {"business_unit": "emea", "division": "uk", "department": "finance"},
            "owner_ids": owners,
            "data": data,
        },
    });
    if let Some(key) = key {
        event["key"] = json!(key);
    }
    event
}

async fn publish(api: &Api, event: Value) -> crate::support::api::Answer {
    api.platform(Method::POST, "acme/events", Some(event)).await
}

async fn bad_events_are_refused_naming_the_field(backend: Backend) {
    let Some(api) = Api::start(backend, LOOPBACK_ONLY).await else {
        return;
    };
    api.tenant_with_admin("acme", "u1").await;
    let field = |answer: &crate::support::api::Answer| {
        problem(answer, 422)["errors"][0]["field"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut event = invoice(None, &[]);
    event["type"] = json!("invoice.exploded");
    assert_eq!(field(&publish(&api, event).await), "type");
    let mut event = invoice(None, &[]);
    event["type"] = json!("webhook.test");
    assert_eq!(field(&publish(&api, event).await), "type");
    let mut event = invoice(None, &[]);
    event["occurred_at"] = json!("yesterday");
    assert_eq!(field(&publish(&api, event).await), "occurred_at");
    let mut event = invoice(None, &[]);
    event["resource"]["data"] = json!([1, 2]);
    assert_eq!(field(&publish(&api, event).await), "resource.data");
    let mut event = invoice(None, &[]);
    event["resource"]["owner_ids"] = json!([7158]);
    assert_eq!(field(&publish(&api, event).await), "resource.owner_ids[0]");
    let mut event = invoice(None, &[]);
    event["resource"]["placement"]["division"] = json!(3);
    assert_eq!(
        field(&publish(&api, event).await),
        "resource.placement.division"
    );
    let mut event = invoice(None, &[]);
    event["resource"].as_object_mut().unwrap().remove("id");
    assert_eq!(field(&publish(&api, event).await), "resource.id");
    let mut event = invoice(None, &[]);
    event["key"] = json!("");
    assert_eq!(field(&publish(&api, event).await), "key");
    problem(
        &api.platform(Method::POST, "nobody/events", Some(invoice(None, &[])))
            .await,
        404,
    );

    let mut bad = invoice(Some("batch-2"), &[]);
    bad["type"] = json!("nope.nothing");
    let batch =
        json!({"events": [invoice(Some("batch-0"), &[]), invoice(Some("batch-1"), &[]), bad]});
    let refused = api
        .platform(Method::POST, "acme/events/batch", Some(batch))
        .await;
    assert_eq!(field(&refused), "events[2].type");
    let store = api.store().await;
    let stored = store
        .events_by_key(
            &TenantId::parse("acme").unwrap(),
            &["batch-0".into(), "batch-1".into()],
        )
        .await
        .unwrap();
    assert!(stored.is_empty(), "nothing of a refused batch is stored");
    let empty = api
        .platform(
            Method::POST,
            "acme/events/batch",
            Some(json!({"events": []})),
        )
        .await;
    assert_eq!(field(&empty), "events");
    let many: Vec<Value> = (0..1_001).map(|_| invoice(None, &[])).collect();
    let too_many = api
        .platform(
            Method::POST,
            "acme/events/batch",
            Some(json!({"events": many})),
        )
        .await;
    assert_eq!(field(&too_many), "events");
}

/// Sets up owners with different access, one webhook each, and returns (name, webhook id).
async fn owners_and_webhooks(api: &Api) -> Vec<(&'static str, String)> {
    let everything: Vec<String> = zivio_core::permission::Permission::all()
        .iter()
        .map(ToString::to_string)
        .collect();
    let everything: Vec<&str> = everything.iter().map(String::as_str).collect();
    api.put_tenant("acme").await;
    api.put_role("acme", "admin", &everything).await;
    api.put_role(
        "acme",
        "division",
        &[
            "webhooks:manage",
            "invoices:read:division",
            "users:read:tenant",
            "suppliers:read:tenant",
        ],
    )
    .await;
    api.put_role(
        "acme",
        "own",
        &[
            "webhooks:manage",
            "invoices:read:own",
            "invoices:fields:financials",
        ],
    )
    .await;
    let people: [(&str, &str, &str); 6] = [
        ("full", "admin", "uk"),
        ("full2", "admin", "uk"),
        ("division", "division", "uk"),
        ("elsewhere", "division", "de"),
        ("owner", "own", "fr"),
        ("sleeper", "admin", "uk"),
    ];
    let mut hooks = Vec::new();
    for (user, role, division) in people {
        let body = json!({
            "email": format!("{user}@acme.example.com"), "name": user, "active": true,
            "placement": {"business_unit": "emea", "division": division, "department": "finance"},
            "roles": [role],
        });
        assert_eq!(
            api.platform(Method::PUT, &format!("acme/users/{user}"), Some(body))
                .await
                .status,
            204
        );
        let key = api.issue_key("acme", user).await;
        let created = api
            .create_webhook(
                &key,
                "acme",
                json!({"name": user, "url": "https://127.0.0.1:9/hook", "events": ["invoices.*"]}),
            )
            .await;
        hooks.push((user, created["webhook"]["id"].as_str().unwrap().to_owned()));
        if user == "full" {
            let jobs = api.create_webhook(&key, "acme", json!({"name": "jobs only", "url": "https://127.0.0.1:9/jobs", "events": ["jobs.*"]})).await;
            hooks.push((
                "jobs-only",
                jobs["webhook"]["id"].as_str().unwrap().to_owned(),
            ));
            let off = api
                .create_webhook(
                    &key,
                    "acme",
                    json!({"name": "off", "url": "https://127.0.0.1:9/off", "events": ["*"]}),
                )
                .await;
            let off_id = off["webhook"]["id"].as_str().unwrap().to_owned();
            api.v4(
                &key,
                "acme",
                Method::POST,
                &format!("/v4/webhooks/{off_id}/disable"),
                None,
            )
            .await;
            hooks.push(("disabled", off_id));
        }
    }
    let body = json!({"email": "sleeper@acme.example.com", "name": "sleeper", "active": false,
        "placement": {"business_unit": "emea", "division": "uk", "department": "finance"}, "roles": ["admin"]});
    assert_eq!(
        api.platform(Method::PUT, "acme/users/sleeper", Some(body))
            .await
            .status,
        204
    );
    hooks
}

async fn events_reach_exactly_the_owners_who_may_see_them_shaped_for_each(backend: Backend) {
    let Some(api) = Api::start(backend, LOOPBACK_ONLY).await else {
        return;
    };
    let hooks = owners_and_webhooks(&api).await;
    let webhook_of = |name: &str| hooks.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let event = invoice(None, &["owner"]);
    let input = event["resource"]["data"].clone();
    let accepted = publish(&api, event).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let id = accepted.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("evt_"));

    let store = api.store().await;
    let queued = store
        .deliveries_of_event(&TenantId::parse("acme").unwrap(), &event_id(&id))
        .await
        .unwrap();
    let receivers: Vec<String> = queued.iter().map(|d| d.webhook_id.to_string()).collect();
    let mut expected: Vec<String> = ["full", "full2", "division", "owner"]
        .iter()
        .map(|n| webhook_of(n))
        .collect();
    expected.sort();
    assert_eq!(
        receivers, expected,
        "not: another division, an inactive owner, jobs only, disabled"
    );

    let body_of = |name: &str| {
        let webhook = webhook_of(name);
        let delivery = queued
            .iter()
            .find(|d| d.webhook_id.as_str() == webhook)
            .unwrap();
        (
            delivery.body.clone(),
            serde_json::from_slice::<Value>(&delivery.body).unwrap(),
        )
    };
    let (full_bytes, full) = body_of("full");
    let text = String::from_utf8(full_bytes.clone()).unwrap();
    assert!(text.starts_with(&format!(r#"{{"id":"{id}","type":"invoice.paid","occurred_at":"2026-03-14T07:30:00Z","api_version":"v4","data":{{"#)), "{text}");
    assert_eq!(full["data"], input, "every permission: data as published");
    assert!(!text.contains("\"placement\"") && !text.contains("owner_ids"));
    assert_eq!(body_of("full2").0, full_bytes, "same access, same bytes");

    let (_, division) = body_of("division");
    for field in ["net_total", "tax_total", "total"] {
        assert!(
            division["data"].get(field).is_none(),
            "{field} needs invoices:fields:financials"
        );
    }
    assert!(
        division["data"]["invoice_items"][0]
            .get("unit_cost")
            .is_none()
    );
    assert!(
        division["data"]["approved_by"]["first_name"].is_string(),
        "users are readable"
    );
    assert!(
        division["data"]["approved_by"].get("email").is_none(),
        "but not their contact group"
    );
    assert!(division["data"]["supplier"]["name"].is_string());
    assert!(division["data"]["supplier"].get("tax_number").is_none());

    let (_, own) = body_of("owner");
    assert_eq!(
        own["data"]["total"], input["total"],
        "the owner holds financials"
    );
    assert_eq!(
        own["data"]["approved_by"],
        json!({"id": input["approved_by"]["id"]}),
        "no users access: id only"
    );
    assert_eq!(
        own["data"]["supplier"],
        json!({"id": input["supplier"]["id"]})
    );

    // Access changes apply from the next event on.
    api.put_user("acme", "division", false, &["division"]).await;
    let next = publish(&api, invoice(None, &[])).await;
    let next_id = next.body["id"].as_str().unwrap();
    let queued = store
        .deliveries_of_event(&TenantId::parse("acme").unwrap(), &event_id(next_id))
        .await
        .unwrap();
    let mut receivers: Vec<String> = queued.iter().map(|d| d.webhook_id.to_string()).collect();
    receivers.sort();
    let mut expected: Vec<String> = ["full", "full2"].iter().map(|n| webhook_of(n)).collect();
    expected.sort();
    assert_eq!(
        receivers, expected,
        "deactivated and not-owning users get nothing"
    );

    // A webhook created between two publishes gets the second one (what publishing knows of a
    // tenant's webhooks follows every change).
    let key = api.issue_key("acme", "full").await;
    let created = api
        .create_webhook(
            &key,
            "acme",
            json!({"name": "late", "url": "https://127.0.0.1:9/late", "events": ["invoices.*"]}),
        )
        .await;
    let late = created["webhook"]["id"].as_str().unwrap().to_owned();
    let after = publish(&api, invoice(None, &[])).await;
    let queued = store
        .deliveries_of_event(
            &TenantId::parse("acme").unwrap(),
            &event_id(after.body["id"].as_str().unwrap()),
        )
        .await
        .unwrap();
    assert!(
        queued.iter().any(|d| d.webhook_id.to_string() == late),
        "the new webhook is among the receivers"
    );
}

async fn producer_keys_make_publishing_idempotent(backend: Backend) {
    let Some(api) = Api::start(backend, LOOPBACK_ONLY).await else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let hook = api
        .create_webhook(
            &key,
            "acme",
            json!({"name": "all", "url": "https://127.0.0.1:9/h", "events": ["*"]}),
        )
        .await;
    let hook = hook["webhook"]["id"].as_str().unwrap().to_owned();
    let first = publish(&api, invoice(Some("inv-1-paid"), &[])).await;
    assert_eq!(first.status, 202);
    let id = first.body["id"].as_str().unwrap().to_owned();
    let again = publish(&api, invoice(Some("inv-1-paid"), &[])).await;
    assert_eq!(again.status, 202);
    assert_eq!(
        again.body["id"],
        id.as_str(),
        "same key, same event: the original id"
    );
    let mut different = invoice(Some("inv-1-paid"), &[]);
    different["resource"]["data"]["total"] = json!("0.01");
    let conflict = publish(&api, different).await;
    assert!(
        problem(&conflict, 409)["detail"]
            .as_str()
            .unwrap()
            .contains("inv-1-paid")
    );

    let batch = json!({"events": [invoice(Some("b-1"), &[]), invoice(Some("b-1"), &[]), invoice(Some("inv-1-paid"), &[]), invoice(None, &[])]});
    let answer = api
        .platform(Method::POST, "acme/events/batch", Some(batch))
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let ids: Vec<&str> = answer.body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(
        ids[0], ids[1],
        "a key repeated inside one batch gives one event"
    );
    assert_eq!(ids[2], id);
    assert_ne!(ids[3], ids[0]);

    let store = api.store().await;
    let acme = TenantId::parse("acme").unwrap();
    assert_eq!(
        store
            .deliveries_of_event(&acme, &event_id(&id))
            .await
            .unwrap()
            .len(),
        1,
        "the repeat queued nothing new"
    );
    assert_eq!(
        store
            .deliveries_of_event(&acme, &event_id(ids[0]))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .deliveries_of_event(&acme, &event_id(ids[0]))
            .await
            .unwrap()[0]
            .webhook_id
            .as_str(),
        hook
    );

    let mut changed = invoice(Some("b-2"), &[]);
    changed["resource"]["id"] = json!("other");
    let clash = json!({"events": [invoice(Some("b-2"), &[]), changed, invoice(Some("b-3"), &[])]});
    problem(
        &api.platform(Method::POST, "acme/events/batch", Some(clash))
            .await,
        409,
    );
    assert!(
        store
            .events_by_key(&acme, &["b-2".into(), "b-3".into()])
            .await
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
}

async fn the_payload_preview_is_shaped_and_guarded(backend: Backend) {
    let Some(api) = Api::start(backend, LOOPBACK_ONLY).await else {
        return;
    };
    let hooks = owners_and_webhooks(&api).await;
    let webhook_of = |name: &str| hooks.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let full_key = api.issue_key("acme", "full").await;
    let division_key = api.issue_key("acme", "elsewhere").await;

    let path = format!(
        "/v4/webhooks/{}/preview?event_type=invoice.paid",
        webhook_of("division")
    );
    let preview = api.v4(&full_key, "acme", Method::GET, &path, None).await;
    assert_eq!(preview.status, 200, "{}", preview.text);
    assert_eq!(preview.body["event_type"], "invoice.paid");
    let payload = &preview.body["payload"];
    assert_eq!(payload["type"], "invoice.paid");
    assert_eq!(payload["api_version"], "v4");
    assert!(payload["data"]["id"].is_string());
    assert!(
        payload["data"].get("total").is_none(),
        "shaped for the owner, not the viewer"
    );

    let jobs = format!(
        "/v4/webhooks/{}/preview?event_type=job.created",
        webhook_of("division")
    );
    let nothing = api.v4(&full_key, "acme", Method::GET, &jobs, None).await;
    assert_eq!(nothing.body["payload"], Value::Null);
    assert!(
        nothing.body["note"]
            .as_str()
            .unwrap()
            .contains("cannot read jobs")
    );

    let guarded = format!(
        "/v4/webhooks/{}/preview?event_type=invoice.paid",
        webhook_of("full")
    );
    problem(
        &api.v4(&division_key, "acme", Method::GET, &guarded, None)
            .await,
        403,
    );
    for bad in ["", "?event_type=nope.nothing", "?event_type=webhook.test"] {
        let path = format!("/v4/webhooks/{}/preview{bad}", webhook_of("full"));
        assert_eq!(
            problem(
                &api.v4(&full_key, "acme", Method::GET, &path, None).await,
                400
            )["errors"][0]["field"],
            "event_type"
        );
    }
}
