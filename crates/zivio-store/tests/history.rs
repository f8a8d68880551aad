//! Delivery history in the store (docs/product.md §7): the deliveries log, filtered and paged
//! newest first with every filter served by an index in page order, health counts that
//! follow the attempts, and retention that deletes old history but never pending work. Every
//! behaviour runs on SQLite and, when `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL.

use std::sync::Arc;

use time::OffsetDateTime;
use time::macros::datetime;
use zivio_core::audit::AuditAction;
use zivio_core::delivery::AttemptId;
use zivio_core::ids::TenantId;
use zivio_core::webhook::{Disabled, DisabledReason, WebhookId};
use zivio_store::testing::TestDatabase;
use zivio_store::{AttemptCursor, AttemptFilter, AttemptRecord, Backend, ClaimedDelivery};
use zivio_store::{EventTypeFilter, HealthCounts, Store};

mod support;
use support::*;

contract!(
    the_deliveries_log_filters_and_pages_newest_first,
    every_deliveries_log_filter_is_served_by_a_tenant_index,
    health_counts_follow_the_attempts,
    retention_deletes_old_history_but_never_pending_work,
);

/// Claims everything due at `at` under `lease` and records one attempt per claimed delivery,
/// each a millisecond after the last, as `outcome` says.
async fn attempt_all(
    store: &Arc<dyn Store>,
    lease: &str,
    at: OffsetDateTime,
    outcome: impl Fn(&ClaimedDelivery) -> (bool, Option<OffsetDateTime>),
) -> Vec<AttemptRecord> {
    let claimed = store
        .claim_deliveries(lease, at, at + time::Duration::seconds(30), 100, 100, &[])
        .await
        .unwrap();
    let mut recorded = Vec::new();
    for (i, delivery) in claimed.iter().enumerate() {
        let (succeeded, next) = outcome(delivery);
        let mut attempt = attempt_of(delivery, succeeded, next);
        attempt.created_at = at + time::Duration::milliseconds(i as i64);
        store
            .record_attempt(lease, &attempt, KEEP_ENABLED)
            .await
            .unwrap();
        recorded.push(attempt);
    }
    recorded
}

fn filter() -> AttemptFilter {
    AttemptFilter {
        limit: 100,
        ..AttemptFilter::default()
    }
}

async fn ids(store: &Arc<dyn Store>, tenant: &TenantId, filter: &AttemptFilter) -> Vec<AttemptId> {
    store
        .delivery_attempts(tenant, filter)
        .await
        .unwrap()
        .into_iter()
        .map(|attempt| attempt.id)
        .collect()
}

