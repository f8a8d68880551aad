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
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use zivio_app::handoff::LeasedBatch;
use zivio_app::{Services, random, unix_millis};
use zivio_core::retry::{RetrySchedule, Verdict};
use zivio_core::webhook::{WebhookId, time_ordered_hex};
use zivio_store::{
    AttemptRecord, AutoDisable, Backend, ClaimedDelivery, FinishedAttempt, StoreResult, Target,
};

mod attempt;
pub mod client;
pub mod mail;

pub use attempt::{MAX_RESPONSE_BODY, USER_AGENT};

/// At most this many deliveries are claimed at once.
const CLAIM_BATCH: u32 = 200;
/// With nothing due, look again at least this often (work published by other instances).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Delivery tasks (waiting or sending) one instance runs at most.
const MAX_TASKS: u32 = 1 << 16;
/// The shortest pause between claims when the last one started nothing.
const MIN_IDLE_WAIT: Duration = Duration::from_millis(20);
/// What an attempt may take beyond the request timeout: resolving the host (at most 5 s) and
/// recording the result.
const ATTEMPT_MARGIN: Duration = Duration::from_secs(15);
/// A lease is long enough for an attempt that starts this soon after the claim (or hand-off)
/// to need no extension.
const START_WITHIN: Duration = Duration::from_secs(5);
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
/// Publishes whose deliveries may wait to be taken from the hand-off queue.
const HANDOFF_BATCHES: usize = 16;
/// How often the queue depth and due lag gauges are refreshed.
const QUEUE_GAUGE_INTERVAL: Duration = Duration::from_secs(5);

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
}

/// The lease a claim holds its deliveries under.
struct Lease {
    token: String,
    until: OffsetDateTime,
}

/// What a delivery holds from claim (or hand-off) to record: its place among its webhook's held
/// (or handed-over) work and, if handed over, among the instance's (released on drop).
struct Permits {
    bounds: Arc<WebhookBounds>,
    _held: OwnedSemaphorePermit,
    _handed_over: Option<OwnedSemaphorePermit>,
    /// Counts the task until it ends, so that shutdown can wait for every one.
    _task: OwnedSemaphorePermit,
}

/// Per webhook: how many deliveries it may hold (waiting, sending or waiting to be recorded),
/// send at once, and have sent without their outcome recorded.
struct WebhookBounds {
    held: Arc<Semaphore>,
    /// Deliveries handed over by publishing, waiting or under way.
    handed_over: Arc<Semaphore>,
    sending: Arc<Semaphore>,
    unrecorded: Arc<Semaphore>,
    /// While the webhook's last attempt timed out, only one request at a time probes it, so
    /// hanging receivers cannot take the instance's capacity from everyone else.
    slow: AtomicBool,
    probe: Arc<Semaphore>,
}

impl WebhookBounds {
    /// A slow webhook holds one delivery at a time (its probe), so its retries cannot crowd other
    /// webhooks' work out of the claims.
    fn may_hold_more(&self, full: usize) -> bool {
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
    fn claimable(&self, bound: usize) -> bool {
        let room = self.held.available_permits();
        match self.slow.load(Ordering::Relaxed) {
            true => room == held_bound(bound),
            false => room >= bound,
        }
    }
}

/// The deliveries a webhook may hold: a share waiting for its turn besides those sent and not
/// yet recorded.
fn held_bound(bound: usize) -> usize {
    bound + UNRECORDED_PER_WEBHOOK
}

/// The permits an attempt sends under. `sending` (the webhook's slot, the probe slot while it is
/// slow, the instance's) is given back at the response; `unrecorded` when the outcome is
/// recorded.
struct Turn {
    unrecorded: [OwnedSemaphorePermit; 2],
    sending: [Option<OwnedSemaphorePermit>; 3],
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
    /// One permit per running delivery task (waiting or sending).
    tasks: Arc<Semaphore>,
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

/// A delivery about to be sent and who waits for its pre-send check.
struct Check {
    lease: String,
    delivery: i64,
    answer: oneshot::Sender<CheckAnswer>,
}

/// URL, sealed secret and headers to send with, `None` when the delivery may not be sent, or
/// why the check could not be made.
type CheckAnswer = Result<Option<Target>, String>;

/// A finished attempt and who waits for it to be recorded.
struct Recording {
    finished: FinishedAttempt,
    recorded: oneshot::Sender<()>,
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
            tasks: Arc::new(Semaphore::new(MAX_TASKS as usize)),
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

