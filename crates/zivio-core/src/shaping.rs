//! Owner-shaped payloads (docs/product.md §3): `data` exactly as the webhook's owner would see the
//! resource through the v4 API. Field groups the owner lacks are removed at their declared
//! paths (inside arrays too); embedded objects follow their own collection's rules and shrink
//! to `{"id": ...}` when the owner cannot read that collection at all. Fields the catalog does
//! not declare pass through: the platform owns the v4 schema.
//!
//! Shaping fails closed. On the way to a withheld field or an embedded object, every value must
//! have the declared shape (an object, or for a `[]` step an array of objects; null holds
//! nothing and stays). Where it has another shape (an array where an object is declared, an
//! object keyed by ids where an array is declared, a scalar, an array of arrays), the whole
//! subtree is removed for owners who lack what it may hold. And because data can hide a
//! withheld field one level deeper than declared, an object or array the catalog does not
//! declare inside an object on such a way is removed too (the resource's own top level still
//! takes new fields from the platform). An embedded object shrunk to its id keeps an `id` only
//! when it is a string or a number.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::access::Access;
use crate::catalog::{Catalog, Collection, Step};

/// What shaping needs to know about an owner, and nothing else: for each collection that a
/// resource of one collection can embed, whether the owner may read it at all and which field
/// groups they hold. Owners with equal profiles get byte-identical payloads, so an event is
/// shaped once per distinct profile, not once per webhook.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeProfile {
    collections: BTreeMap<String, (bool, BTreeSet<String>)>,
}

impl ShapeProfile {
    /// The profile of `access` for resources of `collection` (and everything they embed).
    pub fn of(access: &Access, catalog: &Catalog, collection: &str) -> Self {
        Self::build(catalog, collection, |name, group| match group {
            None => access.can_read_any(name),
            Some(group) => access.holds_group(name, group),
        })
    }

    /// Every collection readable, every group held: shaping changes nothing.
    pub fn everything(catalog: &Catalog, collection: &str) -> Self {
        Self::build(catalog, collection, |_, _| true)
    }

    /// `grants(collection, None)`: may read the collection; `grants(collection, Some(group))`:
    /// holds the group.
    pub fn build(
        catalog: &Catalog,
        collection: &str,
        mut grants: impl FnMut(&str, Option<&str>) -> bool,
    ) -> Self {
        let mut collections = BTreeMap::new();
        let mut pending = vec![collection.to_owned()];
        while let Some(name) = pending.pop() {
            if collections.contains_key(&name) {
                continue;
            }
            let Some(declared) = catalog.collection(&name) else {
                continue;
            };
            let groups = declared
                .field_groups
                .keys()
                .filter(|group| grants(&name, Some(group)))
                .cloned()
                .collect();
            pending.extend(declared.embedded.values().cloned());
            collections.insert(name.clone(), (grants(&name, None), groups));
        }
        Self { collections }
    }

    fn can_read(&self, collection: &str) -> bool {
        self.collections
            .get(collection)
            .is_some_and(|(readable, _)| *readable)
    }

    fn holds(&self, collection: &str, group: &str) -> bool {
        self.collections
            .get(collection)
            .is_some_and(|(_, groups)| groups.contains(group))
    }

    /// Whether nothing of `collection` (and of what it embeds) is withheld from this owner.
    fn sees_all(&self, catalog: &Catalog, collection: &str) -> bool {
        let mut pending = vec![collection];
        let mut seen = BTreeSet::new();
        while let Some(name) = pending.pop() {
            if !seen.insert(name) {
                continue;
            }
            let Some(declared) = catalog.collection(name) else {
                continue;
            };
            let complete = self
                .collections
                .get(name)
                .is_some_and(|(readable, groups)| {
                    *readable
                        && declared
                            .field_groups
                            .keys()
                            .all(|group| groups.contains(group))
                });
            if !complete {
                return false;
            }
            pending.extend(declared.embedded.values().map(String::as_str));
        }
        true
    }
}

/// `data` of a resource of `collection`, shaped for `profile`: borrowed as it is when the
/// profile sees all of it (nothing would be removed). An unknown collection (a type newer than
/// this catalog) declares nothing, so only the read check applied by the caller protects it.
pub fn shape<'a>(
    catalog: &Catalog,
    collection: &str,
    data: &'a Value,
    profile: &ShapeProfile,
) -> Cow<'a, Value> {
    match catalog.collection(collection) {
        Some(declared) if !profile.sees_all(catalog, collection) => {
            let mut shaped = data.clone();
            shape_in_place(catalog, declared, &mut shaped, profile, false);
            Cow::Owned(shaped)
        }
        _ => Cow::Borrowed(data),
    }
}

/// One declared path that leads to something withheld from the owner.
enum Way<'a> {
    /// A field of a group the owner lacks: removed.
    Withheld(&'a [Step]),
    /// An embedded object of which the owner may not see everything: shaped by its own
    /// collection, or shrunk to its id.
    Embedded(&'a [Step], &'a Collection),
}