async fn the_deliveries_log_filters_and_pages_newest_first(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let mut job = new_event(
        "evt_job",
        None,
        hooks.iter().map(|h| (h.id.clone(), 1)).collect(),
    );
    job.event_type = "job.created".into();
    store
        .publish_events(&acme, &[job], NOW, None)
        .await
        .unwrap();
    // First round: hook 1 fails (and retries), hook 2 succeeds; then hook 1 succeeds.
    let first = attempt_all(&store, "l:1", NOW, |d| {
        let ok = d.webhook_id == hooks[1].id;
        (ok, (!ok).then_some(NOW + time::Duration::minutes(1)))
    })
    .await;
    assert_eq!(first.len(), 4);
    let later = NOW + time::Duration::minutes(1);
    let second = attempt_all(&store, "l:2", later, |_| (true, None)).await;
    assert_eq!(second.len(), 2);
    let all: Vec<&AttemptRecord> = first.iter().chain(&second).collect();
    let newest_first = |keep: &dyn Fn(&AttemptRecord) -> bool| -> Vec<AttemptId> {
        let mut kept: Vec<&&AttemptRecord> = all.iter().filter(|a| keep(a)).collect();
        kept.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        kept.iter().map(|a| a.id.clone()).collect()
    };

    assert_eq!(ids(&store, &acme, &filter()).await, newest_first(&|_| true));
    let by_hook = AttemptFilter {
        webhook: Some(hooks[0].id.clone()),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &by_hook).await,
        newest_first(&|a| a.webhook_id == hooks[0].id)
    );
    let failed_of_hook = AttemptFilter {
        succeeded: Some(false),
        ..by_hook.clone()
    };
    assert_eq!(
        ids(&store, &acme, &failed_of_hook).await,
        newest_first(&|a| a.webhook_id == hooks[0].id && !a.succeeded)
    );
    let jobs = AttemptFilter {
        event_type: Some(EventTypeFilter::Exact("job.created".into())),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &jobs).await,
        newest_first(&|a| a.event_type == "job.created")
    );
    let invoices = AttemptFilter {
        event_type: Some(EventTypeFilter::AnyOf(vec![
            "invoice.paid".into(),
            "invoice.voided".into(),
        ])),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &invoices).await,
        newest_first(&|a| a.event_type == "invoice.paid")
    );
    let by_event = AttemptFilter {
        event_id: Some(evt("evt_job")),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &by_event).await,
        newest_first(&|a| a.event_id == "evt_job")
    );
    let in_range = AttemptFilter {
        from: Some(later),
        to: Some(later + time::Duration::seconds(1)),
        ..filter()
    };
    assert_eq!(
        ids(&store, &acme, &in_range).await,
        newest_first(&|a| a.created_at >= later)
    );
    // Filters read in legs page like the rest: one attempt per page, nothing repeated or lost.
    let two_types = AttemptFilter {
        event_type: Some(EventTypeFilter::AnyOf(vec![
            "invoice.paid".into(),
            "job.created".into(),
        ])),
        ..filter()
    };
    for (legs, expected) in [
        (&by_hook, newest_first(&|a| a.webhook_id == hooks[0].id)),
        (&two_types, newest_first(&|_| true)),
    ] {
        let mut page = AttemptFilter {
            limit: 1,
            ..legs.clone()
        };
        let mut seen = Vec::new();
        while let [last] = &store.delivery_attempts(&acme, &page).await.unwrap()[..] {
            seen.push(last.id.clone());
            assert!(seen.len() <= expected.len(), "pages repeat: {seen:?}");
            page.before = Some(AttemptCursor {
                at: last.created_at,
                id: last.id.clone(),
            });
        }
        assert_eq!(seen, expected);
    }
    let none = AttemptFilter {
        event_type: Some(EventTypeFilter::AnyOf(Vec::new())),
        ..filter()
    };
    assert!(ids(&store, &acme, &none).await.is_empty());

    let other = tenant_with_user(&store, "globex").await;
    assert!(
        ids(&store, &other, &filter()).await.is_empty(),
        "tenants never see each other's attempts"
    );

    // Only the latest attempt of a pending delivery says when the next is due.
    let summaries = store.delivery_attempts(&acme, &filter()).await.unwrap();
    assert!(
        summaries.iter().all(|a| a.next_attempt_at.is_none()),
        "every delivery finished"
    );

    // Pages of two, with a newer attempt arriving between pages: nothing repeats or goes missing.
    let mut page = AttemptFilter {
        limit: 2,
        ..filter()
    };
    let mut seen = Vec::new();
    loop {
        let rows = store.delivery_attempts(&acme, &page).await.unwrap();
        seen.extend(rows.iter().map(|a| a.id.clone()));
        if seen.len() == 2 {
            let mut late = new_event("evt_late", None, vec![(hooks[0].id.clone(), 0)]);
            late.accepted_at = later;
            store
                .publish_events(&acme, &[late], NOW, None)
                .await
                .unwrap();
            attempt_all(&store, "l:3", later + time::Duration::minutes(1), |_| {
                (false, None)
            })
            .await;
        }
        let Some(last) = rows.last().filter(|_| rows.len() == 2) else {
            break;
        };
        page.before = Some(AttemptCursor {
            at: last.created_at,
            id: last.id.clone(),
        });
    }
    assert_eq!(seen, newest_first(&|_| true));

    let detail = store
        .delivery_attempt(&acme, &first[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.summary.id, first[0].id);
    assert_eq!(detail.request_body, b"{\"full\":true}".to_vec());
    assert_eq!(detail.response_body, Some(b"ok".to_vec()));
    assert!(
        store
            .delivery_attempt(&other, &first[0].id)
            .await
            .unwrap()
            .is_none()
    );
}

