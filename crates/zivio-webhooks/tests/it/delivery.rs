//! The delivery engine end to end: the real binary sends to a real HTTPS receiver on loopback
//! (trusted through ZIVIO_WEBHOOKS_EXTRA_ROOT_CA), and every request is verified with the
//! `standardwebhooks` crate, an implementation independent of ours.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use zivio_core::ids::TenantId;
use zivio_core::webhook::WebhookId;

use crate::support::api::{Backend, on_both_backends};
use crate::support::event_id;
use crate::support::receiver::Reply;
use crate::support::sending::{Setup, WAIT, setup, setup_with, verify};

on_both_backends!(
    events_arrive_signed_and_verifiable,
    temporary_failures_are_retried_under_one_id,
    permanent_failures_and_redirects_are_not_retried,
    attempts_stop_when_the_schedule_ends,
    a_rotated_secret_signs_the_next_retry,
    disabling_cancels_pending_retries,
    untrusted_certificates_are_tls_failures_and_retried,
    a_slow_receiver_does_not_delay_other_webhooks,
    hanging_receivers_time_out_and_are_retried,
    shaped_payloads_reach_exactly_the_owners_who_may_see_them,
    an_owner_deactivated_between_retries_gets_nothing_more,
    large_responses_are_cut_at_64_kib,
    sigterm_lets_attempts_in_flight_finish,
    destinations_are_vetted_again_at_every_attempt,
    hanging_receivers_cannot_take_all_capacity,
    retry_after_is_honoured_within_the_schedule,
);

async fn events_arrive_signed_and_verifiable(backend: Backend) {
    let Some(setup) = setup(backend, "100ms", true).await else {
        return;
    };
    let (webhook, secret) = setup.webhook("/erp").await;
    let event = setup.publish().await;
    let received = setup.receiver.wait_for("/erp", 1, WAIT).await;
    let request = &received[0];
    verify(&secret, request);
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["user-agent"], "Zivio-Webhooks/1.0");
    assert_eq!(request.headers["webhook-id"], event.as_str());
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["id"], event.as_str());
    assert_eq!(body["type"], "invoice.paid");
    assert_eq!(body["api_version"], "v4");

    let attempts = setup.attempts(&event, &webhook, 1).await;
    let attempt = &attempts[0];
    assert!(attempt.id.as_str().starts_with("dlv_"));
    assert!(attempt.succeeded);
    assert_eq!(attempt.attempt, 1);
    assert_eq!(attempt.response_status, Some(200));
    assert_eq!(
        attempt.response_body.as_deref(),
        Some(b"{\"received\":true}".as_slice())
    );
    assert_eq!(attempt.next_attempt_at, None);
    assert_eq!(attempt.request_url, setup.receiver.url("/erp"));
    let sent: Value = serde_json::from_str(&attempt.request_headers).unwrap();
    assert_eq!(sent["webhook-id"], event.as_str());
    assert_eq!(setup.state_of(&event).await, "succeeded");
}

async fn temporary_failures_are_retried_under_one_id(backend: Backend) {
    let Some(setup) = setup(backend, "100ms,100ms,100ms", true).await else {
        return;
    };
    setup.receiver.script(
        "/flaky",
        &[Reply::Status(500), Reply::Status(503), Reply::Status(429)],
    );
    let (webhook, secret) = setup.webhook("/flaky").await;
    let event = setup.publish().await;
    let received = setup.receiver.wait_for("/flaky", 4, WAIT).await;
    for request in &received {
        assert_eq!(
            request.headers["webhook-id"],
            event.as_str(),
            "one id for every retry"
        );
        verify(&secret, request);
    }
    let attempts = setup.attempts(&event, &webhook, 4).await;
    let statuses: Vec<Option<u16>> = attempts.iter().map(|a| a.response_status).collect();
    assert_eq!(statuses, [Some(500), Some(503), Some(429), Some(200)]);
    assert!(
        attempts[..3].iter().all(
            |a| a.error_kind.map(|kind| kind.as_str()) == Some("http_status")
                && a.next_attempt_at.is_some()
        )
    );
    assert_eq!(setup.state_of(&event).await, "succeeded");
}

