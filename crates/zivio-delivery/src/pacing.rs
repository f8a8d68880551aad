//! Pacing (docs/product.md §4, rate limit): requests to a rate-limited webhook start no faster
//! than its limit, counted per second of the clock over every instance. The store hands out each
//! second's allowance (`Store::take_rate_tokens`); an instance keeps what it was given for the
//! current second, and a token is used only by a request that starts in that same second.
//!
//! Deliveries wait for their turn in line, in the order they reach it (oldest due first, as
//! claimed), holding nothing of the webhook's or the instance's send slots, so waiting takes
//! no capacity from other webhooks. A test event waits beside the line and takes the next token.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zivio_core::rate_limit::{self, Allowance, RateLimit};
use zivio_store::StoreResult;

use super::*;

/// A webhook's pacer: its share of the current second's allowance and the deliveries waiting.
#[derive(Default)]
pub(crate) struct Pacer {
    allowance: Mutex<Allowance>,
    /// Ordinary deliveries queue here one after the other (tokio's mutex is fair: first come,
    /// first served).
    line: tokio::sync::Mutex<()>,
    in_line: AtomicU32,
    /// Deliveries that go ahead of the line (test events, and sends whose token's second passed
    /// while they waited for a slot).
    ahead: AtomicU32,
    refilled: Notify,
}

/// What waiting for the limit came to.
pub(crate) enum Paced {
    /// A token for a request starting within this second of the clock.
    Go(i64),
    /// The delivery has waited longer than the operator allows: it ends as `rate_limited`.
    WaitedTooLong,
}

/// Counts itself out of a counter when dropped (also when the waiting future is cancelled).
struct Counted<'a>(&'a AtomicU32);