async fn every_deliveries_log_filter_is_served_by_a_tenant_index(
    database: &TestDatabase,
    backend: Backend,
) {
    let store = open(database).await;
    let (acme, _) = queued(&store, 1).await;
    let claimed = attempt_all(&store, "l:1", NOW, |_| (true, None)).await;
    // Realistic volume: 20 tenants, 40 webhooks, 10,000 events of one delivery each, 30,000
    // attempts, so that the planner weighs indexes against scans as it would in production.
    // The generated deliveries borrow the claimed one's webhook and payload.
    let (deliveries, attempts) = match backend {
        Backend::Sqlite => (
            "WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < 10000)
             INSERT INTO deliveries (id, tenant_id, webhook_id, event_id, payload_id, state, attempts, created_at)
             SELECT 1000000 + k, 't' || (k % 20), d.webhook_id, 'evt_' || k, d.payload_id, 'succeeded', 1,
                    d.created_at
             FROM deliveries d, n WHERE d.id = $1",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
             INSERT INTO delivery_attempts (id, tenant_id, delivery_id, webhook_id, event_id, event_type,
                 attempt, succeeded, request_url, request_headers, duration_ms, created_at)
             SELECT 'dlv_' || i, 't' || (i % 20), 1000000 + i / 3, printf('wh_%032d', i % 40), 'evt_' || (i / 3),
                    CASE i % 3 WHEN 0 THEN 'invoice.paid' WHEN 1 THEN 'job.created' ELSE 'offer.sent' END,
                    1, i % 4 = 0, 'https://x.example/', '{}', 5, 1700000000000 + i * 1000
             FROM n",
        ),
        Backend::Postgres => (
            "INSERT INTO deliveries (id, tenant_id, webhook_id, event_id, payload_id, state, attempts, created_at)
             OVERRIDING SYSTEM VALUE
             SELECT 1000000 + k, 't' || (k % 20), d.webhook_id, 'evt_' || k, d.payload_id, 'succeeded', 1,
                    d.created_at
             FROM deliveries d, generate_series(0, 10000) AS k WHERE d.id = $1",
            "INSERT INTO delivery_attempts (id, tenant_id, delivery_id, webhook_id, event_id, event_type,
                 attempt, succeeded, request_url, request_headers, duration_ms, created_at)
             SELECT 'dlv_' || i, 't' || (i % 20), 1000000 + i / 3, 'wh_' || lpad((i % 40)::text, 32, '0'),
                    'evt_' || (i / 3),
                    CASE i % 3 WHEN 0 THEN 'invoice.paid' WHEN 1 THEN 'job.created' ELSE 'offer.sent' END,
                    1, i % 4 = 0, 'https://x.example/', '{}', 5, to_timestamp(1700000000 + i)
             FROM generate_series(1, 30000) AS i",
        ),
    };
    raw(database, backend, deliveries, claimed[0].queue_entry.0).await;
    raw(database, backend, attempts, 0).await;
    raw(database, backend, "ANALYZE", 0).await;
    let t = tenant_id("t1");
    let hook = WebhookId::parse("wh_00000000000000000000000000000001").unwrap();
    // (name, filter, what the plan must name, whether it may sort). Only one event's attempts
    // are sorted whole (PostgreSQL, which reads them through the event's deliveries); a filter
    // read in legs merges the legs' pages, and SQLite sorts each leg's page (at most a page of
    // rows) again after its subquery.
    let merged = match backend {
        Backend::Sqlite => "MERGE (UNION ALL)",
        Backend::Postgres => "Merge Append",
    };
    let legs_sorted = backend == Backend::Sqlite;
    let cases = [
        (
            "webhook",
            AttemptFilter {
                webhook: Some(hook.clone()),
                ..filter()
            },
            vec!["attempts_webhook_status_time", merged],
            legs_sorted,
        ),
        (
            "webhook+status",
            AttemptFilter {
                webhook: Some(hook.clone()),
                succeeded: Some(true),
                ..filter()
            },
            vec!["attempts_webhook_status_time"],
            false,
        ),
        (
            "event type",
            AttemptFilter {
                event_type: Some(EventTypeFilter::Exact("job.created".into())),
                ..filter()
            },
            vec!["attempts_type_time"],
            false,
        ),
        (
            "category",
            AttemptFilter {
                event_type: Some(EventTypeFilter::AnyOf(vec![
                    "job.created".into(),
                    "job.updated".into(),
                    "job.closed".into(),
                ])),
                ..filter()
            },
            vec!["attempts_type_time", merged],
            legs_sorted,
        ),
        (
            "event id",
            AttemptFilter {
                event_id: Some(evt("evt_7")),
                ..filter()
            },
            vec![match backend {
                Backend::Sqlite => "attempts_event_time",
                Backend::Postgres => "attempts_delivery",
            }],
            backend == Backend::Postgres,
        ),
        (
            "webhook+category",
            AttemptFilter {
                webhook: Some(hook),
                event_type: Some(EventTypeFilter::AnyOf(vec![
                    "job.created".into(),
                    "offer.sent".into(),
                ])),
                ..filter()
            },
            // Either index reads a leg in page order; the planner weighs which is narrower.
            vec![merged],
            legs_sorted,
        ),
        (
            "date range",
            AttemptFilter {
                from: Some(datetime!(2023-11-14 0:00 UTC)),
                to: Some(datetime!(2023-11-16 0:00 UTC)),
                ..filter()
            },
            vec!["attempts_tenant_time"],
            false,
        ),
        (
            "next page",
            AttemptFilter {
                before: Some(AttemptCursor {
                    at: datetime!(2023-11-15 06:00 UTC),
                    id: AttemptId::parse("dlv_9").unwrap(),
                }),
                ..filter()
            },
            vec!["attempts_tenant_time"],
            false,
        ),
    ];
    for (name, filter, names, may_sort) in cases {
        let plan = store.explain_delivery_attempts(&t, &filter).await.unwrap();
        for expected in names {
            assert!(
                plan.contains(expected),
                "{name}: expected {expected} in\n{plan}"
            );
        }
        let sorts: &[&str] = if may_sort {
            &[]
        } else {
            &["TEMP B-TREE", "Sort  ("]
        };
        for scan in [
            "SCAN a\n",
            "SCAN d\n",
            "SCAN delivery_attempts",
            "SCAN deliveries",
            "Seq Scan on delivery_attempts",
            "Seq Scan on deliveries",
        ]
        .iter()
        .chain(sorts)
        {
            assert!(
                !format!("{plan}\n").contains(scan),
                "{name}: `{scan}` in\n{plan}"
            );
        }
    }
    assert!(!ids(&store, &acme, &filter()).await.is_empty());
}

