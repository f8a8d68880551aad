//! Recoveries in the store (docs/product.md §7): the exact selection over mixed histories, steps
//! that write all or nothing under the recovery's lease, and the refusals. Every behaviour runs
//! on SQLite and, when `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL.

use std::sync::Arc;

use zivio_core::audit::AuditAction;
use zivio_core::ids::TenantId;
use zivio_core::recovery::{Ending, RecoveryState};
use zivio_core::webhook::{Disabled, DisabledReason, Webhook, WebhookId};
use zivio_store::testing::TestDatabase;
use zivio_store::{
    Backend, FinishedAttempt, NewEvent, PublishLease, Recovery, RecoveryStep, Store, StoreError,
};

mod support;
use support::*;

contract!(
    the_selection_is_exact_over_mixed_histories,
    steps_write_all_or_nothing_under_the_lease,
    one_recovery_per_webhook_and_ten_per_tenant,
);

const LATER: time::Duration = time::Duration::minutes(1);
const FAR: time::Duration = time::Duration::days(1);

fn event(id: &str, to: &WebhookId) -> NewEvent {
    new_event(id, None, vec![(to.clone(), 0)])
}

async fn publish(store: &Arc<dyn Store>, tenant: &TenantId, event: NewEvent) {
    store
        .publish_events(tenant, &[event], NOW, None)
        .await
        .unwrap();
}

/// Claims the one due delivery and records one attempt per outcome: `(succeeded, retry)`.
async fn drive(store: &Arc<dyn Store>, outcomes: &[(bool, bool)]) {
    for (n, (succeeded, retry)) in outcomes.iter().enumerate() {
        let lease = format!("drive:{n}");
        let at = NOW + LATER * (n as i32 + 1);
        let claimed = store
            .claim_deliveries(&lease, at, at + LATER, 10, 10, &[])
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "one delivery due at a time");
        let next = retry.then_some(
            at + if n + 1 < outcomes.len() {
                time::Duration::SECOND
            } else {
                FAR
            },
        );
        let mut record = attempt_of(&claimed[0], *succeeded, next);
        record.created_at = at;
        store
            .record_attempts(vec![FinishedAttempt {
                lease,
                record,
                auto_disable: KEEP_ENABLED,
            }])
            .await
            .unwrap();
    }
}

async fn set_enabled(store: &Arc<dyn Store>, hook: &Webhook, enabled: bool) {
    let mut changed = store
        .webhook(&hook.tenant, &hook.id)
        .await
        .unwrap()
        .unwrap();
    changed.disabled = (!enabled).then_some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: NOW,
    });
    store
        .update_webhook(
            &changed,
            &audit(&hook.tenant, NOW, AuditAction::WebhookUpdated),
        )
        .await
        .unwrap();
}

fn recovery_of(hook: &Webhook, id: &str) -> Recovery {
    Recovery {
        id: id.to_owned(),
        tenant: hook.tenant.clone(),
        webhook_id: hook.id.clone(),
        since: NOW - time::Duration::HOUR,
        until: NOW + time::Duration::HOUR,
        state: RecoveryState::Running,
        ended_reason: None,
        selected: 0,
        resent: 0,
        skipped: 0,
        created_by: "u1".into(),
        created_at: NOW,
        finished_at: None,
    }
}

async fn hooks(store: &Arc<dyn Store>, n: u64) -> (TenantId, Vec<Webhook>) {
    let acme = tenant_with_user(store, "acme").await;
    let hooks: Vec<Webhook> = (1..=n).map(|i| webhook(&acme, i)).collect();
    for hook in &hooks {
        store
            .create_webhook(hook, 100, &audit(&acme, NOW, AuditAction::WebhookCreated))
            .await
            .unwrap();
    }
    (acme, hooks)
}

