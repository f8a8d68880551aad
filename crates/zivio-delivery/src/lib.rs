//! The delivery engine (docs/product.md §5–6): claims due deliveries from the store under a lease,
//! sends each through the vetting client with a per-webhook bound on requests in flight,
//! records every attempt and schedules the next one. Nothing is held in memory that the store
//! does not also know: a crash loses no work, only leases that expire.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zivio_app::handoff::LeasedBatch;
use zivio_app::{Services, random, unix_millis};
use zivio_core::delivery::{AttemptId, QueueEntryId};
use zivio_core::retry::{RetrySchedule, Verdict};
use zivio_core::webhook::WebhookId;
use zivio_store::{
    AttemptRecord, AutoDisable, Backend, ClaimedDelivery, FinishedAttempt, StoreResult, Target,
};

mod attempt;
mod bounds;
mod checks;
mod gauges;
mod pacing;
mod recording;

use bounds::{Permits, Turn, WebhookBounds, held_bound};
use checks::Check;
use pacing::Paced;
use recording::Recording;
pub mod client;
pub mod mail;

pub use attempt::{MAX_RESPONSE_BODY, USER_AGENT};

/// At most this many deliveries are claimed at once.
const CLAIM_BATCH: u32 = 200;
/// With nothing due, look again at least this often (work published by other instances).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Delivery tasks (waiting or sending) one instance runs at most.
const MAX_TASKS: usize = 1 << 16;
/// The shortest pause between claims when the last one started nothing.
const MIN_IDLE_WAIT: Duration = Duration::from_millis(20);
/// What an attempt may take beyond the request timeout: resolving the host (at most 5 s) and
/// recording the result.
const ATTEMPT_MARGIN: Duration = Duration::from_secs(15);
/// A lease is long enough for an attempt that starts this soon after the claim (or hand-off)
/// to need no extension.
const START_WITHIN: Duration = Duration::from_secs(5);
/// A send whose token's second passed while it waited for a slot waits this long at most for
/// another (ahead of the line) before it goes back to the queue.
const LATE_TOKEN_WAIT: Duration = Duration::from_secs(2);
/// What a delivery's lease must still hold when it has waited for its turn: vetting (resolving
/// for up to 5 s) and a margin, before the pre-send check extends it.
const VET_MARGIN: Duration = Duration::from_secs(7);
/// A delivery whose URL keeps changing while it is being vetted goes back to the queue after
/// this many reads.
const MAX_URL_CHANGES: u32 = 3;
/// Per webhook, requests sent (in flight or answered) whose outcome is not recorded yet. A send
/// slot is free again at the response, so this, not the in-flight bound, is what a crash can
/// repeat to one receiver.
pub const UNRECORDED_PER_WEBHOOK: usize = 64;
/// The same over all webhooks of an instance: what waits for the recorder stays bounded in
/// memory however many webhooks there are.
const UNRECORDED: usize = 4096;
/// At most this many deliveries are checked before their sends in one read.
const CHECK_BATCH: usize = 256;
/// How long the recorder waits for more finished attempts before it records a batch.
const RECORD_GATHER: Duration = Duration::from_millis(1);
/// At most this many finished attempts are recorded in one transaction.
const RECORD_BATCH: usize = 256;
/// Per webhook, deliveries handed over by publishing that may wait in memory for their turn;
/// more go back to the database, from where they are claimed.
const HANDED_OVER_PER_WEBHOOK: usize = 2_048;
/// The same over all webhooks of an instance, so that memory stays bounded.
const HANDED_OVER: usize = 16_384;
/// Deliveries that may wait to be taken from the hand-off queue (a publish with more is stored
/// unleased and claimed).
const HANDOFF_QUEUED: usize = HANDED_OVER;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Unique per running instance; part of every lease.
    pub instance: String,
    pub lease: Duration,
    pub request_timeout: Duration,
    pub schedule: RetrySchedule,
    pub max_in_flight_per_webhook: usize,
    /// Requests this instance sends at once, over all webhooks.
    pub max_in_flight: usize,
    pub extra_root_ca: Option<PathBuf>,
    /// Presented to receivers that ask for a client certificate.
    pub client_certificate: Option<client::ClientCertificate>,
    /// A webhook failing without a success for this long is disabled at its next failure.
    pub auto_disable_after: Duration,
    /// Whether managers are mailed when that happens (SMTP is configured).
    pub mail_notices: bool,
    /// A delivery waiting longer than this for its webhook's rate limit ends as failed.
    pub rate_limit_max_wait: Duration,
}

