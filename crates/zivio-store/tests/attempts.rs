//! Recording attempts in the store (docs/product.md §6): an attempt moves its delivery on or
//! finishes it, cancelled work is never resumed, a batch records as its attempts happened in
//! order, a webhook failing too long is disabled once and its active managers mailed (the mail
//! outbox), and recording while an admin disables never deadlocks. Every behaviour runs on
//! SQLite and, when `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL.

use time::OffsetDateTime;
use zivio_core::audit::AuditAction;
use zivio_core::delivery::AttemptId;
use zivio_core::webhook::{Disabled, DisabledReason};
use zivio_store::testing::TestDatabase;
use zivio_store::{AutoDisable, Backend, FinishedAttempt, NewEvent, StoreError};

mod support;
use support::*;

contract!(
    attempts_move_deliveries_on_or_finish_them,
    a_batch_of_attempts_records_as_they_happened_in_order,
    a_webhook_failing_too_long_is_disabled_once_and_its_managers_mailed,
    recording_and_disabling_at_once_never_deadlock,
    cancelled_work_is_never_resumed,
);

async fn attempts_move_deliveries_on_or_finish_them(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    let retry_at = NOW + time::Duration::seconds(5);
    assert!(
        store
            .record_attempt(
                "a:1",
                &attempt_of(&claimed[0], false, Some(retry_at)),
                KEEP_ENABLED
            )
            .await
            .unwrap()
            .moved
    );
    assert!(
        store
            .record_attempt("a:1", &attempt_of(&claimed[1], true, None), KEEP_ENABLED)
            .await
            .unwrap()
            .moved
    );
    let mut repeat = attempt_of(&claimed[1], true, None);
    repeat.id = AttemptId::parse("dlv_repeat").unwrap();
    assert!(
        !store
            .record_attempt("a:1", &repeat, KEEP_ENABLED)
            .await
            .unwrap()
            .moved,
        "a finished delivery stays finished"
    );
    assert!(
        store
            .claim_deliveries("a:2", NOW, lease_until, 10, 100, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_deliveries("a:3", retry_at, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (claimed[0].id, 2));
    assert!(
        store
            .record_attempt("a:3", &attempt_of(&again[0], false, None), KEEP_ENABLED)
            .await
            .unwrap()
            .moved
    );

    let history = store
        .attempts_of(&acme, &evt("evt_q"), &claimed[0].webhook_id)
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0], attempt_of(&claimed[0], false, Some(retry_at)));
    assert_eq!(history[1].next_attempt_at, None);
    let states: Vec<String> = store
        .deliveries_of_event(&acme, &evt("evt_q"))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.state.to_string())
        .collect();
    let succeeded = usize::from(claimed[1].webhook_id != hooks[0].id);
    assert_eq!(states[succeeded], "succeeded");
    assert_eq!(states[1 - succeeded], "failed");
    assert_eq!(store.next_due().await.unwrap(), None);
}

async fn cancelled_work_is_never_resumed(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    let in_flight = claimed
        .iter()
        .find(|c| c.webhook_id == hooks[0].id)
        .unwrap();
    let mut disabled = hooks[0].clone();
    disabled.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: NOW,
    });
    store
        .update_webhook(&disabled, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await
        .unwrap();
    let moved = store
        .record_attempt(
            "a:1",
            &attempt_of(in_flight, false, Some(NOW)),
            KEEP_ENABLED,
        )
        .await
        .unwrap()
        .moved;
    assert!(
        !moved,
        "the in-flight attempt finishes but cannot revive the delivery"
    );
    let history = store
        .attempts_of(&acme, &evt("evt_q"), &hooks[0].id)
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "the attempt is still on record");
    assert_eq!(history[0].next_attempt_at, None);

    // The owner of the other webhook becomes inactive: their pending work is cancelled.
    store.release_all_leases().await.unwrap();
    let mut inactive = user("u1", &["admin"]);
    inactive.active = false;
    store.upsert_user(&acme, &inactive, NOW).await.unwrap();
    assert!(
        store
            .claim_deliveries(
                "b:1",
                NOW + time::Duration::days(1),
                lease_until + time::Duration::days(1),
                10,
                100,
                &[]
            )
            .await
            .unwrap()
            .is_empty()
    );
    let states: Vec<String> = store
        .deliveries_of_event(&acme, &evt("evt_q"))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.state.to_string())
        .collect();
    assert_eq!(states, ["cancelled", "cancelled"]);
}

