//! Rate limits per webhook (docs/product.md §4), measured at a real HTTPS receiver: over any
//! ten seconds at most ten times the limit plus one second's worth of requests start, on one
//! instance and on two sharing PostgreSQL. These tests run in real time: the limit is counted in
//! seconds of the clock at the receiver, which no test clock can stand in for.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::api::{Api, Backend, on_both_backends, problem};
use crate::support::eventually;
use crate::support::receiver::Received;
use crate::support::sending::{Setup, WAIT, batch, setup, setup_with};

on_both_backends!(
    a_backlog_is_paced_and_a_test_event_goes_ahead,
    a_delivery_that_waits_too_long_ends_as_rate_limited,
    limits_are_validated_audited_and_need_cover,
);

/// The window rule at the receiver: any ten seconds hold at most `10 × limit + limit` starts.
fn assert_window_rule(received: &[Received], limit: usize) {
    let mut arrivals: Vec<Instant> = received.iter().map(|request| request.at).collect();
    arrivals.sort();
    for (index, start) in arrivals.iter().enumerate() {
        let end = *start + Duration::from_secs(10);
        let within = arrivals[index..].iter().take_while(|at| **at < end).count();
        assert!(
            within <= 11 * limit,
            "{within} requests within ten seconds of arrival {index} (limit {limit}/s)"
        );
    }
}

/// A webhook to `path` limited to `limit` requests per second; returns its id.
async fn limited_webhook(setup: &Setup, path: &str, limit: u32) -> String {
    let body = json!({
        "name": path, "url": setup.receiver.url(path), "events": ["*"], "rate_limit": limit,
    });
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    assert_eq!(created["webhook"]["rate_limit"], limit);
    created["webhook"]["id"].as_str().unwrap().to_owned()
}

async fn publish_batch(
    api: &Api,
    instance: Option<&crate::support::service::Service>,
    size: usize,
) {
    let answer = match instance {
        Some(instance) => {
            api.platform_via(
                instance,
                Method::POST,
                "acme/events/batch",
                Some(batch(size)),
            )
            .await
        }
        None => {
            api.platform(Method::POST, "acme/events/batch", Some(batch(size)))
                .await
        }
    };
    assert_eq!(answer.status, 202, "{}", answer.text);
}

async fn a_backlog_is_paced_and_a_test_event_goes_ahead(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    let webhook = limited_webhook(&setup, "/paced", 5).await;
    let started = Instant::now();
    // Twenty seconds' worth at 5/s.
    publish_batch(&setup.api, None, 100).await;
    setup.receiver.wait_for("/paced", 10, WAIT).await;

    // While the backlog waits, the webhook says so, and /metrics counts the waiting deliveries.
    let shown = setup.get(&format!("/v4/webhooks/{webhook}")).await;
    assert_eq!(shown.body["webhook"]["throttled"], true, "{}", shown.text);
    let waiting = shown.body["webhook"]["waiting"].as_i64().unwrap();
    // Due and pending: those being sent count until their outcome is recorded.
    assert!((50..=100).contains(&waiting), "{waiting} waiting");
    let metrics = reqwest::get(setup.api.service.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("zivio_rate_limit_waiting "), "{metrics}");
    assert!(
        metrics.contains("zivio_rate_limit_delay_seconds_total "),
        "{metrics}"
    );

    // A test event goes ahead of the waiting deliveries.
    let arrived_at_send = setup.receiver.received("/paced").len();
    let sent = Instant::now();
    let test = setup
        .send(Method::POST, &format!("/v4/webhooks/{webhook}/test"), None)
        .await;
    assert_eq!(test.status, 202, "{}", test.text);
    let test_id = test.body["event_id"].as_str().unwrap().to_owned();
    let test_arrived = eventually(WAIT, "the test event arrives", || async {
        let received = setup.receiver.received("/paced");
        let test = received.iter().find(|request| {
            request
                .headers
                .get("webhook-id")
                .is_some_and(|id| id == test_id.as_str())
        });
        test.map(|request| request.at)
            .ok_or_else(|| format!("{} others arrived", received.len()))
    })
    .await;
    // Ahead of the line: at most about one second's tokens (5) go to the backlog meanwhile,
    // those the line had already taken; behind it, all 90 would. Counted, not timed: a machine
    // busy with other work slows both.
    let before = setup
        .receiver
        .received("/paced")
        .iter()
        .filter(|request| request.at < test_arrived)
        .count();
    assert!(
        before - arrived_at_send <= 15,
        "the test event waited {:?} behind {} of the backlog",
        test_arrived - sent,
        before - arrived_at_send
    );

    let received = setup
        .receiver
        .wait_for("/paced", 101, Duration::from_secs(60))
        .await;
    let took = started.elapsed();
    assert_window_rule(&received, 5);
    assert!(
        took >= Duration::from_secs(18),
        "101 requests at 5/s took only {took:?}"
    );
    assert_eq!(received.len(), 101, "each once: waiting is not failing");
    // The last outcomes are recorded a moment after the receiver has them.
    let after = eventually(WAIT, "nothing waits", || async {
        let shown = setup.get(&format!("/v4/webhooks/{webhook}")).await;
        if shown.body["webhook"]["waiting"] == 0 {
            Ok(shown)
        } else {
            Err(shown.text)
        }
    })
    .await;
    assert_eq!(after.body["webhook"]["throttled"], false);
    assert_eq!(after.body["webhook"]["health"]["success_rate_24h"], 1.0);
}