async fn the_selection_is_exact_over_mixed_histories(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = hooks(&store, 2).await;
    let (h1, h2) = (&hooks[0], &hooks[1]);

    // Cancelled by a disable: after a failed attempt (selected), and before any (not).
    publish(&store, &acme, event("evt_cancelled", &h1.id)).await;
    publish(&store, &acme, event("evt_cancelled_unattempted", &h1.id)).await;
    let lease = "c:1";
    let claimed = store
        .claim_deliveries(lease, NOW, NOW + LATER, 1, 1, &[])
        .await
        .unwrap();
    assert_eq!(claimed[0].event_id, "evt_cancelled");
    store
        .record_attempts(vec![FinishedAttempt {
            lease: lease.into(),
            record: attempt_of(&claimed[0], false, Some(NOW + FAR)),
            auto_disable: KEEP_ENABLED,
        }])
        .await
        .unwrap();
    set_enabled(&store, h1, false).await;
    set_enabled(&store, h1, true).await;

    let histories: [(&str, &[(bool, bool)]); 6] = [
        ("evt_ok", &[(true, false)]),
        ("evt_retry_ok", &[(false, true), (true, false)]),
        ("evt_permanent", &[(false, false)]),
        ("evt_exhausted", &[(false, true), (false, false)]),
        ("evt_retrying", &[(false, true)]),
        ("evt_recovered", &[(false, false)]),
    ];
    for (id, outcomes) in histories {
        publish(&store, &acme, event(id, &h1.id)).await;
        drive(&store, outcomes).await;
    }
    for (id, original, outcomes) in [
        ("evt_resend_ok", "evt_recovered", &[(true, false)][..]),
        (
            "evt_resend_failing",
            "evt_resend_failed",
            &[(false, false)][..],
        ),
    ] {
        if original == "evt_resend_failed" {
            publish(&store, &acme, event(original, &h1.id)).await;
            drive(&store, &[(false, false)]).await;
        }
        let resend = NewEvent {
            resend_of: Some(evt(original)),
            ..event(id, &h1.id)
        };
        publish(&store, &acme, resend).await;
        drive(&store, outcomes).await;
    }
    // A resend still pending protects its original.
    publish(&store, &acme, event("evt_resend_waits", &h1.id)).await;
    drive(&store, &[(false, false)]).await;
    let pending = NewEvent {
        resend_of: Some(evt("evt_resend_waits")),
        ..event("evt_pending_resend", &h1.id)
    };
    publish(&store, &acme, pending).await;
    drive(&store, &[(false, true)]).await;
    // Outside the window, a test event, and another webhook's failure.
    let outside = NewEvent {
        accepted_at: NOW - time::Duration::hours(2),
        ..event("evt_outside", &h1.id)
    };
    publish(&store, &acme, outside).await;
    drive(&store, &[(false, false)]).await;
    let test = NewEvent {
        event_type: zivio_core::catalog::TEST_EVENT_TYPE.into(),
        is_test: true,
        ..event("evt_test_1", &h1.id)
    };
    publish(&store, &acme, test).await;
    drive(&store, &[(false, false)]).await;
    publish(&store, &acme, event("evt_other_webhook", &h2.id)).await;
    drive(&store, &[(false, false)]).await;

    // `evt_resend_failing` (a failed resend of `evt_resend_failed`) is left out: its original
    // goes, so the resource is sent once.
    let expected = [
        "evt_cancelled",
        "evt_exhausted",
        "evt_permanent",
        "evt_resend_failed",
    ];
    let (since, until) = (NOW - time::Duration::HOUR, NOW + time::Duration::HOUR);
    let count = store
        .count_recoverable(&acme, &h1.id, since, until)
        .await
        .unwrap();
    assert_eq!(count, expected.len() as i64);
    let started = store
        .start_recovery(
            &recovery_of(h1, "rcv_1"),
            10,
            &audit(&acme, NOW, AuditAction::RecoveryStarted),
        )
        .await
        .unwrap();
    assert_eq!(started.selected, expected.len() as i64);
    let mut selected = store.pending_recovery_items("rcv_1", 100).await.unwrap();
    selected.sort();
    assert_eq!(selected, expected);
    let entries = store.audit_entries(&acme, None, 1).await.unwrap();
    assert_eq!(entries[0].entry.action, "recovery.started");
    assert_eq!(entries[0].entry.changes["selected"], expected.len());
}

