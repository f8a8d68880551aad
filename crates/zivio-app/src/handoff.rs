//! Deliveries a publish stores already leased to its own instance and hands to that instance's
//! delivery engine in memory: the common case needs no claim, so the database is read for work
//! only for retries, work left by a dead instance and what did not fit in memory.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use zivio_core::ids::TenantId;
use zivio_core::webhook::Webhook;
use zivio_store::{ClaimedDelivery, LeasedDelivery, PublishLease};

/// Leased deliveries of one publish, on their way to the engine.
pub struct LeasedBatch {
    pub lease: PublishLease,
    pub deliveries: Vec<ClaimedDelivery>,
}

/// Where publishing hands its deliveries over. Closed (publishes store unleased work, which the
/// engine claims) until an engine opens it, and again once that engine stops.
#[derive(Default)]
pub struct HandOff {
    open: Mutex<Option<Open>>,
    sequence: AtomicU64,
}

struct Open {
    sender: mpsc::Sender<LeasedBatch>,
    instance: String,
    hold: Duration,
}

/// A publish with more deliveries than this stores them unleased, for claims: the engine would
/// not hold them in memory anyway, and building them would cost memory first.
pub const MAX_DELIVERIES_PER_PUBLISH: usize = 4_096;

/// Room for one batch in the engine's queue and the lease to store it under.
pub struct Reservation {
    permit: mpsc::OwnedPermit<LeasedBatch>,
    pub lease: PublishLease,
}

impl Reservation {
    pub fn hand_over(self, deliveries: Vec<ClaimedDelivery>) {
        self.permit.send(LeasedBatch {
            lease: self.lease,
            deliveries,
        });
    }
}

/// A delivery to `webhook` stored leased by a publish, as the engine takes it from the hand-off
/// (first attempt). `generation` is the store's change count read before `webhook` was (`None`
/// makes the engine read URL and secret again before sending).
pub struct Handed<'a> {
    pub tenant: &'a TenantId,
    pub webhook: &'a Webhook,
    pub generation: Option<u64>,
    pub due_at: OffsetDateTime,
    /// A recovery's resend (see [`ClaimedDelivery::background`]).
    pub background: bool,
}

impl Handed<'_> {
    pub fn delivery(
        &self,
        leased: LeasedDelivery,
        event_type: String,
        body: bytes::Bytes,
    ) -> ClaimedDelivery {
        let webhook = self.webhook;
        ClaimedDelivery {
            id: leased.id,
            tenant: self.tenant.clone(),
            webhook_id: leased.webhook_id,
            url: webhook.url.clone(),
            secret_ciphertext: webhook.secret.ciphertext.clone(),
            headers: webhook.headers.clone(),
            rate_limit: webhook.rate_limit,
            due_at: self.due_at,
            event_id: leased.event_id,
            event_type,
            attempt: 1,
            body,
            generation: self.generation,
            background: self.background,
        }
    }
}

impl HandOff {
    /// Opens the hand-off for an engine: leases are `instance`'s and last `hold`; at most
    /// `batches` publishes wait in the queue (the rest are stored unleased and claimed).
    pub fn open(
        &self,
        instance: &str,
        hold: Duration,
        batches: usize,
    ) -> mpsc::Receiver<LeasedBatch> {
        let (sender, receiver) = mpsc::channel(batches);
        *self.lock() = Some(Open {
            sender,
            instance: instance.to_owned(),
            hold,
        });
        receiver
    }

    pub fn close(&self) {
        self.lock().take();
    }

    /// Room for one publish's `deliveries`, if an engine is open, its queue is not full and
    /// they are not too many.
    pub fn reserve(&self, now: OffsetDateTime, deliveries: usize) -> Option<Reservation> {
        if deliveries > MAX_DELIVERIES_PER_PUBLISH {
            return None;
        }
        let open = self.lock();
        let open = open.as_ref()?;
        let permit = open.sender.clone().try_reserve_owned().ok()?;
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        Some(Reservation {
            permit,
            lease: PublishLease {
                token: format!("{}:p{sequence}", open.instance),
                until: now + open.hold,
            },
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
