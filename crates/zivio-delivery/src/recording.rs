//! Recording attempts: whatever finished attempts are waiting go to the store in one batch.

use super::*;

/// A finished attempt and who waits for it to be recorded.
pub(crate) struct Recording {
    pub(crate) finished: FinishedAttempt,
    pub(crate) recorded: oneshot::Sender<()>,
}

impl Engine {
    /// Records finished attempts in batches: whatever is waiting when the previous batch is
    /// done, or finishes within `RECORD_GATHER`, goes in one transaction, so the store's work per
    /// attempt shrinks as load grows. A batch that fails is recorded attempt by attempt.
    pub(crate) async fn record_batches(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<Recording>,
    ) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            // What finishes within a moment joins the batch: under load, one commit (and one
            // fsync) records many attempts; alone, an attempt waits this long at most.
            let gathered = tokio::time::sleep(RECORD_GATHER);
            tokio::pin!(gathered);
            while batch.len() < RECORD_BATCH {
                tokio::select! {
                    biased;
                    recording = queue.recv() => match recording {
                        Some(recording) => batch.push(recording),
                        None => break,
                    },
                    () = &mut gathered => break,
                }
            }
            let attempts = batch.iter().map(|r| r.finished.clone()).collect();
            match self.services.store.record_attempts(attempts).await {
                Ok(outcomes) => {
                    for (recording, outcome) in batch.into_iter().zip(outcomes) {
                        if outcome.auto_disabled {
                            self.disabled_automatically(&recording.finished.record);
                        }
                        let _ = recording.recorded.send(());
                    }
                }
                Err(error) => {
                    // One by one, each with its own retries, without holding up later batches
                    // (recording twice is harmless: attempts are recorded once by id).
                    tracing::warn!(error = %error, attempts = batch.len(), "recording a batch of attempts failed; recording them one by one");
                    for recording in batch {
                        let engine = self.clone();
                        tokio::spawn(async move {
                            engine.save(&recording.finished).await;
                            let _ = recording.recorded.send(());
                        });
                    }
                }
            }
        }
    }

    pub(crate) fn disabled_automatically(&self, record: &AttemptRecord) {
        tracing::warn!(
            webhook = %record.webhook_id,
            tenant = %record.tenant,
            mail = self.config.mail_notices,
            "webhook disabled automatically: it kept failing for longer than ZIVIO_WEBHOOKS_AUTO_DISABLE_AFTER"
        );
    }

    /// Records one attempt, retrying briefly: an unrecorded attempt is repeated after its lease.
    pub(crate) async fn save(&self, finished: &FinishedAttempt) {
        let FinishedAttempt {
            lease,
            record,
            auto_disable,
        } = finished;
        let pauses = [
            Duration::from_millis(100),
            Duration::from_millis(500),
            Duration::from_secs(2),
        ];
        for pause in pauses.into_iter().map(Some).chain([None]) {
            match self
                .services
                .store
                .record_attempt(lease, record, *auto_disable)
                .await
            {
                Ok(outcome) => {
                    if outcome.auto_disabled {
                        self.disabled_automatically(record);
                    }
                    return;
                }
                Err(error) => match pause {
                    Some(pause) => {
                        tracing::warn!(error = %error, delivery = record.queue_entry.0, "recording an attempt failed; retrying");
                        tokio::time::sleep(pause).await;
                    }
                    None => {
                        tracing::error!(error = %error, delivery = record.queue_entry.0, "could not record an attempt; it is repeated after its lease")
                    }
                },
            }
        }
    }

    pub(crate) fn record(
        &self,
        delivery: &ClaimedDelivery,
        at: OffsetDateTime,
        outcome: attempt::Outcome,
    ) -> AttemptRecord {
        let next_attempt_at = match outcome.verdict {
            Verdict::Retry => self
                .config
                .schedule
                .next_delay(delivery.attempt, jitter(), outcome.retry_after)
                .map(|delay| at + delay),
            Verdict::Delivered | Verdict::GiveUp => None,
        };
        AttemptRecord {
            id: AttemptId::new(unix_millis(at), random()),
            queue_entry: delivery.id,
            tenant: delivery.tenant.clone(),
            webhook_id: delivery.webhook_id.clone(),
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            attempt: delivery.attempt,
            succeeded: outcome.verdict == Verdict::Delivered,
            request_url: delivery.url.clone(),
            request_headers: serde_json::Value::Object(outcome.request_headers).to_string(),
            response_status: outcome.response_status,
            response_headers: outcome
                .response_headers
                .map(|headers| serde_json::Value::Object(headers).to_string()),
            response_body: outcome.response_body,
            response_truncated: outcome.response_truncated,
            duration_ms: i64::try_from(outcome.duration.as_millis()).unwrap_or(i64::MAX),
            error_kind: outcome.error_kind,
            error_detail: outcome.error_detail,
            created_at: at,
            next_attempt_at,
        }
    }
}
