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

    /// Every event type as (type, collection, example): for tests that walk them all.
    #[cfg(test)]
    pub(crate) fn examples(&self) -> Vec<(String, String, Value)> {
        self.collections
            .iter()
            .flat_map(|c| {
                c.event_types
                    .iter()
                    .map(|t| (t.name.clone(), c.name.clone(), t.example.clone()))
            })
            .collect()
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
mod tests;
