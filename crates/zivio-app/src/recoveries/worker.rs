//! The recovery worker: each instance leases running recoveries (one instance per recovery at a
//! time; another takes over when its lease expires) and works through their selection in steps.
//! Each step publishes some resends and settles their events in one transaction under the
//! lease, so a crash or restart resumes where the last committed step left off and resends
//! nothing twice.
//!
//! A recovery never floods its receiver: at most `OUTSTANDING_RESENDS` of its resends wait for
//! delivery at once (new events queue behind no more than these), and with a rate limit it
//! publishes at most half of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zivio_core::access::Access;
use zivio_core::audit::SYSTEM_ACTOR;
use zivio_core::event::EventId;
use zivio_core::recovery::{self, Ending};

use zivio_core::webhook::Webhook;
use zivio_store::{ClaimedDelivery, LeasedDelivery, NewEvent, Recovery, RecoveryStep, StoreResult};

use crate::resending::resend_event;
use crate::{AppResult, Services};

/// Look for recoveries to work on at least this often.
const POLL: Duration = Duration::from_secs(1);
/// While the recovery's resends have no room, look again after this long.
const WAIT_FOR_ROOM: Duration = Duration::from_millis(10);
/// Webhook and owner are read again at least this often while a recovery runs: a disable or a
/// deactivation ends it within this long.
const RECHECK: Duration = Duration::from_millis(250);
/// Recoveries one instance works on at once.
const CONCURRENT: usize = 16;

/// A recovery's lease as this instance holds it.
struct Lease {
    token: String,
    lasts: Duration,
}

impl Lease {
    /// Renewed at least this often while waiting for room, well before it runs out.
    fn heartbeat(&self) -> Duration {
        self.lasts / 3
    }
}

/// Works on recoveries until `stop` is cancelled. `instance` names this instance in leases;
/// `lease` is how long another instance waits before it takes over a recovery whose worker
/// stopped renewing (every step renews it).
pub async fn run(services: Services, instance: String, lease: Duration, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    let tasks = TaskTracker::new();
    let mut claims = 0_u64;
    while !stop.is_cancelled() {
        let running = services.store.running_recoveries().await.unwrap_or(0);
        services.metrics.set_recoveries_running(running);
        // Claim while there is work and room for it.
        if running > 0 {
            let room = Room {
                slots: &slots,
                tasks: &tasks,
            };
            claim_all(&services, &instance, lease, &room, &mut claims, &stop).await;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = stop.cancelled() => {}
        }
    }
    // Each recovery task stops at its next step; let them settle their work first, but not for
    // longer than a lease: one still running then is taken over like a dead instance's.
    tasks.close();
    if tokio::time::timeout(lease, tasks.wait()).await.is_err() {
        tracing::warn!("recoveries still working at shutdown; their leases expire and they resume");
    }
}

/// Where recovery tasks run: at most `CONCURRENT` at once (`slots`), tracked so that shutdown
/// waits for them.
struct Room<'a> {
    slots: &'a Arc<Semaphore>,
    tasks: &'a TaskTracker,
}

/// Claims running recoveries nobody works on, while this instance has room, and starts a task
/// for each.
async fn claim_all(
    services: &Services,
    instance: &str,
    lease_for: Duration,
    room: &Room<'_>,
    claims: &mut u64,
    stop: &CancellationToken,
) {
    loop {
        let Ok(slot) = room.slots.clone().try_acquire_owned() else {
            break;
        };
        *claims += 1;
        let lease = Lease {
            token: format!("{instance}:recovery:{claims}"),
            lasts: lease_for,
        };
        let now = services.now();
        let claimed = services
            .store
            .claim_recovery(&lease.token, now, now + lease.lasts)
            .await;
        match claimed {
            Ok(Some(recovery)) => {
                let (services, stop) = (services.clone(), stop.clone());
                room.tasks.spawn(async move {
                    let id = recovery.id.clone();
                    if let Err(error) = work(&services, recovery, &lease, stop).await {
                        tracing::warn!(recovery = %id, error = %error, "recovery interrupted; its lease expires and it resumes");
                    }
                    drop(slot);
                });
            }
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(error = %error, "could not look for recoveries");
                break;
            }
        }
    }
}

