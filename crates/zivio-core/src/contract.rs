//! Payload contracts (docs/product.md §5): a JSON Schema (draft 2020-12) for every event type's
//! envelope, generated from the catalog, the one declaration of every resource (its examples,
//! plain and free-form objects, field groups and embedded objects), so that schema and catalog
//! cannot disagree.
//!
//! The rules: every field the examples show has its type fixed (decimal amounts are strings
//! with a pattern, dates and timestamps strings in their RFC 3339 forms), every declared object,
//! array and embedded object its shape; only `id` is required (of a resource and of an embedded
//! one, which may shrink to `{"id"}` for an owner with little access), every other field may be
//! absent or null, and unknown fields are allowed so that the platform can add fields.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use crate::catalog::{Catalog, Collection, FieldPath, Step, TEST_EVENT_TYPE};

pub const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";
/// A decimal amount as the v4 API writes it: `"1400.00"`, `"-12.5"`, `"3"`.
pub const DECIMAL: &str = r"^-?[0-9]+(\.[0-9]+)?$";
pub const DATE: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$";
pub const DATE_TIME: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$";
const EVENT_ID: &str = r"^evt_[A-Za-z0-9_]+$";

/// Where shared definitions live: `#/$defs/` in a standalone schema, a prefix under
/// `#/components/schemas/` in an OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refs {
    Defs,
    Components,
}

impl Refs {
    /// The name of a collection's definition.
    pub fn name(self, collection: &str) -> String {
        match self {
            Refs::Defs => collection.to_owned(),
            Refs::Components => format!("zivio_{collection}"),
        }
    }

    fn to(self, collection: &str) -> String {
        match self {
            Refs::Defs => format!("#/$defs/{collection}"),
            Refs::Components => format!("#/components/schemas/zivio_{collection}"),
        }
    }
}

/// The schemas of every collection's resource, generated once from a catalog.
#[derive(Debug, Clone)]
pub struct Contracts {
    /// Collection name -> the schema of its resource (references point at other collections).
    resources: BTreeMap<String, Value>,
    /// Event type -> its collection.
    collection_of: BTreeMap<String, String>,
    refs: Refs,
}

impl Contracts {
    pub fn of(catalog: &Catalog, refs: Refs) -> Contracts {
        let shapes = observe(catalog);
        let resources = catalog
            .collections()
            .iter()
            .map(|collection| {
                let shape = shapes.get(&collection.name).cloned().unwrap_or_default();
                (collection.name.clone(), shape.resource_schema(refs))
            })
            .collect();
        let collection_of = catalog
            .collections()
            .iter()
            .flat_map(|c| {
                c.event_types
                    .iter()
                    .map(|t| (t.name.clone(), c.name.clone()))
            })
            .collect();
        Contracts {
            resources,
            collection_of,
            refs,
        }
    }

    /// The definitions that schemas of this kind refer to, by name (for `$defs` or
    /// `components/schemas`).
    pub fn definitions(&self) -> BTreeMap<String, Value> {
        self.resources
            .iter()
            .map(|(name, schema)| (self.refs.name(name), schema.clone()))
            .collect()
    }

    /// The schema of a resource of `collection` (other collections by reference).
    pub fn resource(&self, collection: &str) -> Option<&Value> {
        self.resources.get(collection)
    }

    /// Whether `event_type` has a contract: every catalog type, and `webhook.test`.
    pub fn knows(&self, event_type: &str) -> bool {
        event_type == TEST_EVENT_TYPE || self.collection_of.contains_key(event_type)
    }

    /// The schema of an event's `data`, referring to the definitions.
    pub fn data(&self, event_type: &str) -> Option<Value> {
        if event_type == TEST_EVENT_TYPE {
            return Some(json!({
                "type": "object",
                "properties": {"test": {"const": true}},
                "required": ["test"],
            }));
        }
        let collection = self.collection_of.get(event_type)?;
        Some(json!({"$ref": self.refs.to(collection)}))
    }

