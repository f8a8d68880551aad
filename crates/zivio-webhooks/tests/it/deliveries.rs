//! What admins use every day: the deliveries log, one attempt in full, test events and resends,
//! through the real binary and a real HTTPS receiver (health, auto-disable and retention:
//! `health.rs`).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::api::{Backend, on_both_backends, problem};
use crate::support::receiver::Reply;
use crate::support::sending::{Setup, WAIT, setup, verify};

on_both_backends!(
    the_deliveries_log_filters_pages_and_guards_bodies,
    test_events_are_signed_recorded_and_reach_disabled_webhooks,
    a_resend_is_a_new_event_shaped_with_the_owners_access_now,
);

impl Setup {
    pub(crate) async fn post(&self, path: &str) -> crate::support::api::Answer {
        self.api
            .v4(&self.key, "acme", Method::POST, path, None)
            .await
    }

    pub(crate) async fn publish_type(&self, event_type: &str) -> String {
        let data = zivio_core::catalog::Catalog::builtin()
            .event_type(event_type)
            .unwrap()
            .example
            .clone();
        let event = json!({"type": event_type, "resource": {"id": data["id"], "data": data}});
        let answer = self
            .api
            .platform(Method::POST, "acme/events", Some(event))
            .await;
        assert_eq!(answer.status, 202, "{}", answer.text);
        answer.body["id"].as_str().unwrap().to_owned()
    }

    /// Every page of `/v4/deliveries?<query>`, `limit` at a time.
    pub(crate) async fn all_pages(&self, query: &str, limit: u32) -> Vec<Value> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v4/deliveries?{query}&limit={limit}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get(&path).await;
            assert_eq!(page.status, 200, "{}", page.text);
            let rows = page.body["deliveries"].as_array().unwrap();
            assert!(rows.len() <= limit as usize);
            seen.extend(rows.iter().cloned());
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return seen,
            }
        }
    }
}

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|row| row["id"].as_str().unwrap()).collect()
}

