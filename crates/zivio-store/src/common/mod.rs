//! What is the same on SQLite and PostgreSQL. Both accept `$n` placeholders, so each query is
//! written once; the macros here are instantiated per backend with its concrete types, so the
//! two stores share one text of each query instead of keeping twins in step. Only time differs:
//! `$to` turns an `OffsetDateTime` into the backend's column type `$t`, `$from` turns it back.
//!
//! A backend provides `reader()`, `writer()`, `begin_write()` (a write that may change webhooks
//! or the directory), `begin_uncounted_write()` (one that cannot: the delivery queue, mail,
//! session activity, purges), `change_counter()` (SQLite counts the former, so that a send or a
//! publish can skip re-reading what did not change),
//! `run_migrations()` and `close_pools()`; `store_impl!` builds the whole `Store` implementation
//! on them.

pub(crate) mod claims;
pub(crate) mod directory;
pub(crate) mod events;
pub(crate) mod history;
pub(crate) mod pacing;
pub(crate) mod queue;
pub(crate) mod recoveries;
pub(crate) mod sessions;
pub(crate) mod store_impl;
pub(crate) mod webhooks;

pub(crate) use directory::directory_queries;
pub(crate) use events::event_queries;
pub(crate) use history::history_queries;
pub(crate) use pacing::pacing_queries;
pub(crate) use queue::queue_queries;
pub(crate) use recoveries::recovery_queries;
pub(crate) use sessions::session_queries;
pub(crate) use store_impl::store_impl;
pub(crate) use webhooks::webhook_queries;

/// Sizes of the chunks multi-row statements are cut into: a few fixed shapes, so that their
/// prepared statements are reused (one per distinct row count would crowd the statement cache),
/// and few statements per batch.
const CHUNK_SIZES: [usize; 4] = [256, 32, 8, 1];

/// A stored rate limit (the column's check keeps it within bounds).
pub(crate) fn rate_limit_of(
    stored: Option<i32>,
) -> crate::StoreResult<Option<zivio_core::rate_limit::RateLimit>> {
    stored
        .map(|limit| {
            zivio_core::rate_limit::RateLimit::from_stored(i64::from(limit))
                .ok_or_else(|| crate::StoreError::Corrupt(format!("rate_limit {limit}")))
        })
        .transpose()
}

/// `items` in consecutive chunks of [`CHUNK_SIZES`], largest first.
pub(crate) fn fixed_chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    for size in CHUNK_SIZES {
        while items.len() >= size {
            let (chunk, rest) = items.split_at(size);
            chunks.push(chunk);
            items = rest;
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_take_fixed_sizes_and_keep_order() {
        let items: Vec<u32> = (0..300).collect();
        let sizes: Vec<usize> = super::fixed_chunks(&items)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [256, 32, 8, 1, 1, 1, 1]);
        let joined: Vec<u32> = super::fixed_chunks(&items).concat();
        assert_eq!(joined, items);
        assert!(super::fixed_chunks::<u32>(&[]).is_empty());
    }
}
