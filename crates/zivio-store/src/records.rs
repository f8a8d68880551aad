//! What the store takes and gives besides the domain types of `zivio-core`: events to publish,
//! deliveries claimed for sending, attempt records and their summaries, health counters, sessions
//! and mail.

use time::OffsetDateTime;
use zivio_core::audit::AuditEntry;
use zivio_core::delivery::{AttemptId, DeliveryState, QueueEntryId};
use zivio_core::directory::{Role, User};
use zivio_core::error_kind::ErrorKind;
use zivio_core::event::EventId;
use zivio_core::ids::{TenantId, UserId};
use zivio_core::webhook::WebhookId;

/// A stored audit entry; `id` orders entries recorded at the same instant.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: AuditEntry,
}

/// Where a page of audit entries continues: strictly older than this entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub at: OffsetDateTime,
    pub id: i64,
}

/// An event stored under a producer's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedEvent {
    pub key: String,
    pub id: EventId,
    pub fingerprint: Vec<u8>,
    pub accepted_at: OffsetDateTime,
}

/// A new event with its fan-out: the distinct payload bodies and, per receiving webhook, the
/// index of its body. Stored in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: String,
    pub occurred_at: OffsetDateTime,
    pub accepted_at: OffsetDateTime,
    pub key: Option<String>,
    /// Only for events with a producer key: what a repeat under that key must match.
    pub fingerprint: Option<[u8; 32]>,
    pub resource_id: String,
    pub payloads: Vec<Vec<u8>>,
    pub deliveries: Vec<(WebhookId, usize)>,
    /// The resource as published (placement, owners, data), kept for resends; `None` for test
    /// events.
    pub source: Option<Vec<u8>>,
    /// A test event reaches its webhook even while the webhook is disabled.
    pub is_test: bool,
    /// The event this one resends (single resend or recovery).
    pub resend_of: Option<EventId>,
}

/// The lease a publish stores its deliveries under (see [`Store::publish_leased`]).
#[derive(Debug, Clone)]
pub struct PublishLease {
    pub token: String,
    pub until: OffsetDateTime,
}

/// A delivery stored leased to the instance that published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedDelivery {
    pub id: QueueEntryId,
    pub event_id: EventId,
    pub webhook_id: WebhookId,
}

/// A stored event, as a resend needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: EventId,
    pub event_type: String,
    pub occurred_at: OffsetDateTime,
    pub resource_id: String,
    pub source: Option<Vec<u8>>,
}

/// A delivery of an event to a webhook, with the body it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDelivery {
    pub webhook_id: WebhookId,
    pub state: DeliveryState,
    pub body: Vec<u8>,
}

/// Where and with what a delivery is sent now: the webhook's URL, sealed secret and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub secret_ciphertext: Vec<u8>,
    pub headers: Vec<zivio_core::custom_header::SealedHeader>,
    pub rate_limit: Option<zivio_core::rate_limit::RateLimit>,
}

/// Where a leased delivery goes now, read just before its attempt.
pub(crate) struct SendTarget {
    pub webhook_id: String,
    pub url: String,
    pub secret_ciphertext: Vec<u8>,
    pub headers: Vec<zivio_core::custom_header::SealedHeader>,
    pub rate_limit: Option<zivio_core::rate_limit::RateLimit>,
    /// The webhook is enabled (or this is a test event) and its owner is active.
    pub may_send: bool,
    pub leased_until: OffsetDateTime,
}

impl SendTarget {
    pub fn target(&self) -> Target {
        Target {
            url: self.url.clone(),
            secret_ciphertext: self.secret_ciphertext.clone(),
            headers: self.headers.clone(),
            rate_limit: self.rate_limit,
        }
    }
}

/// A delivery claimed for one attempt, with everything needed to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub id: QueueEntryId,
    pub tenant: TenantId,
    pub webhook_id: WebhookId,
    pub url: String,
    pub secret_ciphertext: Vec<u8>,
    /// The webhook's custom request headers, values sealed.
    pub headers: Vec<zivio_core::custom_header::SealedHeader>,
    /// The webhook's rate limit when the URL and secret were read.
    pub rate_limit: Option<zivio_core::rate_limit::RateLimit>,
    /// When this attempt became due: a delivery held back by its rate limit waits from here.
    pub due_at: OffsetDateTime,
    pub event_id: EventId,
    pub event_type: String,
    /// The number of this attempt (1-based).
    pub attempt: u32,
    /// Shared, not copied, by the deliveries of one payload.
    pub body: bytes::Bytes,
    /// Where the store can tell (SQLite: one process owns it), its count of changes to
    /// webhooks and the directory when URL and secret were read (at the claim, or at the
    /// publish's fan-out); see [`Store::change_generation`].
    pub generation: Option<u64>,
    /// A recovery's resend: it takes at most half of its webhook's send slots, so new events
    /// never queue behind a recovery.
    pub background: bool,
}

/// The record of one attempt and what it means for its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub id: AttemptId,
    /// The queue entry this attempt was sent for.
    pub queue_entry: QueueEntryId,
    pub tenant: TenantId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event_type: String,
    pub attempt: u32,
    pub succeeded: bool,
    pub request_url: String,
    /// JSON object of the request headers sent.
    pub request_headers: String,
    pub response_status: Option<u16>,
    /// JSON object of the response headers, when there was a response.
    pub response_headers: Option<String>,
    pub response_body: Option<Vec<u8>>,
    pub response_truncated: bool,
    pub duration_ms: i64,
    pub error_kind: Option<ErrorKind>,
    pub error_detail: Option<String>,
    pub created_at: OffsetDateTime,
    /// When the next attempt is due; `None` ends the delivery (as `succeeded` says).
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptOutcome {
    /// The delivery moved on (it was still pending under the lease).
    pub moved: bool,
    /// This failure disabled the webhook automatically (it happens once, whatever the number of
    /// instances).
    pub auto_disabled: bool,
}

