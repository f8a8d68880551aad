//! Recovery (docs/product.md §7) through the v4 API against a real HTTPS receiver: what failed
//! is resent once each, with progress, refusals, cancel, stop on disable, new events not queued
//! behind it, and a `kill -9` in the middle. Waits poll real time: the worker and the engine run
//! in the service's own process.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::api::{Backend, on_both_backends, problem};
use crate::support::eventually;
use crate::support::receiver::Reply;
use crate::support::sending::{Setup, WAIT, batch, setup, setup_with, verify};

on_both_backends!(
    a_recovery_resends_what_failed_once_and_reports_progress,
    recoveries_are_refused_cancelled_and_stopped_as_documented,
    new_events_are_not_queued_behind_a_recovery,
    a_recovery_acts_for_the_owner_and_stops_when_the_owner_is_inactive,
    events_the_owner_can_no_longer_see_are_skipped_and_counted,
    a_recovery_survives_a_kill_9_and_resends_nothing_twice,
);

const HOUR_AGO: time::Duration = time::Duration::HOUR;

fn since() -> String {
    zivio_app::rfc3339(time::OffsetDateTime::now_utc() - HOUR_AGO)
}

/// A webhook to `path` whose receiver refuses the first `failing` requests for good (400), and
/// `failing` events published to it, each failed once; returns the webhook and the events.
async fn failed_events(setup: &Setup, path: &str, failing: usize) -> (String, String, Vec<String>) {
    setup
        .receiver
        .script(path, &vec![Reply::Status(400); failing]);
    let (webhook, secret) = setup.webhook(path).await;
    let mut events = Vec::new();
    for size in chunks(failing) {
        let answer = setup
            .api
            .platform(Method::POST, "acme/events/batch", Some(batch(size)))
            .await;
        assert_eq!(answer.status, 202, "{}", answer.text);
        events.extend(
            answer.body["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_owned()),
        );
    }
    setup
        .receiver
        .wait_for(path, failing, Duration::from_secs(60))
        .await;
    // Every failure recorded: a dry run counts them all.
    failures_recorded(setup, &webhook, failing).await;
    (webhook, secret, events)
}

fn chunks(total: usize) -> Vec<usize> {
    (0..total)
        .step_by(1000)
        .map(|start| (total - start).min(1000))
        .collect()
}

async fn dry_run(setup: &Setup, webhook: &str) -> i64 {
    let answer = setup
        .send(
            Method::POST,
            &format!("/v4/webhooks/{webhook}/recover"),
            Some(json!({"since": since(), "dry_run": true})),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body["events"].as_i64().unwrap()
}

async fn start(setup: &Setup, webhook: &str) -> Value {
    let answer = setup
        .send(
            Method::POST,
            &format!("/v4/webhooks/{webhook}/recover"),
            Some(json!({"since": since()})),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    answer.body["recovery"].clone()
}

/// Polls the recovery until `done(recovery)`.
async fn recovery_when(
    setup: &Setup,
    webhook: &str,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(within, "the recovery gets there", || async {
        let answer = setup
            .get(&format!("/v4/webhooks/{webhook}/recoveries/{id}"))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let recovery = answer.body["recovery"].clone();
        if done(&recovery) {
            Ok(recovery)
        } else {
            Err(recovery.to_string())
        }
    })
    .await
}

/// The distinct `webhook-id`s that arrived at `path`, but those of `originals`.
/// Waits until a dry run counts `failing` failures: all recorded.
async fn failures_recorded(setup: &Setup, webhook: &str, failing: usize) {
    eventually(WAIT, "failures recorded", || async {
        match dry_run(setup, webhook).await {
            count if count == failing as i64 => Ok(()),
            count => Err(format!("{count} of {failing}")),
        }
    })
    .await;
}

/// Waits until `count` resends (events other than `originals`) arrived at `path`.
async fn resends_arrive(setup: &Setup, path: &str, originals: &[String], count: usize) {
    eventually(Duration::from_secs(60), "resends arrive", || async {
        match resends_arrived(setup, path, originals).len() {
            arrived if arrived >= count => Ok(()),
            arrived => Err(format!("{arrived} of {count}")),
        }
    })
    .await;
}

fn resends_arrived(setup: &Setup, path: &str, originals: &[String]) -> HashSet<String> {
    let originals: HashSet<&str> = originals.iter().map(String::as_str).collect();
    setup
        .receiver
        .received(path)
        .iter()
        .map(|request| request.headers["webhook-id"].to_str().unwrap().to_owned())
        .filter(|id| !originals.contains(id.as_str()))
        .collect()
}

async fn a_recovery_resends_what_failed_once_and_reports_progress(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    let (webhook, secret, originals) = failed_events(&setup, "/r", 20).await;
    let started = start(&setup, &webhook).await;
    assert_eq!(started["selected"], 20, "{started}");
    assert_eq!(started["state"], "running");
    assert_eq!(started["ended_reason"], Value::Null);
    let id = started["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("rcv_"), "{id}");
    let done = recovery_when(&setup, &webhook, &id, WAIT, |r| r["state"] == "done").await;
    assert_eq!(
        (
            done["resent"].clone(),
            done["skipped"].clone(),
            done["ended_reason"].clone()
        ),
        (json!(20), json!(0), json!("done"))
    );
    assert!(done["finished_at"].is_string());

    // Each failed event arrives once more, as a new event with a new id, signed.
    setup.receiver.wait_for("/r", 40, WAIT).await;
    assert_eq!(resends_arrived(&setup, "/r", &originals).len(), 20);
    for request in &setup.receiver.received("/r")[20..] {
        verify(&secret, request);
    }
    let succeeded = setup
        .get(&format!(
            "/v4/deliveries?webhook_id={webhook}&status=succeeded"
        ))
        .await;
    let resend = &succeeded.body["deliveries"][0];
    let detail = setup
        .get(&format!(
            "/v4/deliveries/{}",
            resend["id"].as_str().unwrap()
        ))
        .await;
    let resend_of = detail.body["delivery"]["resend_of"].as_str().unwrap();
    assert!(originals.iter().any(|id| id == resend_of), "{resend_of}");

    // Listed, audited with counts, and nothing is left to recover.
    let listed = setup
        .get(&format!("/v4/webhooks/{webhook}/recoveries"))
        .await;
    assert_eq!(listed.body["recoveries"][0]["id"], id.as_str());
    let audit = setup.get("/v4/audit-log").await;
    let entries = audit.body["entries"].as_array().unwrap();
    let of = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .cloned()
            .unwrap()
    };
    assert_eq!(of("recovery.started")["changes"]["selected"], 20);
    assert_eq!(of("recovery.ended")["changes"]["resent"], 20);
    assert_eq!(of("recovery.ended")["changes"]["reason"], "done");
    assert_eq!(
        dry_run(&setup, &webhook).await,
        0,
        "overlapping recoveries resend nothing twice"
    );
    let metrics = reqwest::get(setup.api.service.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("zivio_recoveries_running "), "{metrics}");
}

async fn recoveries_are_refused_cancelled_and_stopped_as_documented(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    let (webhook, _, _) = failed_events(&setup, "/x", 6).await;
    let path = format!("/v4/webhooks/{webhook}");
    // One resend a second at most (half a limit of 2/s): the recovery keeps running a while.
    let limited = setup
        .send(Method::PATCH, &path, Some(json!({"rate_limit": 2})))
        .await;
    assert_eq!(limited.status, 200, "{}", limited.text);

    let recover_path = format!("{path}/recover");
    let recover = |body: Value| setup.send(Method::POST, &recover_path, Some(body));
    let now = time::OffsetDateTime::now_utc();
    let backwards = recover(json!({"since": zivio_app::rfc3339(now), "until": since()})).await;
    assert_eq!(problem(&backwards, 400)["errors"][0]["field"], "since");
    let too_old = zivio_app::rfc3339(now - time::Duration::days(31));
    let old = recover(json!({"since": too_old})).await;
    assert!(
        problem(&old, 400)["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("retention")
    );
    let garbled = recover(json!({"since": "yesterday"})).await;
    problem(&garbled, 400);

    // Starting and counting need access that covers the owner; cancelling does not.
    let api = &setup.api;
    api.put_role("acme", "narrow", &["webhooks:manage", "invoices:read:own"])
        .await;
    api.put_user("acme", "narrow", true, &["narrow"]).await;
    let narrow = api.issue_key("acme", "narrow").await;
    for dry_run in [true, false] {
        let refused = api
            .v4(
                &narrow,
                "acme",
                Method::POST,
                &format!("{path}/recover"),
                Some(json!({"since": since(), "dry_run": dry_run})),
            )
            .await;
        problem(&refused, 403);
    }

    let first = start(&setup, &webhook).await;
    let id = first["id"].as_str().unwrap();
    let again = recover(json!({"since": since()})).await;
    assert!(
        problem(&again, 409)["detail"]
            .as_str()
            .unwrap()
            .contains("another recovery")
    );
    let cancel = format!("{path}/recoveries/{id}/cancel");
    let cancelled = api.v4(&narrow, "acme", Method::POST, &cancel, None).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.body["recovery"]["state"], "cancelled");
    assert_eq!(
        cancelled.body["recovery"]["ended_reason"],
        "cancelled by narrow"
    );
    let twice = setup.send(Method::POST, &cancel, None).await;
    assert_eq!(
        twice.body["recovery"]["ended_reason"],
        "cancelled by narrow"
    );

    // Disabling the webhook stops the next one; a disabled webhook refuses a start.
    let second = start(&setup, &webhook).await;
    let second_id = second["id"].as_str().unwrap();
    setup
        .send(Method::POST, &format!("{path}/disable"), None)
        .await;
    let stopped = recovery_when(&setup, &webhook, second_id, WAIT, |r| {
        r["state"] != "running"
    })
    .await;
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["ended_reason"], "webhook disabled");
    let disabled = recover(json!({"since": since()})).await;
    problem(&disabled, 409);
    let unknown = setup.get(&format!("{path}/recoveries/rcv_0000")).await;
    problem(&unknown, 404);
}

async fn new_events_are_not_queued_behind_a_recovery(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    let (webhook, _, originals) = failed_events(&setup, "/busy", 3000).await;
    let started = start(&setup, &webhook).await;
    let id = started["id"].as_str().unwrap();
    recovery_when(&setup, &webhook, id, WAIT, |r| {
        r["resent"].as_i64() > Some(100)
    })
    .await;
    let published = Instant::now();
    let fresh = setup.publish().await;
    let arrived = eventually(WAIT, "the new event arrives", || async {
        let received = setup.receiver.received("/busy");
        let fresh = received
            .iter()
            .find(|r| r.headers["webhook-id"] == fresh.as_str());
        fresh
            .map(|request| request.at)
            .ok_or_else(|| format!("{} others arrived", received.len()))
    })
    .await;
    assert!(
        arrived - published < Duration::from_secs(3),
        "a new event waited {:?} behind the recovery",
        arrived - published
    );
    let done = recovery_when(&setup, &webhook, id, Duration::from_secs(120), |r| {
        r["state"] == "done"
    })
    .await;
    assert_eq!(done["resent"], 3000);
    resends_arrive(&setup, "/busy", &originals, 3001).await;
}

async fn a_recovery_survives_a_kill_9_and_resends_nothing_twice(backend: Backend) {
    let env = [("ZIVIO_WEBHOOKS_LEASE", "3s")];
    let Some(mut setup) = setup_with(backend, "1s", true, &env).await else {
        return;
    };
    let (webhook, _, originals) = failed_events(&setup, "/crash", 3000).await;
    // Slow enough (about 500 resends a second) to be killed in the middle.
    let limited = setup
        .send(
            Method::PATCH,
            &format!("/v4/webhooks/{webhook}"),
            Some(json!({"rate_limit": 1000})),
        )
        .await;
    assert_eq!(limited.status, 200, "{}", limited.text);
    let started = start(&setup, &webhook).await;
    let id = started["id"].as_str().unwrap().to_owned();
    let midway = recovery_when(&setup, &webhook, &id, WAIT, |r| {
        r["resent"].as_i64() >= Some(300)
    })
    .await;
    assert_eq!(midway["state"], "running", "killed in the middle: {midway}");
    setup.api.kill_and_restart().await;

    let done = recovery_when(&setup, &webhook, &id, Duration::from_secs(120), |r| {
        r["state"] == "done"
    })
    .await;
    assert_eq!(
        (done["selected"].clone(), done["resent"].clone()),
        (json!(3000), json!(3000))
    );
    resends_arrive(&setup, "/crash", &originals, 3000).await;
    // One resend per selected event: the resends' deliveries say which event each resends.
    let store = setup.api.store().await;
    let tenant = zivio_core::ids::TenantId::parse("acme").unwrap();
    let mut resent_events = HashSet::new();
    for event in resends_arrived(&setup, "/crash", &originals) {
        assert!(
            store
                .event(&tenant, &crate::support::event_id(&event))
                .await
                .unwrap()
                .is_some()
        );
        resent_events.insert(event);
    }
    assert_eq!(resent_events.len(), 3000, "no event was resent twice");
}

/// Two instances on one PostgreSQL database: one works on the recovery at a time, and when an
/// instance dies in the middle the recovery still ends with each event resent once.
#[tokio::test]
async fn two_instances_share_a_recovery_without_resending_twice() {
    let env = [("ZIVIO_WEBHOOKS_LEASE", "3s")];
    let Some(mut setup) = setup_with(Backend::Postgres, "1s", true, &env).await else {
        return;
    };
    let _second = setup.api.another_instance("second").await;
    let (webhook, _, originals) = failed_events(&setup, "/two", 2000).await;
    let limited = setup
        .send(
            Method::PATCH,
            &format!("/v4/webhooks/{webhook}"),
            Some(json!({"rate_limit": 1000})),
        )
        .await;
    assert_eq!(limited.status, 200, "{}", limited.text);
    let started = start(&setup, &webhook).await;
    let id = started["id"].as_str().unwrap().to_owned();
    recovery_when(&setup, &webhook, &id, WAIT, |r| {
        r["resent"].as_i64() >= Some(200)
    })
    .await;
    setup.api.kill_and_restart().await;
    let done = recovery_when(&setup, &webhook, &id, Duration::from_secs(120), |r| {
        r["state"] == "done"
    })
    .await;
    assert_eq!(
        (done["selected"].clone(), done["resent"].clone()),
        (json!(2000), json!(2000))
    );
    resends_arrive(&setup, "/two", &originals, 2000).await;
    // A second resend of an event would be queued (pending) until it was received. Sends of
    // the killed instance that it did not record are repeated once their leases end.
    let store = setup.api.store().await;
    eventually(Duration::from_secs(120), "every resend ended", || async {
        match store.pending_deliveries().await.unwrap() {
            0 => Ok(()),
            pending => Err(format!("{pending} pending")),
        }
    })
    .await;
    assert_eq!(
        resends_arrived(&setup, "/two", &originals).len(),
        2000,
        "no event resent twice"
    );
}

async fn a_recovery_acts_for_the_owner_and_stops_when_the_owner_is_inactive(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    let api = &setup.api;
    // The webhook belongs to `o1`; `u1` (who covers everyone) starts the recovery.
    api.put_user("acme", "o1", true, &["admin"]).await;
    let owner_key = api.issue_key("acme", "o1").await;
    setup.receiver.script("/own", &[Reply::Status(400); 4]);
    let body = json!({"name": "owned", "url": setup.receiver.url("/own"), "events": ["*"], "rate_limit": 2});
    let created = api.create_webhook(&owner_key, "acme", body).await;
    let webhook = created["webhook"]["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        setup.publish().await;
    }
    setup.receiver.wait_for("/own", 4, WAIT).await;
    failures_recorded(&setup, &webhook, 4).await;
    let started = start(&setup, &webhook).await;
    let id = started["id"].as_str().unwrap();
    assert_eq!(started["created_by"], "u1");
    api.put_user("acme", "o1", false, &["admin"]).await;
    let stopped = recovery_when(&setup, &webhook, id, WAIT, |r| r["state"] != "running").await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert_eq!(stopped["ended_reason"], "owner inactive");
}

async fn events_the_owner_can_no_longer_see_are_skipped_and_counted(backend: Backend) {
    let Some(setup) = setup(backend, "1s", true).await else {
        return;
    };
    let api = &setup.api;
    // The owner `o2` may see invoices when the events fail, and no longer when they are resent.
    api.put_role(
        "acme",
        "invoices",
        &["webhooks:manage", "invoices:read:tenant"],
    )
    .await;
    api.put_user("acme", "o2", true, &["invoices"]).await;
    let owner_key = api.issue_key("acme", "o2").await;
    setup.receiver.script("/seen", &[Reply::Status(400); 3]);
    let body = json!({"name": "seen", "url": setup.receiver.url("/seen"), "events": ["*"]});
    let created = api.create_webhook(&owner_key, "acme", body).await;
    let webhook = created["webhook"]["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        setup.publish().await;
    }
    setup.receiver.wait_for("/seen", 3, WAIT).await;
    failures_recorded(&setup, &webhook, 3).await;
    api.put_role("acme", "invoices", &["webhooks:manage", "jobs:read:tenant"])
        .await;
    let started = start(&setup, &webhook).await;
    let id = started["id"].as_str().unwrap();
    let done = recovery_when(&setup, &webhook, id, WAIT, |r| r["state"] == "done").await;
    assert_eq!(
        (
            done["selected"].clone(),
            done["resent"].clone(),
            done["skipped"].clone()
        ),
        (json!(3), json!(0), json!(3)),
        "{done}"
    );
    assert_eq!(setup.receiver.received("/seen").len(), 3, "nothing resent");
}
