//! Storage of Zivio Webhooks: one [`Store`] trait speaking domain types, implemented for the
//! embedded SQLite default and for PostgreSQL. Both pass one contract suite (`tests/contract.rs`).
//! Every tenant-owned method takes the tenant first, and multi-statement writes are one
//! transaction (audit entries are written in the same transaction as the change they record).

use time::OffsetDateTime;
use zivio_core::audit::AuditEntry;
use zivio_core::directory::{ApiKey, BootstrapSeed, Role, Tenant, User};
use zivio_core::ids::{RoleName, TenantId, UserId};
use zivio_core::webhook::{Webhook, WebhookId};

mod common;
mod connect;
mod kinds;
mod postgres;
mod records;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use connect::{ConnectOptions, backend_of, connect, redact_url};
pub use kinds::{Backend, INACTIVE_USER, KeyCheck, StoreError, StoreResult};
pub(crate) use kinds::{Work, conflict_on_unique, stored};
pub use postgres::PostgresStore;
pub(crate) use records::SendTarget;
pub use records::*;
pub use sqlite::SqliteStore;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Applies pending migrations; harmless when there are none. On PostgreSQL this holds an
    /// advisory lock, so several instances may start at once.
    async fn migrate(&self) -> StoreResult<()>;

    /// Answers when the database does (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Records `check` as the secrets key's check value unless one is recorded, and says
    /// whether the recorded one matches.
    async fn claim_key_check(&self, check: &str) -> StoreResult<KeyCheck>;

    /// On a database that has never been bootstrapped and holds no tenant, creates the seed's
    /// tenant, role and admin in one transaction and returns `true`. Otherwise changes nothing
    /// and returns `false`, also when several instances race.
    async fn bootstrap(&self, seed: &BootstrapSeed, now: OffsetDateTime) -> StoreResult<bool>;

    // --- Directory -----------------------------------------------------------------------

    async fn upsert_tenant(&self, tenant: &Tenant, now: OffsetDateTime) -> StoreResult<()>;

    /// Deletes the tenant and everything it owns. `false` when there was no such tenant.
    async fn delete_tenant(&self, tenant: &TenantId) -> StoreResult<bool>;

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<Option<Tenant>>;

    /// Creates or replaces a role and its permissions. `NotFound` without the tenant. Users who
    /// lose `webhooks:manage` by it have their admin sessions deleted and API keys revoked in
    /// the same transaction (`zivio_core::directory::access_ended`), audited.
    async fn upsert_role(
        &self,
        tenant: &TenantId,
        role: &Role,
        now: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Deletes a role; users who lose `webhooks:manage` by it lose their sessions and keys, as
    /// with `upsert_role`. `false` when there was no such role (or tenant).
    async fn delete_role(
        &self,
        tenant: &TenantId,
        name: &RoleName,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    async fn role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<Option<Role>>;

    /// Creates or replaces a user and their role names (never their password). `NotFound`
    /// without the tenant; `Conflict` when another user of the tenant has the email. A user
    /// deactivated, or losing `webhooks:manage`, by it has their admin sessions deleted and API
    /// keys revoked in the same transaction (`zivio_core::directory::access_ended`), audited;
    /// regaining access later does not revive them.
    async fn upsert_user(
        &self,
        tenant: &TenantId,
        user: &User,
        now: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Deletes the user with their sign-in links and admin sessions; their API keys stay listed,
    /// revoked (`user_deleted`), so a user created later with the same id cannot use them.
    /// Audited when it ended any key or session. `false` when there was no such user.
    async fn delete_user(
        &self,
        tenant: &TenantId,
        user: &UserId,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    async fn user(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<User>>;

    /// The user and the roles they hold that exist: everything access is computed from.
    async fn user_with_roles(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> StoreResult<Option<(User, Vec<Role>)>>;

    /// Sets the argon2id hash; `false` when there is no such user.
    async fn set_password(
        &self,
        tenant: &TenantId,
        user: &UserId,
        hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// The user's argon2id password hash, if a password was set.
    async fn password_hash(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>>;

    // --- API keys and sign-in links --------------------------------------------------------

    /// Stores a new key (only its SHA-256 digest) and the audit entry. `NotFound` without the
    /// user, `Conflict` when the user is inactive.
    async fn create_api_key(
        &self,
        tenant: &TenantId,
        key: &ApiKey,
        digest: &[u8],
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// The user's keys, revoked ones included, oldest first.
    async fn api_keys(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Vec<ApiKey>>;

    /// Revokes a live key of the user (`revoked`, at `audit.at`; it stays listed) with the
    /// audit entry. `false` when the user has no live key with this id.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;

    /// Who holds the live (unrevoked) key with this digest, and when it was last used.
    async fn api_key_holder(
        &self,
        digest: &[u8],
    ) -> StoreResult<Option<(TenantId, UserId, Option<OffsetDateTime>)>>;

    /// Records that the key with this digest was used now.
    async fn touch_api_key(&self, digest: &[u8], now: OffsetDateTime) -> StoreResult<()>;

    /// Stores a single-use sign-in link (only its token's digest) and the audit entry.
    async fn create_sign_in_link(
        &self,
        tenant: &TenantId,
        user: &UserId,
        digest: &[u8],
        expires_at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// The user of the tenant with this email (case-insensitive).
    async fn user_by_email(&self, tenant: &TenantId, email: &str) -> StoreResult<Option<UserId>>;

    /// Uses a sign-in link: if it is unused and unexpired at `now` it becomes used and its
    /// tenant and user are returned; otherwise `None`. Single use even under races.
    async fn consume_sign_in_link(
        &self,
        digest: &[u8],
        now: OffsetDateTime,
    ) -> StoreResult<Option<(TenantId, UserId)>>;

    // --- Admin sessions ----------------------------------------------------------------------

    /// Stores a new session under the digest of its id, with the sign-in's audit entry.
    /// `NotFound` without the user, `Conflict` when the user is inactive.
    async fn create_session(
        &self,
        digest: &[u8],
        tenant: &TenantId,
        user: &UserId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    async fn session(&self, digest: &[u8]) -> StoreResult<Option<AdminSession>>;

    async fn touch_session(&self, digest: &[u8], now: OffsetDateTime) -> StoreResult<()>;

    async fn delete_session(&self, digest: &[u8]) -> StoreResult<()>;

    /// Keeps a sealed signing secret with the session until it is shown once.
    async fn set_pending_secret(
        &self,
        digest: &[u8],
        webhook: &str,
        sealed: &[u8],
    ) -> StoreResult<()>;

    /// The sealed secret kept for this webhook, removed as it is read.
    async fn take_pending_secret(
        &self,
        digest: &[u8],
        webhook: &str,
    ) -> StoreResult<Option<Vec<u8>>>;

    /// Deletes sessions idle since before `cutoff`.
    async fn purge_sessions(&self, cutoff: OffsetDateTime) -> StoreResult<u64>;

    // --- Webhooks --------------------------------------------------------------------------

    /// Stores a new webhook unless the tenant already has `limit`: `Conflict` then.
    async fn create_webhook(
        &self,
        webhook: &Webhook,
        limit: u32,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// The tenant's webhooks, oldest first.
    async fn webhooks(&self, tenant: &TenantId) -> StoreResult<Vec<Webhook>>;

    async fn webhook(&self, tenant: &TenantId, id: &WebhookId) -> StoreResult<Option<Webhook>>;

    /// Replaces the webhook's mutable fields if it is still at `webhook.version` (`Conflict`
    /// otherwise: someone changed it since it was read). When it is disabled, queued
    /// deliveries are cancelled in the same transaction. `NotFound` when it does not exist.
    async fn update_webhook(&self, webhook: &Webhook, audit: &AuditEntry) -> StoreResult<()>;

    /// Deletes the webhook and its history; the audit entry stays.
    async fn delete_webhook(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;

    // --- Events ----------------------------------------------------------------------------

    /// The tenant's events stored under any of these producer keys.
    async fn events_by_key(
        &self,
        tenant: &TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<KeyedEvent>>;

    /// Stores events, their distinct payloads and their queued deliveries in one transaction.
    /// Deliveries are queued only to webhooks that are still enabled at commit. A producer key
    /// accepted before `key_cutoff` is free again; one taken meanwhile is a `Conflict` and
    /// nothing is stored.
    async fn publish_events(
        &self,
        tenant: &TenantId,
        events: &[NewEvent],
        key_cutoff: OffsetDateTime,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;

    /// Publishes like [`Store::publish_events`], but stores the deliveries leased to `lease`
    /// (the publishing instance hands them to its engine at once, without a claim) and returns
    /// them. Other instances are not told: the work is taken. `audit` is recorded with them.
    async fn publish_leased(
        &self,
        tenant: &TenantId,
        events: &[NewEvent],
        key_cutoff: OffsetDateTime,
        lease: &PublishLease,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Vec<LeasedDelivery>>;

    /// One event of the tenant.
    async fn event(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<StoredEvent>>;

    /// Those of the events `ids` that are stored, in no particular order.
    async fn events(&self, tenant: &TenantId, ids: &[String]) -> StoreResult<Vec<StoredEvent>>;

    /// The deliveries of one event, by webhook id.
    async fn deliveries_of_event(
        &self,
        tenant: &TenantId,
        event_id: &str,
    ) -> StoreResult<Vec<QueuedDelivery>>;

    // --- Delivery queue ----------------------------------------------------------------------

    /// Leases up to `limit` due deliveries to `lease` until `lease_until` (expired leases count
    /// as free), oldest first but at most `per_webhook` of any one webhook (a backlog cannot
    /// crowd the others out), skipping the webhooks in `skip` (those the caller cannot take more
    /// work for). `lease` must be unique per claim.
    async fn claim_deliveries(
        &self,
        lease: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        per_webhook: u32,
        skip: &[WebhookId],
    ) -> StoreResult<Vec<ClaimedDelivery>>;

    /// Records an attempt and moves its delivery on (next due time, or finished), if the
    /// delivery is still pending under `lease`. A delivery cancelled or deleted meanwhile keeps
    /// its state (the attempt is still recorded while the delivery exists). The webhook's
    /// health counters move with it; a failure of a webhook failing since before
    /// `auto_disable.failing_before` disables it (one conditional update), cancels its pending
    /// work, audits it and queues the notices, all in the same transaction.
    async fn record_attempt(
        &self,
        lease: &str,
        attempt: &AttemptRecord,
        auto_disable: AutoDisable,
    ) -> StoreResult<AttemptOutcome> {
        let finished = FinishedAttempt {
            lease: lease.to_owned(),
            record: attempt.clone(),
            auto_disable,
        };
        let mut outcomes = self.record_attempts(vec![finished]).await?;
        Ok(outcomes.remove(0))
    }

    /// Records several attempts as `record_attempt` does each, in one transaction (outcomes in
    /// the same order): the webhook's latest attempt and hourly counters are written once per
    /// webhook, and only a webhook's latest failure of the batch may disable it.
    async fn record_attempts(
        &self,
        attempts: Vec<FinishedAttempt>,
    ) -> StoreResult<Vec<AttemptOutcome>>;

    /// Just before sending: extends the lease to `lease_until` if it is still held and not
    /// expired at `now` (so the attempt cannot outlive it; no write when the lease already runs
    /// that long), and returns the webhook's current URL
    /// and sealed secret (a rotation or URL change since the claim applies). A lease lost or
    /// expired, or a delivery no longer pending: `None`. A webhook disabled meanwhile, or one
    /// whose owner is inactive or gone, has the delivery cancelled: `None` too. `None` means send
    /// nothing.
    async fn begin_attempt(
        &self,
        lease: &str,
        delivery: i64,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Option<Target>>;

    /// [`Store::begin_attempt`] for many deliveries, `(lease, delivery)` each, with one read for
    /// all of them (the rare cancellation or lease extension runs one by one); answers in order.
    async fn begin_attempts(
        &self,
        attempts: &[(String, i64)],
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Vec<Option<Target>>>;

    /// Gives leased deliveries back to the queue as they were (no attempt counted).
    async fn release_deliveries(&self, lease: &str, ids: &[i64]) -> StoreResult<()>;

    /// Where one process owns the database (SQLite): its count of writes that may change
    /// webhooks or the directory, each counted when it takes the writer and again when it ends.
    /// While the count holds, what was read at that count is current: a claim's URL and secret
    /// (so [`Store::begin_attempt`]'s read can be skipped), a tenant's webhooks and their owners'
    /// access. `None` where other processes write too (PostgreSQL).
    fn change_generation(&self) -> Option<u64>;

    /// Frees every lease (a restarted single-instance SQLite service owns them all).
    async fn release_all_leases(&self) -> StoreResult<u64>;

    /// When pending work next becomes claimable (due, or its lease expiring), if any.
    async fn next_due(&self) -> StoreResult<Option<OffsetDateTime>>;

    /// Calls `wake` whenever another instance stores new work (PostgreSQL `LISTEN`); returns
    /// at once where there are no other instances (SQLite). Runs until the store closes.
    async fn listen_for_work(&self, wake: std::sync::Arc<tokio::sync::Notify>) -> StoreResult<()>;

    /// How many deliveries are pending (the queue depth).
    async fn pending_deliveries(&self) -> StoreResult<i64>;

    /// Takes up to `want` (at least one) of the `limit` requests that may start to `webhook` in
    /// `second` of the clock, counted over every instance; returns how many it got (none once
    /// the second's allowance is used up).
    async fn take_rate_tokens(
        &self,
        webhook: &WebhookId,
        second: i64,
        want: u32,
        limit: zivio_core::rate_limit::RateLimit,
    ) -> StoreResult<u32>;

    /// Per webhook of `webhooks`, its pending deliveries due by `now` (absent: none).
    async fn due_deliveries(
        &self,
        webhooks: &[WebhookId],
        now: OffsetDateTime,
    ) -> StoreResult<std::collections::HashMap<WebhookId, i64>>;

    /// Deletes the rate-limit counts of seconds before `before`.
    async fn purge_rate_seconds(&self, before: i64) -> StoreResult<u64>;

    // --- Recoveries ----------------------------------------------------------------------------

    /// How many events a recovery of `webhook` over `[since, until)` would resend now.
    async fn count_recoverable(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<i64>;

    /// Starts `recovery` with its selection fixed now, and records `audit` (its changes gain
    /// the number selected). [`StoreError::Conflict`] while another recovery of the webhook
    /// runs or the tenant runs `max_running`.
    async fn start_recovery(
        &self,
        recovery: &Recovery,
        max_running: i64,
        audit: &AuditEntry,
    ) -> StoreResult<Recovery>;

    /// The webhook's recoveries, newest first.
    async fn recoveries(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
    ) -> StoreResult<Vec<Recovery>>;

    async fn recovery(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Recovery>>;

    /// Ends a running recovery and records `audit` (its changes gain the final counts); `None`
    /// when it is not running.
    async fn end_recovery(
        &self,
        tenant: &TenantId,
        id: &str,
        ending: &zivio_core::recovery::Ending,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<Recovery>>;

    /// Leases a running recovery that no live instance works on.
    async fn claim_recovery(
        &self,
        lease: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Option<Recovery>>;

    /// Up to `limit` selected events of the recovery not yet settled, in a stable order.
    async fn pending_recovery_items(&self, recovery: &str, limit: i64) -> StoreResult<Vec<String>>;

    /// Publishes the step's resends and settles its events in one transaction, and extends the
    /// lease; `None` (nothing written) when the recovery no longer runs under this lease,
    /// otherwise the deliveries stored leased (with `deliveries_lease`).
    async fn record_recovery_step(
        &self,
        step: RecoveryStep,
    ) -> StoreResult<Option<Vec<LeasedDelivery>>>;

    /// Those of these events that still have a pending delivery.
    async fn still_pending(&self, events: &[String]) -> StoreResult<Vec<String>>;

    /// Recoveries running, over every tenant.
    async fn running_recoveries(&self) -> StoreResult<i64>;

    /// The attempts of one event to one webhook, oldest first.
    async fn attempts_of(
        &self,
        tenant: &TenantId,
        event_id: &str,
        webhook: &WebhookId,
    ) -> StoreResult<Vec<AttemptRecord>>;

    // --- Deliveries log and health -------------------------------------------------------------

    /// A page of the tenant's attempts, newest first.
    async fn delivery_attempts(
        &self,
        tenant: &TenantId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<AttemptSummary>>;

    /// The database's plan for that page (operators and tests check that an index serves it).
    async fn explain_delivery_attempts(
        &self,
        tenant: &TenantId,
        filter: &AttemptFilter,
    ) -> StoreResult<String>;

    async fn delivery_attempt(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> StoreResult<Option<AttemptDetail>>;

    /// Health facts of the tenant's webhooks (all of them, or `only` one), counting attempts
    /// in the hours starting at or after `since_7d` and `since_24h`.
    async fn webhook_health(
        &self,
        tenant: &TenantId,
        only: Option<&WebhookId>,
        since_7d: OffsetDateTime,
        since_24h: OffsetDateTime,
    ) -> StoreResult<Vec<(WebhookId, HealthCounts)>>;

    /// The hourly attempt counters of the tenant's webhooks since `since`: (webhook, hour start,
    /// succeeded, failed), for the health charts.
    async fn webhook_hours(
        &self,
        tenant: &TenantId,
        since: OffsetDateTime,
    ) -> StoreResult<Vec<(WebhookId, OffsetDateTime, i64, i64)>>;

    // --- Mail outbox -----------------------------------------------------------------------

    /// Leases up to `limit` due, unsent mails until `lease_until`.
    async fn claim_mail(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMail>>;

    async fn mail_sent(&self, id: i64, at: OffsetDateTime) -> StoreResult<()>;

    /// Counts a failed try and sets when to try again.
    async fn mail_failed(&self, id: i64, error: &str, retry_at: OffsetDateTime) -> StoreResult<()>;

    // --- Retention -------------------------------------------------------------------------

    /// Deletes events accepted before `cutoff` with their payloads, deliveries and attempts,
    /// unless a delivery of theirs is still pending, and mail sent before `cutoff`; in bounded
    /// batches. Returns how many events.
    async fn purge_events(&self, cutoff: OffsetDateTime) -> StoreResult<u64>;

    /// Deletes hourly health counters of hours starting before `cutoff`.
    async fn purge_health_counters(&self, cutoff: OffsetDateTime) -> StoreResult<u64>;

    // --- Audit log -------------------------------------------------------------------------

    /// Newest first, strictly older than `before` when given.
    async fn audit_entries(
        &self,
        tenant: &TenantId,
        before: Option<AuditCursor>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;

    /// The newest entries about one webhook (also after it was deleted).
    async fn webhook_audit_entries(
        &self,
        tenant: &TenantId,
        webhook: &str,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;

    /// Deletes audit entries recorded before `cutoff` (in bounded batches, so a large backlog
    /// never holds a long write); returns how many.
    async fn purge_audit(&self, cutoff: OffsetDateTime) -> StoreResult<u64>;

    /// Waits for in-flight queries and closes every connection.
    async fn close(&self);
}

#[cfg(test)]
mod tests;
