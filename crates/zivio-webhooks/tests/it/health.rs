//! Webhook health, auto-disable with mail to the managers (over a real SMTP conversation) and
//! retention, through the real binary and a real HTTPS receiver.

use serde_json::{Value, json};

use crate::support::api::{Backend, on_both_backends};
use crate::support::eventually;
use crate::support::receiver::Reply;
use crate::support::sending::{WAIT, setup, setup_with};
use crate::support::smtp::SmtpServer;

on_both_backends!(
    health_reflects_a_known_mix_of_outcomes,
    a_webhook_failing_too_long_is_disabled_and_its_managers_mailed,
    retention_deletes_old_history_but_not_pending_work,
);

async fn health_reflects_a_known_mix_of_outcomes(backend: Backend) {
    let Some(setup) = setup(backend, "100ms,100ms", true).await else {
        return;
    };
    setup
        .receiver
        .script("/mixed", &[Reply::Status(500), Reply::Status(503)]);
    setup.receiver.script("/down", &[Reply::Status(500); 3]);
    let (mixed, _) = setup.webhook("/mixed").await;
    let (down, _) = setup.webhook("/down").await;
    let (idle, _) = {
        let body =
            json!({"name": "idle", "url": setup.receiver.url("/idle"), "events": ["job.created"]});
        let created = setup.api.create_webhook(&setup.key, "acme", body).await;
        (created["webhook"]["id"].as_str().unwrap().to_owned(), ())
    };
    let event = setup.publish().await;
    setup.attempts(&event, &mixed, 3).await;
    setup.attempts(&event, &down, 3).await;

    let list = setup.get("/v4/webhooks").await;
    let health = |id: &str| {
        list.body["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .unwrap()["health"]
            .clone()
    };
    let third = 1.0 / 3.0;
    let mixed_health = health(&mixed);
    assert_eq!(mixed_health["last_status"], "succeeded");
    assert!(
        (mixed_health["success_rate_24h"].as_f64().unwrap() - third).abs() < 1e-9,
        "{mixed_health}"
    );
    assert!((mixed_health["success_rate_7d"].as_f64().unwrap() - third).abs() < 1e-9);
    assert!(mixed_health["failing_since"].is_null());
    assert!(mixed_health["last_attempt_at"].is_string());
    let down_health = health(&down);
    assert_eq!(down_health["last_status"], "failed");
    assert_eq!(down_health["success_rate_24h"], 0.0);
    let first_failure = setup.attempts(&event, &down, 3).await[0].created_at;
    assert_eq!(
        down_health["failing_since"].as_str().unwrap(),
        zivio_app::rfc3339(first_failure),
        "the first failure since the last success"
    );
    assert_eq!(
        health(&idle),
        json!({"last_attempt_at": null, "last_status": null, "success_rate_24h": null, "success_rate_7d": null, "failing_since": null})
    );
    let one = setup.get(&format!("/v4/webhooks/{down}")).await;
    assert_eq!(
        one.body["webhook"]["health"], down_health,
        "the detail answer agrees"
    );
}

async fn a_webhook_failing_too_long_is_disabled_and_its_managers_mailed(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let schedule = vec!["300ms"; 30].join(",");
    let Some(setup) = setup_with(
        backend,
        &schedule,
        true,
        &[
            ("ZIVIO_WEBHOOKS_AUTO_DISABLE_AFTER", "2s"),
            ("ZIVIO_WEBHOOKS_SMTP_URL", &smtp_url),
            ("ZIVIO_WEBHOOKS_PUBLIC_URL", "https://zivio.example/"),
            ("ZIVIO_WEBHOOKS_MAIL_FROM", "hooks@zivio.example"),
        ],
    )
    .await
    else {
        return;
    };
    let api = &setup.api;
    api.put_user("acme", "u2", true, &["admin"]).await;
    api.put_user("acme", "gone", false, &["admin"]).await;
    api.put_role("acme", "reader", &["invoices:read:tenant"])
        .await;
    api.put_user("acme", "reader", true, &["reader"]).await;
    setup
        .receiver
        .script("/failing", &[Reply::Status(503); 100]);
    let body = json!({"name": "ERP sync", "url": setup.receiver.url("/failing?token=path-secret"), "events": ["*"]});
    let created = api.create_webhook(&setup.key, "acme", body).await;
    let hook = created["webhook"]["id"].as_str().unwrap().to_owned();
    let event = setup.publish().await;

    let mails = smtp.wait_for(2, WAIT).await;
    let mut recipients: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    assert_eq!(
        recipients,
        ["<u1@acme.example.com>", "<u2@acme.example.com>"],
        "active managers, once each"
    );
    let mail = &mails[0].data;
    assert!(
        mail.contains("Subject: Webhook \"ERP sync\" was disabled"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("https://zivio.example/admin/webhooks/{hook}")),
        "{mail}"
    );
    assert!(
        mail.contains(setup.receiver.url("").trim_end_matches('/')),
        "{mail}"
    );
    assert!(
        !mail.contains("path-secret") && !mail.contains("/failing"),
        "scheme and host only: {mail}"
    );
    assert!(mail.contains("http_status"), "{mail}");
    assert_eq!(mails[0].from, "<hooks@zivio.example>");

    let webhook = setup.get(&format!("/v4/webhooks/{hook}")).await.body["webhook"].clone();
    assert_eq!(
        (
            webhook["enabled"].as_bool(),
            webhook["disabled_reason"].as_str()
        ),
        (Some(false), Some("auto"))
    );
    assert!(webhook["disabled_by"].is_null() && webhook["health"]["failing_since"].is_string());
    assert_eq!(
        setup.state_of(&event).await,
        "cancelled",
        "its pending retries stop"
    );
    let audit = setup.get("/v4/audit-log").await;
    let disables: Vec<&Value> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "webhook.disabled")
        .collect();
    assert_eq!(disables.len(), 1, "disabled once");
    assert_eq!(
        (
            disables[0]["actor_id"].as_str(),
            disables[0]["changes"]["reason"].as_str()
        ),
        (Some("system"), Some("auto"))
    );
    // The disable queued one mail per manager in its own transaction, and it happened once;
    // once the outbox holds nothing unsent, no mail can follow.
    let store = setup.api.store().await;
    eventually(WAIT, "the outbox sent", || async {
        match store.unsent_mail().await.unwrap() {
            0 => Ok(()),
            unsent => Err(format!("{unsent} unsent")),
        }
    })
    .await;
    assert_eq!(smtp.mails().len(), 2, "mailed once");

    // Enabling clears the failure state.
    assert_eq!(
        setup
            .post(&format!("/v4/webhooks/{hook}/enable"))
            .await
            .status,
        200
    );
    let enabled = setup.get(&format!("/v4/webhooks/{hook}")).await.body["webhook"].clone();
    assert!(enabled["health"]["failing_since"].is_null(), "{enabled}");

    // Mail waits for an SMTP server that is down at first.
    if backend == Backend::Sqlite {
        mail_survives_an_smtp_outage().await;
    }
}