    /// The schema of the whole envelope of `event_type`, referring to the definitions.
    pub fn envelope(&self, event_type: &str) -> Option<Value> {
        let data = self.data(event_type)?;
        Some(json!({
            "title": event_type,
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": EVENT_ID, "description": "The event id; equals the `webhook-id` header."},
                "type": {"const": event_type},
                "occurred_at": {"type": "string", "format": "date-time", "pattern": DATE_TIME},
                "api_version": {"const": "v4"},
                "data": data,
            },
            "required": ["id", "type", "occurred_at", "api_version", "data"],
        }))
    }

    /// A standalone document (with `$schema` and `$defs`) of `schema`: what receivers fetch
    /// and what the publish check compiles. Only meaningful for `Refs::Defs`.
    pub fn standalone(&self, schema: Value, id: Option<&str>) -> Value {
        let mut document = Map::new();
        document.insert("$schema".to_owned(), Value::from(DRAFT));
        if let Some(id) = id {
            document.insert("$id".to_owned(), Value::from(id));
        }
        if let Value::Object(fields) = schema {
            document.extend(fields);
        }
        let defs: Map<String, Value> = self.definitions().into_iter().collect();
        document.insert("$defs".to_owned(), Value::Object(defs));
        Value::Object(document)
    }
}

/// What the examples show at one place of a resource, merged over every example.
#[derive(Debug, Clone, Default)]
struct Shape {
    null: bool,
    boolean: bool,
    number: bool,
    strings: Strings,
    object: Option<BTreeMap<String, Shape>>,
    items: Option<Box<Shape>>,
    /// An embedded resource of this collection.
    embedded: Option<String>,
    free_form: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Strings {
    decimal: bool,
    date: bool,
    date_time: bool,
    other: bool,
}

/// Walks every example (and every embedded resource inside them, as a resource of its own
/// collection) and merges what it finds per collection.
fn observe(catalog: &Catalog) -> BTreeMap<String, Shape> {
    let mut queue: VecDeque<(String, Value)> = catalog
        .collections()
        .iter()
        .flat_map(|c| {
            c.event_types
                .iter()
                .map(|t| (c.name.clone(), t.example.clone()))
        })
        .collect();
    let mut shapes: BTreeMap<String, Shape> = BTreeMap::new();
    while let Some((name, value)) = queue.pop_front() {
        let Some(collection) = catalog.collection(&name) else {
            continue;
        };
        let mut root = shapes.remove(&name).unwrap_or_default();
        let mut path = Vec::new();
        root.observe(&value, collection, &mut path, &mut queue);
        shapes.insert(name, root);
    }
    shapes
}

fn is_at(paths: &[FieldPath], path: &[Step]) -> bool {
    paths.iter().any(|declared| declared.steps() == path)
}

impl Shape {
    fn observe(
        &mut self,
        value: &Value,
        collection: &Collection,
        path: &mut Vec<Step>,
        embedded: &mut VecDeque<(String, Value)>,
    ) {
        if !path.is_empty()
            && let Some(target) = collection
                .embedded
                .iter()
                .find(|(declared, _)| declared.steps() == path.as_slice())
                .map(|(_, target)| target)
        {
            self.embedded = Some(target.clone());
            match value {
                Value::Null => self.null = true,
                other => embedded.push_back((target.clone(), other.clone())),
            }
            return;
        }
        match value {
            Value::Null => self.null = true,
            Value::Bool(_) => self.boolean = true,
            Value::Number(_) => self.number = true,
            Value::String(text) => self.strings.observe(text),
            Value::Array(elements) => {
                let items = self.items.get_or_insert_with(Box::default);
                let outer = path.last().map(|step| step.each);
                if let Some(last) = path.last_mut() {
                    last.each = true;
                }
                for element in elements {
                    items.observe(element, collection, path, embedded);
                }
                if let (Some(last), Some(outer)) = (path.last_mut(), outer) {
                    last.each = outer;
                }
            }
            Value::Object(fields) => {
                if !path.is_empty() && is_at(&collection.free_form, path) {
                    self.free_form = true;
                }
                let properties = self.object.get_or_insert_with(BTreeMap::new);
                if self.free_form {
                    return;
                }
                for (key, field) in fields {
                    path.push(Step {
                        key: key.clone(),
                        each: false,
                    });
                    properties
                        .entry(key.clone())
                        .or_default()
                        .observe(field, collection, path, embedded);
                    path.pop();
                }
            }
        }
    }