async fn permanent_failures_and_redirects_are_not_retried(backend: Backend) {
    let Some(setup) = setup(backend, "100ms,100ms", true).await else {
        return;
    };
    let mut events = Vec::new();
    for (path, status, kind) in [
        ("/gone", 410, "http_status"),
        ("/bad", 400, "http_status"),
        ("/moved", 302, "redirect"),
    ] {
        setup.receiver.script(path, &[Reply::Status(status)]);
        let (webhook, _) = setup.webhook(path).await;
        let event = setup.publish().await;
        let attempts = setup.attempts(&event, &webhook, 1).await;
        assert_eq!(
            attempts[0].error_kind.map(|kind| kind.as_str()),
            Some(kind),
            "{path}"
        );
        assert_eq!(attempts[0].next_attempt_at, None, "{path}: not retried");
        events.push(event);
    }
    setup.settled(&events).await;
    // Each webhook gets every event published after it was created, once: the refused first
    // request was not retried.
    for (path, events) in [("/gone", 3), ("/bad", 2), ("/moved", 1)] {
        assert_eq!(setup.receiver.received(path).len(), events, "{path}");
    }
    assert!(
        setup.receiver.received("/elsewhere").is_empty(),
        "redirects are never followed"
    );
}

async fn attempts_stop_when_the_schedule_ends(backend: Backend) {
    let schedule = "20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms";
    let Some(setup) = setup(backend, schedule, true).await else {
        return;
    };
    setup.receiver.script("/down", &[Reply::Status(500); 12]);
    let (webhook, _) = setup.webhook("/down").await;
    let event = setup.publish().await;
    let attempts = setup.attempts(&event, &webhook, 10).await;
    // Ended on record: no eleventh attempt can follow.
    assert_eq!(setup.state_of(&event).await, "failed");
    assert_eq!(
        setup.receiver.received("/down").len(),
        10,
        "ten attempts for nine delays"
    );
    assert_eq!(attempts[9].next_attempt_at, None);
}

async fn a_rotated_secret_signs_the_next_retry(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    setup.receiver.script("/rotating", &[Reply::Status(500)]);
    let (webhook, old) = setup.webhook("/rotating").await;
    setup.publish().await;
    setup.receiver.wait_for("/rotating", 1, WAIT).await;
    let rotated = setup
        .api
        .v4(
            &setup.key,
            "acme",
            Method::POST,
            &format!("/v4/webhooks/{webhook}/rotate-secret"),
            None,
        )
        .await;
    let new = rotated.body["secret"].as_str().unwrap();
    let received = setup.receiver.wait_for("/rotating", 2, WAIT).await;
    verify(new, &received[1]);
    let stale = standardwebhooks::Webhook::new(&old).unwrap();
    assert!(
        stale
            .verify(&received[1].body, &received[1].headers)
            .is_err(),
        "the old secret no longer signs"
    );
}

async fn disabling_cancels_pending_retries(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    setup.receiver.script("/paused", &[Reply::Status(500)]);
    let (webhook, _) = setup.webhook("/paused").await;
    let event = setup.publish().await;
    setup.attempts(&event, &webhook, 1).await;
    let disabled = setup
        .api
        .v4(
            &setup.key,
            "acme",
            Method::POST,
            &format!("/v4/webhooks/{webhook}/disable"),
            None,
        )
        .await;
    assert_eq!(disabled.status, 200);
    // Cancelled in the disable's own transaction, so no claim takes the retry (a retry already
    // claimed is checked again before it is sent: zivio-delivery's tests/clock.rs).
    assert_eq!(setup.state_of(&event).await, "cancelled");
    assert_eq!(
        setup.receiver.received("/paused").len(),
        1,
        "no retry after disabling"
    );
}

