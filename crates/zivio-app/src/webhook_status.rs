//! What a webhook's page and list show of its deliveries: health from the maintained counters,
//! and how many deliveries wait for its rate limit.

use std::collections::HashMap;

use serde::Serialize;
use zivio_core::webhook::{Webhook, WebhookId};

use crate::rfc3339;
use crate::{AppResult, Caller, Services};

/// Delivery health; every value is null until the webhook has attempts.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(format = DateTime)]
    pub last_attempt_at: Option<String>,
    pub last_status: Option<String>,
    pub success_rate_24h: Option<f64>,
    pub success_rate_7d: Option<f64>,
    #[schema(format = DateTime)]
    pub failing_since: Option<String>,
}

/// Health from the maintained counters: the latest attempt, and success rates over the hourly
/// buckets of the last 24 hours and 7 days.
pub(crate) async fn health_of(
    services: &Services,
    caller: &Caller,
    only: Option<&WebhookId>,
) -> AppResult<HashMap<WebhookId, Health>> {
    let now = services.now();
    let counts = services
        .store
        .webhook_health(
            &caller.tenant,
            only,
            now - time::Duration::days(7),
            now - time::Duration::hours(24),
        )
        .await?;
    let rate = |succeeded: i64, attempts: i64| {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        (attempts > 0).then(|| succeeded as f64 / attempts as f64)
    };
    Ok(counts
        .into_iter()
        .map(|(id, counts)| {
            let health = Health {
                last_attempt_at: counts.last_attempt_at.map(rfc3339),
                last_status: counts
                    .last_succeeded
                    .map(|ok| if ok { "succeeded" } else { "failed" }.to_owned()),
                success_rate_24h: rate(counts.succeeded_24h, counts.attempts_24h),
                success_rate_7d: rate(counts.succeeded_7d, counts.attempts_7d),
                failing_since: counts.failing_since.map(rfc3339),
            };
            (id, health)
        })
        .collect())
}

/// Per rate-limited webhook, its deliveries due and not yet sent: they wait for the limit.
pub(crate) async fn waiting_for_limits(
    services: &Services,
    webhooks: &[Webhook],
) -> AppResult<HashMap<WebhookId, i64>> {
    let limited: Vec<WebhookId> = webhooks
        .iter()
        .filter(|webhook| webhook.rate_limit.is_some())
        .map(|webhook| webhook.id.clone())
        .collect();
    if limited.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(services
        .store
        .due_deliveries(&limited, services.now())
        .await?)
}