async fn a_delivery_that_waits_too_long_ends_as_rate_limited(backend: Backend) {
    let Some(setup) = setup_with(
        backend,
        "1s",
        true,
        &[("ZIVIO_WEBHOOKS_RATE_LIMIT_MAX_WAIT", "2s")],
    )
    .await
    else {
        return;
    };
    let webhook = limited_webhook(&setup, "/slowly", 1).await;
    publish_batch(&setup.api, None, 10).await;
    // One request per second; after two seconds of waiting the rest end as failed.
    let failed = eventually(WAIT, "five end as rate_limited", || async {
        let page = setup
            .get(&format!(
                "/v4/deliveries?webhook_id={webhook}&status=failed&limit=100"
            ))
            .await;
        let failed = page.body["deliveries"].as_array().unwrap().clone();
        if failed.len() >= 5 {
            Ok(failed)
        } else {
            Err(page.text)
        }
    })
    .await;
    for delivery in &failed {
        assert_eq!(delivery["error_kind"], "rate_limited", "{delivery}");
    }
    let arrived = setup.receiver.received("/slowly").len();
    assert!(arrived <= 5, "{arrived} sent although most waited too long");
    // Not the receiver's fault: the webhook stays enabled and healthy.
    let shown = setup.get(&format!("/v4/webhooks/{webhook}")).await;
    assert_eq!(shown.body["webhook"]["enabled"], true);
    assert_eq!(
        shown.body["webhook"]["health"]["failing_since"],
        Value::Null
    );
}

async fn limits_are_validated_audited_and_need_cover(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    let api = &setup.api;
    let body = |limit: Value| json!({"name": "x", "url": setup.receiver.url("/x"), "events": ["*"], "rate_limit": limit});
    for bad in [json!(0), json!(10_001), json!(-3)] {
        let refused = setup
            .send(Method::POST, "/v4/webhooks", Some(body(bad)))
            .await;
        let refusal = problem(&refused, 400);
        assert_eq!(refusal["errors"][0]["field"], "rate_limit", "{refusal}");
    }
    let created = setup
        .send(Method::POST, "/v4/webhooks", Some(body(Value::Null)))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["webhook"]["rate_limit"], Value::Null);
    let id = created.body["webhook"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v4/webhooks/{id}");

    let set = setup
        .send(Method::PATCH, &path, Some(json!({"rate_limit": 10_000})))
        .await;
    assert_eq!(set.body["webhook"]["rate_limit"], 10_000, "{}", set.text);
    let renamed = setup
        .send(Method::PATCH, &path, Some(json!({"name": "y"})))
        .await;
    assert_eq!(
        renamed.body["webhook"]["rate_limit"], 10_000,
        "absent: kept"
    );
    let removed = setup
        .send(Method::PATCH, &path, Some(json!({"rate_limit": null})))
        .await;
    assert_eq!(
        removed.body["webhook"]["rate_limit"],
        Value::Null,
        "null: removed"
    );
    let audit = setup.get("/v4/audit-log").await;
    let changes: Vec<&Value> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["changes"].get("rate_limit"))
        .collect();
    assert!(
        changes.contains(&&json!({"from": null, "to": 10_000}))
            && changes.contains(&&json!({"from": 10_000, "to": null})),
        "{}",
        audit.text
    );

    // A low limit can end deliveries: an admin who does not cover the owner may not set one.
    api.put_role("acme", "narrow", &["webhooks:manage", "invoices:read:own"])
        .await;
    api.put_user("acme", "narrow", true, &["narrow"]).await;
    let narrow = api.issue_key("acme", "narrow").await;
    let refused = api
        .v4(
            &narrow,
            "acme",
            Method::PATCH,
            &path,
            Some(json!({"rate_limit": 1})),
        )
        .await;
    let refusal = problem(&refused, 403);
    assert!(
        refusal["detail"].as_str().unwrap().contains("rate limit"),
        "{refusal}"
    );
}

/// Two instances on one PostgreSQL database, each with a backlog of its own for one webhook,
/// share its limit: together they keep the window rule.
#[tokio::test]
async fn two_instances_share_one_limit() {
    let Some(setup) = setup(Backend::Postgres, "1s", true).await else {
        return;
    };
    let second = setup.api.another_instance("second").await;
    limited_webhook(&setup, "/shared", 5).await;
    let started = Instant::now();
    publish_batch(&setup.api, None, 40).await;
    publish_batch(&setup.api, Some(&second), 40).await;
    let received = setup
        .receiver
        .wait_for("/shared", 80, Duration::from_secs(60))
        .await;
    let took = started.elapsed();
    assert_window_rule(&received, 5);
    assert!(
        took >= Duration::from_secs(14),
        "80 requests at 5/s over two instances took only {took:?}"
    );
}
