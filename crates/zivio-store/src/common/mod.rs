//! What is the same on SQLite and PostgreSQL. Both accept `$n` placeholders, so each query is
//! written once; the macros here are instantiated per backend with its concrete types, so the
//! two stores share one text of each query instead of keeping twins in step. Only time differs:
//! `$to` turns an `OffsetDateTime` into the backend's column type `$t`, `$from` turns it back.
//!
//! A backend provides `reader()`, `writer()`, `begin_write()`, `run_migrations()` and
//! `close_pools()`; `store_impl!` builds the whole `Store` implementation on them.

pub(crate) mod directory;
pub(crate) mod events;
pub(crate) mod history;
pub(crate) mod queue;
pub(crate) mod sessions;
pub(crate) mod store_impl;
pub(crate) mod webhooks;

pub(crate) use directory::directory_queries;
pub(crate) use events::event_queries;
pub(crate) use history::history_queries;
pub(crate) use queue::queue_queries;
pub(crate) use sessions::session_queries;
pub(crate) use store_impl::store_impl;
pub(crate) use webhooks::webhook_queries;