/// Where one recovery stands in this instance.
struct Progress {
    /// Resends published by this worker whose delivery may still be pending.
    outstanding: Vec<EventId>,
    /// Pace (with a rate limit): when publishing began and how many were published since.
    paced_since: Instant,
    published: u64,
    renewed: Instant,
}

/// Works on `recovery` until it ends, is cancelled, loses its lease or the instance stops.
async fn work(
    services: &Services,
    recovery: Recovery,
    lease: &Lease,
    stop: CancellationToken,
) -> AppResult<()> {
    let mut progress = Progress {
        outstanding: Vec::new(),
        paced_since: Instant::now(),
        published: 0,
        renewed: Instant::now(),
    };
    let mut checked: Option<(Instant, Target, Access)> = None;
    while !stop.is_cancelled() {
        if checked
            .as_ref()
            .is_none_or(|(at, _, _)| at.elapsed() >= RECHECK)
        {
            let Some((target, owner)) = check(services, &recovery).await? else {
                return Ok(());
            };
            checked = Some((Instant::now(), target, owner));
        }
        let (_, target, owner) = checked.as_ref().expect("checked above");
        let room = room(services, &mut progress, target.webhook.rate_limit).await?;
        if room == 0 {
            if progress.renewed.elapsed() >= lease.heartbeat() {
                if !step(services, &recovery, lease, Vec::new(), Vec::new(), None).await? {
                    return Ok(());
                }
                progress.renewed = Instant::now();
            }
            // With a limit, room comes at its pace; without, as resends are recorded.
            let wait = recovery::resend_interval(target.webhook.rate_limit)
                .map_or(WAIT_FOR_ROOM, |interval| {
                    interval.clamp(WAIT_FOR_ROOM, RECHECK)
                });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        let items = services
            .store
            .pending_recovery_items(&recovery.id, i64::try_from(room).unwrap_or(i64::MAX))
            .await?;
        if items.is_empty() {
            end(services, &recovery, &Ending::Done).await?;
            return Ok(());
        }
        let (resends, settled) = resends(services, &recovery, owner, &items).await?;
        let published: Vec<EventId> = resends.iter().map(|event| event.id.clone()).collect();
        if !step(services, &recovery, lease, resends, settled, Some(target)).await? {
            // Cancelled, ended elsewhere, or the lease was lost: nothing of this step was written.
            return Ok(());
        }
        progress.renewed = Instant::now();
        progress.published += published.len() as u64;
        progress.outstanding.extend(published);
    }
    Ok(())
}

/// The webhook and its owner's access, while the recovery may go on; `None` once it ended: when
/// the webhook was disabled or its owner became inactive it is ended here (when the webhook was
/// deleted, the recovery went with it).
async fn check(services: &Services, recovery: &Recovery) -> AppResult<Option<(Target, Access)>> {
    // Read before the webhook: a change after it makes the hand-off's copy stale at once.
    let generation = services.store.change_generation();
    let Some(webhook) = services
        .store
        .webhook(&recovery.tenant, &recovery.webhook_id)
        .await?
    else {
        return Ok(None);
    };
    let (owner, owner_active) =
        crate::caller::owner_access(services, &recovery.tenant, &webhook.owner).await?;
    if let Some(ending) = recovery::must_end(webhook.is_enabled(), owner_active) {
        end(services, recovery, &ending).await?;
        return Ok(None);
    }
    let target = Target {
        webhook,
        generation,
    };
    Ok(Some((target, owner)))
}

/// How many resends may be published now: room among the outstanding ones, and with a rate
/// limit what its half allows so far.
async fn room(
    services: &Services,
    progress: &mut Progress,
    limit: Option<zivio_core::rate_limit::RateLimit>,
) -> StoreResult<usize> {
    if !progress.outstanding.is_empty() {
        progress.outstanding = services.store.still_pending(&progress.outstanding).await?;
    }
    let mut room = recovery::outstanding_bound(limit).saturating_sub(progress.outstanding.len());
    if let Some(interval) = recovery::resend_interval(limit) {
        let due = recovery::resends_due(interval, progress.paced_since.elapsed());
        let allowed = due.saturating_sub(progress.published);
        room = room.min(usize::try_from(allowed).unwrap_or(usize::MAX));
    }
    Ok(room)
}

/// The resends of `items`, shaped with the owner's access now; those the owner can no longer
/// see, or that are no longer stored, are settled as skipped.
async fn resends(
    services: &Services,
    recovery: &Recovery,
    owner: &Access,
    items: &[EventId],
) -> AppResult<(Vec<NewEvent>, Vec<(EventId, Option<EventId>)>)> {
    let now = services.now();
    let mut stored: HashMap<EventId, zivio_store::StoredEvent> = services
        .store
        .events(&recovery.tenant, items)
        .await?
        .into_iter()
        .map(|event| (event.id.clone(), event))
        .collect();
    let mut resends = Vec::with_capacity(items.len());
    let mut settled = Vec::with_capacity(items.len());
    for original in items {
        let event = stored.remove(original);
        match resend_event(services, event, &recovery.webhook_id, owner, now) {
            Ok(event) => {
                settled.push((original.clone(), Some(event.id.clone())));
                resends.push(event);
            }
            Err(_) => settled.push((original.clone(), None)),
        }
    }
    Ok((resends, settled))
}

/// The webhook as this step read it, and the store's count of changes read before it.
struct Target {
    webhook: Webhook,
    generation: Option<u64>,
}

/// Writes one step under the recovery's lease; `false` when nothing was written (cancelled,
/// ended elsewhere, or the lease lost). The resends' deliveries go to this instance's engine in
/// memory when it has room (as a publish's do), otherwise to the queue for a claim.
async fn step(
    services: &Services,
    recovery: &Recovery,
    lease: &Lease,
    resends: Vec<NewEvent>,
    settled: Vec<(EventId, Option<EventId>)>,
    target: Option<&Target>,
) -> StoreResult<bool> {
    let now = services.now();
    let reservation = target
        .filter(|_| !resends.is_empty())
        .and_then(|_| services.handoff.reserve(now, resends.len()));
    let bodies: HashMap<EventId, (String, bytes::Bytes)> = match reservation {
        Some(_) => resends
            .iter()
            .filter_map(|event| {
                let body = bytes::Bytes::from(event.payloads.first()?.clone());
                Some((event.id.clone(), (event.event_type.clone(), body)))
            })
            .collect(),
        None => HashMap::new(),
    };
    let published = !resends.is_empty();
    let written = services
        .store
        .record_recovery_step(RecoveryStep {
            recovery: recovery.id.clone(),
            tenant: recovery.tenant.clone(),
            lease: lease.token.clone(),
            lease_until: now + lease.lasts,
            resends,
            settled,
            deliveries_lease: reservation.as_ref().map(|held| held.lease.clone()),
        })
        .await?;
    let Some(leased) = written else {
        return Ok(false);
    };
    match (reservation, target) {
        (Some(reservation), Some(target)) => {
            reservation.hand_over(handed_over(recovery, target, leased, bodies, now));
        }
        _ if published => services.deliveries_queued.notify_one(),
        _ => {}
    }
    Ok(true)
}

/// The resends' deliveries as the engine takes them from the hand-off.
fn handed_over(
    recovery: &Recovery,
    target: &Target,
    leased: Vec<LeasedDelivery>,
    mut bodies: HashMap<EventId, (String, bytes::Bytes)>,
    now: time::OffsetDateTime,
) -> Vec<ClaimedDelivery> {
    let handed = crate::handoff::Handed {
        tenant: &recovery.tenant,
        webhook: &target.webhook,
        generation: target.generation,
        due_at: now,
        background: true,
    };
    leased
        .into_iter()
        .filter_map(|delivery| {
            let (event_type, body) = bodies.remove(&delivery.event_id)?;
            Some(handed.delivery(delivery, event_type, body))
        })
        .collect()
}

async fn end(services: &Services, recovery: &Recovery, ending: &Ending) -> StoreResult<()> {
    let now = services.now();
    let audit = super::ended_entry(recovery, SYSTEM_ACTOR, now, ending);
    if let Some(ended) = services
        .store
        .end_recovery(&recovery.tenant, &recovery.id, ending, now, &audit)
        .await?
    {
        tracing::info!(recovery = %ended.id, reason = %ending, resent = ended.resent, skipped = ended.skipped, "recovery ended");
    }
    Ok(())
}
