//! Crash safety and scale-out with real processes: SIGKILL right after events were accepted
//! loses none of them; two instances on one PostgreSQL share the work without double sends.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use zivio_core::ids::TenantId;
use zivio_core::webhook::WebhookId;

use crate::support::api::{Api, Backend, on_both_backends};
use crate::support::eventually;
use crate::support::receiver::Receiver;
use crate::support::sending::batch;
use crate::support::service::Service;

on_both_backends!(
    accepted_events_survive_a_kill_9,
    twenty_kills_at_random_moments_lose_nothing
);

const WAIT: Duration = Duration::from_secs(60);

async fn start(backend: Backend, receiver: &Receiver) -> Option<(Api, String)> {
    let ca = receiver.ca_path.to_str().unwrap().to_owned();
    let env = [
        ("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8"),
        ("ZIVIO_WEBHOOKS_EXTRA_ROOT_CA", ca.as_str()),
        ("ZIVIO_WEBHOOKS_RETRY_SCHEDULE", "200ms,1s,1s"),
        ("ZIVIO_WEBHOOKS_LEASE", "3s"),
        ("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "1s"),
    ];
    let api = Api::start(backend, &env).await?;
    let key = api.tenant_with_admin("acme", "u1").await;
    Some((api, key))
}

async fn publish(api: &Api, size: usize) -> Vec<String> {
    publish_via(api, &api.service, size).await
}

/// Publishes a batch through `instance`, which hands its deliveries to its own engine.
async fn publish_via(api: &Api, instance: &Service, size: usize) -> Vec<String> {
    let answer = api
        .platform_via(
            instance,
            Method::POST,
            "acme/events/batch",
            Some(batch(size)),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    answer.body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

/// Waits until every id arrived at `path`; returns how many requests arrived in all.
async fn all_arrive(receiver: &Receiver, path: &str, ids: &HashSet<String>) -> usize {
    eventually(WAIT, "every event arrives", || async {
        let received = receiver.received(path);
        let seen: HashSet<String> = received
            .iter()
            .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
            .collect();
        if ids.is_subset(&seen) {
            Ok(received.len())
        } else {
            let arrived = ids.intersection(&seen).count();
            Err(format!("{arrived} of {}", ids.len()))
        }
    })
    .await
}

/// Waits until no delivery is pending (each recorded a moment after its request arrived).
async fn nothing_pending(api: &Api) {
    let store = api.store().await;
    eventually(WAIT, "nothing stays pending", || async {
        match store.pending_deliveries().await.unwrap() {
            0 => Ok(()),
            pending => Err(format!("{pending} pending")),
        }
    })
    .await;
}

async fn accepted_events_survive_a_kill_9(backend: Backend) {
    let receiver_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(receiver_dir.path()).await;
    let Some((mut api, key)) = start(backend, &receiver).await else {
        return;
    };
    let body = json!({"name": "crash", "url": receiver.url("/crash"), "events": ["*"]});
    api.create_webhook(&key, "acme", body).await;
    let mut ids = HashSet::new();
    for _ in 0..3 {
        ids.extend(publish(&api, 100).await);
    }
    assert_eq!(ids.len(), 300);
    api.kill_and_restart().await;
    let requests = all_arrive(&receiver, "/crash", &ids).await;
    // Only attempts sent and not yet recorded at the kill may repeat: at most the per-webhook
    // bound on them.
    let bound = zivio_delivery::UNRECORDED_PER_WEBHOOK;
    assert!(
        requests <= 300 + bound,
        "{requests} requests for 300 events"
    );
}

#[tokio::test]
async fn two_postgres_instances_share_the_work_without_double_sends() {
    let receiver_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(receiver_dir.path()).await;
    let Some((api, key)) = start(Backend::Postgres, &receiver).await else {
        return;
    };
    let second = api.another_instance("second").await;
    let mut webhooks = Vec::new();
    for path in ["/a", "/b"] {
        let created = api
            .create_webhook(
                &key,
                "acme",
                json!({"name": path, "url": receiver.url(path), "events": ["*"]}),
            )
            .await;
        let id = created["webhook"]["id"].as_str().unwrap();
        webhooks.push((path, WebhookId::parse(id).unwrap()));
    }
    // Through both instances: each hands what it publishes to its own engine, and both claim
    // what that leaves to the queue (retries, work given back).
    let mut ids = HashSet::new();
    for instance in [&api.service, &second, &api.service, &second] {
        ids.extend(publish_via(&api, instance, 500).await);
    }
    assert_eq!(ids.len(), 2_000);
    let store = api.store().await;
    let acme = TenantId::parse("acme").unwrap();
    for (path, _) in &webhooks {
        all_arrive(&receiver, path, &ids).await;
    }
    // Every request recorded, so that the attempts below can be compared with the requests.
    nothing_pending(&api).await;
    for (path, webhook) in &webhooks {
        // An event may reach the receiver twice only as a retry after a recorded failure (on
        // this loaded machine a request can outlast the 1 s timeout after it arrived), never
        // because both instances claimed it.
        let mut requests: HashMap<String, usize> = HashMap::new();
        for request in receiver.received(path) {
            let id = request.headers["webhook-id"].to_str().unwrap().to_owned();
            *requests.entry(id).or_default() += 1;
        }
        for (event, count) in requests.iter().filter(|(_, count)| **count > 1) {
            // Each send is one recorded attempt, numbered 1, 2, …, and only the last succeeded: a
            // delivery claimed twice would show the same attempt number twice.
            let attempts = store
                .attempts_of(&acme, &crate::support::event_id(event), webhook)
                .await
                .unwrap();
            let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
            let expected: Vec<u32> = (1..=u32::try_from(*count).unwrap()).collect();
            assert_eq!(numbers, expected, "{path}: {event} sent {count} times");
            assert!(
                attempts[..count - 1].iter().all(|a| !a.succeeded),
                "{path}: {event} was sent again after a success"
            );
        }
    }
    for url in [api.service.url("/metrics"), second.url("/metrics")] {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let delivered: f64 = text
            .lines()
            .filter(|line| {
                line.starts_with("zivio_delivery_attempts_total{")
                    && line.contains("outcome=\"delivered\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(delivered > 0.0, "both instances deliver: {url}");
    }
}

#[tokio::test]
async fn a_dying_instance_hands_its_work_to_another_after_the_lease() {
    let receiver_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(receiver_dir.path()).await;
    let Some((mut api, key)) = start(Backend::Postgres, &receiver).await else {
        return;
    };
    let survivor = api.another_instance("survivor").await;
    receiver.script(
        "/slow",
        &[crate::support::receiver::Reply::Delay(Duration::from_millis(300)); 100],
    );
    api.create_webhook(
        &key,
        "acme",
        json!({"name": "slow", "url": receiver.url("/slow"), "events": ["*"]}),
    )
    .await;
    let ids: HashSet<String> = publish(&api, 200).await.into_iter().collect();
    // Real time: the kill must come while requests to the slow receiver are on the wire.
    tokio::time::sleep(Duration::from_millis(700)).await;
    api.service.kill().await;
    let requests = all_arrive(&receiver, "/slow", &ids).await;
    // Attempts sent and not yet recorded at the kill may repeat: at most one per-webhook bound
    // per instance.
    let bound = zivio_delivery::UNRECORDED_PER_WEBHOOK;
    assert!(
        requests <= 200 + 2 * bound,
        "{requests} requests for 200 events"
    );
    drop(survivor);
}

/// A number in `0..bound` that differs from run to run (no seeded generator is needed).
fn random_below(bound: u64) -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes) % bound
}

/// The crash campaign: 20 times, publish while a receiver is up and kill the service with
/// SIGKILL at a random moment, then restart it. At the end every accepted event reached the
/// receiver, nothing published after a webhook was disabled or deleted reached it, and nothing is
/// left pending or leased.
async fn twenty_kills_at_random_moments_lose_nothing(backend: Backend) {
    let receiver_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(receiver_dir.path()).await;
    let Some((mut api, key)) = start(backend, &receiver).await else {
        return;
    };
    let mut ids = HashMap::new();
    for path in ["/kept", "/disabled", "/deleted"] {
        let created = api
            .create_webhook(
                &key,
                "acme",
                json!({"name": path, "url": receiver.url(path), "events": ["*"]}),
            )
            .await;
        ids.insert(path, created["webhook"]["id"].as_str().unwrap().to_owned());
    }
    let mut accepted = HashSet::new();
    let mut after_disable = HashSet::new();
    let mut after_delete = HashSet::new();
    for round in 0..20 {
        match round {
            5 => {
                let path = format!("/v4/webhooks/{}/disable", ids["/disabled"]);
                assert_eq!(
                    api.v4(&key, "acme", Method::POST, &path, None).await.status,
                    200
                );
            }
            10 => {
                let path = format!("/v4/webhooks/{}", ids["/deleted"]);
                assert_eq!(
                    api.v4(&key, "acme", Method::DELETE, &path, None)
                        .await
                        .status,
                    204
                );
            }
            _ => {}
        }
        // Publish in small batches until the kill; a batch whose answer did not arrive was not
        // accepted (it may or may not be stored: either is allowed).
        let url = api.service.url("/platform/v4/tenants/acme/events/batch");
        let platform_key = api.var("ZIVIO_WEBHOOKS_PLATFORM_KEY").unwrap().to_owned();
        let publisher = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut accepted = Vec::new();
            loop {
                let answer = client
                    .post(&url)
                    .bearer_auth(&platform_key)
                    .json(&batch(10))
                    .send()
                    .await;
                let Ok(answer) = answer else { return accepted };
                if answer.status() != 202 {
                    return accepted;
                }
                let Ok(body) = answer.json::<Value>().await else {
                    return accepted;
                };
                accepted.extend(
                    body["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|id| id.as_str().unwrap().to_owned()),
                );
            }
        });
        // Real time: the kill lands at a random moment of real publishing and sending.
        tokio::time::sleep(Duration::from_millis(50 + random_below(500))).await;
        api.service.kill().await;
        let published = publisher.await.unwrap();
        if round >= 5 {
            after_disable.extend(published.iter().cloned());
        }
        if round >= 10 {
            after_delete.extend(published.iter().cloned());
        }
        accepted.extend(published);
        api.restart_with(&[]).await;
    }
    assert!(
        accepted.len() >= 100,
        "only {} events were accepted",
        accepted.len()
    );
    all_arrive(&receiver, "/kept", &accepted).await;
    let reached = |path: &str| -> HashSet<String> {
        receiver
            .received(path)
            .iter()
            .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        reached("/disabled").is_disjoint(&after_disable),
        "an event published after the disable was sent"
    );
    assert!(
        reached("/deleted").is_disjoint(&after_delete),
        "an event published after the delete was sent"
    );
    // Nothing stays pending or leased.
    nothing_pending(&api).await;
}
