//! What bounds a webhook's work in memory: how many deliveries it may hold, send at once and
//! have unrecorded, and the permits an attempt holds from claim or hand-off to record.

use super::*;

/// What a delivery holds from claim (or hand-off) to record: its place among its webhook's held
/// (or handed-over) work and, if handed over, among the instance's (released on drop).
pub(crate) struct Permits {
    pub(crate) bounds: Arc<WebhookBounds>,
    pub(crate) _held: OwnedSemaphorePermit,
    pub(crate) _handed_over: Option<OwnedSemaphorePermit>,
}

/// Per webhook: how many deliveries it may hold (waiting, sending or waiting to be recorded),
/// send at once, and have sent without their outcome recorded.
pub(crate) struct WebhookBounds {
    pub(crate) held: Arc<Semaphore>,
    /// Deliveries handed over by publishing, waiting or under way.
    pub(crate) handed_over: Arc<Semaphore>,
    pub(crate) sending: Arc<Semaphore>,
    pub(crate) unrecorded: Arc<Semaphore>,
    /// While the webhook's last attempt timed out, only one request at a time probes it, so
    /// hanging receivers cannot take the instance's capacity from everyone else.
    pub(crate) slow: AtomicBool,
    pub(crate) probe: Arc<Semaphore>,
    /// Send slots a recovery's resends may take (half of them), so that new events never
    /// queue behind a recovery.
    pub(crate) background: Arc<Semaphore>,
    /// Only for webhooks with a rate limit.
    pub(crate) pacer: std::sync::OnceLock<Arc<crate::pacing::Pacer>>,
}

impl WebhookBounds {
    /// A slow webhook holds one delivery at a time (its probe), so its retries cannot crowd other
    /// webhooks' work out of the claims.
    pub(crate) fn may_hold_more(&self, full: usize) -> bool {
        let held = full - self.held.available_permits();
        let cap = if self.slow.load(Ordering::Relaxed) {
            1
        } else {
            full
        };
        held < cap
    }

    /// Whether a claim may take this webhook's work: only with room for a whole share (`bound`
    /// deliveries; a slow webhook: when it holds nothing). Claiming a share at a time instead of
    /// each freed slot keeps claims (write transactions) to a fraction of the deliveries.
    pub(crate) fn claimable(&self, bound: usize) -> bool {
        let room = self.held.available_permits();
        match self.slow.load(Ordering::Relaxed) {
            true => room == held_bound(bound),
            false => room >= bound,
        }
    }
}

/// The deliveries a webhook may hold: a share waiting for its turn besides those sent and not
/// yet recorded.
pub(crate) fn held_bound(bound: usize) -> usize {
    bound + UNRECORDED_PER_WEBHOOK
}

/// The permits an attempt sends under. `sending` (the webhook's slot, the probe slot while it is
/// slow, the instance's) is given back at the response; `unrecorded` when the outcome is
/// recorded.
pub(crate) struct Turn {
    pub(crate) unrecorded: [OwnedSemaphorePermit; 2],
    pub(crate) sending: [Option<OwnedSemaphorePermit>; 4],
}

impl Engine {
    /// A handed-over delivery's place among its webhook's and the instance's handed-over work,
    /// if there is room and the webhook is not slow.
    pub(crate) fn hand_over_permits(&self, webhook: &WebhookId) -> Option<Permits> {
        // Taken under the map's lock: `saturated_webhooks` forgets webhooks that hold nothing,
        // and must not forget this one between lookup and permit (a second set of bounds for
        // one webhook would double its limits).
        let (bounds, held) = {
            let mut webhooks = self.webhooks.lock().expect("not poisoned");
            let bounds = webhooks
                .entry(webhook.clone())
                .or_insert_with(|| self.new_bounds())
                .clone();
            if bounds.slow.load(Ordering::Relaxed) {
                return None;
            }
            let held = bounds.handed_over.clone().try_acquire_owned().ok()?;
            (bounds, held)
        };
        let handed_over = self.handed_over.clone().try_acquire_owned().ok()?;
        if !self.has_task_room() {
            return None;
        }
        Some(Permits {
            bounds,
            _held: held,
            _handed_over: Some(handed_over),
        })
    }