    /// A resource (a collection's root): an object that requires its `id`.
    fn resource_schema(&self, refs: Refs) -> Value {
        let mut schema = self.schema(refs, false);
        if let Value::Object(fields) = &mut schema {
            fields.insert("required".to_owned(), json!(["id"]));
        }
        schema
    }

    /// The schema of what was seen here; `nullable` adds `null` (every field but `id` may be
    /// null or absent: the examples show values where real resources may have none).
    fn schema(&self, refs: Refs, nullable: bool) -> Value {
        if let Some(target) = &self.embedded {
            let reference = json!({"$ref": refs.to(target)});
            return if nullable {
                json!({"anyOf": [reference, {"type": "null"}]})
            } else {
                reference
            };
        }
        let mut types = Vec::new();
        let mut schema = Map::new();
        if let Some(properties) = &self.object {
            types.push("object");
            if !self.free_form {
                let properties: Map<String, Value> = properties
                    .iter()
                    .map(|(key, shape)| (key.clone(), shape.schema(refs, key != "id")))
                    .collect();
                schema.insert("properties".to_owned(), Value::Object(properties));
            }
        }
        if let Some(items) = &self.items {
            types.push("array");
            let items = if items.seen_a_value() {
                items.schema(refs, items.null)
            } else {
                json!({})
            };
            schema.insert("items".to_owned(), items);
        }
        if self.boolean {
            types.push("boolean");
        }
        if self.number {
            types.push("number");
        }
        if self.strings.any() {
            types.push("string");
            self.strings.constrain(&mut schema);
        }
        if types.is_empty() {
            // Only nulls (or nothing) seen: the examples do not say what the value is.
            return json!({});
        }
        if nullable || self.null {
            types.push("null");
        }
        let types: Vec<Value> = types.into_iter().map(Value::from).collect();
        let kind = if types.len() == 1 {
            types.into_iter().next().expect("one type")
        } else {
            Value::Array(types)
        };
        schema.insert("type".to_owned(), kind);
        Value::Object(schema)
    }
}

impl Shape {
    /// Whether anything but `null` was seen here.
    fn seen_a_value(&self) -> bool {
        self.embedded.is_some()
            || self.boolean
            || self.number
            || self.strings.any()
            || self.object.is_some()
            || self.items.is_some()
    }
}

impl Strings {
    fn observe(&mut self, text: &str) {
        let is = |pattern: fn(&[u8]) -> bool| pattern(text.as_bytes());
        if is(looks_decimal) {
            self.decimal = true;
        } else if is(looks_date_time) {
            self.date_time = true;
        } else if is(looks_date) {
            self.date = true;
        } else {
            self.other = true;
        }
    }

    fn any(self) -> bool {
        self.decimal || self.date || self.date_time || self.other
    }

    /// A pattern (and format) when every string seen here was of one kind.
    fn constrain(self, schema: &mut Map<String, Value>) {
        let (pattern, format) = match (self.decimal, self.date, self.date_time, self.other) {
            (true, false, false, false) => (DECIMAL, None),
            (false, true, false, false) => (DATE, Some("date")),
            (false, false, true, false) => (DATE_TIME, Some("date-time")),
            _ => return,
        };
        schema.insert("pattern".to_owned(), Value::from(pattern));
        if let Some(format) = format {
            schema.insert("format".to_owned(), Value::from(format));
        }
    }
}

/// An amount as the v4 API writes it: digits, a point and two digits (`1400.00`). Ids such as
/// `"18342"` and versions such as `"2025.3"` are not amounts.
fn looks_decimal(text: &[u8]) -> bool {
    let text = text.strip_prefix(b"-").unwrap_or(text);
    let mut parts = text.split(|b| *b == b'.');
    let (Some(whole), Some(fraction), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !whole.is_empty() && fraction.len() == 2 && whole.iter().chain(fraction).all(u8::is_ascii_digit)
}

fn looks_date(text: &[u8]) -> bool {
    text.len() == 10
        && text.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

fn looks_date_time(text: &[u8]) -> bool {
    text.len() >= 20
        && looks_date(&text[..10])
        && text[10] == b'T'
        && time::OffsetDateTime::parse(
            std::str::from_utf8(text).unwrap_or_default(),
            &time::format_description::well_known::Rfc3339,
        )
        .is_ok()
}

#[cfg(test)]
mod tests;