async fn steps_write_all_or_nothing_under_the_lease(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = hooks(&store, 1).await;
    let hook = &hooks[0];
    for id in ["evt_a", "evt_b", "evt_c"] {
        publish(&store, &acme, event(id, &hook.id)).await;
        drive(&store, &[(false, false)]).await;
    }
    store
        .start_recovery(
            &recovery_of(hook, "rcv_s"),
            10,
            &audit(&acme, NOW, AuditAction::RecoveryStarted),
        )
        .await
        .unwrap();
    let claimed = store
        .claim_recovery("i1:1", NOW, NOW + LATER)
        .await
        .unwrap()
        .expect("a running recovery nobody works on");
    assert_eq!(claimed.id, "rcv_s");
    assert!(
        store
            .claim_recovery("i2:1", NOW, NOW + LATER)
            .await
            .unwrap()
            .is_none(),
        "one instance at a time"
    );
    let step = |lease: &str, resend: &str, original: &str, skipped: &str| RecoveryStep {
        recovery: "rcv_s".into(),
        tenant: acme.clone(),
        lease: lease.into(),
        lease_until: NOW + LATER * 2,
        resends: vec![NewEvent {
            resend_of: Some(evt(original)),
            ..event(resend, &hook.id)
        }],
        settled: vec![(evt(original), Some(evt(resend))), (evt(skipped), None)],
        deliveries_lease: None,
    };
    // Under another lease nothing is written.
    assert!(
        store
            .record_recovery_step(step("i2:1", "evt_r0", "evt_a", "evt_b"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.event(&acme, &evt("evt_r0")).await.unwrap().is_none());
    // Its deliveries may be stored leased to the instance, for its engine's hand-off.
    let handed = RecoveryStep {
        deliveries_lease: Some(PublishLease {
            token: "i1:p1".into(),
            until: NOW + LATER,
        }),
        ..step("i1:1", "evt_r1", "evt_a", "evt_b")
    };
    let leased = store
        .record_recovery_step(handed)
        .await
        .unwrap()
        .expect("written under the live lease");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].event_id, "evt_r1");
    assert_eq!(
        store.pending_recovery_items("rcv_s", 10).await.unwrap(),
        ["evt_c"]
    );
    assert_eq!(
        store.still_pending(&[evt("evt_r1")]).await.unwrap(),
        ["evt_r1"]
    );
    let now = store.recovery(&acme, "rcv_s").await.unwrap().unwrap();
    assert_eq!((now.selected, now.resent, now.skipped), (3, 1, 1));

    // After the lease expires another instance takes over; the first can write no more.
    let later = NOW + LATER * 3;
    let taken = store
        .claim_recovery("i2:2", later, later + LATER)
        .await
        .unwrap();
    assert_eq!(taken.map(|r| r.id).as_deref(), Some("rcv_s"));
    assert!(
        store
            .record_recovery_step(step("i1:1", "evt_r2", "evt_c", "evt_c"))
            .await
            .unwrap()
            .is_none()
    );

    // Cancelled: nothing more, even under the live lease.
    let ending = Ending::CancelledBy(user_id("u1"));
    let ended = store
        .end_recovery(
            &acme,
            "rcv_s",
            &ending,
            later,
            &audit(&acme, later, AuditAction::RecoveryEnded),
        )
        .await
        .unwrap()
        .expect("it was running");
    assert_eq!(ended.state, RecoveryState::Cancelled);
    assert_eq!(ended.ended_reason.as_deref(), Some("cancelled by u1"));
    assert_eq!(ended.finished_at, Some(later));
    assert!(
        store
            .record_recovery_step(step("i2:2", "evt_r3", "evt_c", "evt_c"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .end_recovery(
                &acme,
                "rcv_s",
                &Ending::Done,
                later,
                &audit(&acme, later, AuditAction::RecoveryEnded)
            )
            .await
            .unwrap()
            .is_none()
    );
    let entry = &store.audit_entries(&acme, None, 1).await.unwrap()[0].entry;
    assert_eq!(entry.action, "recovery.ended");
    assert_eq!(
        (
            entry.changes["resent"].clone(),
            entry.changes["skipped"].clone()
        ),
        (1.into(), 1.into())
    );
    assert_eq!(store.running_recoveries().await.unwrap(), 0);
    let listed = store.recoveries(&acme, &hook.id).await.unwrap();
    assert_eq!(listed.len(), 1);
}

async fn one_recovery_per_webhook_and_ten_per_tenant(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = hooks(&store, 11).await;
    let start = |hook: &Webhook, id: String| {
        let store = store.clone();
        let recovery = recovery_of(hook, &id);
        let audit = audit(&acme, NOW, AuditAction::RecoveryStarted);
        async move { store.start_recovery(&recovery, 10, &audit).await }
    };
    start(&hooks[0], "rcv_0".into()).await.unwrap();
    let again = start(&hooks[0], "rcv_0b".into()).await.unwrap_err();
    assert!(
        matches!(again, StoreError::Conflict { what } if what.contains("this webhook")),
        "{again:?}"
    );
    for (n, hook) in hooks.iter().enumerate().take(10).skip(1) {
        start(hook, format!("rcv_{n}")).await.unwrap();
    }
    let eleventh = start(&hooks[10], "rcv_10".into()).await.unwrap_err();
    assert!(
        matches!(eleventh, StoreError::Conflict { what } if what.contains("tenant")),
        "{eleventh:?}"
    );
    assert_eq!(store.running_recoveries().await.unwrap(), 10);
}