/// A batch recorded at once (handed over out of order) ends where recording its attempts one
/// by one in time order would: latest attempt, failure streak and counters per webhook, and a
/// webhook disabled once, at its latest failure.
async fn a_batch_of_attempts_records_as_they_happened_in_order(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    for event in ["evt_2", "evt_3"] {
        let deliveries = hooks.iter().map(|hook| (hook.id.clone(), 0)).collect();
        store
            .publish_events(&acme, &[new_event(event, None, deliveries)], NOW, None)
            .await
            .unwrap();
    }
    let claimed = store
        .claim_deliveries("b:1", NOW, NOW + time::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 6);
    let second = time::Duration::seconds(1);
    let retry = Some(NOW + time::Duration::hours(1));
    // (webhook, succeeded, seconds after NOW, retried)
    let plan = [
        (0, false, 2, true),
        (1, true, 0, false),
        (0, false, 0, true),
        (1, false, 2, false),
        (0, true, 1, false),
        (1, false, 1, true),
    ];
    let mut taken = [0, 0];
    let batch: Vec<FinishedAttempt> = plan
        .iter()
        .map(|&(hook, succeeded, after, retried)| {
            let delivery = claimed
                .iter()
                .filter(|c| c.webhook_id == hooks[hook].id)
                .nth(taken[hook])
                .unwrap();
            taken[hook] += 1;
            let mut record = attempt_of(delivery, succeeded, retried.then_some(retry).flatten());
            record.created_at = NOW + second * after;
            FinishedAttempt {
                lease: "b:1".into(),
                record,
                // Hook 1 fails since NOW + 1 s, hook 0 only since NOW + 2 s.
                auto_disable: AutoDisable {
                    failing_before: NOW + time::Duration::milliseconds(1500),
                    mail: false,
                },
            }
        })
        .collect();
    let outcomes = store.record_attempts(batch).await.unwrap();
    assert!(outcomes.iter().all(|outcome| outcome.moved));
    let disabled: Vec<usize> = (0..plan.len())
        .filter(|&i| outcomes[i].auto_disabled)
        .collect();
    assert_eq!(disabled, [3], "hook 1, once, at its latest failure");

    let health = store
        .webhook_health(
            &acme,
            None,
            NOW - time::Duration::days(7),
            NOW - time::Duration::days(1),
        )
        .await
        .unwrap();
    let first = &health[&hooks[0].id];
    assert_eq!(first.last_attempt_at, Some(NOW + 2 * second));
    assert_eq!(first.last_succeeded, Some(false));
    assert_eq!(
        first.failing_since,
        Some(NOW + 2 * second),
        "since the failure after the success"
    );
    assert_eq!((first.succeeded_24h, first.attempts_24h), (1, 3));
    let second_hook = &health[&hooks[1].id];
    assert_eq!(second_hook.last_attempt_at, Some(NOW + 2 * second));
    assert_eq!(second_hook.failing_since, Some(NOW + second));
    assert_eq!(
        (second_hook.succeeded_24h, second_hook.attempts_24h),
        (1, 3)
    );
    assert!(
        store
            .webhook(&acme, &hooks[1].id)
            .await
            .unwrap()
            .unwrap()
            .disabled
            .is_some()
    );
    assert!(
        store
            .webhook(&acme, &hooks[0].id)
            .await
            .unwrap()
            .unwrap()
            .disabled
            .is_none()
    );
    // Hook 0's retries wait; hook 1's was cancelled by the disable.
    let due = store
        .claim_deliveries(
            "b:2",
            NOW + time::Duration::hours(2),
            NOW + time::Duration::hours(3),
            10,
            10,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|d| d.webhook_id == hooks[0].id));
}

