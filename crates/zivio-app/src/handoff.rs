//! Deliveries a publish stores already leased to its own instance and hands to that instance's
//! delivery engine in memory: the common case needs no claim, so the database is read for work
//! only for retries, work left by a dead instance and what did not fit in memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use zivio_core::ids::TenantId;
use zivio_core::webhook::Webhook;
use zivio_store::{ClaimedDelivery, LeasedDelivery, PublishLease};

/// Leased deliveries of one publish, on their way to the engine.
pub struct LeasedBatch {
    pub lease: PublishLease,
    pub deliveries: Vec<ClaimedDelivery>,
    /// Their places in the queue, given back when the engine drops the batch.
    pub queued: OwnedSemaphorePermit,
}

/// Where publishing hands its deliveries over. Closed (publishes store unleased work, which the
/// engine claims) until an engine opens it, and again once that engine stops.
#[derive(Default)]
pub struct HandOff {
    open: Mutex<Option<Open>>,
    sequence: AtomicU64,
}

struct Open {
    /// Unbounded as a channel, bounded by `room`: a batch is sent only with its places.
    sender: mpsc::UnboundedSender<LeasedBatch>,
    /// Places for deliveries in the queue, one per delivery, so that memory is bounded by
    /// deliveries whatever the size of each publish.
    room: Arc<Semaphore>,
    capacity: usize,
    instance: String,
    hold: Duration,
}

/// Room for one publish's deliveries in the engine's queue and the lease to store them under.
pub struct Reservation {
    sender: mpsc::UnboundedSender<LeasedBatch>,
    queued: OwnedSemaphorePermit,
    pub lease: PublishLease,
}

impl Reservation {
    pub fn hand_over(self, deliveries: Vec<ClaimedDelivery>) {
        // If the engine stopped meanwhile, the deliveries wait for their lease to end and are
        // claimed then, as after a crash.
        let _ = self.sender.send(LeasedBatch {
            lease: self.lease,
            deliveries,
            queued: self.queued,
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
    /// `capacity` deliveries wait in the queue (a publish that does not fit is stored unleased
    /// and claimed).
    pub fn open(
        &self,
        instance: &str,
        hold: Duration,
        capacity: usize,
    ) -> mpsc::UnboundedReceiver<LeasedBatch> {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.lock() = Some(Open {
            sender,
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
            instance: instance.to_owned(),
            hold,
        });
        receiver
    }

    pub fn close(&self) {
        self.lock().take();
    }

    /// Room for one publish's `deliveries`, if an engine is open and its queue has room for
    /// all of them.
    pub fn reserve(&self, now: OffsetDateTime, deliveries: usize) -> Option<Reservation> {
        let open = self.lock();
        let open = open.as_ref()?;
        let places = u32::try_from(deliveries)
            .ok()
            .filter(|_| deliveries <= open.capacity)?;
        let queued = open.room.clone().try_acquire_many_owned(places).ok()?;
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        Some(Reservation {
            sender: open.sender.clone(),
            queued,
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    #[tokio::test]
    async fn the_queue_is_bounded_by_deliveries_not_by_publishes() {
        let handoff = HandOff::default();
        assert!(
            handoff.reserve(NOW, 1).is_none(),
            "closed until an engine opens it"
        );
        let mut batches = handoff.open("instance:1", Duration::from_secs(60), 100);
        assert!(
            handoff.reserve(NOW, 101).is_none(),
            "more than the queue holds"
        );
        let large = handoff.reserve(NOW, 90).expect("room for 90");
        assert_eq!(large.lease.token, "instance:1:p0");
        assert_eq!(large.lease.until, NOW + Duration::from_secs(60));
        assert!(handoff.reserve(NOW, 11).is_none(), "10 places left");
        let small = handoff.reserve(NOW, 10).expect("room for 10");
        assert!(handoff.reserve(NOW, 1).is_none(), "full");
        large.hand_over(Vec::new());
        small.hand_over(Vec::new());
        assert!(
            handoff.reserve(NOW, 1).is_none(),
            "still waiting to be taken"
        );
        drop(batches.recv().await.expect("the first publish"));
        assert!(
            handoff.reserve(NOW, 90).is_some(),
            "its places are free once taken"
        );
        handoff.close();
        assert!(handoff.reserve(NOW, 1).is_none(), "closed again");
    }
}
