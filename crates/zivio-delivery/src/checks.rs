//! The pre-send check: vet the destination, then make sure URL, secret and headers are current
//! and the webhook may still send, for many deliveries in one read.

use super::*;

/// A delivery about to be sent and who waits for its pre-send check.
pub(crate) struct Check {
    pub(crate) lease: String,
    pub(crate) delivery: QueueEntryId,
    pub(crate) answer: oneshot::Sender<CheckAnswer>,
}

/// URL, sealed secret and headers to send with, `None` when the delivery may not be sent, or
/// why the check could not be made.
pub(crate) type CheckAnswer = Result<Option<Target>, String>;

impl Engine {
    /// Vets the destination, then makes sure the claim's URL and secret are current and the
    /// webhook may still send: the vetting comes first (resolving may take seconds), so that a
    /// rotation committed meanwhile applies to this request. Where the store can tell that
    /// nothing changed since the claim (SQLite), that is all; otherwise URL and secret are read
    /// again with a last check (`begin_attempt`), and a URL changed meanwhile is vetted in turn.
    /// The lease is extended to cover the whole attempt when it would not; a lease lost means
    /// someone else may have the delivery: `None`, send nothing.
    pub(crate) async fn prepare(
        &self,
        lease: &str,
        lease_until: OffsetDateTime,
        delivery: &mut ClaimedDelivery,
    ) -> Option<attempt::Vetted> {
        let policy = &self.services.url_policy;
        let resolver = self.services.resolver.as_ref();
        let store = &self.services.store;
        let mut vetted = attempt::vet(policy, resolver, &delivery.url).await;
        // The claim's lease must still cover the request and its record without an extension.
        let covered =
            lease_until - self.services.now() >= self.config.request_timeout + ATTEMPT_MARGIN;
        if covered
            && delivery.generation.is_some()
            && delivery.generation == store.change_generation()
        {
            return Some(vetted);
        }
        for _ in 0..MAX_URL_CHANGES {
            match self.check(lease, delivery.id).await {
                Ok(Some(Target {
                    url,
                    secret_ciphertext,
                    headers,
                    rate_limit,
                })) => {
                    delivery.secret_ciphertext = secret_ciphertext;
                    delivery.headers = headers;
                    delivery.rate_limit = rate_limit;
                    if url == delivery.url {
                        return Some(vetted);
                    }
                    vetted = attempt::vet(policy, resolver, &url).await;
                    delivery.url = url;
                }
                Ok(None) => {
                    // Cancelled or no longer ours: the freed slot may let a claim take more.
                    self.wake.notify_one();
                    return None;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "could not check a delivery before sending; giving it back");
                    break;
                }
            }
        }
        self.give_back(lease, delivery.id).await;
        None
    }

    /// The pre-send check of one delivery (`Store::begin_attempt`), made together with those of
    /// the other deliveries about to be sent.
    pub(crate) async fn check(&self, lease: &str, delivery: QueueEntryId) -> CheckAnswer {
        let (answer, answered) = oneshot::channel();
        let check = Check {
            lease: lease.to_owned(),
            delivery,
            answer,
        };
        if self.to_check.send(check).is_err() {
            return Err("the pre-send check has stopped".to_owned());
        }
        answered
            .await
            .unwrap_or_else(|_| Err("the pre-send check has stopped".to_owned()))
    }

    /// Makes the pre-send checks of whatever deliveries are waiting for one in one read
    /// (`Store::begin_attempts`): a batch handed over by a publish costs one round trip before
    /// its sends, not one per delivery. Each lease must cover the request and its record.
    pub(crate) async fn check_batches(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Check>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < CHECK_BATCH {
                match queue.try_recv() {
                    Ok(check) => batch.push(check),
                    Err(_) => break,
                }
            }
            let now = self.services.now();
            let attempt_until = now + self.config.request_timeout + ATTEMPT_MARGIN;
            let attempts: Vec<(String, QueueEntryId)> = batch
                .iter()
                .map(|check| (check.lease.clone(), check.delivery))
                .collect();
            match self
                .services
                .store
                .begin_attempts(&attempts, now, attempt_until)
                .await
            {
                Ok(answers) => {
                    for (check, answer) in batch.into_iter().zip(answers) {
                        let _ = check.answer.send(Ok(answer));
                    }
                }
                Err(error) => {
                    let error = error.to_string();
                    for check in batch {
                        let _ = check.answer.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Gives a leased delivery back as it was (its lease would otherwise keep it for long).
    pub(crate) async fn give_back(&self, lease: &str, delivery: QueueEntryId) {
        if let Err(error) = self
            .services
            .store
            .release_deliveries(lease, &[delivery])
            .await
        {
            tracing::warn!(error = %error, "could not give a delivery back; its lease expires");
        }
        self.wake.notify_one();
    }
}
