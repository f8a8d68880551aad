//! Storage of Zivio Webhooks: one [`Store`] trait speaking domain types, implemented for the
//! embedded SQLite default and for PostgreSQL. Both pass one contract suite (`tests/`, a file per
//! feature, each behaviour run on both backends by `tests/support`'s `contract!`).
//! Every tenant-owned method takes the tenant first, and multi-statement writes are one
//! transaction (audit entries are written in the same transaction as the change they record).

use time::OffsetDateTime;
use zivio_core::directory::BootstrapSeed;

mod common;
mod connect;
mod contract;
mod kinds;
mod postgres;
mod records;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use connect::{ConnectOptions, backend_of, connect, redact_url};
pub use contract::{
    AccessStore, DirectoryStore, EventStore, HistoryStore, QueueStore, RecoveryStore, UpkeepStore,
    WebhookStore,
};
pub use kinds::{Backend, INACTIVE_USER, KeyCheck, StoreError, StoreResult};
pub(crate) use kinds::{
    Work, attempt_id, conflict_on_unique, delivery_state, event_id, stored, webhook_id,
};
pub use postgres::PostgresStore;
pub(crate) use records::SendTarget;
pub use records::*;
pub use sqlite::SqliteStore;

#[async_trait::async_trait]
pub trait Store:
    DirectoryStore
    + AccessStore
    + WebhookStore
    + EventStore
    + QueueStore
    + RecoveryStore
    + HistoryStore
    + UpkeepStore
    + 'static
{
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

    /// Waits for in-flight queries and closes every connection.
    async fn close(&self);
}

#[cfg(test)]
mod tests;