/// Runs one statement on the test database directly, binding `$1`.
async fn raw(database: &TestDatabase, backend: Backend, sql: &'static str, bind: i64) {
    match backend {
        Backend::Sqlite => {
            // Generated deliveries name events that do not exist.
            let options =
                <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&database.url)
                    .unwrap()
                    .foreign_keys(false);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            sqlx::query(sql).bind(bind).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            let query = sqlx::query(sql);
            let query = if sql.contains("$1") {
                query.bind(bind)
            } else {
                query
            };
            query.execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

async fn health_counts_follow_the_attempts(database: &TestDatabase, _: Backend) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 2).await;
    let health = |store: Arc<dyn Store>, acme: TenantId, at: OffsetDateTime| async move {
        store
            .webhook_health(
                &acme,
                None,
                at - time::Duration::days(7),
                at - time::Duration::hours(24),
            )
            .await
            .unwrap()
    };
    let before = health(store.clone(), acme.clone(), NOW).await;
    assert_eq!(before.len(), 2);
    assert_eq!(before[&hooks[0].id], HealthCounts::default());

    // Hook 1 fails twice (two days apart), then succeeds; hook 2 only fails.
    let day = time::Duration::days(1);
    let streak_start = attempt_all(&store, "l:1", NOW, |_| (false, Some(NOW + day)))
        .await
        .into_iter()
        .find(|a| a.webhook_id == hooks[1].id)
        .unwrap()
        .created_at;
    attempt_all(&store, "l:2", NOW + day, |d| {
        (
            false,
            (d.webhook_id == hooks[0].id).then_some(NOW + 2 * day),
        )
    })
    .await;
    let end = NOW + 2 * day;
    attempt_all(&store, "l:3", end, |_| (true, None)).await;
    let after = health(
        store.clone(),
        acme.clone(),
        end + time::Duration::minutes(5),
    )
    .await;
    let first = &after[&hooks[0].id];
    assert_eq!(first.last_attempt_at, Some(end));
    assert_eq!(first.last_succeeded, Some(true));
    assert_eq!(
        first.failing_since, None,
        "a success ends the failure streak"
    );
    assert_eq!((first.succeeded_7d, first.attempts_7d), (1, 3));
    assert_eq!((first.succeeded_24h, first.attempts_24h), (1, 1));
    let second = &after[&hooks[1].id];
    assert_eq!(second.last_succeeded, Some(false));
    assert_eq!(
        second.failing_since,
        Some(streak_start),
        "the first failure since the last success"
    );
    assert_eq!((second.succeeded_7d, second.attempts_7d), (0, 2));
    assert_eq!(
        (second.succeeded_24h, second.attempts_24h),
        (0, 0),
        "its last attempt was 24 hours and 5 minutes ago"
    );
    let only = store
        .webhook_health(&acme, Some(&hooks[1].id), end - 7 * day, end - day)
        .await
        .unwrap();
    assert_eq!(only.len(), 1);

    // Counters older than their window go; the latest attempt stays on the webhook.
    assert_eq!(store.purge_health_counters(NOW + day).await.unwrap(), 2);
    let purged = health(store.clone(), acme.clone(), NOW + day).await;
    assert_eq!(purged[&hooks[1].id].attempts_7d, 1);
    assert_eq!(purged[&hooks[1].id].failing_since, Some(streak_start));

    // Enabling again clears the failure streak.
    let mut disabled = store.webhook(&acme, &hooks[1].id).await.unwrap().unwrap();
    disabled.disabled = Some(Disabled {
        reason: DisabledReason::Manual,
        by: None,
        at: end,
    });
    store
        .update_webhook(&disabled, &audit(&acme, end, AuditAction::WebhookDisabled))
        .await
        .unwrap();
    let mut enabled = store.webhook(&acme, &hooks[1].id).await.unwrap().unwrap();
    enabled.disabled = None;
    store
        .update_webhook(&enabled, &audit(&acme, end, AuditAction::WebhookEnabled))
        .await
        .unwrap();
    assert_eq!(
        health(store.clone(), acme, end).await[&hooks[1].id].failing_since,
        None
    );
}