impl<'a> Counted<'a> {
    fn enter(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    /// Waits for a token of `delivery`'s webhook under `limit`: in line, or ahead of it for a
    /// test event or when `ahead` (a send whose token expired before it could start).
    pub(crate) async fn pace(
        &self,
        pacer: &Pacer,
        delivery: &ClaimedDelivery,
        limit: RateLimit,
        ahead: bool,
    ) -> StoreResult<Paced> {
        let _waiting = self.services.metrics.rate_limit_wait();
        if ahead || delivery.event_type == zivio_core::catalog::TEST_EVENT_TYPE {
            let _ahead = Counted::enter(&pacer.ahead);
            return self.pace_ahead(pacer, delivery, limit).await;
        }
        let in_line = Counted::enter(&pacer.in_line);
        let _turn = pacer.line.lock().await;
        drop(in_line);
        loop {
            let now = self.services.now();
            if self.waited_too_long(delivery, now) {
                return Ok(Paced::WaitedTooLong);
            }
            let second = rate_limit::second_of(now);
            let left = {
                let mut allowance = pacer.allowance.lock().expect("not poisoned");
                if pacer.ahead.load(Ordering::SeqCst) == 0 && allowance.take(second) {
                    return Ok(Paced::Go(second));
                }
                allowance.left(second)
            };
            if left > 0 {
                // Tokens are there, but deliveries ahead of the line take them first.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            // Enough for those waiting, but never less than a twentieth of the limit, so that
            // a high limit does not cost a statement per request.
            let waiting = pacer.in_line.load(Ordering::SeqCst) + pacer.ahead.load(Ordering::SeqCst);
            let want = (waiting + 1).max(limit.per_second().div_ceil(20));
            if !self.refill(pacer, delivery, second, want, limit).await? {
                self.sleep_until_next(second).await;
            }
        }
    }

    async fn pace_ahead(
        &self,
        pacer: &Pacer,
        delivery: &ClaimedDelivery,
        limit: RateLimit,
    ) -> StoreResult<Paced> {
        loop {
            // Listening before looking: a refill by the line between the look and the wait
            // would otherwise go unnoticed, leaving its tokens unused (the line leaves them to
            // us) until the next second.
            let refilled = pacer.refilled.notified();
            tokio::pin!(refilled);
            refilled.as_mut().enable();
            let now = self.services.now();
            let second = rate_limit::second_of(now);
            if pacer.allowance.lock().expect("not poisoned").take(second) {
                return Ok(Paced::Go(second));
            }
            if self.refill(pacer, delivery, second, 1, limit).await? {
                continue;
            }
            // Used up this second: the line's next refill, or the next second, whichever first.
            tokio::select! {
                () = refilled => {}
                () = self.sleep_until_next(second) => {}
            }
        }
    }

    /// Asks the store for tokens of `second`; whether it gave any.
    async fn refill(
        &self,
        pacer: &Pacer,
        delivery: &ClaimedDelivery,
        second: i64,
        want: u32,
        limit: RateLimit,
    ) -> StoreResult<bool> {
        let granted = self
            .services
            .store
            .take_rate_tokens(&delivery.webhook_id, second, want, limit)
            .await?;
        if granted == 0 {
            return Ok(false);
        }
        pacer
            .allowance
            .lock()
            .expect("not poisoned")
            .add(second, granted);
        pacer.refilled.notify_waiters();
        Ok(true)
    }

    async fn sleep_until_next(&self, second: i64) {
        let until = rate_limit::next_second(second) - self.services.now();
        let pause = Duration::try_from(until).unwrap_or(Duration::ZERO);
        tokio::time::sleep(pause.max(Duration::from_millis(1))).await;
    }

    fn waited_too_long(&self, delivery: &ClaimedDelivery, now: OffsetDateTime) -> bool {
        let max_wait = time::Duration::try_from(self.config.rate_limit_max_wait)
            .unwrap_or(time::Duration::MAX);
        rate_limit::waited_too_long(delivery.due_at, now, max_wait)
    }

    /// When to send: now, if the delivery has no rate limit or holds a token of the current
    /// second. A request starts only within the second of its token, under the limit read just
    /// now (set, changed or removed since the claim); otherwise it takes a new token, ahead of
    /// the line and for a moment at most, holding the slots (`prepare` made the lease cover the
    /// attempt with a margin that this wait leaves intact). `None`: none came in time.
    pub(crate) async fn in_token_second(
        &self,
        bounds: &WebhookBounds,
        delivery: &ClaimedDelivery,
        token: Option<i64>,
        stop: &CancellationToken,
    ) -> Option<OffsetDateTime> {
        let now = self.services.now();
        let Some(limit) = delivery.rate_limit else {
            return Some(now);
        };
        if token == Some(zivio_core::rate_limit::second_of(now)) {
            return Some(now);
        }
        let late = tokio::time::Instant::now() + LATE_TOKEN_WAIT;
        let paced = self
            .wait_for_limit(bounds, delivery, limit, true, late, stop)
            .await;
        let now = self.services.now();
        matches!(paced, Some(Paced::Go(second)) if second == zivio_core::rate_limit::second_of(now))
            .then_some(now)
    }

    /// Waits for a token of the webhook's rate limit until `deadline`; `None` at the deadline,
    /// at shutdown or when the allowance cannot be read (the delivery goes back to the queue).
    pub(crate) async fn wait_for_limit(
        &self,
        bounds: &WebhookBounds,
        delivery: &ClaimedDelivery,
        limit: zivio_core::rate_limit::RateLimit,
        ahead: bool,
        deadline: tokio::time::Instant,
        stop: &CancellationToken,
    ) -> Option<Paced> {
        let pacer = self.pacer(bounds);
        let pacing = tokio::time::timeout_at(deadline, self.pace(&pacer, delivery, limit, ahead));
        tokio::select! {
            biased;
            () = stop.cancelled() => None,
            paced = pacing => match paced {
                Ok(Ok(paced)) => Some(paced),
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, webhook = %delivery.webhook_id, "could not read the rate limit's allowance; giving the delivery back");
                    None
                }
                Err(_) => None,
            },
        }
    }

    pub(crate) fn waited_detail(&self, limit: zivio_core::rate_limit::RateLimit) -> String {
        format!(
            "waited longer than ZIVIO_WEBHOOKS_RATE_LIMIT_MAX_WAIT ({}) for the webhook's rate limit of {} requests per second; not sent",
            zivio_core::duration::format(self.config.rate_limit_max_wait),
            limit.per_second()
        )
    }

    /// The pacer of a webhook, made when first needed.
    pub(crate) fn pacer(&self, bounds: &WebhookBounds) -> Arc<Pacer> {
        bounds
            .pacer
            .get_or_init(|| Arc::new(Pacer::default()))
            .clone()
    }
}