/// The lease a claim holds its deliveries under.
struct Lease {
    token: String,
    until: OffsetDateTime,
}

pub struct Engine {
    services: Services,
    client: reqwest::Client,
    config: EngineConfig,
    global: Arc<Semaphore>,
    /// Sent and not yet recorded, over all webhooks.
    unrecorded: Arc<Semaphore>,
    /// Handed over by publishing and not yet recorded, over all webhooks.
    handed_over: Arc<Semaphore>,
    /// The running delivery tasks (waiting, sending or waiting for their record), bounded by
    /// `MAX_TASKS`; shutdown waits for them.
    tasks: TaskTracker,
    webhooks: Mutex<HashMap<WebhookId, Arc<WebhookBounds>>>,
    claims: AtomicU64,
    wake: Arc<Notify>,
    /// Finished attempts on their way to the recorder (see `record_batches`).
    to_record: mpsc::UnboundedSender<Recording>,
    recordings: Mutex<Option<mpsc::UnboundedReceiver<Recording>>>,
    /// Deliveries about to be sent, on their way to the pre-send check (see `check_batches`).
    to_check: mpsc::UnboundedSender<Check>,
    checks: Mutex<Option<mpsc::UnboundedReceiver<Check>>>,
}

impl Engine {
    /// `wake` is notified when new work is stored (publishing) and when capacity frees up.
    pub fn new(
        services: Services,
        config: EngineConfig,
        wake: Arc<Notify>,
    ) -> Result<Arc<Self>, client::ClientError> {
        let client = client::build(
            services.url_policy.clone(),
            services.resolver.clone(),
            config.extra_root_ca.as_deref(),
            config.client_certificate.as_ref(),
            config.request_timeout,
            config.max_in_flight,
        )?;
        let (to_record, recordings) = mpsc::unbounded_channel();
        let (to_check, checks) = mpsc::unbounded_channel();
        Ok(Arc::new(Engine {
            global: Arc::new(Semaphore::new(config.max_in_flight)),
            unrecorded: Arc::new(Semaphore::new(UNRECORDED)),
            handed_over: Arc::new(Semaphore::new(HANDED_OVER)),
            tasks: TaskTracker::new(),
            services,
            client,
            config,
            webhooks: Mutex::new(HashMap::new()),
            claims: AtomicU64::new(0),
            wake,
            to_record,
            recordings: Mutex::new(Some(recordings)),
            to_check,
            checks: Mutex::new(Some(checks)),
        }))
    }

