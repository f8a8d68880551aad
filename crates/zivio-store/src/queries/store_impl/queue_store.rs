//! `QueueStore` on this backend.

use time::OffsetDateTime;
use zivio_core::delivery::QueueEntryId;
use zivio_core::rate_limit::RateLimit;
use zivio_core::webhook::WebhookId;

use crate::{AttemptOutcome, ClaimedDelivery, FinishedAttempt, QueueStore, StoreResult, Target};

use super::{BackendStore, announce_work, pacing, queue, records, recoveries};

#[async_trait::async_trait]
impl QueueStore for BackendStore {
    #[cfg(feature = "testing")]
    async fn hot_statement_plans(&self) -> StoreResult<Vec<crate::StatementPlan>> {
        super::super::plans::hot_statement_plans(self.reader()).await
    }

    async fn claim_deliveries(
        &self,
        lease: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        per_webhook: u32,
        skip: &[WebhookId],
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut tx = self.begin_uncounted_write().await?;
        // Read under the writer connection: no change can be half done meanwhile.
        let generation = self
            .change_counter()
            .map(|changes| changes.load(std::sync::atomic::Ordering::SeqCst));
        let claimed =
            queue::claim(&mut tx, lease, now, lease_until, limit, per_webhook, skip).await?;
        tx.commit().await?;
        // Only a delivery that may be sent as claimed carries the count: one of a
        // disabled webhook or an inactive owner goes through `begin_attempt`, which
        // cancels it.
        Ok(claimed
            .into_iter()
            .map(|(mut delivery, may_send)| {
                delivery.generation = generation.filter(|_| may_send);
                delivery
            })
            .collect())
    }