async fn retention_deletes_old_history_but_never_pending_work(
    database: &TestDatabase,
    backend: Backend,
) {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, 1).await;
    // evt_q (accepted at NOW) is pending; evt_old finished; evt_new is recent.
    let mut old = new_event("evt_old", Some("k-old"), vec![(hooks[0].id.clone(), 0)]);
    old.accepted_at = NOW - time::Duration::days(40);
    let mut new = new_event("evt_new", None, vec![]);
    new.accepted_at = NOW + time::Duration::days(35);
    store
        .publish_events(&acme, &[old, new], NOW, None)
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("l:1", NOW, NOW + time::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    let old_delivery = claimed.iter().find(|c| c.event_id == "evt_old").unwrap();
    store
        .record_attempt("l:1", &attempt_of(old_delivery, true, None), KEEP_ENABLED)
        .await
        .unwrap();
    store.release_all_leases().await.unwrap();

    let cutoff = NOW + time::Duration::days(30);
    assert_eq!(
        store.purge_events(cutoff).await.unwrap(),
        1,
        "only the finished old event"
    );
    assert!(store.event(&acme, &evt("evt_old")).await.unwrap().is_none());
    assert!(
        store
            .attempts_of(&acme, &evt("evt_old"), &hooks[0].id)
            .await
            .unwrap()
            .is_empty()
    );
    // Nothing of it is left behind, whatever ties the tables (PostgreSQL has no key from a
    // delivery to its event or payload).
    for (sql, left) in [
        (
            "SELECT COUNT(*) FROM deliveries WHERE event_id = 'evt_old'",
            0,
        ),
        (
            "SELECT COUNT(*) FROM payloads WHERE event_id = 'evt_old'",
            0,
        ),
        (
            "SELECT COUNT(*) FROM delivery_attempts WHERE event_id = 'evt_old'",
            0,
        ),
        ("SELECT COUNT(*) FROM deliveries", 1),
    ] {
        assert_eq!(count_rows(database, backend, sql).await, left, "{sql}");
    }
    assert!(
        store.event(&acme, &evt("evt_q")).await.unwrap().is_some(),
        "pending work is kept"
    );
    assert_eq!(
        store
            .deliveries_of_event(&acme, &evt("evt_q"))
            .await
            .unwrap()[0]
            .state
            .as_str(),
        "pending"
    );
    assert!(store.event(&acme, &evt("evt_new")).await.unwrap().is_some());
    assert!(
        store
            .events_by_key(&acme, &["k-old".into()])
            .await
            .unwrap()
            .is_empty(),
        "its key is free again"
    );
    assert_eq!(store.purge_events(cutoff).await.unwrap(), 0);
}