    /// Delivers until `stop` is cancelled, then lets attempts in flight finish (bounded by the
    /// request timeout) and gives unstarted work back.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.resume_after_restart().await;
        let recordings = self.recordings.lock().expect("not poisoned").take();
        let recording = recordings.map(|queue| tokio::spawn(self.clone().record_batches(queue)));
        let checks = self.checks.lock().expect("not poisoned").take();
        let checking = checks.map(|queue| tokio::spawn(self.clone().check_batches(queue)));
        let handoff = &self.services.handoff;
        let batches = handoff.open(&self.config.instance, self.lease_hold(), HANDOFF_QUEUED);
        let taking = tokio::spawn(self.clone().take_handed_over(batches, stop.clone()));
        let listening = {
            let (store, wake) = (self.services.store.clone(), self.wake.clone());
            tokio::spawn(async move {
                if let Err(error) = store.listen_for_work(wake).await {
                    tracing::warn!(error = %error, "not listening for work from other instances; polling instead");
                }
            })
        };
        let mut gauges = gauges::GaugeSchedule::now();
        while !stop.is_cancelled() {
            self.refresh_queue_gauges(&mut gauges).await;
            let started = match self.tick(&stop).await {
                Ok(started) => started,
                Err(error) => {
                    tracing::warn!(error = %error, "claiming deliveries failed; retrying");
                    0
                }
            };
            if started > 0 {
                // Claims take a share per webhook: there may be more, and room for it.
                continue;
            }
            // Work that is due but cannot be taken now (busy webhooks, no capacity) must not make
            // this loop spin: finished attempts wake it when a claim could take more.
            let wait = match self.idle_wait().await {
                due_now if due_now.is_zero() => IDLE_POLL,
                wait => wait.max(MIN_IDLE_WAIT),
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {}
            }
        }
        listening.abort();
        // Publishes still under way hand their batches over; each batch is given back at once.
        self.services.handoff.close();
        let _ = taking.await;
        let drain = self.config.request_timeout + Duration::from_secs(5);
        // Every task ends: sends finish and are recorded, waiting ones give their work back.
        self.tasks.close();
        if tokio::time::timeout(drain, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "attempts still in flight at shutdown; their leases expire and they are retried"
            );
        }
        if let Some(recording) = recording {
            recording.abort();
        }
        if let Some(checking) = checking {
            checking.abort();
        }
    }

    /// Whether another delivery task may start. Claims and hand-offs check it concurrently, so
    /// the bound may be passed by at most one claim's batch: it guards memory, not exactness.
    fn has_task_room(&self) -> bool {
        self.tasks.len() < MAX_TASKS
    }

    /// On SQLite, frees every lease: one instance owns an embedded database, so every lease left
    /// is from before a crash.
    async fn resume_after_restart(&self) {
        if self.services.store.backend() != Backend::Sqlite {
            return;
        }
        match self.services.store.release_all_leases().await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "resumed deliveries leased before a restart"),
            Err(error) => {
                tracing::warn!(error = %error, "could not release old leases; they expire on their own")
            }
        }
    }

    /// Claims due work up to the free capacity, skipping webhooks already at their bound (their
    /// work stays free for other instances), and starts an attempt for each; returns how many
    /// attempts were started.
    async fn tick(self: &Arc<Self>, stop: &CancellationToken) -> StoreResult<usize> {
        let free = u32::try_from(self.global.available_permits())
            .unwrap_or(u32::MAX)
            .min(CLAIM_BATCH);
        if free == 0 {
            return Ok(0);
        }
        let now = self.services.now();
        let lease = format!(
            "{}:{}",
            self.config.instance,
            self.claims.fetch_add(1, Ordering::Relaxed)
        );
        let lease_until = now + self.lease_hold();
        let saturated = self.saturated_webhooks();
        let per_webhook = u32::try_from(self.config.max_in_flight_per_webhook).unwrap_or(u32::MAX);
        let claimed = self
            .services
            .store
            .claim_deliveries(&lease, now, lease_until, free, per_webhook, &saturated)
            .await?;
        let mut started = 0;
        let mut busy = Vec::new();
        for delivery in claimed {
            let bounds = self.bounds(&delivery.webhook_id);
            let full = held_bound(self.config.max_in_flight_per_webhook);
            let held = bounds
                .may_hold_more(full)
                .then(|| bounds.held.clone().try_acquire_owned().ok())
                .flatten();
            let Some(held) = held else {
                busy.push(delivery.id);
                continue;
            };
            let engine = self.clone();
            let lease = lease.clone();
            let stop = stop.clone();
            let lease = Lease {
                token: lease,
                until: lease_until,
            };
            if !self.has_task_room() {
                busy.push(delivery.id);
                continue;
            }
            let permits = Permits {
                bounds,
                _held: held,
                _handed_over: None,
            };
            self.tasks
                .spawn(async move { engine.deliver(delivery, lease, permits, stop).await });
            started += 1;
        }
        if !busy.is_empty() {
            // Left as they were: due now, for this instance's next tick or another instance.
            self.services
                .store
                .release_deliveries(&lease, &busy)
                .await?;
        }
        Ok(started)
    }

    /// How long a claim (or a publish's hand-off) leases its deliveries.
    fn lease_hold(&self) -> Duration {
        // Long enough that an attempt starting within `START_WITHIN` needs no extension.
        let hold = self
            .config
            .lease
            .max(self.config.request_timeout + ATTEMPT_MARGIN + START_WITHIN);
        match self.services.store.backend() {
            // A restart frees every SQLite lease, so a long one delays nothing after a crash, and
            // one that already covers the attempt spares a write before each send.
            Backend::Sqlite => hold + self.config.request_timeout + ATTEMPT_MARGIN,
            Backend::Postgres => hold,
        }
    }

    /// Takes the deliveries publishing leased to this instance: each that fits (its webhook is
    /// not slow, and neither it nor the instance holds too many handed over) gets a task like a
    /// claimed one; the rest go back to the queue at once, for a claim.
    async fn take_handed_over(
        self: Arc<Self>,
        mut batches: mpsc::UnboundedReceiver<LeasedBatch>,
        stop: CancellationToken,
    ) {
        while let Some(LeasedBatch {
            lease,
            deliveries,
            queued,
        }) = batches.recv().await
        {
            let stopping = stop.is_cancelled();
            let mut left = Vec::new();
            for delivery in deliveries {
                if stopping {
                    // Shutting down: the whole batch goes back at once.
                    left.push(delivery.id);
                    continue;
                }
                let Some(permits) = self.hand_over_permits(&delivery.webhook_id) else {
                    left.push(delivery.id);
                    continue;
                };
                let engine = self.clone();
                let stop = stop.clone();
                let lease = Lease {
                    token: lease.token.clone(),
                    until: lease.until,
                };
                self.tasks
                    .spawn(async move { engine.deliver(delivery, lease, permits, stop).await });
            }
            // Each has a task (held by the engine's own bounds) or is given back below.
            drop(queued);
            if !left.is_empty() {
                if let Err(error) = self
                    .services
                    .store
                    .release_deliveries(&lease.token, &left)
                    .await
                {
                    tracing::warn!(error = %error, "could not give deliveries back; their lease expires");
                }
                self.wake.notify_one();
            }
        }
    }

    async fn idle_wait(&self) -> Duration {
        let Ok(Some(due)) = self.services.store.next_due().await else {
            return IDLE_POLL;
        };
        let until = due - self.services.now();
        Duration::try_from(until)
            .unwrap_or(Duration::ZERO)
            .min(IDLE_POLL)
    }

    async fn deliver(
        self: Arc<Self>,
        delivery: ClaimedDelivery,
        lease: Lease,
        permits: Permits,
        stop: CancellationToken,
    ) {
        let Lease {
            token: lease,
            until: lease_until,
        } = lease;
        let bounds = &permits.bounds;
        // Wait for the rate limit, the webhook's turn and the instance's capacity, but never so
        // long that the lease could run out before the attempt has made sure of it: vetting
        // (resolving for up to 5 s) comes first, then the lease is extended to cover the
        // attempt where it would not (see `prepare`).
        let budget = lease_until - self.services.now() - VET_MARGIN;
        let deadline =
            tokio::time::Instant::now() + Duration::try_from(budget).unwrap_or(Duration::ZERO);
        let mut token = None;
        if let Some(limit) = delivery.rate_limit {
            match self
                .wait_for_limit(bounds, &delivery, limit, false, deadline, &stop)
                .await
            {
                Some(Paced::Go(second)) => token = Some(second),
                Some(Paced::WaitedTooLong) => {
                    let outcome = attempt::Outcome::rate_limited(self.waited_detail(limit));
                    self.finish(delivery, lease, permits, None, outcome).await;
                    return;
                }
                None => {
                    self.give_back(&lease, delivery.id).await;
                    return;
                }
            }
        }
        let Some(turn) = self
            .wait_turn(bounds, delivery.background, deadline, &stop)
            .await
        else {
            // Shutting down or out of time: give the work back rather than leave it to its lease.
            self.give_back(&lease, delivery.id).await;
            return;
        };
        let mut delivery = delivery;
        let Some(vetted) = self.prepare(&lease, lease_until, &mut delivery).await else {
            return;
        };
        let Some(now) = self.in_token_second(bounds, &delivery, token, &stop).await else {
            drop(turn);
            self.give_back(&lease, delivery.id).await;
            return;
        };
        let in_flight = self.services.metrics.in_flight();
        let route = attempt::Route {
            client: &self.client,
            secrets_key: &self.services.secrets_key,
        };
        let outcome = attempt::send(&route, &delivery, vetted, now).await;
        drop(in_flight);
        // What waits for the recorder stays small: the payload is not needed any more.
        delivery.body = bytes::Bytes::new();
        let unrecorded = self.after_response(bounds, &outcome, turn);
        self.finish(delivery, lease, permits, Some(unrecorded), outcome)
            .await;
    }

    /// The request is over: marks the webhook slow if it ran into the timeout, frees the send
    /// slots for the next request and keeps the places among unrecorded attempts.
    fn after_response(
        &self,
        bounds: &WebhookBounds,
        outcome: &attempt::Outcome,
        turn: Turn,
    ) -> Unrecorded {
        // Slow: the attempt ran into the timeout, whether before the answer or while reading it.
        // Marked before the slot is free, so that the next request queued for it knows.
        let timed_out = outcome.error_kind == Some(zivio_core::error_kind::ErrorKind::Timeout)
            || outcome.duration + Duration::from_millis(50) >= self.config.request_timeout;
        let was_slow = bounds.slow.swap(timed_out, Ordering::Relaxed);
        let Turn {
            unrecorded,
            sending,
        } = turn;
        drop(sending);
        if self.global.available_permits() <= self.config.max_in_flight_per_webhook {
            // The instance's capacity was nearly used up: every freed slot counts.
            self.wake.notify_one();
        }
        Unrecorded {
            _permits: unrecorded,
            no_longer_slow: was_slow && !timed_out,
        }
    }

    /// Records the outcome (through the recorder, waiting for its commit), then frees the
    /// delivery's places and wakes the loop when a claim could take more.
    async fn finish(
        &self,
        delivery: ClaimedDelivery,
        lease: String,
        permits: Permits,
        unrecorded: Option<Unrecorded>,
        outcome: attempt::Outcome,
    ) {
        let verdict = match outcome.verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry => "retry",
            Verdict::GiveUp => "give_up",
        };
        self.services.metrics.record_attempt(
            verdict,
            outcome.error_kind,
            outcome.duration.as_secs_f64(),
        );
        // Stamped when it ends, not when it started: attempts enter the log nearly in time order,
        // so a page cursor handed out meanwhile can miss only an attempt stamped in the few
        // milliseconds its batch waits to commit, never a slow attempt.
        let record = self.record(&delivery, self.services.now(), outcome);
        tracing::debug!(
            webhook = %delivery.webhook_id,
            event = %delivery.event_id,
            attempt = delivery.attempt,
            status = ?record.response_status,
            error_kind = ?record.error_kind,
            "attempt finished"
        );
        let auto_disable = AutoDisable {
            failing_before: time::Duration::try_from(self.config.auto_disable_after)
                .ok()
                .and_then(|after| record.created_at.checked_sub(after))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            mail: self.config.mail_notices,
        };
        let finished = FinishedAttempt {
            lease,
            record,
            auto_disable,
        };
        // Held (with its place among the webhook's unrecorded attempts) until recorded: what a
        // crash can repeat to one receiver stays within `UNRECORDED_PER_WEBHOOK`.
        let (recorded, waiting) = oneshot::channel();
        match self.to_record.send(Recording { finished, recorded }) {
            Ok(()) => {
                let _ = waiting.await;
            }
            Err(mpsc::error::SendError(recording)) => {
                tracing::error!("the attempt recorder has stopped; recording directly");
                self.save(&recording.finished).await;
            }
        }
        // Free the webhook's room before waking the loop, so that its next claim can use it. The
        // loop is woken when a claim could now take more: this webhook has room for a share
        // again, or is no longer slow (its backlog waited for the probe).
        let bound = self.config.max_in_flight_per_webhook;
        let webhook = permits.bounds.clone();
        let was_claimable = webhook.claimable(bound);
        let no_longer_slow = unrecorded.as_ref().is_some_and(|u| u.no_longer_slow);
        drop(unrecorded);
        drop(permits);
        let room_again = webhook.claimable(bound) && !was_claimable;
        if room_again || no_longer_slow {
            self.wake.notify_one();
        }
    }
}

/// An answered attempt's places among its webhook's and the instance's unrecorded attempts,
/// kept until its record is committed.
struct Unrecorded {
    _permits: [OwnedSemaphorePermit; 2],
    /// The webhook was slow and this attempt did not time out: its backlog may move again.
    no_longer_slow: bool,
}

/// A uniform value in `-1.0..=1.0` for the schedule's jitter.
fn jitter() -> f64 {
    let bits = u32::from_le_bytes(random());
    f64::from(bits) / f64::from(u32::MAX) * 2.0 - 1.0
}
