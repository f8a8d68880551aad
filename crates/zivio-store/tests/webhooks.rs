//! Webhooks in the store (docs/product.md §4): webhooks that round-trip, stay in their tenant
//! and refuse stale writes, the per-tenant limit, custom headers stored sealed and carried with
//! every send, and the audit log: newest first, outliving its webhooks, purged only when old.
//! Every behaviour runs on SQLite and, when `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL.

use serde_json::json;
use zivio_core::audit::AuditAction;
use zivio_core::webhook::{Disabled, DisabledReason};
use zivio_store::testing::TestDatabase;
use zivio_store::{AuditCursor, Backend, StoreError};

mod support;
use support::*;

contract!(
    webhooks_round_trip_and_stay_in_their_tenant,
    the_webhook_limit_is_enforced_per_tenant,
    audit_entries_page_newest_first_and_outlive_webhooks,
    audit_purge_removes_only_old_entries,
    custom_headers_are_stored_sealed_and_travel_with_each_send,
);

async fn webhooks_round_trip_and_stay_in_their_tenant(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let globex = tenant_with_user(&store, "globex").await;
    let first = webhook(&acme, 1);
    let second = webhook(&acme, 2);
    for hook in [&first, &second] {
        store
            .create_webhook(
                hook,
                100,
                &audit(&acme, NOW, AuditAction::WebhookCreated).webhook(hook.id.as_str()),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.webhooks(&acme).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        store.webhook(&acme, &first.id).await.unwrap(),
        Some(first.clone())
    );
    assert!(
        store.webhook(&globex, &first.id).await.unwrap().is_none(),
        "tenant isolation"
    );
    assert!(store.webhooks(&globex).await.unwrap().is_empty());

    let mut disabled = first.clone();
    disabled.name = "Renamed".into();
    disabled.events = vec!["*".into()];
    disabled.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: Some(user_id("u1")),
        at: NOW,
    });
    disabled.updated_at = NOW + time::Duration::minutes(1);
    store
        .update_webhook(&disabled, &audit(&acme, NOW, AuditAction::WebhookDisabled))
        .await
        .unwrap();
    disabled.version = 1;
    assert_eq!(
        store.webhook(&acme, &first.id).await.unwrap(),
        Some(disabled.clone())
    );

    // A copy read before that update is stale: writing it back would undo the disable.
    let mut stale = first.clone();
    stale.name = "Stale rename".into();
    let error = store
        .update_webhook(&stale, &audit(&acme, NOW, AuditAction::WebhookUpdated))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
    assert_eq!(
        store.webhook(&acme, &first.id).await.unwrap(),
        Some(disabled.clone())
    );

    let mut foreign = disabled.clone();
    foreign.tenant = globex.clone();
    let error = store
        .update_webhook(&foreign, &audit(&globex, NOW, AuditAction::WebhookUpdated))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");

    let delete = audit(&acme, NOW, AuditAction::WebhookDeleted);
    assert!(
        !store
            .delete_webhook(&globex, &first.id, &delete)
            .await
            .unwrap(),
        "not across tenants"
    );
    assert!(
        store
            .delete_webhook(&acme, &first.id, &delete)
            .await
            .unwrap()
    );
    assert!(store.webhook(&acme, &first.id).await.unwrap().is_none());
    assert_eq!(store.webhooks(&acme).await.unwrap(), vec![second]);
}

async fn the_webhook_limit_is_enforced_per_tenant(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let globex = tenant_with_user(&store, "globex").await;
    let created = audit(&acme, NOW, AuditAction::WebhookCreated);
    store
        .create_webhook(&webhook(&acme, 1), 2, &created)
        .await
        .unwrap();
    store
        .create_webhook(&webhook(&acme, 2), 2, &created)
        .await
        .unwrap();
    let error = store
        .create_webhook(&webhook(&acme, 3), 2, &created)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Conflict {
                what: "webhook limit"
            }
        ),
        "{error:?}"
    );
    store
        .create_webhook(
            &webhook(&globex, 4),
            2,
            &audit(&globex, NOW, AuditAction::WebhookCreated),
        )
        .await
        .unwrap();
    let error = store
        .create_webhook(&webhook(&tenant_id("nobody"), 5), 2, &created)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
}