async fn a_webhook_failing_too_long_is_disabled_once_and_its_managers_mailed(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
    // A second manager, an inactive one and a user without webhooks:manage.
    store
        .upsert_user(&acme, &user("u2", &["admin"]), NOW)
        .await
        .unwrap();
    let mut gone = user("u3", &["admin"]);
    gone.active = false;
    store.upsert_user(&acme, &gone, NOW).await.unwrap();
    store
        .upsert_user(&acme, &user("u4", &[]), NOW)
        .await
        .unwrap();
    let mut second = new_event("evt_2", None, vec![(hooks[0].id.clone(), 0)]);
    second.accepted_at = NOW + time::Duration::days(3);
    store
        .publish_events(&acme, &[second], NOW, None)
        .await
        .unwrap();

    let policy = |at: OffsetDateTime| AutoDisable {
        failing_before: at - time::Duration::days(5),
        mail: true,
    };
    let claimed = store
        .claim_deliveries("l:1", NOW, NOW + time::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    let first = attempt_of(&claimed[0], false, Some(NOW + time::Duration::days(6)));
    let outcome = store
        .record_attempt("l:1", &first, policy(NOW))
        .await
        .unwrap();
    assert!(!outcome.auto_disabled, "the streak just began");

    let later = NOW + time::Duration::days(6);
    let claimed = store
        .claim_deliveries(
            "l:2",
            later,
            later + time::Duration::seconds(30),
            10,
            10,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let mut failure = attempt_of(&claimed[0], false, Some(later + time::Duration::hours(1)));
    failure.created_at = later;
    failure.error_detail = Some("the receiver answered 503".into());
    let outcome = store
        .record_attempt("l:2", &failure, policy(later))
        .await
        .unwrap();
    assert!(outcome.auto_disabled && outcome.moved);
    let mut again = attempt_of(&claimed[1], false, None);
    again.created_at = later;
    let outcome = store
        .record_attempt("l:2", &again, policy(later))
        .await
        .unwrap();
    assert!(!outcome.auto_disabled, "it happens once");

    let webhook = store.webhook(&acme, &hooks[0].id).await.unwrap().unwrap();
    let disabled = webhook.disabled.unwrap();
    assert_eq!(
        (disabled.reason, disabled.by, disabled.at),
        (DisabledReason::Auto, None, later)
    );
    let states: Vec<String> = store
        .deliveries_of_event(&acme, &evt("evt_q"))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.state.to_string())
        .collect();
    assert_eq!(states, ["cancelled"], "its pending retries stop");
    let entries = store.audit_entries(&acme, None, 10).await.unwrap();
    let entry = entries
        .iter()
        .find(|e| e.entry.action == "webhook.disabled")
        .unwrap();
    assert_eq!(entry.entry.actor_id, "system");
    assert_eq!(entry.entry.changes["reason"], "auto");

    let mut mails = store
        .claim_mail(later, later + time::Duration::minutes(2), 10)
        .await
        .unwrap();
    mails.sort_by(|a, b| a.recipient.cmp(&b.recipient));
    let recipients: Vec<&str> = mails.iter().map(|m| m.recipient.as_str()).collect();
    assert_eq!(
        recipients,
        ["u1@example.com", "u2@example.com"],
        "active managers only"
    );
    let notice: zivio_core::notice::AutoDisabledNotice =
        serde_json::from_str(&mails[0].notice).unwrap();
    assert_eq!(
        notice.url, "https://hooks.example.com",
        "scheme and host only"
    );
    assert_eq!(notice.failing_since, NOW);
    assert_eq!(
        notice.last_error_detail.as_deref(),
        Some("the receiver answered 503")
    );
    assert!(
        store.claim_mail(later, later, 10).await.unwrap().is_empty(),
        "leased"
    );

    // A failed send comes back after its retry time; a sent one never does.
    store
        .mail_failed(
            mails[0].id,
            "connection refused",
            later + time::Duration::seconds(4),
        )
        .await
        .unwrap();
    store.mail_sent(mails[1].id, later).await.unwrap();
    let retry_at = later + time::Duration::seconds(4);
    let retried = store
        .claim_mail(retry_at, retry_at + time::Duration::minutes(2), 10)
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].id, retried[0].attempts), (mails[0].id, 1));
}

async fn recording_and_disabling_at_once_never_deadlock(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
    let events: Vec<NewEvent> = (0..20)
        .map(|i| new_event(&format!("evt_d{i}"), None, vec![(hooks[0].id.clone(), 0)]))
        .collect();
    store
        .publish_events(&acme, &events, NOW, None)
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("l:1", NOW, NOW + time::Duration::seconds(30), 100, 100, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 21);
    // Every failure may disable the webhook (its streak began long enough ago), while an admin
    // disables it by hand: the writes lock rows in one order, so all of them finish.
    let disable_now = AutoDisable {
        failing_before: NOW + time::Duration::days(1),
        mail: true,
    };
    let mut tasks = Vec::new();
    for delivery in claimed {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let attempt = attempt_of(&delivery, false, Some(NOW + time::Duration::minutes(1)));
            store
                .record_attempt("l:1", &attempt, disable_now)
                .await
                .map(|outcome| outcome.auto_disabled)
        }));
    }
    let mut manual = hooks[0].clone();
    manual.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: NOW,
    });
    let by_hand = store
        .update_webhook(&manual, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await;
    assert!(
        matches!(by_hand, Ok(()) | Err(StoreError::Conflict { .. })),
        "{by_hand:?}"
    );
    let mut auto = 0;
    for task in tasks {
        auto += usize::from(task.await.unwrap().expect("no deadlock, no error"));
    }
    assert!(auto <= 1, "disabled automatically at most once");
    assert!(
        store
            .webhook(&acme, &hooks[0].id)
            .await
            .unwrap()
            .unwrap()
            .disabled
            .is_some()
    );
}
