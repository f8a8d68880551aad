//! Claims in the store (docs/product.md §6): due deliveries leased once until the lease
//! expires, released and handed out again, a share at most of one webhook per claim, webhooks
//! skipped on request, an ended lease taken over, concurrent claims that never share a delivery,
//! whether anything a send depends on changed since, a corrupt row that fails alone, and work
//! given back that wakes the other instances. Every
//! behaviour runs on SQLite and, when `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL.

use zivio_core::audit::AuditAction;
use zivio_store::Backend;
use zivio_store::testing::TestDatabase;

mod support;
use support::*;

contract!(
    due_deliveries_are_leased_once_until_the_lease_expires,
    claims_skip_the_webhooks_asked_to,
    an_ended_lease_leaves_its_holder_only_for_a_claim_that_takes_it,
    claims_take_at_most_so_many_of_one_webhook,
    claims_know_whether_anything_a_send_depends_on_changed,
    a_corrupt_queued_row_fails_alone,
    concurrent_claims_never_share_a_delivery,
    work_given_back_wakes_the_other_instances,
);

async fn due_deliveries_are_leased_once_until_the_lease_expires(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    queued(&store, 3).await;
    let lease_until = NOW + time::Duration::seconds(30);
    assert!(
        store
            .claim_deliveries(
                "early",
                NOW - time::Duration::seconds(1),
                lease_until,
                10,
                100,
                &[]
            )
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let first = store
        .claim_deliveries("a:1", NOW, lease_until, 2, 100, &[])
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].attempt, 1);
    assert_eq!(first[0].body.as_ref(), b"{\"full\":true}");
    assert_eq!(first[0].event_type, "invoice.paid");
    assert_eq!(first[0].secret_ciphertext, vec![1, 2, 3, 1]);
    let second = store
        .claim_deliveries("b:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "leased work is not handed out twice");
    assert!(
        store
            .claim_deliveries("c:1", NOW, lease_until, 10, 100, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store
        .claim_deliveries(
            "c:2",
            lease_until,
            lease_until + time::Duration::seconds(30),
            10,
            100,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        expired.len(),
        3,
        "expired leases return the work to the queue"
    );

    store
        .release_deliveries("c:2", &[expired[0].id])
        .await
        .unwrap();
    assert_eq!(store.release_all_leases().await.unwrap(), 2);
    assert_eq!(store.next_due().await.unwrap(), Some(NOW));
    assert_eq!(
        store
            .claim_deliveries("d:1", NOW, lease_until, 10, 100, &[])
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn claims_take_at_most_so_many_of_one_webhook(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    // A backlog of three more events for the first webhook, older than everything else.
    for n in 0..3 {
        let mut event = new_event(
            &format!("evt_backlog_{n}"),
            None,
            vec![(hooks[0].id.clone(), 0)],
        );
        event.accepted_at = NOW - time::Duration::minutes(10 - n);
        store
            .publish_events(&acme, &[event], NOW, None)
            .await
            .unwrap();
    }
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 3, 2, &[])
        .await
        .unwrap();
    let first = claimed
        .iter()
        .filter(|c| c.webhook_id == hooks[0].id)
        .count();
    assert_eq!(first, 2, "at most two of the backlogged webhook");
    assert!(
        claimed.iter().any(|c| c.webhook_id == hooks[1].id),
        "the other webhook is not crowded out"
    );
}

/// SQLite (one process owns it) tells a claim whether webhooks or the directory changed since;
/// PostgreSQL never vouches for that (other instances write too).
async fn claims_know_whether_anything_a_send_depends_on_changed(
    database: &TestDatabase,
    backend: Backend,
) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 1, 1, &[])
        .await
        .unwrap();
    let generation = claimed[0].generation;
    match backend {
        Backend::Postgres => {
            assert_eq!(generation, None);
            return;
        }
        Backend::Sqlite => assert_eq!(store.change_generation(), generation),
    }
    let generation = generation.unwrap();
    // The queue's own writes change nothing a send depends on.
    let event = new_event("evt_more", None, vec![(hooks[1].id.clone(), 0)]);
    store
        .publish_events(&acme, &[event], NOW, None)
        .await
        .unwrap();
    let more = store
        .claim_deliveries("a:2", NOW, lease_until, 10, 10, &[])
        .await
        .unwrap();
    store
        .release_deliveries("a:2", &more.iter().map(|c| c.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(
        store.change_generation(),
        Some(generation),
        "publishing and claiming"
    );
    // A change to a webhook (a rotation, say) is one.
    let mut rotated = store.webhook(&acme, &hooks[0].id).await.unwrap().unwrap();
    rotated.secret.hint = "new!".into();
    store
        .update_webhook(
            &rotated,
            &audit(&acme, NOW, AuditAction::WebhookSecretRotated),
        )
        .await
        .unwrap();
    assert_ne!(store.change_generation(), Some(generation));
    let again = store
        .claim_deliveries("a:3", NOW, lease_until, 10, 10, &[])
        .await
        .unwrap();
    let current = again[0].generation.unwrap();
    assert_eq!(store.change_generation(), Some(current));
    // So is a change to the directory.
    store
        .upsert_user(&acme, &user("u9", &["admin"]), NOW)
        .await
        .unwrap();
    assert_ne!(store.change_generation(), Some(current));
}

async fn claims_skip_the_webhooks_asked_to(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (_, hooks) = queued(&store, 3).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let skip = [hooks[0].id.clone(), hooks[2].id.clone()];
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &skip)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].webhook_id, hooks[1].id);
}

