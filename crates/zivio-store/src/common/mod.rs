//! What both backends share that does not depend on the backend's types: claim statements
//! written alike in both dialects, the fixed chunk sizes of multi-row statements, the check of a
//! stored rate limit. What does depend on them (almost every query) is in `queries`, which each
//! backend compiles as its own module.

pub(crate) mod claims;

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

/// A stored error kind. One this version does not know (written by a newer instance during a
/// rolling upgrade, or before a downgrade) reads as none, so that one row cannot fail a whole
/// page of the deliveries log.
pub(crate) fn error_kind_of(stored: Option<String>) -> Option<zivio_core::error_kind::ErrorKind> {
    let text = stored?;
    let kind = zivio_core::error_kind::ErrorKind::parse(&text);
    if kind.is_none() {
        tracing::warn!(error_kind = %text, "an attempt's error kind is unknown to this version");
    }
    kind
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