async fn audit_entries_page_newest_first_and_outlive_webhooks(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let hook = webhook(&acme, 1);
    let created = audit(&acme, NOW, AuditAction::WebhookCreated)
        .webhook(hook.id.as_str())
        .changes(json!({"name": {"to": "Hook 1"}}));
    store.create_webhook(&hook, 10, &created).await.unwrap();
    // Two entries at the same instant: the id keeps their order.
    let later = NOW + time::Duration::seconds(1);
    let mut hook = hook;
    for action in [AuditAction::WebhookUpdated, AuditAction::WebhookDisabled] {
        store
            .update_webhook(
                &hook,
                &audit(&acme, later, action).webhook(hook.id.as_str()),
            )
            .await
            .unwrap();
        hook.version += 1;
    }
    store
        .delete_webhook(
            &acme,
            &hook.id,
            &audit(&acme, later, AuditAction::WebhookDeleted).webhook(hook.id.as_str()),
        )
        .await
        .unwrap();

    let first = store.audit_entries(&acme, None, 3).await.unwrap();
    let actions: Vec<&str> = first.iter().map(|r| r.entry.action.as_str()).collect();
    assert_eq!(
        actions,
        ["webhook.deleted", "webhook.disabled", "webhook.updated"]
    );
    let last = first.last().unwrap();
    let cursor = AuditCursor {
        at: last.entry.at,
        id: last.id,
    };
    let rest = store.audit_entries(&acme, Some(cursor), 3).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(
        rest[0].entry, created,
        "entries outlive the webhook and keep their changes"
    );
    assert!(
        store
            .audit_entries(&tenant_id("globex"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn audit_purge_removes_only_old_entries(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let old = webhook(&acme, 1);
    store
        .create_webhook(
            &old,
            10,
            &audit(
                &acme,
                NOW - time::Duration::days(400),
                AuditAction::WebhookCreated,
            ),
        )
        .await
        .unwrap();
    store
        .create_webhook(
            &webhook(&acme, 2),
            10,
            &audit(&acme, NOW, AuditAction::WebhookCreated),
        )
        .await
        .unwrap();
    let purged = store
        .purge_audit(NOW - time::Duration::days(365))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let left = store.audit_entries(&acme, None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].entry.at, NOW);
    assert_eq!(
        store
            .purge_audit(NOW - time::Duration::days(365))
            .await
            .unwrap(),
        0
    );
}

async fn custom_headers_are_stored_sealed_and_travel_with_each_send(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let acme = tenant_with_user(&store, "acme").await;
    let sealed = |name: &str, n: u8| zivio_core::custom_header::SealedHeader {
        name: name.to_owned(),
        ciphertext: vec![n; 40],
        key_id: "k1".into(),
        hint: (n > 1).then(|| "WXYZ".to_owned()),
    };
    let mut hook = webhook(&acme, 1);
    hook.headers = vec![sealed("Authorization", 1), sealed("X-Api-Key", 2)];
    store
        .create_webhook(&hook, 100, &audit(&acme, NOW, AuditAction::WebhookCreated))
        .await
        .unwrap();
    let read = store.webhook(&acme, &hook.id).await.unwrap().unwrap();
    assert_eq!(read.headers, hook.headers);

    let mut changed = read.clone();
    changed.headers = vec![sealed("X-Other", 3)];
    store
        .update_webhook(&changed, &audit(&acme, NOW, AuditAction::WebhookUpdated))
        .await
        .unwrap();
    let read = store.webhook(&acme, &hook.id).await.unwrap().unwrap();
    assert_eq!(read.headers, changed.headers);

    store
        .publish_events(
            &acme,
            &[new_event("evt_h", None, vec![(hook.id.clone(), 0)])],
            NOW,
            None,
        )
        .await
        .unwrap();
    let lease_until = NOW + time::Duration::seconds(60);
    let claimed = store
        .claim_deliveries("h:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(claimed[0].headers, changed.headers, "a claim carries them");
    let targets = store
        .begin_attempts(&[("h:1".to_owned(), claimed[0].id)], NOW, lease_until)
        .await
        .unwrap();
    let target = targets[0].as_ref().expect("still ours");
    assert_eq!(
        target.headers, changed.headers,
        "the pre-send check reads them"
    );
    assert_eq!(target.secret_ciphertext, hook.secret.ciphertext);
}