/// The SMTP server is down when the notice is queued; the mail arrives once it is up.
async fn mail_survives_an_smtp_outage() {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let smtp_url = format!("smtp://{addr}");
    let Some(setup) = setup_with(
        Backend::Sqlite,
        "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
        true,
        &[
            ("ZIVIO_WEBHOOKS_AUTO_DISABLE_AFTER", "1s"),
            ("ZIVIO_WEBHOOKS_SMTP_URL", &smtp_url),
        ],
    )
    .await
    else {
        return;
    };
    setup.receiver.script("/down", &[Reply::Status(500); 100]);
    let (hook, _) = setup.webhook("/down").await;
    setup.publish().await;
    eventually(WAIT, "the webhook is disabled", || async {
        let shown = setup.get(&format!("/v4/webhooks/{hook}")).await;
        if shown.body["webhook"]["enabled"] == false {
            Ok(())
        } else {
            Err(shown.text)
        }
    })
    .await;
    eventually(WAIT, "the failed send is logged", || async {
        let logs = setup.api.service.logs();
        if logs
            .iter()
            .any(|line| line.to_string().contains("mail not sent"))
        {
            Ok(())
        } else {
            Err(format!("{logs:#?}"))
        }
    })
    .await;
    let smtp = SmtpServer::start_on(addr).await;
    let mails = smtp.wait_for(1, WAIT).await;
    assert_eq!(mails[0].to, ["<u1@acme.example.com>"]);
}

async fn retention_deletes_old_history_but_not_pending_work(backend: Backend) {
    let Some(setup) = setup_with(backend, "1h", true, &[("ZIVIO_WEBHOOKS_RETENTION", "3s")]).await
    else {
        return;
    };
    setup.receiver.script("/pending", &[Reply::Status(500)]);
    let (done, _) = setup.webhook("/done").await;
    let old = setup.publish().await;
    setup.attempts(&old, &done, 1).await;
    let (pending, _) = setup.webhook("/pending").await;
    let kept = setup.publish_type("job.created").await;
    setup.attempts(&kept, &pending, 1).await;
    assert!(
        !setup
            .all_pages(&format!("event_id={old}"), 10)
            .await
            .is_empty()
    );

    eventually(WAIT, "the old event ends with its retention", || async {
        match setup.all_pages(&format!("event_id={old}"), 10).await.len() {
            0 => Ok(()),
            left => Err(format!("{left} of its attempts left")),
        }
    })
    .await;
    let still = setup.all_pages(&format!("event_id={kept}"), 10).await;
    assert_eq!(
        still.len(),
        2,
        "an event with pending work keeps its history"
    );
    let states: Vec<zivio_core::delivery::DeliveryState> = setup
        .api
        .store()
        .await
        .deliveries_of_event(
            &zivio_core::ids::TenantId::parse("acme").unwrap(),
            &crate::support::event_id(&kept),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|delivery| delivery.state)
        .collect();
    assert!(
        states.contains(&zivio_core::delivery::DeliveryState::Pending),
        "{states:?}"
    );
    let audit = setup.get("/v4/audit-log").await;
    assert!(
        !audit.body["entries"].as_array().unwrap().is_empty(),
        "audit entries have their own retention"
    );
}