impl<'a> Way<'a> {
    fn steps(&self) -> &'a [Step] {
        match self {
            Way::Withheld(steps) | Way::Embedded(steps, _) => steps,
        }
    }

    fn rest(&self) -> Way<'a> {
        match self {
            Way::Withheld(steps) => Way::Withheld(&steps[1..]),
            Way::Embedded(steps, target) => Way::Embedded(&steps[1..], target),
        }
    }
}

/// `strict`: whether an undeclared object or array at the root of `value` is removed too (true
/// for embedded objects, whose root is on the way to what they withhold; the resource's own
/// root takes new fields from the platform as they come).
fn shape_in_place(
    catalog: &Catalog,
    collection: &Collection,
    value: &mut Value,
    profile: &ShapeProfile,
    strict: bool,
) {
    let mut ways: Vec<Way> = collection
        .field_groups
        .iter()
        .filter(|(group, _)| !profile.holds(&collection.name, group))
        .flat_map(|(_, paths)| paths.iter().map(|path| Way::Withheld(path.steps())))
        .collect();
    for (path, target) in &collection.embedded {
        if let Some(embedded) = catalog.collection(target)
            && !profile.sees_all(catalog, target)
        {
            ways.push(Way::Embedded(path.steps(), embedded));
        }
    }
    if !ways.is_empty() {
        let pruner = Pruner {
            catalog,
            collection,
            profile,
        };
        pruner.prune(value, &mut Vec::new(), &ways, strict);
    }
}

/// Applies ways to what lies on them, within one resource or embedded object.
struct Pruner<'a> {
    catalog: &'a Catalog,
    collection: &'a Collection,
    profile: &'a ShapeProfile,
}

impl Pruner<'_> {
    /// Applies `ways` (paths relative to `value`, each with at least one step) to the object
    /// `value`, found at the keys `at` below the resource. Whatever stands on the way to
    /// something withheld must have its declared shape, or it is removed whole; and in a
    /// `strict` object an object or array that the catalog does not declare there is removed
    /// too, since it could hold a withheld field nested deeper than declared.
    fn prune(&self, value: &mut Value, at: &mut Vec<String>, ways: &[Way], strict: bool) {
        let Some(object) = value.as_object_mut() else {
            return;
        };
        object.retain(|key, child| {
            at.push(key.clone());
            let keep = self.keep(key, child, at, ways, strict);
            at.pop();
            keep
        });
    }

    /// Whether the field `key` (at `at`) of an object on the way stays, shaping it if so.
    fn keep(
        &self,
        key: &str,
        child: &mut Value,
        at: &mut Vec<String>,
        ways: &[Way],
        strict: bool,
    ) -> bool {
        let mine: Vec<&Way> = ways
            .iter()
            .filter(|way| way.steps()[0].key == key)
            .collect();
        if mine.is_empty() {
            return !strict || !holds_structure(child) || self.collection.declares(at);
        }
        let mut deeper = Vec::new();
        for way in mine {
            let step = &way.steps()[0];
            if !fits(child, step.each) {
                return false;
            }
            match way {
                Way::Withheld(steps) if steps.len() == 1 => return false,
                Way::Embedded(steps, target) if steps.len() == 1 => {
                    for object in objects_in(child) {
                        self.embedded(target, object);
                    }
                }
                _ => deeper.push(way.rest()),
            }
        }
        if !deeper.is_empty() {
            for object in objects_in(child) {
                self.prune(object, at, &deeper, true);
            }
        }
        true
    }

    /// An embedded object, shaped by its own collection's rules, or shrunk to its id when the
    /// owner cannot read that collection at all.
    fn embedded(&self, target: &Collection, object: &mut Value) {
        if self.profile.can_read(&target.name) {
            shape_in_place(self.catalog, target, object, self.profile, true);
        } else {
            // Only an id that is an id: anything else could carry what the owner may not see.
            let id = object
                .get("id")
                .filter(|id| id.is_string() || id.is_number())
                .cloned()
                .unwrap_or(Value::Null);
            *object = Value::Object(Map::from_iter([("id".to_owned(), id)]));
        }
    }
}

/// Whether `child` has the shape a step declares: an object, or for a `[]` step an array of
/// objects; null (nothing there) fits both.
fn fits(child: &Value, each: bool) -> bool {
    match child {
        Value::Null => true,
        Value::Object(_) => !each,
        Value::Array(items) => each && items.iter().all(|item| item.is_object() || item.is_null()),
        _ => false,
    }
}

/// Whether `value` can hold a field: an object, or an array with one somewhere inside.
fn holds_structure(value: &Value) -> bool {
    match value {
        Value::Object(_) => true,
        Value::Array(items) => items.iter().any(holds_structure),
        _ => false,
    }
}

/// The objects a step leads to: the value itself, or each element of its array.
fn objects_in(child: &mut Value) -> Vec<&mut Value> {
    match child {
        Value::Array(items) => items.iter_mut().filter(|item| item.is_object()).collect(),
        Value::Object(_) => vec![child],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