    async fn record_attempts(
        &self,
        attempts: Vec<FinishedAttempt>,
    ) -> StoreResult<Vec<AttemptOutcome>> {
        let changes = self.change_counter();
        let after_commit = changes.clone();
        let outcomes = self
            .write_grouped(move |tx| {
                Box::pin(async move {
                    records::record_finished(&mut *tx, &attempts, changes.as_deref()).await
                })
            })
            .await?;
        // A webhook disabled on the way is a change once more now that it is committed.
        if let Some(changes) = after_commit
            && outcomes.iter().any(|outcome| outcome.auto_disabled)
        {
            changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(outcomes)
    }

    async fn begin_attempt(
        &self,
        lease: &str,
        delivery: QueueEntryId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Option<Target>> {
        let Some(target) = queue::current_target(self.reader(), lease, delivery).await? else {
            return Ok(None);
        };
        if target.leased_until <= now {
            return Ok(None);
        }
        if !target.may_send {
            let mut tx = self.begin_uncounted_write().await?;
            queue::cancel(&mut tx, lease, delivery).await?;
            tx.commit().await?;
            return Ok(None);
        }
        // Most claims already lease long enough (see the engine): no write at all then.
        if target.leased_until < lease_until {
            let token = lease.to_owned();
            let renewed = self
                .write_grouped(move |tx| {
                    Box::pin(
                        async move { queue::renew(tx, &token, delivery, now, lease_until).await },
                    )
                })
                .await?;
            if !renewed {
                return Ok(None);
            }
            // Read again after the renewal: what is returned is what the request is
            // signed with at once, so a rotation committed during the renewal applies.
            return Ok(queue::current_target(self.reader(), lease, delivery)
                .await?
                .filter(|target| target.may_send)
                .map(|target| target.target()));
        }
        Ok(Some(target.target()))
    }

    async fn begin_attempts(
        &self,
        attempts: &[(String, QueueEntryId)],
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Vec<Option<Target>>> {
        let targets = queue::current_targets(self.reader(), attempts).await?;
        // Leases that would not cover the attempt are extended together, then read again:
        // what is returned is what the requests are signed with at once.
        let short: Vec<(String, QueueEntryId)> = attempts
            .iter()
            .filter(|(_, delivery)| {
                targets.get(delivery).is_some_and(|target| {
                    target.may_send
                        && target.leased_until > now
                        && target.leased_until < lease_until
                })
            })
            .cloned()
            .collect();
        let mut renewed = std::collections::HashMap::new();
        if !short.is_empty() {
            let webhooks: std::collections::BTreeSet<String> = short
                .iter()
                .filter_map(|(_, delivery)| {
                    targets
                        .get(delivery)
                        .map(|target| target.webhook_id.clone())
                })
                .collect();
            let ids = self
                .write_grouped(move |tx| {
                    Box::pin(async move {
                        let webhooks: Vec<&str> = webhooks.iter().map(String::as_str).collect();
                        queue::renew_many(tx, &short, &webhooks, now, lease_until)
                            .await
                            .map(|ids| (short, ids))
                    })
                })
                .await?;
            let (short, ids) = ids;
            let kept: Vec<(String, QueueEntryId)> = short
                .into_iter()
                .filter(|(_, id)| ids.contains(id))
                .collect();
            renewed = queue::current_targets(self.reader(), &kept).await?;
        }
        let mut answers = Vec::with_capacity(attempts.len());
        for (lease, delivery) in attempts {
            let answer = match targets.get(delivery) {
                None => None,
                Some(target) if target.leased_until <= now => None,
                Some(target) if target.may_send && target.leased_until >= lease_until => {
                    Some(target.target())
                }
                Some(target) if target.may_send => renewed
                    .get(delivery)
                    .filter(|target| target.may_send)
                    .map(crate::SendTarget::target),
                // To be cancelled: rare, one by one.
                Some(_) => {
                    self.begin_attempt(lease, *delivery, now, lease_until)
                        .await?
                }
            };
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn release_deliveries(&self, lease: &str, ids: &[QueueEntryId]) -> StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        queue::release(&mut tx, lease, ids).await?;
        // Work an engine could not hold: any instance may take it at once.
        announce_work(&mut tx).await?;
        Ok(tx.commit().await?)
    }

    fn change_generation(&self) -> Option<u64> {
        self.change_counter()
            .map(|changes| changes.load(std::sync::atomic::Ordering::SeqCst))
    }

    async fn release_all_leases(&self) -> StoreResult<u64> {
        let mut tx = self.begin_uncounted_write().await?;
        recoveries::release_all(&mut tx).await?;
        let released = queue::release_all(&mut tx).await?;
        tx.commit().await?;
        Ok(released)
    }

    async fn next_due(&self) -> StoreResult<Option<OffsetDateTime>> {
        queue::next_due(self.reader()).await
    }

    async fn listen_for_work(&self, wake: std::sync::Arc<tokio::sync::Notify>) -> StoreResult<()> {
        self.listen(wake).await
    }

    async fn pending_deliveries(&self) -> StoreResult<i64> {
        queue::pending(self.reader()).await
    }

    async fn take_rate_tokens(
        &self,
        webhook: &WebhookId,
        second: i64,
        want: u32,
        limit: RateLimit,
    ) -> StoreResult<u32> {
        let mut tx = self.begin_uncounted_write().await?;
        let granted = pacing::take_tokens(&mut tx, webhook, second, want, limit).await?;
        tx.commit().await?;
        Ok(granted)
    }

    async fn due_deliveries(
        &self,
        webhooks: &[WebhookId],
        now: OffsetDateTime,
    ) -> StoreResult<std::collections::HashMap<WebhookId, i64>> {
        pacing::due_per_webhook(self.reader(), webhooks, now).await
    }

    async fn purge_rate_seconds(&self, before: i64) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let mut tx = self.begin_uncounted_write().await?;
            let deleted = pacing::purge_seconds(&mut tx, before).await?;
            tx.commit().await?;
            total += deleted;
            if deleted < 10_000 {
                return Ok(total);
            }
        }
    }
}
