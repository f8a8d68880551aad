//! The plans of the hot statements (every statement a claim runs; recording attempts, the
//! pre-send read and queueing a publish's deliveries) on a queue of realistic size: most
//! deliveries done, many held by the instance that published them (the hand-off), a few free.
//! Each reads an index; none reads the whole `deliveries`, `events`, `payloads` or
//! `delivery_attempts` table, whatever its size. Runs on SQLite and, when
//! `ZIVIO_TEST_DATABASE_URL` is set, on PostgreSQL.

use std::sync::Arc;

use sqlx::Row as _;
use zivio_store::testing::{ClaimStatement, TestDatabase, claim_statements};
use zivio_store::{Backend, NewEvent, StatementPlan, Store};

mod support;
use support::*;

contract!(
    claims_read_indexes_however_large_the_queue,
    hot_statements_read_indexes_however_large_the_queue
);

const EVENTS: usize = 1_000;
const WEBHOOKS: u64 = 20;

/// The index each statement must use.
fn expected_index(statement: &str) -> &'static [&'static str] {
    match statement {
        "take over ended leases" => &["deliveries_lease_end"],
        "claim" => &["deliveries_claimable"],
        "read what was claimed" => &["deliveries_lease"],
        "next due" => &["deliveries_claimable", "deliveries_lease_end"],
        other => panic!("no expectation for {other}"),
    }
}

/// 20,000 deliveries: three in four done, most of the rest held by a live instance for another
/// minute (one in ten of those by a dead one, whose lease has ended), one in forty free; the
/// statistics taken.
async fn realistic_queue(database: &TestDatabase, backend: Backend) -> Arc<dyn Store> {
    let store = open(database).await;
    let (acme, hooks) = queued(&store, WEBHOOKS).await;
    let to_every_webhook: Vec<_> = hooks.iter().map(|hook| (hook.id.clone(), 0)).collect();
    let events: Vec<NewEvent> = (0..EVENTS)
        .map(|n| new_event(&format!("evt_{n}"), None, to_every_webhook.clone()))
        .collect();
    for chunk in events.chunks(100) {
        store.publish_events(&acme, chunk, NOW, None).await.unwrap();
    }
    let (settle, hold) = match backend {
        Backend::Sqlite => (
            "UPDATE deliveries SET state = 'succeeded', next_attempt_at = NULL WHERE id % 4 <> 0",
            "UPDATE deliveries SET lease_owner = 'other:1',
                    lease_expires_at = next_attempt_at + CASE WHEN id % 10 = 0 THEN -60000 ELSE 60000 END
             WHERE state = 'pending' AND id % 40 <> 0",
        ),
        Backend::Postgres => (
            "UPDATE deliveries SET state = 'succeeded', next_attempt_at = NULL WHERE id % 4 <> 0",
            "UPDATE deliveries SET lease_owner = 'other:1',
                    lease_expires_at = next_attempt_at
                        + CASE WHEN id % 10 = 0 THEN interval '-1 minute' ELSE interval '1 minute' END
             WHERE state = 'pending' AND id % 40 <> 0",
        ),
    };
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            for sql in [settle, hold, "ANALYZE"] {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
        }
        Backend::Postgres => {
            use sqlx::Connection as _;
            let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
            for sql in [settle, hold, "ANALYZE"] {
                sqlx::query(sql).execute(&mut connection).await.unwrap();
            }
        }
    }
    store
}

async fn hot_statements_read_indexes_however_large_the_queue(
    database: &TestDatabase,
    backend: Backend,
) {
    let store = realistic_queue(database, backend).await;
    let plans = store.hot_statement_plans().await.unwrap();
    assert_eq!(plans.len(), 5);
    for StatementPlan { statement, plan } in plans {
        assert!(
            !reads_a_whole_large_table(&plan),
            "{statement} reads the whole table:\n{plan}"
        );
    }
}