async fn an_ended_lease_leaves_its_holder_only_for_a_claim_that_takes_it(
    database: &TestDatabase,
    _: Backend,
) {
    let store = open(database).await;
    let (_, hooks) = queued(&store, 3).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let held = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    // The holder stalls past its lease. A claim that skips every webhook takes nothing, and one
    // allowed a share of one takes one delivery, not all three.
    let later = lease_until + time::Duration::seconds(1);
    let after = later + time::Duration::seconds(30);
    let all: Vec<_> = hooks.iter().map(|hook| hook.id.clone()).collect();
    let skipping = store
        .claim_deliveries("b:1", later, after, 10, 1, &all)
        .await
        .unwrap();
    assert!(skipping.is_empty());
    let taken = store
        .claim_deliveries("b:2", later, after, 10, 1, &[])
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "a share at a time");
    // The late holder still records what was not taken from it, and not what was.
    for delivery in &held {
        let recorded = store
            .record_attempt("a:1", &attempt_of(delivery, true, None), KEEP_ENABLED)
            .await
            .unwrap();
        assert_eq!(
            recorded.moved,
            delivery.id != taken[0].id,
            "{}",
            delivery.id
        );
    }
}

async fn concurrent_claims_never_share_a_delivery(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    queued(&store, 30).await;
    let other = open(database).await;
    let lease_until = NOW + time::Duration::seconds(30);
    let (a, b) = tokio::join!(
        store.claim_deliveries("a:1", NOW, lease_until, 20, 100, &[]),
        other.claim_deliveries("b:1", NOW, lease_until, 20, 100, &[])
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 30);
    assert!(a.iter().all(|x| b.iter().all(|y| x.id != y.id)));
}

async fn a_corrupt_queued_row_fails_alone(database: &TestDatabase, backend: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    // Damage one row behind the store's back, as a bad migration or manual edit might.
    let damage = "UPDATE deliveries SET tenant_id = 'not a tenant id!' WHERE webhook_id = $1";
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            sqlx::query(damage)
                .bind(hooks[0].id.as_str())
                .execute(&pool)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            sqlx::query(damage)
                .bind(hooks[0].id.as_str())
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    let lease_until = NOW + time::Duration::seconds(30);
    let claimed = store
        .claim_deliveries("a:1", NOW, lease_until, 10, 100, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the readable delivery still goes out");
    assert_eq!(claimed[0].webhook_id, hooks[1].id);
    let states: Vec<String> = store
        .deliveries_of_event(&acme, &evt("evt_q"))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.state.to_string())
        .collect();
    assert_eq!(
        states,
        ["pending"],
        "only the readable delivery is left in the tenant's queue"
    );
}

/// What an engine gives back (more than it holds in memory) is for any instance: on PostgreSQL
/// the release announces it, so instances listening claim it at once instead of at their next
/// poll. (SQLite has one instance and nothing to announce.)
async fn work_given_back_wakes_the_other_instances(database: &TestDatabase, backend: Backend) {
    if backend == Backend::Sqlite {
        return;
    }
    let store = open(database).await;
    queued(&store, 1).await;
    let claimed = store
        .claim_deliveries("a:1", NOW, NOW + time::Duration::seconds(30), 10, 100, &[])
        .await
        .unwrap();
    let other = open(database).await;
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let listening = tokio::spawn({
        let wake = wake.clone();
        async move { other.listen_for_work(wake).await }
    });
    // Listening has begun once a notification gets through; until then, send more.
    let woken = wake.notified();
    tokio::pin!(woken);
    for _ in 0..50 {
        woken.as_mut().enable();
        store
            .release_deliveries("a:1", &[claimed[0].id])
            .await
            .unwrap();
        if tokio::time::timeout(std::time::Duration::from_millis(200), woken.as_mut())
            .await
            .is_ok()
        {
            listening.abort();
            return;
        }
    }
    panic!("releasing work never woke the listening instance");
}