async fn untrusted_certificates_are_tls_failures_and_retried(backend: Backend) {
    let Some(setup) = setup(backend, "1h", false).await else {
        return;
    };
    let (webhook, _) = setup.webhook("/untrusted").await;
    let event = setup.publish().await;
    let attempts = setup.attempts(&event, &webhook, 1).await;
    assert_eq!(
        attempts[0].error_kind.map(|kind| kind.as_str()),
        Some("tls"),
        "{:?}",
        attempts[0].error_detail
    );
    assert!(attempts[0].error_detail.as_deref().unwrap().contains("TLS"));
    assert!(attempts[0].next_attempt_at.is_some(), "retried");
    assert!(
        setup.receiver.received("/untrusted").is_empty(),
        "nothing was accepted over an untrusted connection"
    );
}

async fn a_slow_receiver_does_not_delay_other_webhooks(backend: Backend) {
    let Some(setup) = setup(backend, "1h", true).await else {
        return;
    };
    setup
        .receiver
        .script("/slow", &[Reply::Delay(Duration::from_secs(5)); 4]);
    setup.webhook("/slow").await;
    setup.webhook("/fast").await;
    let started = tokio::time::Instant::now();
    for _ in 0..4 {
        setup.publish().await;
    }
    setup
        .receiver
        .wait_for("/fast", 4, Duration::from_secs(3))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the fast receiver waited for the slow one"
    );
    assert!(setup.receiver.received("/slow").len() <= 4);
}

