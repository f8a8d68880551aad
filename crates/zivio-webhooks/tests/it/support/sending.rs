//! A running service with a trusted HTTPS receiver on loopback, a tenant `acme` with an
//! all-access admin, and helpers to publish events and wait for attempts.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use zivio_core::ids::TenantId;
use zivio_core::webhook::WebhookId;

use super::api::{Answer, Api, Backend};
use super::eventually;
use super::receiver::Receiver;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Setup {
    pub api: Api,
    pub receiver: Receiver,
    pub key: String,
    _receiver_dir: tempfile::TempDir,
}

/// A platform batch of `size` `invoice.paid` events (the catalog's example).
pub fn batch(size: usize) -> serde_json::Value {
    let data = zivio_core::catalog::Catalog::builtin()
        .event_type("invoice.paid")
        .unwrap()
        .example
        .clone();
    let events: Vec<serde_json::Value> = (0..size)
        .map(|_| json!({"type": "invoice.paid", "resource": {"id": data["id"], "data": data}}))
        .collect();
    json!({ "events": events })
}

/// A service that trusts the receiver's CA and may reach loopback, with a fast schedule.
pub async fn setup(backend: Backend, schedule: &str, trust_receiver: bool) -> Option<Setup> {
    setup_with(backend, schedule, trust_receiver, &[]).await
}

pub async fn setup_with(
    backend: Backend,
    schedule: &str,
    trust_receiver: bool,
    extra: &[(&str, &str)],
) -> Option<Setup> {
    let receiver_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(receiver_dir.path()).await;
    let ca = receiver.ca_path.to_str().unwrap().to_owned();
    let mut env = vec![
        ("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8"),
        ("ZIVIO_WEBHOOKS_RETRY_SCHEDULE", schedule),
    ];
    if trust_receiver {
        env.push(("ZIVIO_WEBHOOKS_EXTRA_ROOT_CA", ca.as_str()));
    }
    env.extend_from_slice(extra);
    let api = Api::start(backend, &env).await?;
    let key = api.tenant_with_admin("acme", "u1").await;
    Some(Setup {
        api,
        receiver,
        key,
        _receiver_dir: receiver_dir,
    })
}

impl Setup {
    /// A setup around a service and receiver started otherwise (`dir` holds the receiver's CA).
    pub fn new(api: Api, receiver: Receiver, key: String, dir: tempfile::TempDir) -> Setup {
        Setup {
            api,
            receiver,
            key,
            _receiver_dir: dir,
        }
    }

    /// A v4 request as the all-access admin of `acme`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Answer {
        self.api.v4(&self.key, "acme", method, path, body).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    /// A webhook to `path` on the receiver, for every event; returns (id, secret).
    pub async fn webhook(&self, path: &str) -> (String, String) {
        let body = json!({"name": path, "url": self.receiver.url(path), "events": ["*"]});
        let created = self.api.create_webhook(&self.key, "acme", body).await;
        (
            created["webhook"]["id"].as_str().unwrap().to_owned(),
            created["secret"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn publish(&self) -> String {
        let data = zivio_core::catalog::Catalog::builtin()
            .event_type("invoice.paid")
            .unwrap()
            .example
            .clone();
        let event = json!({"type": "invoice.paid", "resource": {"id": data["id"], "data": data}});
        let answer = self
            .api
            .platform(Method::POST, "acme/events", Some(event))
            .await;
        assert_eq!(answer.status, 202, "{}", answer.text);
        answer.body["id"].as_str().unwrap().to_owned()
    }

    /// The recorded attempts, once `count` of them are on record.
    pub async fn attempts(
        &self,
        event: &str,
        webhook: &str,
        count: usize,
    ) -> Vec<zivio_store::AttemptRecord> {
        let store = self.api.store().await;
        let (tenant, webhook) = (
            TenantId::parse("acme").unwrap(),
            WebhookId::parse(webhook).unwrap(),
        );
        eventually(WAIT, "attempts recorded", || async {
            let attempts = store
                .attempts_of(&tenant, &crate::support::event_id(event), &webhook)
                .await
                .unwrap();
            match attempts.len() {
                recorded if recorded >= count => Ok(attempts),
                recorded => Err(format!("{recorded} of {count}")),
            }
        })
        .await
    }

    /// Waits until no delivery of `events` is pending: each has ended (succeeded, failed or
    /// cancelled), so nothing more is sent for them; a final state is on record only after its
    /// last request was answered.
    pub async fn settled(&self, events: &[String]) {
        let store = self.api.store().await;
        let tenant = TenantId::parse("acme").unwrap();
        eventually(WAIT, "deliveries ended", || async {
            for event in events {
                let deliveries = store
                    .deliveries_of_event(&tenant, &crate::support::event_id(event))
                    .await
                    .unwrap();
                if let Some(pending) = deliveries
                    .iter()
                    .find(|d| d.state == zivio_core::delivery::DeliveryState::Pending)
                {
                    return Err(format!("{event} to {} pending", pending.webhook_id));
                }
            }
            Ok(())
        })
        .await;
    }

    pub async fn state_of(&self, event: &str) -> String {
        let store = self.api.store().await;
        let deliveries = store
            .deliveries_of_event(
                &TenantId::parse("acme").unwrap(),
                &crate::support::event_id(event),
            )
            .await
            .unwrap();
        deliveries[0].state.to_string()
    }
}

pub fn verify(secret: &str, request: &crate::support::receiver::Received) {
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    verifier
        .verify(&request.body, &request.headers)
        .expect("a valid Standard Webhooks signature");
}