async fn the_deliveries_log_filters_pages_and_guards_bodies(backend: Backend) {
    let Some(setup) = setup(backend, "100ms", true).await else {
        return;
    };
    setup.receiver.script("/a", &[Reply::Status(500)]);
    let (a, _) = setup.webhook("/a").await;
    let (b, _) = setup.webhook("/b").await;
    let invoice = setup.publish().await;
    // The scripted 500 must meet the invoice: the job is published once it has (requests run
    // on connections of their own, so two published together may arrive in either order).
    setup.receiver.wait_for("/a", 1, WAIT).await;
    let job = setup.publish_type("job.created").await;
    setup.receiver.wait_for("/a", 3, WAIT).await;
    setup.receiver.wait_for("/b", 2, WAIT).await;
    // Recorded a moment after the receiver has them.
    setup.attempts(&invoice, &a, 2).await;
    setup.attempts(&job, &a, 1).await;
    setup.attempts(&invoice, &b, 1).await;
    setup.attempts(&job, &b, 1).await;

    let all = setup.all_pages("", 100).await;
    assert_eq!(all.len(), 5, "{all:#?}");
    let times: Vec<time::OffsetDateTime> = all
        .iter()
        .map(|row| {
            time::OffsetDateTime::parse(
                row["created_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first: {times:?}"
    );
    assert_eq!(
        ids(&setup.all_pages("", 2).await),
        ids(&all),
        "pages of two hold the same, once each"
    );

    let failed = setup
        .all_pages(&format!("webhook_id={a}&status=failed"), 10)
        .await;
    assert_eq!(failed.len(), 1);
    let failure = &failed[0];
    assert_eq!(
        (
            failure["event_id"].as_str(),
            failure["attempt"].as_u64(),
            failure["status"].as_str()
        ),
        (Some(invoice.as_str()), Some(1), Some("failed"))
    );
    assert_eq!(failure["response_status"], 500);
    assert_eq!(failure["error_kind"], "http_status");
    assert!(failure["error_detail"].as_str().unwrap().contains("500"));
    assert!(
        failure["next_attempt_at"].is_null(),
        "its retry has happened"
    );
    assert_eq!(
        setup.all_pages(&format!("webhook_id={a}"), 10).await.len(),
        3
    );
    assert_eq!(
        setup
            .all_pages(&format!("webhook_id={b}&status=succeeded"), 10)
            .await
            .len(),
        2
    );
    let invoices = setup.all_pages("event_type=invoices.*", 10).await;
    assert_eq!(invoices.len(), 3);
    assert!(
        invoices
            .iter()
            .all(|row| row["event_type"] == "invoice.paid")
    );
    assert_eq!(
        setup.all_pages("event_type=invoice.*", 10).await.len(),
        3,
        "the alias"
    );
    assert_eq!(setup.all_pages("event_type=job.created", 10).await.len(), 2);
    assert_eq!(
        setup.all_pages(&format!("event_id={job}"), 10).await.len(),
        2
    );
    assert_eq!(
        setup
            .all_pages("from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z", 10)
            .await
            .len(),
        0
    );
    let from = all[1]["created_at"].as_str().unwrap();
    let since: Vec<Value> = all
        .iter()
        .zip(&times)
        .filter(|(_, at)| **at >= times[1])
        .map(|(row, _)| row.clone())
        .collect();
    assert_eq!(
        ids(&setup.all_pages(&format!("from={from}"), 10).await),
        ids(&since),
        "attempts at or after `from` (several may share its millisecond)"
    );

    assert_eq!(
        setup
            .all_pages("webhook_id=&event_type=&status=&from=&to=&cursor=", 10)
            .await
            .len(),
        5,
        "empty parameters, as filter forms send them, filter nothing"
    );
    for (query, parameter) in [
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("webhook_id=nope", "webhook_id"),
        ("event_type=nothing.real", "event_type"),
        ("status=pending", "status"),
        ("event_id=EVT_1", "event_id"),
        ("event_id=dlv_1", "event_id"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=garbage", "cursor"),
    ] {
        let answer = setup.get(&format!("/v4/deliveries?{query}")).await;
        let body = problem(&answer, 400);
        assert_eq!(body["errors"][0]["field"], parameter, "{query}: {body}");
    }

    // One attempt in full.
    let id = failure["id"].as_str().unwrap();
    let detail = setup.get(&format!("/v4/deliveries/{id}")).await;
    assert_eq!(detail.status, 200, "{}", detail.text);
    let delivery = &detail.body["delivery"];
    assert_eq!(delivery["id"], id);
    assert_eq!(delivery["request"]["url"], setup.receiver.url("/a"));
    assert_eq!(
        delivery["request"]["headers"]["webhook-id"],
        invoice.as_str()
    );
    assert!(delivery["request"]["headers"]["webhook-signature"].is_string());
    let sent: Value = serde_json::from_str(delivery["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["id"], invoice.as_str());
    assert_eq!(delivery["response"]["status"], 500);
    assert_eq!(delivery["response"]["truncated"], false);
    assert!(delivery["response"]["body"].is_string());
    assert!(delivery["bodies_hidden"].is_null());
    assert_eq!(detail.headers["cache-control"], "private, no-store");
    problem(&setup.get("/v4/deliveries/dlv_unknown").await, 404);

    // Another tenant sees nothing of it.
    let other = setup.api.tenant_with_admin("globex", "g1").await;
    let foreign = setup
        .api
        .v4(
            &other,
            "globex",
            Method::GET,
            &format!("/v4/deliveries/{id}"),
            None,
        )
        .await;
    problem(&foreign, 404);
    let foreign = setup
        .api
        .v4(&other, "globex", Method::GET, "/v4/deliveries", None)
        .await;
    assert_eq!(foreign.body["deliveries"], json!([]));

    // An admin whose access does not cover the owner's sees metadata only, and cannot resend.
    setup
        .api
        .put_role("acme", "narrow", &["webhooks:manage", "invoices:read:own"])
        .await;
    setup
        .api
        .put_user("acme", "narrow", true, &["narrow"])
        .await;
    let narrow = setup.api.issue_key("acme", "narrow").await;
    assert_eq!(
        setup
            .api
            .v4(&narrow, "acme", Method::GET, "/v4/deliveries", None)
            .await
            .body["deliveries"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let hidden = setup
        .api
        .v4(
            &narrow,
            "acme",
            Method::GET,
            &format!("/v4/deliveries/{id}"),
            None,
        )
        .await;
    assert_eq!(hidden.status, 200, "{}", hidden.text);
    let delivery = &hidden.body["delivery"];
    assert!(delivery["request"]["body"].is_null() && delivery["response"]["body"].is_null());
    assert!(
        delivery["response"]["headers"].is_null(),
        "headers such as Location can repeat the path"
    );
    assert!(
        delivery["request"]["headers"]
            .get("webhook-signature")
            .is_none(),
        "the signature goes with the body: {delivery}"
    );
    assert_eq!(
        delivery["request"]["headers"]["webhook-id"],
        invoice.as_str()
    );
    assert_eq!(
        delivery["request"]["url"],
        setup.receiver.url("").trim_end_matches('/'),
        "scheme and host only"
    );
    assert!(
        delivery["bodies_hidden"].as_str().unwrap().contains("u1"),
        "{delivery}"
    );
    assert_eq!(
        delivery["response"]["status"], 500,
        "metadata stays visible"
    );
    let refused = setup
        .api
        .v4(
            &narrow,
            "acme",
            Method::POST,
            &format!("/v4/deliveries/{id}/resend"),
            None,
        )
        .await;
    problem(&refused, 403);
}

async fn test_events_are_signed_recorded_and_reach_disabled_webhooks(backend: Backend) {
    let Some(setup) = setup(backend, "100ms", true).await else {
        return;
    };
    let body =
        json!({"name": "jobs only", "url": setup.receiver.url("/t"), "events": ["job.created"]});
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    let (id, secret) = (
        created["webhook"]["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    assert_eq!(
        setup
            .post(&format!("/v4/webhooks/{id}/disable"))
            .await
            .status,
        200
    );

    let sent = setup.post(&format!("/v4/webhooks/{id}/test")).await;
    assert_eq!(sent.status, 202, "{}", sent.text);
    let event = sent.body["event_id"].as_str().unwrap().to_owned();
    assert!(event.starts_with("evt_test_"), "{event}");
    let received = setup.receiver.wait_for("/t", 1, WAIT).await;
    verify(secret, &received[0]);
    assert_eq!(received[0].headers["webhook-id"], event.as_str());
    let payload: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(payload["type"], "webhook.test");
    assert_eq!(payload["data"], json!({"test": true}));
    assert_eq!(payload["id"], event.as_str());

    let again = setup.post(&format!("/v4/webhooks/{id}/test")).await;
    assert_ne!(
        again.body["event_id"],
        event.as_str(),
        "a fresh id each time"
    );
    setup.receiver.wait_for("/t", 2, WAIT).await;
    setup.attempts(&event, id, 1).await;
    // Recorded a moment after the receiver has it.
    setup
        .attempts(again.body["event_id"].as_str().unwrap(), id, 1)
        .await;
    let logged = setup.all_pages("event_type=webhook.test", 10).await;
    assert_eq!(logged.len(), 2);
    let first = logged
        .iter()
        .find(|row| row["event_id"] == event.as_str())
        .unwrap();
    assert_eq!(first["status"], "succeeded");
    let audit = setup.get("/v4/audit-log").await;
    let actions: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "webhook.test_sent")
            .count(),
        2,
        "{actions:?}"
    );
    problem(
        &setup
            .post("/v4/webhooks/wh_00000000000000000000000000000000/test")
            .await,
        404,
    );
}

async fn a_resend_is_a_new_event_shaped_with_the_owners_access_now(backend: Backend) {
    let Some(setup) = setup(backend, "100ms", true).await else {
        return;
    };
    let api = &setup.api;
    api.put_role(
        "acme",
        "finance",
        &[
            "webhooks:manage",
            "invoices:read:tenant",
            "invoices:fields:financials",
            "users:read:tenant",
            "users:fields:contact",
        ],
    )
    .await;
    api.put_user("acme", "owner", true, &["finance"]).await;
    let owner_key = api.issue_key("acme", "owner").await;
    let body =
        json!({"name": "finance", "url": setup.receiver.url("/r"), "events": ["invoices.*"]});
    let webhook = api.create_webhook(&owner_key, "acme", body).await;
    let (hook, secret) = (
        webhook["webhook"]["id"].as_str().unwrap(),
        webhook["secret"].as_str().unwrap(),
    );
    let event = setup.publish().await;
    let first = setup.receiver.wait_for("/r", 1, WAIT).await;
    let original: Value = serde_json::from_slice(&first[0].body).unwrap();
    assert!(
        original["data"].get("total").is_some(),
        "the owner sees financials"
    );
    let attempts = setup.attempts(&event, hook, 1).await;

    // The owner loses the financials; the admin (who covers everyone) resends.
    api.put_role(
        "acme",
        "finance",
        &[
            "webhooks:manage",
            "invoices:read:tenant",
            "users:read:tenant",
            "users:fields:contact",
        ],
    )
    .await;
    let resent = setup
        .post(&format!("/v4/deliveries/{}/resend", attempts[0].id))
        .await;
    assert_eq!(resent.status, 202, "{}", resent.text);
    let new_id = resent.body["event_id"].as_str().unwrap();
    assert!(new_id.starts_with("evt_") && new_id != event);
    let received = setup.receiver.wait_for("/r", 2, WAIT).await;
    verify(secret, &received[1]);
    let again: Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(again["id"], new_id);
    assert_eq!(
        (&again["type"], &again["occurred_at"]),
        (&original["type"], &original["occurred_at"])
    );
    assert!(
        again["data"].get("total").is_none(),
        "shaped with the owner's access now: {again}"
    );
    assert_eq!(again["data"]["id"], original["data"]["id"]);
    assert_eq!(
        setup.attempts(&event, hook, 1).await.len(),
        1,
        "the original stays as it was"
    );
    let audit = setup.get("/v4/audit-log").await;
    let entry = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "delivery.resent")
        .unwrap()
        .clone();
    assert_eq!(entry["changes"]["new_event_id"], new_id);

    // Nothing is resent to a disabled webhook, nor for an owner who can no longer see it.
    assert_eq!(
        setup
            .post(&format!("/v4/webhooks/{hook}/disable"))
            .await
            .status,
        200
    );
    problem(
        &setup
            .post(&format!("/v4/deliveries/{}/resend", attempts[0].id))
            .await,
        409,
    );
    assert_eq!(
        setup
            .post(&format!("/v4/webhooks/{hook}/enable"))
            .await
            .status,
        200
    );
    api.put_role("acme", "finance", &["webhooks:manage", "invoices:read:own"])
        .await;
    let refused = setup
        .post(&format!("/v4/deliveries/{}/resend", attempts[0].id))
        .await;
    assert!(
        problem(&refused, 409)["detail"]
            .as_str()
            .unwrap()
            .contains("can no longer see")
    );
    problem(&setup.post("/v4/deliveries/dlv_nothing/resend").await, 404);
}
