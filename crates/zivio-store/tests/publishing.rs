//! Publishing in the store (docs/product.md §2 and §6): each payload stored once and a delivery
//! queued to each enabled webhook, producer keys unique per tenant until their cutoff,
//! deliveries leased to the publishing instance, test events that reach a disabled webhook, and
//! concurrent publishes that commit together and fail alone. Every behaviour runs on SQLite and,
//! when `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL.

use zivio_core::audit::AuditAction;
use zivio_core::webhook::{Disabled, DisabledReason, Webhook, WebhookId};
use zivio_store::testing::TestDatabase;
use zivio_store::{Backend, PublishLease, StoreError};

mod support;
use support::*;

contract!(
    published_events_store_each_payload_once_and_queue_enabled_webhooks,
    producer_keys_are_unique_per_tenant_until_their_cutoff,
    published_deliveries_can_be_leased_to_the_publisher,
    test_events_reach_a_disabled_webhook,
    concurrent_writes_commit_together_and_fail_alone,
);

async fn published_events_store_each_payload_once_and_queue_enabled_webhooks(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let hooks: Vec<Webhook> = (1..=3).map(|n| webhook(&acme, n)).collect();
    for hook in &hooks {
        store
            .create_webhook(hook, 10, &audit(&acme, NOW, AuditAction::WebhookCreated))
            .await
            .unwrap();
    }
    let mut disabled = hooks[2].clone();
    disabled.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: NOW,
    });
    store
        .update_webhook(&disabled, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await
        .unwrap();

    let event = new_event(
        "evt_1",
        None,
        vec![
            (hooks[0].id.clone(), 0),
            (hooks[1].id.clone(), 1),
            (hooks[2].id.clone(), 0),
        ],
    );
    store
        .publish_events(&acme, &[event], NOW, None)
        .await
        .unwrap();
    let queued = store
        .deliveries_of_event(&acme, &evt("evt_1"))
        .await
        .unwrap();
    let mut expected = vec![
        (hooks[0].id.clone(), b"{\"full\":true}".to_vec()),
        (hooks[1].id.clone(), b"{\"shaped\":true}".to_vec()),
    ];
    expected.sort();
    let found: Vec<(WebhookId, Vec<u8>)> = queued
        .iter()
        .map(|d| (d.webhook_id.clone(), d.body.clone()))
        .collect();
    assert_eq!(found, expected, "the disabled webhook gets nothing");
    assert!(queued.iter().all(|d| d.state.as_str() == "pending"));
    assert!(
        store
            .deliveries_of_event(&tenant_id("globex"), &evt("evt_1"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn producer_keys_are_unique_per_tenant_until_their_cutoff(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let globex = tenant_with_user(&store, "globex").await;
    let cutoff = NOW - time::Duration::days(30);
    store
        .publish_events(
            &acme,
            &[new_event("evt_1", Some("k1"), vec![])],
            cutoff,
            None,
        )
        .await
        .unwrap();
    let found = store
        .events_by_key(&acme, &["k1".into(), "k2".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].id.as_str(), found[0].fingerprint.as_slice()),
        ("evt_1", [1u8; 32].as_slice())
    );
    assert!(
        store
            .events_by_key(&globex, &["k1".into()])
            .await
            .unwrap()
            .is_empty()
    );

    let error = store
        .publish_events(
            &acme,
            &[
                new_event("evt_2", None, vec![]),
                new_event("evt_3", Some("k1"), vec![]),
            ],
            cutoff,
            None,
        )
        .await;
    assert!(
        matches!(error, Err(StoreError::Conflict { .. })),
        "{error:?}"
    );
    assert!(
        store
            .deliveries_of_event(&acme, &evt("evt_2"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store.events_by_key(&acme, &["k1".into()]).await.unwrap()[0].id == "evt_1",
        "nothing of the batch was stored"
    );

    store
        .publish_events(
            &globex,
            &[new_event("evt_4", Some("k1"), vec![])],
            cutoff,
            None,
        )
        .await
        .unwrap();
    // Once the first acceptance is older than the cutoff, the key is free again.
    let later_cutoff = NOW + time::Duration::seconds(1);
    store
        .publish_events(
            &acme,
            &[new_event("evt_5", Some("k1"), vec![])],
            later_cutoff,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.events_by_key(&acme, &["k1".into()]).await.unwrap()[0].id,
        "evt_5"
    );
}

/// A publish may store its deliveries leased to its own instance: it gets their ids, nobody
/// can claim them while the lease holds, and they are claimable again once given back (or when
/// the lease expires). Webhooks disabled before the commit get nothing, as without a lease.
async fn published_deliveries_can_be_leased_to_the_publisher(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let hooks: Vec<Webhook> = (1..=3).map(|i| webhook(&acme, i)).collect();
    for hook in &hooks {
        store
            .create_webhook(hook, 100, &audit(&acme, NOW, AuditAction::WebhookCreated))
            .await
            .unwrap();
    }
    let mut off = hooks[2].clone();
    off.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: NOW,
    });
    store
        .update_webhook(&off, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await
        .unwrap();
    let deliveries = hooks.iter().map(|hook| (hook.id.clone(), 0)).collect();
    let lease = PublishLease {
        token: "me:p1".to_owned(),
        until: NOW + time::Duration::minutes(1),
    };
    let mut leased = store
        .publish_leased(
            &acme,
            &[new_event("evt_l", None, deliveries)],
            NOW,
            &lease,
            None,
        )
        .await
        .unwrap();
    leased.sort_by(|a, b| a.webhook_id.cmp(&b.webhook_id));
    let webhooks: Vec<&WebhookId> = leased.iter().map(|d| &d.webhook_id).collect();
    assert_eq!(
        webhooks,
        [&hooks[0].id, &hooks[1].id],
        "the disabled one gets nothing"
    );
    assert!(leased.iter().all(|d| d.event_id == "evt_l"));
    let claim_until = NOW + time::Duration::minutes(5);
    let taken = store
        .claim_deliveries("other:1", NOW, claim_until, 10, 10, &[])
        .await
        .unwrap();
    assert!(taken.is_empty(), "leased at the publish: {taken:?}");
    store
        .release_deliveries(&lease.token, &[leased[0].id])
        .await
        .unwrap();
    let taken = store
        .claim_deliveries("other:2", NOW, claim_until, 10, 10, &[])
        .await
        .unwrap();
    let ids: Vec<_> = taken.iter().map(|d| d.id).collect();
    assert_eq!(ids, [leased[0].id], "given back, then claimable");
    let after_lease = lease.until + time::Duration::seconds(1);
    let taken = store
        .claim_deliveries(
            "other:3",
            after_lease,
            after_lease + time::Duration::minutes(1),
            10,
            10,
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<_> = taken.iter().map(|d| d.id).collect();
    assert_eq!(ids, [leased[1].id], "claimable once the lease expired");
}

async fn test_events_reach_a_disabled_webhook(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
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
    let mut ordinary = new_event("evt_plain", None, vec![(hooks[0].id.clone(), 0)]);
    ordinary.event_type = "invoice.paid".into();
    let mut test = new_event("evt_test_1", None, vec![(hooks[0].id.clone(), 0)]);
    test.event_type = "webhook.test".into();
    test.is_test = true;
    let sent = audit(&acme, NOW, AuditAction::TestEventSent);
    store
        .publish_events(&acme, &[ordinary, test], NOW, Some(&sent))
        .await
        .unwrap();
    assert!(
        store
            .deliveries_of_event(&acme, &evt("evt_plain"))
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = store
        .claim_deliveries("l:1", NOW, NOW + time::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event_id, "evt_test_1");
    let target = store
        .begin_attempt("l:1", claimed[0].id, NOW, NOW + time::Duration::seconds(30))
        .await
        .unwrap();
    assert!(
        target.is_some(),
        "a test event is sent to a disabled webhook"
    );
    let entries = store.audit_entries(&acme, None, 10).await.unwrap();
    assert_eq!(
        entries[0].entry.action, "webhook.test_sent",
        "audited with the event"
    );
    let stored = store
        .event(&acme, &evt("evt_plain"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.source.as_deref(), Some(&b"{\"data\":{}}"[..]));
}

async fn concurrent_writes_commit_together_and_fail_alone(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
    store
        .publish_events(
            &acme,
            &[new_event("evt_taken", Some("taken"), vec![])],
            NOW,
            None,
        )
        .await
        .unwrap();
    // Forty publishes at once (on SQLite they share commits); one reuses a taken key.
    let writes = (0..40).map(|i| {
        let (store, acme, hook) = (store.clone(), acme.clone(), hooks[0].id.clone());
        tokio::spawn(async move {
            let key = if i == 17 {
                "taken".to_owned()
            } else {
                format!("k{i}")
            };
            let event = new_event(&format!("evt_c{i}"), Some(&key), vec![(hook, 0)]);
            store.publish_events(&acme, &[event], NOW, None).await
        })
    });
    let results: Vec<_> = futures_join(writes.collect()).await;
    for (i, result) in results.iter().enumerate() {
        if i == 17 {
            assert!(
                matches!(result, Err(StoreError::Conflict { .. })),
                "{result:?}"
            );
        } else {
            assert!(result.is_ok(), "write {i}: {result:?}");
        }
    }
    for i in 0..40 {
        let queued = store
            .deliveries_of_event(&acme, &evt(&format!("evt_c{i}")))
            .await
            .unwrap();
        assert_eq!(
            queued.len(),
            usize::from(i != 17),
            "evt_c{i}: only the refused write left nothing"
        );
    }
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}