async fn claims_read_indexes_however_large_the_queue(database: &TestDatabase, backend: Backend) {
    let _store = realistic_queue(database, backend).await;
    let plans = match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            let now = (NOW.unix_timestamp_nanos() / 1_000_000) as i64;
            let until = now + 60_000;
            let mut plans = Vec::new();
            for ClaimStatement { name, sql, .. } in claim_statements(backend) {
                let explain = format!("EXPLAIN QUERY PLAN {sql}");
                let query =
                    bind_sqlite(sqlx::query(sqlx::AssertSqlSafe(explain)), name, now, until);
                let rows = query.fetch_all(&pool).await.unwrap();
                let lines: Vec<String> = rows.iter().map(|row| row.get("detail")).collect();
                plans.push((name, lines.join("\n")));
            }
            plans
        }
        Backend::Postgres => {
            use sqlx::Connection as _;
            let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
            let mut plans = Vec::new();
            // The plan for these values, and, for statements the store prepares once, the
            // generic plan that PostgreSQL may switch to after a few runs, which knows no values.
            for (n, statement) in claim_statements(backend).into_iter().enumerate() {
                let (types, values) = postgres_parameters(statement.name);
                let prepare = format!("PREPARE plan_{n} {types} AS {}", statement.sql);
                sqlx::raw_sql(sqlx::AssertSqlSafe(prepare))
                    .execute(&mut connection)
                    .await
                    .unwrap();
                let modes: &[&str] = if statement.prepared {
                    &["force_custom_plan", "force_generic_plan"]
                } else {
                    &["force_custom_plan"]
                };
                for mode in modes {
                    let explain =
                        format!("SET plan_cache_mode = {mode}; EXPLAIN EXECUTE plan_{n} {values}");
                    let lines: Vec<String> = sqlx::raw_sql(sqlx::AssertSqlSafe(explain))
                        .fetch_all(&mut connection)
                        .await
                        .unwrap()
                        .iter()
                        .map(|row| row.get(0))
                        .collect();
                    plans.push((statement.name, lines.join("\n")));
                }
            }
            plans
        }
    };
    for (name, plan) in plans {
        for index in expected_index(name) {
            assert!(uses(&plan, index), "{name}: expected {index} in\n{plan}");
        }
        if name == "claim" {
            // Each webhook's free work looked up by webhook, not a walk of every free row.
            assert!(
                plan.contains("webhook_id = hooks.id") || plan.contains("(webhook_id=?"),
                "the claim does not look up by webhook:\n{plan}"
            );
            // Only webhooks with free work are visited (found in the index of free work), not
            // every webhook of every tenant.
            assert!(
                !plan.contains("webhooks"),
                "the claim reads the webhooks table:\n{plan}"
            );
        }
        assert!(
            !reads_a_whole_large_table(&plan),
            "{name} reads the whole table:\n{plan}"
        );
    }
}

/// Whether the plan names `index` (not merely an index whose name begins like it).
fn uses(plan: &str, index: &str) -> bool {
    plan.match_indices(index).any(|(at, _)| {
        let next = plan[at + index.len()..].chars().next();
        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The tables that grow with the traffic.
const LARGE: [&str; 4] = ["deliveries", "events", "payloads", "delivery_attempts"];

/// A sequential scan (PostgreSQL) or a scan without an index (SQLite) of a large table, under
/// its name or the aliases the statements give it.
fn reads_a_whole_large_table(plan: &str) -> bool {
    plan.lines().any(|line| {
        let line = line.trim_start_matches(|c: char| !c.is_alphabetic());
        let line = line.strip_prefix("Parallel ").unwrap_or(line);
        let scanned = if let Some(rest) = line.strip_prefix("Seq Scan on ") {
            rest
        } else if let Some(rest) = line.strip_prefix("SCAN ")
            && !line.contains("INDEX")
        {
            rest
        } else {
            return false;
        };
        let table = scanned.split(' ').next().unwrap_or_default();
        LARGE.contains(&table) || ["d", "e", "p", "a"].contains(&table)
    })
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_sqlite<'q>(query: SqliteQuery<'q>, name: &str, now: i64, until: i64) -> SqliteQuery<'q> {
    match name {
        "take over ended leases" => query
            .bind("test:1")
            .bind(now)
            .bind(until)
            .bind(16_i64)
            .bind("[]"),
        "claim" => query
            .bind("test:1")
            .bind(now)
            .bind(until)
            .bind(100_i64)
            .bind("[]")
            .bind(16_i64),
        "read what was claimed" => query.bind("test:1"),
        _ => query,
    }
}

/// The parameters' types and the values to plan with, as SQL, of each statement.
fn postgres_parameters(name: &str) -> (&'static str, &'static str) {
    match name {
        "take over ended leases" => (
            "(text, timestamptz, timestamptz, bigint, text)",
            "('test:1', '2026-11-27 10:00:00Z', '2026-11-27 10:01:00Z', 16, '[]')",
        ),
        "claim" => (
            "(text, timestamptz, timestamptz, bigint, text, bigint)",
            "('test:1', '2026-11-27 10:00:00Z', '2026-11-27 10:01:00Z', 100, '[]', 16)",
        ),
        "read what was claimed" => ("(text)", "('test:1')"),
        _ => ("", ""),
    }
}
