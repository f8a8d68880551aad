//! The event catalog (docs/product.md §2–3) as data: `catalog/event-types.toml`, compiled into the
//! binary. Each collection declares its event types with an example payload, its sensitive
//! field groups and its embedded objects by exact JSON path, and every plain nested object, so
//! shaping never meets an undeclared object.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

const BUILTIN: &str = include_str!("../../../catalog/event-types.toml");

/// The test event: sent on demand to one webhook, never subscribable.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// A path from a resource's root: keys separated by dots, `[]` after a key for each element
/// of that array (`invoice_items[].unit_cost`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Step {
    pub key: String,
    pub each: bool,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let steps = text
            .split('.')
            .map(|part| {
                let (key, each) = match part.strip_suffix("[]") {
                    Some(key) => (key, true),
                    None => (part, false),
                };
                let valid =
                    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                valid
                    .then(|| Step {
                        key: key.to_owned(),
                        each,
                    })
                    .ok_or_else(|| CatalogError::Path(text.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(steps))
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|step| {
                if step.each {
                    format!("{}[]", step.key)
                } else {
                    step.key.clone()
                }
            })
            .collect();
        f.write_str(&parts.join("."))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: String,
    /// The resource's full v4 representation: the `data` of such an event.
    pub example: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub name: String,
    pub category: String,
    pub type_prefix: String,
    pub objects: Vec<FieldPath>,
    /// Objects whose keys and values each tenant defines (custom fields).
    pub free_form: Vec<FieldPath>,
    pub field_groups: BTreeMap<String, Vec<FieldPath>>,
    /// Path of an embedded object -> the collection whose rules shape it.
    pub embedded: BTreeMap<FieldPath, String>,
    pub event_types: Vec<EventType>,
}

impl Collection {
    /// `<collection>.*`, the canonical subscription to the whole category.
    pub fn wildcard(&self) -> String {
        format!("{}.*", self.name)
    }

    /// Whether the field at `keys` (from a resource's root, arrays not counted) is declared: a
    /// plain object, a field group's path, an embedded object, or on the way to one of them.
    pub fn declares(&self, keys: &[String]) -> bool {
        self.objects
            .iter()
            .chain(self.field_groups.values().flatten())
            .chain(self.embedded.keys())
            .any(|path| {
                path.0.len() >= keys.len()
                    && path.0.iter().zip(keys).all(|(step, key)| step.key == *key)
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    collections: Vec<Collection>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog is not valid TOML: {0}")]
    Toml(String),
    #[error("invalid path `{0}`")]
    Path(String),
    #[error("event type `{name}` must start with `{prefix}.`")]
    TypePrefix { name: String, prefix: String },
    #[error("the example of `{0}` is not a JSON object")]
    Example(String),
    #[error("`{0}` is declared twice")]
    Duplicate(String),
    #[error("`{path}` of `{collection}` embeds unknown collection `{target}`")]
    UnknownEmbedded {
        collection: String,
        path: String,
        target: String,
    },
}

#[derive(Deserialize)]
struct CatalogFile {
    collections: Vec<CollectionFile>,
}

#[derive(Deserialize)]
struct CollectionFile {
    name: String,
    category: String,
    type_prefix: String,
    #[serde(default)]
    objects: Vec<String>,
    #[serde(default)]
    free_form: Vec<String>,
    #[serde(default)]
    field_groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    embedded: BTreeMap<String, String>,
    event_types: Vec<EventTypeFile>,
}

#[derive(Deserialize)]
struct EventTypeFile {
    #[serde(rename = "type")]
    name: String,
    description: String,
    example: String,
}

impl Catalog {
    /// The catalog compiled into this build (checked by this module's tests), parsed once:
    /// it is constant data.
    pub fn builtin() -> &'static Catalog {
        static PARSED: std::sync::LazyLock<Catalog> = std::sync::LazyLock::new(|| {
            Catalog::parse(BUILTIN).expect("the built-in catalog is valid")
        });
        &PARSED
    }

    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|error| CatalogError::Toml(error.to_string()))?;
        let collections = file
            .collections
            .into_iter()
            .map(Collection::from_file)
            .collect::<Result<Vec<_>, _>>()?;
        let catalog = Catalog { collections };
        catalog.check_references()?;
        Ok(catalog)
    }

    fn check_references(&self) -> Result<(), CatalogError> {
        let mut names = std::collections::BTreeSet::new();
        let mut prefixes = std::collections::BTreeSet::new();
        let mut types = std::collections::BTreeSet::new();
        for collection in &self.collections {
            if !names.insert(&collection.name) {
                return Err(CatalogError::Duplicate(collection.name.clone()));
            }
            if !prefixes.insert(&collection.type_prefix) {
                return Err(CatalogError::Duplicate(collection.type_prefix.clone()));
            }
            for event_type in &collection.event_types {
                if !types.insert(&event_type.name) {
                    return Err(CatalogError::Duplicate(event_type.name.clone()));
                }
            }
            for (path, target) in &collection.embedded {
                if self.collection(target).is_none() {
                    return Err(CatalogError::UnknownEmbedded {
                        collection: collection.name.clone(),
                        path: path.to_string(),
                        target: target.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn collections(&self) -> &[Collection] {
        &self.collections
    }

    pub fn collection(&self, name: &str) -> Option<&Collection> {
        self.collections
            .iter()
            .find(|collection| collection.name == name)
    }

    /// The collection whose types start with `prefix.` (`invoice` -> invoices).
    pub fn collection_by_prefix(&self, prefix: &str) -> Option<&Collection> {
        self.collections
            .iter()
            .find(|collection| collection.type_prefix == prefix)
    }

    /// The collection an event type belongs to, by its prefix; this also places types that
    /// are newer than this catalog.
    pub fn collection_of_type(&self, event_type: &str) -> Option<&Collection> {
        let (prefix, action) = event_type.split_once('.')?;
        if action.is_empty() {
            return None;
        }
        self.collection_by_prefix(prefix)
    }

    pub fn event_type(&self, name: &str) -> Option<&EventType> {
        self.collection_of_type(name)?
            .event_types
            .iter()
            .find(|event_type| event_type.name == name)
    }
}

impl Collection {
    fn from_file(file: CollectionFile) -> Result<Collection, CatalogError> {
        let event_types = file
            .event_types
            .into_iter()
            .map(|event_type| {
                if !event_type
                    .name
                    .starts_with(&format!("{}.", file.type_prefix))
                {
                    return Err(CatalogError::TypePrefix {
                        name: event_type.name,
                        prefix: file.type_prefix.clone(),
                    });
                }
                let example: Value = serde_json::from_str(&event_type.example)
                    .map_err(|_| CatalogError::Example(event_type.name.clone()))?;
                if !example.is_object() {
                    return Err(CatalogError::Example(event_type.name));
                }
                Ok(EventType {
                    name: event_type.name,
                    description: event_type.description,
                    example,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let paths = |list: Vec<String>| {
            list.iter()
                .map(|p| FieldPath::parse(p))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Collection {
            objects: paths(file.objects)?,
            free_form: paths(file.free_form)?,
            field_groups: file
                .field_groups
                .into_iter()
                .map(|(group, list)| Ok((group, paths(list)?)))
                .collect::<Result<_, CatalogError>>()?,
            embedded: file
                .embedded
                .into_iter()
                .map(|(path, target)| Ok((FieldPath::parse(&path)?, target)))
                .collect::<Result<_, CatalogError>>()?,
            name: file.name,
            category: file.category,
            type_prefix: file.type_prefix,
            event_types,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::COLLECTIONS;

    /// docs/product.md §2, verbatim.
    const PRODUCT_TYPES: &[(&str, &[&str])] = &[
        (
            "jobs",
            &[
                "job.created",
                "job.updated",
                "job.published",
                "job.closed",
                "job.cancelled",
            ],
        ),
        (
            "job_approvals",
            &[
                "job_approval.requested",
                "job_approval.approved",
                "job_approval.rejected",
            ],
        ),
        ("eois", &["eoi.created", "eoi.published", "eoi.closed"]),
        (
            "eoi_responses",
            &["eoi_response.submitted", "eoi_response.updated"],
        ),
        (
            "bids",
            &[
                "bid.submitted",
                "bid.updated",
                "bid.shortlisted",
                "bid.eliminated",
                "bid.awarded",
                "bid.withdrawn",
            ],
        ),
        (
            "offers",
            &[
                "offer.created",
                "offer.sent",
                "offer.accepted",
                "offer.declined",
                "offer.approved",
                "offer.expired",
            ],
        ),
        (
            "variation_orders",
            &[
                "variation_order.created",
                "variation_order.accepted",
                "variation_order.declined",
                "variation_order.approved",
            ],
        ),
        (
            "milestones",
            &[
                "milestone.created",
                "milestone.submitted",
                "milestone.approved",
                "milestone.rejected",
                "milestone.change_requested",
                "milestone.on_hold",
            ],
        ),
        (
            "purchase_orders",
            &[
                "purchase_order.created",
                "purchase_order.issued",
                "purchase_order.revised",
                "purchase_order.cancelled",
            ],
        ),
        (
            "invoices",
            &[
                "invoice.created",
                "invoice.submitted",
                "invoice.approved",
                "invoice.rejected",
                "invoice.paid",
                "invoice.credited",
                "invoice.deleted",
            ],
        ),
        (
            "sales_invoices",
            &[
                "sales_invoice.created",
                "sales_invoice.issued",
                "sales_invoice.paid",
            ],
        ),
        (
            "suppliers",
            &[
                "supplier.created",
                "supplier.updated",
                "supplier.vetting_status_changed",
                "supplier.archived",
            ],
        ),
        (
            "users",
            &["user.created", "user.updated", "user.deactivated"],
        ),
    ];

    #[test]
    fn builtin_catalog_has_every_type_of_the_product() {
        let catalog = Catalog::builtin();
        let found: Vec<(&str, Vec<&str>)> = catalog
            .collections()
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.event_types.iter().map(|t| t.name.as_str()).collect(),
                )
            })
            .collect();
        let expected: Vec<(&str, Vec<&str>)> = PRODUCT_TYPES
            .iter()
            .map(|(name, types)| (*name, types.to_vec()))
            .collect();
        assert_eq!(found, expected);
        assert!(
            catalog.event_type(TEST_EVENT_TYPE).is_none(),
            "webhook.test is not subscribable"
        );
        for collection in catalog.collections() {
            for event_type in &collection.event_types {
                assert!(
                    !event_type.description.trim().is_empty(),
                    "{}",
                    event_type.name
                );
                assert!(
                    !event_type.description.contains('\n'),
                    "{}",
                    event_type.name
                );
            }
        }
    }

    #[test]
    fn field_groups_agree_with_the_permission_vocabulary() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.collections().len(), COLLECTIONS.len());
        for (collection, vocabulary) in catalog.collections().iter().zip(COLLECTIONS) {
            assert_eq!(collection.name, vocabulary.name);
            let groups: Vec<&str> = collection.field_groups.keys().map(String::as_str).collect();
            let mut expected = vocabulary.field_groups.to_vec();
            expected.sort_unstable();
            assert_eq!(groups, expected, "{}", collection.name);
        }
    }

    /// Every path `value` has below `at`, as (path, value) pairs, arrays stepped through.
    fn walk<'a>(value: &'a Value, at: &mut Vec<Step>, out: &mut Vec<(FieldPath, &'a Value)>) {
        let Value::Object(map) = value else { return };
        for (key, child) in map {
            let each = child.is_array();
            at.push(Step {
                key: key.clone(),
                each,
            });
            let elements: Vec<&Value> = match child {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for element in elements {
                out.push((FieldPath(at.clone()), element));
                walk(element, at, out);
            }
            at.pop();
        }
    }

    fn is_prefix(prefix: &FieldPath, path: &FieldPath) -> bool {
        path.0.len() >= prefix.0.len() && prefix.0.iter().zip(&path.0).all(|(a, b)| a.key == b.key)
    }

    /// Objects under `value` (a resource of `collection`) that nobody declared.
    fn undeclared(
        catalog: &Catalog,
        collection: &Collection,
        value: &Value,
        out: &mut Vec<String>,
    ) {
        let mut paths = Vec::new();
        walk(value, &mut Vec::new(), &mut paths);
        for (path, child) in paths {
            if !child.is_object() {
                continue;
            }
            let inside_group = collection
                .field_groups
                .values()
                .flatten()
                .any(|group| is_prefix(group, &path));
            let inside_embedded = collection
                .embedded
                .keys()
                .any(|e| is_prefix(e, &path) && e != &path);
            if inside_group || inside_embedded {
                continue;
            }
            if let Some(target) = collection.embedded.get(&path) {
                let target = catalog.collection(target).expect("checked at parse");
                undeclared(catalog, target, child, out);
            } else if !collection.objects.contains(&path) {
                out.push(format!("{}: {path}", collection.name));
            }
        }
    }

    #[test]
    fn every_object_in_every_example_is_declared() {
        let catalog = Catalog::builtin();
        let mut missing = Vec::new();
        for collection in catalog.collections() {
            for event_type in &collection.event_types {
                undeclared(catalog, collection, &event_type.example, &mut missing);
            }
        }
        missing.sort();
        missing.dedup();
        assert!(missing.is_empty(), "undeclared objects: {missing:#?}");
    }

    #[test]
    fn every_declared_path_occurs_in_an_example() {
        let catalog = Catalog::builtin();
        for collection in catalog.collections() {
            let mut present = Vec::new();
            for event_type in &collection.event_types {
                walk(&event_type.example, &mut Vec::new(), &mut present);
            }
            let declared = collection
                .field_groups
                .values()
                .flatten()
                .chain(&collection.objects)
                .chain(collection.embedded.keys());
            for path in declared {
                // Keys decide; whether the catalog writes `bank_accounts` or `bank_accounts[]`
                // for a whole array field does not matter.
                assert!(
                    present
                        .iter()
                        .any(|(p, _)| is_prefix(p, path) && is_prefix(path, p)),
                    "{}: `{path}` occurs in no example",
                    collection.name
                );
            }
        }
    }

    #[test]
    fn types_newer_than_the_catalog_still_find_their_collection() {
        let catalog = Catalog::builtin();
        assert_eq!(
            catalog.collection_of_type("invoice.disputed").unwrap().name,
            "invoices"
        );
        assert!(catalog.event_type("invoice.disputed").is_none());
        assert!(catalog.collection_of_type("invoice.").is_none());
        assert!(catalog.collection_of_type("gadget.created").is_none());
    }

    #[test]
    fn paths_parse_and_print() {
        let path = FieldPath::parse("invoice_items[].unit_cost").unwrap();
        assert_eq!(path.steps().len(), 2);
        assert!(path.steps()[0].each);
        assert_eq!(path.to_string(), "invoice_items[].unit_cost");
        for bad in ["", "a..b", "a[]]", "a b", "a.[]"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_catalogs_are_refused() {
        let bad_prefix = r#"
            [[collections]]
            name = "jobs"
            category = "Jobs"
            type_prefix = "job"
            [[collections.event_types]]
            type = "bid.created"
            description = "x"
            example = "{}"
        "#;
        assert!(matches!(
            Catalog::parse(bad_prefix),
            Err(CatalogError::TypePrefix { .. })
        ));
        assert!(matches!(
            Catalog::parse("nonsense ="),
            Err(CatalogError::Toml(_))
        ));
    }
}