/// A finished attempt to record under the lease its delivery was claimed with.
#[derive(Debug, Clone)]
pub struct FinishedAttempt {
    pub lease: String,
    pub record: AttemptRecord,
    pub auto_disable: AutoDisable,
}

/// When a failure disables its webhook: it has failed without a success since before
/// `failing_before`. `mail` queues a notice to every active manager of the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoDisable {
    pub failing_before: OffsetDateTime,
    pub mail: bool,
}

/// Which attempts a page of the deliveries log holds, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptFilter {
    pub webhook: Option<WebhookId>,
    pub event_type: Option<EventTypeFilter>,
    pub event_id: Option<EventId>,
    pub succeeded: Option<bool>,
    /// Inclusive bounds on the attempt time.
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    /// Strictly older than this attempt.
    pub before: Option<AttemptCursor>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypeFilter {
    /// One event type.
    Exact(String),
    /// Any of these types: a category's (`invoices.*`), as the catalog lists them.
    AnyOf(Vec<String>),
}

/// Where a page of the deliveries log continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptCursor {
    pub at: OffsetDateTime,
    pub id: AttemptId,
}

/// One attempt in the deliveries log, without its request and response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSummary {
    pub id: AttemptId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event_type: String,
    pub attempt: u32,
    pub succeeded: bool,
    pub response_status: Option<u16>,
    pub duration_ms: i64,
    pub error_kind: Option<ErrorKind>,
    pub error_detail: Option<String>,
    pub created_at: OffsetDateTime,
    /// When the next attempt of this delivery is due, if this is its latest attempt and one
    /// will follow (null once finished or cancelled).
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// One attempt with its request and response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptDetail {
    pub summary: AttemptSummary,
    pub request_url: String,
    /// JSON object of the request headers sent.
    pub request_headers: String,
    pub request_body: Vec<u8>,
    /// JSON object of the response headers, when there was a response.
    pub response_headers: Option<String>,
    pub response_body: Option<Vec<u8>>,
    pub response_truncated: bool,
    /// The event that this attempt's event resends, if it is a resend.
    pub resend_of: Option<EventId>,
}

/// The facts health is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthCounts {
    pub last_attempt_at: Option<OffsetDateTime>,
    pub last_succeeded: Option<bool>,
    pub failing_since: Option<OffsetDateTime>,
    pub succeeded_24h: i64,
    pub attempts_24h: i64,
    pub succeeded_7d: i64,
    pub attempts_7d: i64,
}

/// An admin UI session (found by the digest of its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub tenant: TenantId,
    pub user: UserId,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
}

/// A mail taken from the outbox for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub id: i64,
    pub recipient: String,
    /// The notice's facts as JSON.
    pub notice: String,
    /// Earlier attempts to send it.
    pub attempts: u32,
}

/// A recovery: what failed to one webhook in `[since, until)`, resent in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// `rcv_...`
    pub id: String,
    pub tenant: TenantId,
    pub webhook_id: WebhookId,
    pub since: OffsetDateTime,
    pub until: OffsetDateTime,
    pub state: zivio_core::recovery::RecoveryState,
    pub ended_reason: Option<String>,
    /// Events selected when it started.
    pub selected: i64,
    pub resent: i64,
    /// Events the owner could no longer see, or no longer stored.
    pub skipped: i64,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

impl Recovery {
    pub fn counts(&self) -> zivio_core::recovery::Counts {
        zivio_core::recovery::Counts {
            selected: self.selected,
            resent: self.resent,
            skipped: self.skipped,
        }
    }
}

/// One step of a recovery, written together or not at all: the resends published and the
/// selected events settled (each resent as a new event, or skipped), under the recovery's lease.
#[derive(Debug, Clone)]
pub struct RecoveryStep {
    pub recovery: String,
    pub tenant: TenantId,
    pub lease: String,
    pub lease_until: OffsetDateTime,
    pub resends: Vec<NewEvent>,
    /// `(selected event, its resend)`; `None`: skipped.
    pub settled: Vec<(EventId, Option<EventId>)>,
    /// Stores the resends' deliveries leased to the publishing instance (for its engine's
    /// hand-off), when given.
    pub deliveries_lease: Option<PublishLease>,
}

/// Who holds a live API key, and when it was last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    pub tenant: TenantId,
    pub user: UserId,
    pub last_used_at: Option<OffsetDateTime>,
}

/// Whose sign-in link was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHolder {
    pub tenant: TenantId,
    pub user: UserId,
}

/// A user and the roles they hold that exist: everything access is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserWithRoles {
    pub user: User,
    pub roles: Vec<Role>,
}

/// A webhook's attempts in one hour, for the health charts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourlyCounts {
    pub webhook_id: WebhookId,
    /// The start of the hour.
    pub hour: OffsetDateTime,
    pub succeeded: i64,
    pub failed: i64,
}

/// A statement's query plan, as the database explains it (tests check plans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementPlan {
    pub statement: &'static str,
    pub plan: String,
}