    /// Webhooks without room for another share of work: the next claim leaves theirs alone.
    pub(crate) fn saturated_webhooks(&self) -> Vec<WebhookId> {
        let mut webhooks = self.webhooks.lock().expect("not poisoned");
        let bound = self.config.max_in_flight_per_webhook;
        let full = held_bound(bound);
        // Forget webhooks that hold nothing and are not slow, so the map stays small.
        webhooks.retain(|_, bounds| {
            bounds.held.available_permits() < full
                || bounds.handed_over.available_permits() < HANDED_OVER_PER_WEBHOOK
                || bounds.slow.load(Ordering::Relaxed)
        });
        webhooks
            .iter()
            .filter(|(_, bounds)| !bounds.claimable(bound))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(crate) fn bounds(&self, webhook: &WebhookId) -> Arc<WebhookBounds> {
        let mut webhooks = self.webhooks.lock().expect("not poisoned");
        webhooks
            .entry(webhook.clone())
            .or_insert_with(|| self.new_bounds())
            .clone()
    }

    pub(crate) fn new_bounds(&self) -> Arc<WebhookBounds> {
        let bound = self.config.max_in_flight_per_webhook;
        Arc::new(WebhookBounds {
            held: Arc::new(Semaphore::new(held_bound(bound))),
            handed_over: Arc::new(Semaphore::new(HANDED_OVER_PER_WEBHOOK)),
            sending: Arc::new(Semaphore::new(bound)),
            unrecorded: Arc::new(Semaphore::new(UNRECORDED_PER_WEBHOOK)),
            slow: AtomicBool::new(false),
            probe: Arc::new(Semaphore::new(1)),
            background: Arc::new(Semaphore::new((bound / 2).max(1))),
            pacer: std::sync::OnceLock::new(),
        })
    }

    /// The permits an attempt sends under: a place among its webhook's unrecorded attempts, a
    /// slot of its webhook, the probe slot while the webhook is slow, and one of the instance's.
    /// `None` at the deadline or at shutdown.
    pub(crate) async fn wait_turn(
        &self,
        bounds: &WebhookBounds,
        background: bool,
        deadline: tokio::time::Instant,
        stop: &CancellationToken,
    ) -> Option<Turn> {
        // The webhook's own permits first, the instance's last: a webhook queueing behind its own
        // slots holds nothing of the instance's meanwhile.
        let waiting = async {
            // A resend waits for its share first, so that it never stands in the queue for the
            // webhook's slots ahead of more than half a share of new events' turn.
            let share = match background {
                true => Some(bounds.background.clone().acquire_owned().await.ok()?),
                false => None,
            };
            let own = bounds.unrecorded.clone().acquire_owned().await.ok()?;
            let sending = bounds.sending.clone().acquire_owned().await.ok()?;
            loop {
                let slow = bounds.slow.load(Ordering::Relaxed);
                let probe = match slow {
                    true => Some(bounds.probe.clone().acquire_owned().await.ok()?),
                    false => None,
                };
                let instance = self.unrecorded.clone().acquire_owned().await.ok()?;
                let global = self.global.clone().acquire_owned().await.ok()?;
                // Became slow while waiting for capacity: queue for the probe slot instead.
                if !slow && bounds.slow.load(Ordering::Relaxed) {
                    continue;
                }
                return Some(Turn {
                    unrecorded: [own, instance],
                    sending: [Some(sending), probe, Some(global), share],
                });
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => None,
            permits = tokio::time::timeout_at(deadline, waiting) => permits.ok().flatten(),
        }
    }
}