    /// Delivers until `stop` turns true, then lets attempts in flight finish (bounded by the
    /// request timeout) and gives unstarted work back.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.services.store.backend() == Backend::Sqlite {
            // One instance owns an embedded database: every lease left is from before a crash.
            match self.services.store.release_all_leases().await {
                Ok(0) => {}
                Ok(released) => {
                    tracing::info!(released, "resumed deliveries leased before a restart")
                }
                Err(error) => {
                    tracing::warn!(error = %error, "could not release old leases; they expire on their own")
                }
            }
        }
        let recordings = self.recordings.lock().expect("not poisoned").take();
        let recording = recordings.map(|queue| tokio::spawn(self.clone().record_batches(queue)));
        let checks = self.checks.lock().expect("not poisoned").take();
        let checking = checks.map(|queue| tokio::spawn(self.clone().check_batches(queue)));
        let handoff = &self.services.handoff;
        let batches = handoff.open(&self.config.instance, self.lease_hold(), HANDOFF_BATCHES);
        let taking = tokio::spawn(self.clone().take_handed_over(batches, stop.clone()));
        let listening = {
            let (store, wake) = (self.services.store.clone(), self.wake.clone());
            tokio::spawn(async move {
                if let Err(error) = store.listen_for_work(wake).await {
                    tracing::warn!(error = %error, "not listening for work from other instances; polling instead");
                }
            })
        };
        let mut gauges_refreshed: Option<tokio::time::Instant> = None;
        while !*stop.borrow() {
            if gauges_refreshed.is_none_or(|at| at.elapsed() >= QUEUE_GAUGE_INTERVAL) {
                self.refresh_queue_gauges().await;
                gauges_refreshed = Some(tokio::time::Instant::now());
            }
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
                _ = stop.changed() => {}
            }
        }
        listening.abort();
        // Publishes still under way hand their batches over; each batch is given back at once.
        self.services.handoff.close();
        let _ = taking.await;
        let drain = self.config.request_timeout + Duration::from_secs(5);
        // Every task ends: sends finish, waiting ones give their work back.
        if tokio::time::timeout(drain, self.tasks.acquire_many(MAX_TASKS))
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