async fn hanging_receivers_time_out_and_are_retried(backend: Backend) {
    let extra = [("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "500ms")];
    let Some(setup) = setup_with(backend, "100ms", true, &extra).await else {
        return;
    };
    setup
        .receiver
        .script("/hangs", &[Reply::Delay(Duration::from_secs(3))]);
    let (webhook, _) = setup.webhook("/hangs").await;
    let event = setup.publish().await;
    let attempts = setup.attempts(&event, &webhook, 2).await;
    assert_eq!(
        attempts[0].error_kind.map(|kind| kind.as_str()),
        Some("timeout")
    );
    assert!(
        attempts[0].duration_ms < 2_000,
        "the whole attempt is bounded: {}ms",
        attempts[0].duration_ms
    );
    assert!(attempts[1].succeeded, "retried after the timeout");
}

/// Owners with different access, each with a webhook at its own path on the receiver.
async fn shaped_payloads_reach_exactly_the_owners_who_may_see_them(backend: Backend) {
    let Some(setup) = setup(backend, "1h", true).await else {
        return;
    };
    let api = &setup.api;
    api.put_role(
        "acme",
        "division",
        &[
            "webhooks:manage",
            "invoices:read:division",
            "users:read:tenant",
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
    let people = [
        ("full", "admin", "uk"),
        ("division", "division", "uk"),
        ("elsewhere", "division", "de"),
        ("owner", "own", "fr"),
        ("sleeper", "admin", "uk"),
    ];
    let mut secrets = std::collections::HashMap::new();
    let mut webhooks = std::collections::HashMap::new();
    for (user, role, division) in people {
        let body = json!({
            "email": format!("{user}@acme.example.com"), "name": user, "active": true,
            "placement": {"business_unit": "emea", "division": division, "department": "finance"}, "roles": [role],
        });
        assert_eq!(
            api.platform(Method::PUT, &format!("acme/users/{user}"), Some(body))
                .await
                .status,
            204
        );
        let key = api.issue_key("acme", user).await;
        let path = format!("/{user}");
        let created = api
            .create_webhook(
                &key,
                "acme",
                json!({"name": user, "url": setup.receiver.url(&path), "events": ["invoices.*"]}),
            )
            .await;
        secrets.insert(path.clone(), created["secret"].as_str().unwrap().to_owned());
        webhooks.insert(created["webhook"]["id"].as_str().unwrap().to_owned(), path);
    }
    api.put_user("acme", "sleeper", false, &["admin"]).await;
    let data = zivio_core::catalog::Catalog::builtin()
        .event_type("invoice.paid")
        .unwrap()
        .example
        .clone();
    let event = json!({"type": "invoice.paid", "resource": {
        "id": data["id"], "owner_ids": ["owner"], "data": data,
        "placement": {"business_unit": "emea", "division": "uk", "department": "finance"}}});
    let answer = api.platform(Method::POST, "acme/events", Some(event)).await;
    let id = answer.body["id"].as_str().unwrap().to_owned();

    let mut bodies = std::collections::HashMap::new();
    for path in ["/full", "/division", "/owner"] {
        let received = setup.receiver.wait_for(path, 1, WAIT).await;
        verify(&secrets[path], &received[0]);
        let body: Value = serde_json::from_slice(&received[0].body).unwrap();
        assert_eq!(body["id"], id.as_str());
        bodies.insert(path, body["data"].clone());
    }
    assert_eq!(
        bodies["/full"], data,
        "every permission: exactly what was published"
    );
    let division = &bodies["/division"];
    assert!(
        division.get("total").is_none() && division["invoice_items"][0].get("unit_cost").is_none()
    );
    assert!(
        division["approved_by"]["first_name"].is_string()
            && division["approved_by"].get("email").is_none()
    );
    let own = &bodies["/owner"];
    assert_eq!(own["total"], data["total"]);
    assert_eq!(own["approved_by"], json!({"id": data["approved_by"]["id"]}));
    // The event was queued for these three webhooks only: another division and an inactive
    // owner get nothing, not even a delivery that could be sent later.
    let queued = setup
        .api
        .store()
        .await
        .deliveries_of_event(&TenantId::parse("acme").unwrap(), &event_id(&id))
        .await
        .unwrap();
    let mut queued_to: Vec<&str> = queued
        .iter()
        .map(|delivery| webhooks[delivery.webhook_id.as_str()].as_str())
        .collect();
    queued_to.sort_unstable();
    assert_eq!(queued_to, ["/division", "/full", "/owner"]);
}

async fn an_owner_deactivated_between_retries_gets_nothing_more(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    setup.receiver.script("/owner", &[Reply::Status(500)]);
    let (webhook, _) = setup.webhook("/owner").await;
    let event = setup.publish().await;
    setup.attempts(&event, &webhook, 1).await;
    setup.api.put_user("acme", "u1", false, &["admin"]).await;
    // Cancelled with the deactivation, in its transaction (a retry already claimed is checked
    // again before it is sent: zivio-delivery's tests/clock.rs).
    assert_eq!(setup.state_of(&event).await, "cancelled");
    assert_eq!(
        setup.receiver.received("/owner").len(),
        1,
        "nothing after the owner became inactive"
    );
}

async fn large_responses_are_cut_at_64_kib(backend: Backend) {
    let Some(setup) = setup(backend, "1h", true).await else {
        return;
    };
    setup
        .receiver
        .script("/chatty", &[Reply::Large(1024 * 1024)]);
    let (webhook, _) = setup.webhook("/chatty").await;
    let event = setup.publish().await;
    let attempts = setup.attempts(&event, &webhook, 1).await;
    assert!(attempts[0].succeeded);
    assert!(attempts[0].response_truncated);
    assert_eq!(attempts[0].response_body.as_ref().unwrap().len(), 64 * 1024);
}

async fn sigterm_lets_attempts_in_flight_finish(backend: Backend) {
    let Some(setup) = setup(backend, "1h", true).await else {
        return;
    };
    setup
        .receiver
        .script("/steady", &[Reply::Delay(Duration::from_millis(1_500))]);
    let (webhook, _) = setup.webhook("/steady").await;
    let event = setup.publish().await;
    setup.receiver.wait_for("/steady", 1, WAIT).await;
    let Setup { api, .. } = setup;
    let store = api.store().await;
    let crate::support::api::Api { service, .. } = api;
    assert!(service.terminate().await.success(), "SIGTERM exits 0");
    let tenant = TenantId::parse("acme").unwrap();
    let attempts = store
        .attempts_of(
            &tenant,
            &event_id(&event),
            &WebhookId::parse(&webhook).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "the attempt in flight finished and was recorded"
    );
    assert!(attempts[0].succeeded);
}

/// localhost resolves to 127.0.0.1. It is allowed when the webhook is created and first sent
/// to; then the operator narrows the exemption to 127.0.0.2, and the retry must be refused at
/// send time, after resolving again, without a byte reaching the receiver.
async fn destinations_are_vetted_again_at_every_attempt(backend: Backend) {
    let extra = [("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32")];
    let Some(mut setup) = setup_with(backend, "3s,1h", true, &extra).await else {
        return;
    };
    setup.receiver.script("/named", &[Reply::Status(503)]);
    let url = format!("https://localhost:{}/named", setup.receiver.addr.port());
    let created = setup
        .api
        .create_webhook(
            &setup.key,
            "acme",
            json!({"name": "named", "url": url, "events": ["*"]}),
        )
        .await;
    let webhook = created["webhook"]["id"].as_str().unwrap().to_owned();
    let event = setup.publish().await;
    setup.attempts(&event, &webhook, 1).await;
    setup
        .api
        .restart_with(&[("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.2/32")])
        .await;
    let attempts = setup.attempts(&event, &webhook, 2).await;
    assert_eq!(
        attempts[1].error_kind.map(|kind| kind.as_str()),
        Some("refused_destination"),
        "{:?}",
        attempts[1].error_detail
    );
    assert!(
        attempts[1]
            .error_detail
            .as_deref()
            .unwrap()
            .contains("127.0.0.1")
    );
    assert!(
        attempts[1].next_attempt_at.is_some(),
        "a refused destination is a temporary failure"
    );
    assert_eq!(
        setup.receiver.received("/named").len(),
        1,
        "nothing was sent to the refused address"
    );
}

/// Three hanging receivers and one healthy one share an instance that may send four requests
/// at once: once the hanging ones have timed out they get one request each, and the healthy one
/// keeps getting its events.
async fn hanging_receivers_cannot_take_all_capacity(backend: Backend) {
    let extra = [
        ("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "1s"),
        ("ZIVIO_WEBHOOKS_MAX_IN_FLIGHT", "4"),
        ("ZIVIO_WEBHOOKS_MAX_IN_FLIGHT_PER_WEBHOOK", "4"),
    ];
    let Some(setup) = setup_with(backend, "100ms,100ms,100ms,100ms,100ms", true, &extra).await
    else {
        return;
    };
    for path in ["/hang-1", "/hang-2", "/hang-3"] {
        setup
            .receiver
            .script(path, &[Reply::Delay(Duration::from_secs(30)); 200]);
        setup.webhook(path).await;
    }
    setup.webhook("/healthy").await;
    let started = tokio::time::Instant::now();
    for _ in 0..8 {
        setup.publish().await;
    }
    setup
        .receiver
        .wait_for("/healthy", 8, Duration::from_secs(20))
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the healthy receiver waited {took:?} behind hanging ones"
    );
}

/// A 429 asking for 3 s gets its retry then (not after the 100 ms step), and a 503 asking for a
/// day gets it after the largest step (20 s), never later.
async fn retry_after_is_honoured_within_the_schedule(backend: Backend) {
    let Some(setup) = setup(backend, "100ms,20s,1s", true).await else {
        return;
    };
    setup.receiver.script(
        "/busy",
        &[Reply::RetryAfter(429, 3), Reply::RetryAfter(503, 86_400)],
    );
    let (webhook, _) = setup.webhook("/busy").await;
    let event = setup.publish().await;
    let attempts = setup.attempts(&event, &webhook, 2).await;
    let wait = |attempt: &zivio_store::AttemptRecord| {
        (attempt.next_attempt_at.unwrap() - attempt.created_at).as_seconds_f64()
    };
    assert!(
        (2.9..3.1).contains(&wait(&attempts[0])),
        "{}s",
        wait(&attempts[0])
    );
    assert!(
        (19.9..20.1).contains(&wait(&attempts[1])),
        "{}s",
        wait(&attempts[1])
    );
}
