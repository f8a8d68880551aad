//! Rate limits in the store (docs/product.md §4): the limit travels with the webhook and with
//! every claim and pre-send read, each second's allowance is handed out once over every
//! instance, and a delivery that waited too long for it ends without touching the webhook's
//! health. Every behaviour runs on SQLite and, when `ZIVIO_TEST_DATABASE_URL` is set, on
//! PostgreSQL.

use std::sync::Arc;

use zivio_core::audit::AuditAction;
use zivio_core::error_kind::ErrorKind;
use zivio_core::rate_limit::RateLimit;
use zivio_store::testing::TestDatabase;
use zivio_store::{AutoDisable, Backend, FinishedAttempt};

mod support;
use support::*;

contract!(
    the_limit_travels_with_the_webhook_and_each_send,
    each_seconds_allowance_is_handed_out_once,
    due_deliveries_are_counted_per_webhook,
    waiting_too_long_leaves_health_alone,
);

fn limit(per_second: i64) -> RateLimit {
    RateLimit::new(per_second).unwrap()
}

async fn the_limit_travels_with_the_webhook_and_each_send(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let mut hook = webhook(&acme, 1);
    hook.rate_limit = Some(limit(5));
    store
        .create_webhook(&hook, 100, &audit(&acme, NOW, AuditAction::WebhookCreated))
        .await
        .unwrap();
    let read = store.webhook(&acme, &hook.id).await.unwrap().unwrap();
    assert_eq!(read.rate_limit, Some(limit(5)));

    store
        .publish_events(
            &acme,
            &[new_event("evt_r", None, vec![(hook.id.clone(), 0)])],
            NOW,
            None,
        )
        .await
        .unwrap();
    let lease_until = NOW + time::Duration::seconds(60);
    let claimed = store
        .claim_deliveries("r:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(claimed[0].rate_limit, Some(limit(5)), "a claim carries it");
    assert_eq!(claimed[0].due_at, NOW, "and when the delivery became due");

    let mut changed = read.clone();
    changed.rate_limit = None;
    store
        .update_webhook(&changed, &audit(&acme, NOW, AuditAction::WebhookUpdated))
        .await
        .unwrap();
    assert_eq!(
        store
            .webhook(&acme, &hook.id)
            .await
            .unwrap()
            .unwrap()
            .rate_limit,
        None
    );
    let targets = store
        .begin_attempts(&[("r:1".to_owned(), claimed[0].id)], NOW, lease_until)
        .await
        .unwrap();
    let target = targets[0].as_ref().expect("still ours");
    assert_eq!(target.rate_limit, None, "the pre-send read sees the change");
}

async fn each_seconds_allowance_is_handed_out_once(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let hook = webhook(&acme, 1);
    store
        .create_webhook(&hook, 100, &audit(&acme, NOW, AuditAction::WebhookCreated))
        .await
        .unwrap();
    let second = NOW.unix_timestamp();
    let five = limit(5);
    assert_eq!(
        store
            .take_rate_tokens(&hook.id, second, 3, five)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .take_rate_tokens(&hook.id, second, 3, five)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .take_rate_tokens(&hook.id, second, 1, five)
            .await
            .unwrap(),
        0
    );
    // A new second, a new allowance; never more than the limit at once.
    assert_eq!(
        store
            .take_rate_tokens(&hook.id, second + 1, 50, five)
            .await
            .unwrap(),
        5
    );

    // Many instances asking at once share one allowance: together they get the limit exactly.
    let seven = limit(7);
    let askers: Vec<_> = (0..20)
        .map(|_| {
            let (store, hook) = (Arc::clone(&store), hook.id.clone());
            tokio::spawn(async move { store.take_rate_tokens(&hook, second + 2, 1, seven).await })
        })
        .collect();
    let mut granted = 0;
    for asker in askers {
        granted += asker.await.unwrap().unwrap();
    }
    assert_eq!(granted, 7);

    // Past seconds are purged; the current one stays.
    assert_eq!(store.purge_rate_seconds(second + 2).await.unwrap(), 2);
    assert_eq!(
        store
            .take_rate_tokens(&hook.id, second + 2, 1, seven)
            .await
            .unwrap(),
        0
    );
}

async fn due_deliveries_are_counted_per_webhook(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let both = vec![(hooks[0].id.clone(), 0), (hooks[1].id.clone(), 0)];
    store
        .publish_events(&acme, &[new_event("evt_2", None, both)], NOW, None)
        .await
        .unwrap();
    let ids = [hooks[0].id.clone(), hooks[1].id.clone()];
    let due = store.due_deliveries(&ids, NOW).await.unwrap();
    assert_eq!((due[&ids[0]], due[&ids[1]]), (2, 2));
    let before = NOW - time::Duration::SECOND;
    assert!(store.due_deliveries(&ids, before).await.unwrap().is_empty());

    // Leased or not, a pending delivery is due until its attempt is recorded.
    let lease_until = NOW + time::Duration::seconds(60);
    let claimed = store
        .claim_deliveries("d:1", NOW, lease_until, 1, 1, &[hooks[1].id.clone()])
        .await
        .unwrap();
    assert_eq!(store.due_deliveries(&ids, NOW).await.unwrap()[&ids[0]], 2);
    let record = attempt_of(&claimed[0], true, None);
    store
        .record_attempts(vec![FinishedAttempt {
            lease: "d:1".into(),
            record,
            auto_disable: KEEP_ENABLED,
        }])
        .await
        .unwrap();
    let due = store.due_deliveries(&ids, NOW).await.unwrap();
    assert_eq!((due[&ids[0]], due[&ids[1]]), (1, 2));
}

async fn waiting_too_long_leaves_health_alone(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
    let lease_until = NOW + time::Duration::seconds(60);
    let claimed = store
        .claim_deliveries("w:1", NOW, lease_until, 1, 1, &[])
        .await
        .unwrap();
    let mut record = attempt_of(&claimed[0], false, None);
    record.response_status = None;
    record.error_kind = Some(ErrorKind::RateLimited);
    // Even a failure that would disable the webhook at once.
    let outcomes = store
        .record_attempts(vec![FinishedAttempt {
            lease: "w:1".into(),
            record,
            auto_disable: AutoDisable {
                failing_before: NOW + time::Duration::DAY,
                mail: false,
            },
        }])
        .await
        .unwrap();
    assert!(outcomes[0].moved && !outcomes[0].auto_disabled);
    let delivery = &store
        .deliveries_of_event(&acme, &evt("evt_q"))
        .await
        .unwrap()[0];
    assert_eq!(delivery.state.as_str(), "failed", "the delivery ends");
    let hook = store.webhook(&acme, &hooks[0].id).await.unwrap().unwrap();
    assert!(hook.is_enabled());
    let health = store
        .webhook_health(&acme, Some(&hook.id), NOW - time::Duration::DAY, NOW)
        .await
        .unwrap();
    let counts = health.get(&hook.id).cloned();
    assert!(
        counts.as_ref().is_none_or(|c| c.failing_since.is_none()
            && c.last_attempt_at.is_none()
            && c.attempts_7d == 0),
        "nothing of the receiver's health: {counts:?}"
    );
}
