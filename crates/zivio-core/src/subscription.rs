//! What a webhook subscribes to (docs/product.md §2): an exact event type, a whole category as
//! `<collection>.*` (the type-prefix alias `invoice.*` is accepted and stored canonically), or
//! `*` for everything. Categories and `*` include types added to the catalog later.

use std::fmt;

use crate::catalog::{Catalog, TEST_EVENT_TYPE};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventFilter {
    All,
    /// A collection and its type prefix (`invoices`, `invoice`).
    Category {
        collection: String,
        prefix: String,
    },
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("`{0}` is not an event type, category or `*`")]
    Malformed(String),
    #[error("unknown category `{0}`")]
    UnknownCategory(String),
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("`webhook.test` cannot be subscribed to; send a test event instead")]
    TestEvent,
}

impl EventFilter {
    pub fn parse(text: &str, catalog: &Catalog) -> Result<Self, FilterError> {
        let text = text.trim();
        if text == "*" {
            return Ok(EventFilter::All);
        }
        if text == TEST_EVENT_TYPE {
            return Err(FilterError::TestEvent);
        }
        if let Some(name) = text.strip_suffix(".*") {
            let collection = catalog
                .collection(name)
                .or_else(|| catalog.collection_by_prefix(name))
                .ok_or_else(|| {
                    if is_word(name) {
                        FilterError::UnknownCategory(text.to_owned())
                    } else {
                        FilterError::Malformed(text.to_owned())
                    }
                })?;
            return Ok(EventFilter::Category {
                collection: collection.name.clone(),
                prefix: collection.type_prefix.clone(),
            });
        }
        match text.split_once('.') {
            Some((prefix, action)) if is_word(prefix) && is_word(action) => catalog
                .event_type(text)
                .map(|event_type| EventFilter::Exact(event_type.name.clone()))
                .ok_or_else(|| FilterError::UnknownType(text.to_owned())),
            _ => Err(FilterError::Malformed(text.to_owned())),
        }
    }

    /// Parses a stored, canonical filter; the catalog may have changed since, so a category
    /// or type it no longer knows still round-trips rather than failing to load.
    pub fn from_canonical(text: &str, catalog: &Catalog) -> Self {
        Self::parse(text, catalog).unwrap_or_else(|_| match text.strip_suffix(".*") {
            Some(collection) => EventFilter::Category {
                collection: collection.to_owned(),
                prefix: collection.to_owned(),
            },
            None => EventFilter::Exact(text.to_owned()),
        })
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventFilter::All => event_type != TEST_EVENT_TYPE,
            EventFilter::Category { prefix, .. } => event_type
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|action| !action.is_empty()),
            EventFilter::Exact(name) => name == event_type,
        }
    }
}

impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventFilter::All => f.write_str("*"),
            EventFilter::Category { collection, .. } => write!(f, "{collection}.*"),
            EventFilter::Exact(name) => f.write_str(name),
        }
    }
}

fn is_word(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Parses a webhook's subscription list: at least one filter, duplicates removed, canonical
/// order. Every offending entry is reported with its index.
pub fn parse_all(
    texts: &[String],
    catalog: &Catalog,
) -> Result<Vec<EventFilter>, Vec<(usize, FilterError)>> {
    let mut filters = Vec::with_capacity(texts.len());
    let mut errors = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        match EventFilter::parse(text, catalog) {
            Ok(filter) => filters.push(filter),
            Err(error) => errors.push((index, error)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    filters.sort();
    filters.dedup();
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<EventFilter, FilterError> {
        EventFilter::parse(text, Catalog::builtin())
    }

    #[test]
    fn accepts_all_categories_aliases_and_types() {
        assert_eq!(parse("*").unwrap().to_string(), "*");
        assert_eq!(parse("invoices.*").unwrap().to_string(), "invoices.*");
        assert_eq!(
            parse("invoice.*").unwrap().to_string(),
            "invoices.*",
            "alias stored canonically"
        );
        assert_eq!(
            parse("job_approval.*").unwrap().to_string(),
            "job_approvals.*"
        );
        assert_eq!(parse("invoice.paid").unwrap().to_string(), "invoice.paid");
    }

    #[test]
    fn refuses_unknown_and_test_events() {
        assert_eq!(parse("webhook.test"), Err(FilterError::TestEvent));
        assert_eq!(
            parse("invoice.exploded"),
            Err(FilterError::UnknownType("invoice.exploded".into()))
        );
        assert_eq!(
            parse("gadgets.*"),
            Err(FilterError::UnknownCategory("gadgets.*".into()))
        );
        for bad in [
            "",
            "**",
            "invoices",
            "Invoice.paid",
            "invoice.paid.now",
            ".*",
            "a b.*",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_follows_the_filter_kind() {
        let category = parse("invoices.*").unwrap();
        assert!(category.matches("invoice.paid"));
        assert!(
            category.matches("invoice.disputed"),
            "types added later are included"
        );
        assert!(!category.matches("sales_invoice.paid"));
        assert!(!category.matches("invoices.paid"));
        assert!(!category.matches("invoice."));
        let exact = parse("invoice.paid").unwrap();
        assert!(exact.matches("invoice.paid") && !exact.matches("invoice.created"));
        let all = parse("*").unwrap();
        assert!(all.matches("user.created") && all.matches("anything.new"));
        assert!(
            !all.matches("webhook.test"),
            "test events go only where they are sent"
        );
    }

    #[test]
    fn lists_are_deduplicated_and_report_the_bad_index() {
        let catalog = Catalog::builtin();
        let list = [
            "invoice.*".to_owned(),
            "invoices.*".to_owned(),
            "*".to_owned(),
        ];
        let parsed = parse_all(&list, catalog).unwrap();
        assert_eq!(parsed.len(), 2);
        let bad = ["nope".to_owned(), "*".to_owned(), "webhook.test".to_owned()];
        let errors = parse_all(&bad, catalog).unwrap_err();
        assert_eq!(
            errors.iter().map(|(index, _)| *index).collect::<Vec<_>>(),
            [0, 2]
        );
    }

    #[test]
    fn stored_filters_round_trip_even_when_the_catalog_forgot_them() {
        let catalog = Catalog::builtin();
        for text in [
            "*",
            "invoices.*",
            "invoice.paid",
            "gadgets.*",
            "gadget.made",
        ] {
            assert_eq!(EventFilter::from_canonical(text, catalog).to_string(), text);
        }
    }

    proptest! {
        #[test]
        fn every_catalog_type_matches_its_exact_category_and_all_filters(index in 0usize..56) {
            let catalog = Catalog::builtin();
            let types: Vec<(String, String)> = catalog
                .collections()
                .iter()
                .flat_map(|c| c.event_types.iter().map(move |t| (c.name.clone(), t.name.clone())))
                .collect();
            let (collection, name) = &types[index % types.len()];
            prop_assert!(parse(name).unwrap().matches(name));
            let wildcard = format!("{collection}.*");
            prop_assert!(parse(&wildcard).unwrap().matches(name));
            prop_assert!(parse("*").unwrap().matches(name));
            for other in catalog.collections().iter().filter(|c| &c.name != collection) {
                prop_assert!(!parse(&other.wildcard()).unwrap().matches(name));
            }
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,30}") {
            let _ = parse(&text);
        }
    }
}