    /// Claims due work up to the free capacity, skipping webhooks already at their bound (their
    /// work stays free for other instances), and starts an attempt for each; returns how many
    /// attempts were started.
    async fn tick(self: &Arc<Self>, stop: &watch::Receiver<bool>) -> StoreResult<usize> {
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
            let Ok(task) = self.tasks.clone().try_acquire_owned() else {
                busy.push(delivery.id);
                continue;
            };
            let permits = Permits {
                bounds,
                _held: held,
                _handed_over: None,
                _task: task,
            };
            tokio::spawn(async move { engine.deliver(delivery, lease, permits, stop).await });
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
        mut batches: mpsc::Receiver<LeasedBatch>,
        stop: watch::Receiver<bool>,
    ) {
        while let Some(LeasedBatch { lease, deliveries }) = batches.recv().await {
            let stopping = *stop.borrow();
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
                tokio::spawn(async move { engine.deliver(delivery, lease, permits, stop).await });
            }
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

    /// A handed-over delivery's place among its webhook's and the instance's handed-over work,
    /// if there is room and the webhook is not slow.
    fn hand_over_permits(&self, webhook: &WebhookId) -> Option<Permits> {
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
        let task = self.tasks.clone().try_acquire_owned().ok()?;
        Some(Permits {
            bounds,
            _held: held,
            _handed_over: Some(handed_over),
            _task: task,
        })
    }

    /// Webhooks without room for another share of work: the next claim leaves theirs alone.
    fn saturated_webhooks(&self) -> Vec<WebhookId> {
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

    fn bounds(&self, webhook: &WebhookId) -> Arc<WebhookBounds> {
        let mut webhooks = self.webhooks.lock().expect("not poisoned");
        webhooks
            .entry(webhook.clone())
            .or_insert_with(|| self.new_bounds())
            .clone()
    }

    fn new_bounds(&self) -> Arc<WebhookBounds> {
        let bound = self.config.max_in_flight_per_webhook;
        Arc::new(WebhookBounds {
            held: Arc::new(Semaphore::new(held_bound(bound))),
            handed_over: Arc::new(Semaphore::new(HANDED_OVER_PER_WEBHOOK)),
            sending: Arc::new(Semaphore::new(bound)),
            unrecorded: Arc::new(Semaphore::new(UNRECORDED_PER_WEBHOOK)),
            slow: AtomicBool::new(false),
            probe: Arc::new(Semaphore::new(1)),
        })
    }

    async fn refresh_queue_gauges(&self) {
        let store = &self.services.store;
        if let (Ok(depth), Ok(due)) = (store.pending_deliveries().await, store.next_due().await) {
            let lag = due.map_or(0.0, |due| (self.services.now() - due).as_seconds_f64());
            self.services.metrics.set_queue(depth, lag);
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
        mut stop: watch::Receiver<bool>,
    ) {
        let Lease {
            token: lease,
            until: lease_until,
        } = lease;
        let bounds = &permits.bounds;
        // Wait for the webhook's turn and the instance's capacity, but never so long that the
        // lease could run out before the attempt has made sure of it: vetting (resolving for up
        // to 5 s) comes first, then the lease is extended to cover the attempt where it would
        // not (see `prepare`).
        let budget = lease_until - self.services.now() - VET_MARGIN;
        let deadline =
            tokio::time::Instant::now() + Duration::try_from(budget).unwrap_or(Duration::ZERO);
        let Some(turn) = self.wait_turn(bounds, deadline, &mut stop).await else {
            // Shutting down or out of time: give the work back rather than leave it to its lease.
            self.give_back(&lease, delivery.id).await;
            return;
        };
        let mut delivery = delivery;
        let Some(vetted) = self.prepare(&lease, lease_until, &mut delivery).await else {
            return;
        };
        let now = self.services.now();
        let in_flight = self.services.metrics.in_flight();
        let route = attempt::Route {
            client: &self.client,
            secrets_key: &self.services.secrets_key,
        };
        let outcome = attempt::send(&route, &delivery, vetted, now).await;
        drop(in_flight);
        // What waits for the recorder stays small: the payload is not needed any more.
        delivery.body = bytes::Bytes::new();
        // Slow: the attempt ran into the timeout, whether before the answer or while reading it.
        // Marked before the slot is free, so that the next request queued for it knows.
        let timed_out = outcome.error_kind == Some("timeout")
            || outcome.duration + Duration::from_millis(50) >= self.config.request_timeout;
        let was_slow = bounds.slow.swap(timed_out, Ordering::Relaxed);
        // The request is over: its slots go to the next one while the outcome is recorded.
        let Turn {
            unrecorded,
            sending,
        } = turn;
        drop(sending);
        if self.global.available_permits() <= self.config.max_in_flight_per_webhook {
            // The instance's capacity was nearly used up: every freed slot counts.
            self.wake.notify_one();
        }
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
        drop(unrecorded);
        drop(permits);
        let room_again = webhook.claimable(bound) && !was_claimable;
        if room_again || (was_slow && !timed_out) {
            self.wake.notify_one();
        }
    }

    /// Vets the destination, then makes sure the claim's URL and secret are current and the
    /// webhook may still send: the vetting comes first (resolving may take seconds), so that a
    /// rotation committed meanwhile applies to this request. Where the store can tell that
    /// nothing changed since the claim (SQLite), that is all; otherwise URL and secret are read
    /// again with a last check (`begin_attempt`), and a URL changed meanwhile is vetted in turn.
    /// The lease is extended to cover the whole attempt when it would not; a lease lost means
    /// someone else may have the delivery: `None`, send nothing.
    async fn prepare(
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
                })) => {
                    delivery.secret_ciphertext = secret_ciphertext;
                    delivery.headers = headers;
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
    async fn check(&self, lease: &str, delivery: i64) -> CheckAnswer {
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
    async fn check_batches(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Check>) {
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
            let attempts: Vec<(String, i64)> = batch
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
    async fn give_back(&self, lease: &str, delivery: i64) {
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

    /// The permits an attempt sends under: a place among its webhook's unrecorded attempts, a
    /// slot of its webhook, the probe slot while the webhook is slow, and one of the instance's.
    /// `None` at the deadline or at shutdown.
    async fn wait_turn(
        &self,
        bounds: &WebhookBounds,
        deadline: tokio::time::Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Turn> {
        // The webhook's own permits first, the instance's last: a webhook queueing behind its own
        // slots holds nothing of the instance's meanwhile.
        let waiting = async {
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
                    sending: [Some(sending), probe, Some(global)],
                });
            }
        };
        tokio::select! {
            biased;
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => None,
            permits = tokio::time::timeout_at(deadline, waiting) => permits.ok().flatten(),
        }
    }

    /// Records finished attempts in batches: whatever is waiting when the previous batch is
    /// done, or finishes within `RECORD_GATHER`, goes in one transaction, so the store's work per
    /// attempt shrinks as load grows. A batch that fails is recorded attempt by attempt.
    async fn record_batches(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Recording>) {
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

    fn disabled_automatically(&self, record: &AttemptRecord) {
        tracing::warn!(
            webhook = %record.webhook_id,
            tenant = %record.tenant,
            mail = self.config.mail_notices,
            "webhook disabled automatically: it kept failing for longer than ZIVIO_WEBHOOKS_AUTO_DISABLE_AFTER"
        );
    }

    /// Records one attempt, retrying briefly: an unrecorded attempt is repeated after its lease.
    async fn save(&self, finished: &FinishedAttempt) {
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
                        tracing::warn!(error = %error, delivery = record.delivery_id, "recording an attempt failed; retrying");
                        tokio::time::sleep(pause).await;
                    }
                    None => {
                        tracing::error!(error = %error, delivery = record.delivery_id, "could not record an attempt; it is repeated after its lease")
                    }
                },
            }
        }
    }

    fn record(
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
            id: format!("dlv_{}", time_ordered_hex(unix_millis(at), random())),
            delivery_id: delivery.id,
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
            error_kind: outcome.error_kind.map(str::to_owned),
            error_detail: outcome.error_detail,
            created_at: at,
            next_attempt_at,
        }
    }
}

/// A uniform value in `-1.0..=1.0` for the schedule's jitter.
fn jitter() -> f64 {
    let bits = u32::from_le_bytes(random());
    f64::from(bits) / f64::from(u32::MAX) * 2.0 - 1.0
}
