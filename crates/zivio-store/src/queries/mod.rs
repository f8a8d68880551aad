//! The queries both backends run, written once. Both accept `$n` placeholders, so each query
//! has one text; what differs is named by the backend that includes this folder: `sqlite.rs`
//! and `postgres.rs` each compile it as their own module `queries` (`#[path]`), with their own
//! `Db` (the sqlx database), `DbTime` (the column type of a time: Unix milliseconds on SQLite,
//! `timestamptz` on PostgreSQL), `to_db`/`from_db` between it and `OffsetDateTime`, and the few
//! statements that differ in dialect. So every function here exists twice, once per backend,
//! with concrete types, and no query text is kept in step by hand.
//!
//! A backend provides `reader()`, `writer()`, `begin_write()` (a write that may change webhooks
//! or the directory), `begin_uncounted_write()` (one that cannot: the delivery queue, mail,
//! session activity, purges), `change_counter()` (SQLite counts the former, so that a send or a
//! publish can skip re-reading what did not change), `run_migrations()` and `close_pools()`;
//! `store_impl` implements `Store` and its eight area traits on them.

pub(crate) mod directory;
pub(crate) mod events;
pub(crate) mod history;
pub(crate) mod keys;
pub(crate) mod pacing;
#[cfg(feature = "testing")]
pub(crate) mod plans;
pub(crate) mod queue;
pub(crate) mod records;
pub(crate) mod recoveries;
pub(crate) mod sessions;
mod store_impl;
pub(crate) mod webhooks;

use super::{
    BACKEND, BackendStore, CLAIM, Db, DbTime, INSERT_PAYLOADS, LOCK_WEBHOOKS, PAYLOAD_IDS,
    SKIP_LOCKED, TAKE_OVER_ENDED_LEASES, announce_work, from_db, to_db,
};
#[cfg(feature = "testing")]
use super::{EXPLAIN, PLAN_COLUMN};

type Pool = sqlx::Pool<Db>;
type Connection = <Db as sqlx::Database>::Connection;
type Row = <Db as sqlx::Database>::Row;
