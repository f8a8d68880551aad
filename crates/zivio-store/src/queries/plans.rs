//! The plans of the hot statements outside a claim, for tests that check that none of them
//! reads a whole table however large the queue grows (the claim's own statements are checked
//! through `testing::claim_statements`).

use std::collections::HashSet;

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::delivery::{AttemptId, QueueEntryId};
use zivio_core::event::EventId;
use zivio_core::ids::TenantId;
use zivio_core::webhook::WebhookId;

use crate::{AttemptRecord, PublishLease, StatementPlan, StoreResult};

use super::events::{DeliveryRow, deliveries_statement};
use super::queue::{pending_statement, targets_statement};
use super::records::{move_statement, store_statement};
use super::{EXPLAIN, PLAN_COLUMN, Pool};

/// Each statement's plan for one row of representative values.
pub(crate) async fn hot_statement_plans(pool: &Pool) -> StoreResult<Vec<StatementPlan>> {
    let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let tenant = TenantId::parse("acme").expect("a valid tenant id");
    let webhook = WebhookId::parse("wh_0190f0a0b1c2d3e4f5a6b7c8d9e0f1a2").expect("a webhook id");
    let attempt = AttemptRecord {
        id: AttemptId::new(1_700_000_000_000, [1; 10]),
        queue_entry: QueueEntryId(1),
        tenant: tenant.clone(),
        webhook_id: webhook.clone(),
        event_id: EventId::new(1_700_000_000_000, [2; 10]),
        event_type: "invoice.paid".to_owned(),
        attempt: 1,
        succeeded: true,
        request_url: "https://erp.example.com/hooks".to_owned(),
        request_headers: "{}".to_owned(),
        response_status: Some(200),
        response_headers: Some("{}".to_owned()),
        response_body: Some(Vec::new()),
        response_truncated: false,
        duration_ms: 1,
        error_kind: None,
        error_detail: None,
        created_at: now,
        next_attempt_at: None,
    };
    let recorded = [("instance:1", &attempt)];
    let targets = [("instance:1".to_owned(), QueueEntryId(1))];
    let published = [DeliveryRow {
        webhook_id: webhook.as_str(),
        event_id: attempt.event_id.as_str(),
        payload_id: 1,
        accepted_at: now,
        is_test: false,
    }];
    let lease = PublishLease {
        token: "instance:2".to_owned(),
        until: now,
    };
    let statements = [
        (
            "record: move deliveries",
            move_statement(EXPLAIN, &recorded),
        ),
        (
            "record: store attempts",
            store_statement(EXPLAIN, &recorded, &HashSet::from([QueueEntryId(1)])),
        ),
        ("pre-send read", targets_statement(EXPLAIN, &targets)),
        (
            "publish: queue deliveries",
            deliveries_statement(EXPLAIN, &tenant, &published, Some(&lease)),
        ),
        ("queue depth gauge", pending_statement(EXPLAIN)),
    ];
    let mut plans = Vec::with_capacity(statements.len());
    for (statement, mut query) in statements {
        let lines: Vec<String> = query
            .build()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.get::<String, _>(PLAN_COLUMN))
            .collect();
        plans.push(StatementPlan {
            statement,
            plan: lines.join("\n"),
        });
    }
    Ok(plans)
}
