//! Owner-shaped payloads (PRODUCT.md §3): `data` exactly as the webhook's owner would see the
//! resource through the v4 API. Field groups the owner lacks are removed at their declared
//! paths (inside arrays too); embedded objects follow their own collection's rules and shrink
//! to `{"id": ...}` when the owner cannot read that collection at all. Fields the catalog does
//! not declare pass through: the platform owns the v4 schema.

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
}

/// `data` of a resource of `collection`, shaped for `profile`. An unknown collection (a type
/// newer than this catalog) declares nothing, so only the read check applied by the caller
/// protects it.
pub fn shape(catalog: &Catalog, collection: &str, data: &Value, profile: &ShapeProfile) -> Value {
    let mut shaped = data.clone();
    if let Some(declared) = catalog.collection(collection) {
        shape_in_place(catalog, declared, &mut shaped, profile);
    }
    shaped
}

fn shape_in_place(
    catalog: &Catalog,
    collection: &Collection,
    value: &mut Value,
    profile: &ShapeProfile,
) {
    for (group, paths) in &collection.field_groups {
        if !profile.holds(&collection.name, group) {
            for path in paths {
                remove_at(value, path.steps());
            }
        }
    }
    for (path, target) in &collection.embedded {
        let Some(embedded) = catalog.collection(target) else {
            continue;
        };
        each_at(value, path.steps(), &mut |object| {
            if !object.is_object() {
                return;
            }
            if profile.can_read(target) {
                shape_in_place(catalog, embedded, object, profile);
            } else {
                let id = object.get("id").cloned().unwrap_or(Value::Null);
                *object = Value::Object(Map::from_iter([("id".to_owned(), id)]));
            }
        });
    }
}

/// Removes the field at `steps` wherever it occurs (through every element of `[]` arrays).
fn remove_at(value: &mut Value, steps: &[Step]) {
    let Some((step, rest)) = steps.split_first() else {
        return;
    };
    let Some(object) = value.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        object.shift_remove(&step.key);
        return;
    }
    if let Some(child) = object.get_mut(&step.key) {
        descend(child, &mut |next| remove_at(next, rest));
    }
}

/// Calls `visit` on every value at `steps`.
fn each_at(value: &mut Value, steps: &[Step], visit: &mut dyn FnMut(&mut Value)) {
    let Some((step, rest)) = steps.split_first() else {
        visit(value);
        return;
    };
    if let Some(child) = value
        .as_object_mut()
        .and_then(|object| object.get_mut(&step.key))
    {
        descend(child, &mut |next| each_at(next, rest, visit));
    }
}

/// The value itself, or each element of an array. Arrays are entered whether or not the
/// catalog marks the step with `[]`: data shaped differently from the declaration must fail
/// closed (fields still removed), never open.
fn descend(child: &mut Value, visit: &mut dyn FnMut(&mut Value)) {
    match child {
        Value::Array(items) => items.iter_mut().for_each(visit),
        other => visit(other),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::directory::{Placement, Role, User};
    use crate::ids::{RoleName, UserId};

    fn catalog() -> &'static Catalog {
        Catalog::builtin()
    }

    fn access(permissions: &[&str]) -> Access {
        let role = Role {
            name: RoleName::parse("r").unwrap(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
        };
        let user = User {
            id: UserId::parse("owner").unwrap(),
            email: "o@example.com".into(),
            name: "O".into(),
            active: true,
            placement: Placement::default(),
            roles: vec![role.name.clone()],
        };
        Access::of(&user, &[role])
    }

    fn example(event_type: &str) -> Value {
        catalog().event_type(event_type).unwrap().example.clone()
    }

    #[test]
    fn financials_are_removed_at_every_depth() {
        let data = example("invoice.paid");
        assert!(data["invoice_items"][0].get("unit_cost").is_some());
        let profile = ShapeProfile::of(&access(&["invoices:read:tenant"]), catalog(), "invoices");
        let shaped = shape(catalog(), "invoices", &data, &profile);
        for field in ["net_total", "tax_total", "total"] {
            assert!(shaped.get(field).is_none(), "{field}");
        }
        for item in shaped["invoice_items"].as_array().unwrap() {
            for field in ["unit_cost", "net_total_price", "tax_total", "total_price"] {
                assert!(item.get(field).is_none(), "invoice_items[].{field}");
            }
            assert!(item.get("description").is_some(), "other item fields stay");
        }
        assert_eq!(shaped["id"], data["id"]);
    }

    #[test]
    fn embedded_objects_shrink_without_read_access_and_follow_their_own_groups() {
        let data = example("invoice.approved");
        let no_users = ShapeProfile::of(&access(&["invoices:read:tenant"]), catalog(), "invoices");
        let shaped = shape(catalog(), "invoices", &data, &no_users);
        assert_eq!(
            shaped["approved_by"],
            json!({"id": data["approved_by"]["id"]})
        );
        assert_eq!(shaped["supplier"], json!({"id": data["supplier"]["id"]}));

        let users_no_contact = ShapeProfile::of(
            &access(&[
                "invoices:read:tenant",
                "users:read:own",
                "suppliers:read:division",
            ]),
            catalog(),
            "invoices",
        );
        let shaped = shape(catalog(), "invoices", &data, &users_no_contact);
        assert!(
            shaped["approved_by"].get("first_name").is_some(),
            "any read scope shows the object"
        );
        assert!(
            shaped["approved_by"].get("email").is_none(),
            "users:fields:contact is needed for email"
        );
        assert!(shaped["supplier"].get("name").is_some());
        assert!(
            shaped["supplier"].get("tax_number").is_none(),
            "suppliers:fields:compliance"
        );

        let with_contact = ShapeProfile::of(
            &access(&[
                "invoices:read:tenant",
                "users:read:tenant",
                "users:fields:contact",
            ]),
            catalog(),
            "invoices",
        );
        let shaped = shape(catalog(), "invoices", &data, &with_contact);
        assert_eq!(shaped["approved_by"]["email"], data["approved_by"]["email"]);
    }

    #[test]
    fn purchase_order_owners_are_shaped_by_jobs_and_suppliers() {
        let data = example("purchase_order.issued");
        let profile = ShapeProfile::of(
            &access(&["purchase_orders:read:tenant"]),
            catalog(),
            "purchase_orders",
        );
        let shaped = shape(catalog(), "purchase_orders", &data, &profile);
        assert_eq!(
            shaped["owners"]["job"],
            json!({"id": data["owners"]["job"]["id"]})
        );
        assert_eq!(
            shaped["owners"]["supplier"],
            json!({"id": data["owners"]["supplier"]["id"]})
        );
    }

    #[test]
    fn arrays_where_objects_were_declared_are_still_shaped() {
        let mut data = example("purchase_order.issued");
        let job = data["owners"]["job"].clone();
        data["owners"]["job"] = json!([job.clone(), job]);
        let profile = ShapeProfile::of(
            &access(&["purchase_orders:read:tenant"]),
            catalog(),
            "purchase_orders",
        );
        let shaped = shape(catalog(), "purchase_orders", &data, &profile);
        for job in shaped["owners"]["job"].as_array().unwrap() {
            assert_eq!(job.as_object().unwrap().len(), 1, "shrunk to its id: {job}");
        }
        let mut invoice = example("invoice.paid");
        invoice["total"] = json!(["1.00", "2.00"]);
        let profile = ShapeProfile::of(&access(&["invoices:read:tenant"]), catalog(), "invoices");
        assert!(
            shape(catalog(), "invoices", &invoice, &profile)
                .get("total")
                .is_none()
        );
    }

    #[test]
    fn unknown_collections_and_fields_pass_through() {
        let data = json!({"id": "1", "anything": {"nested": true}});
        let profile = ShapeProfile::of(&access(&[]), catalog(), "gadgets");
        assert_eq!(shape(catalog(), "gadgets", &data, &profile), data);
        let mut invoice = example("invoice.created");
        invoice["new_field_from_platform"] = json!({"x": 1});
        let profile = ShapeProfile::of(&access(&["invoices:read:tenant"]), catalog(), "invoices");
        let shaped = shape(catalog(), "invoices", &invoice, &profile);
        assert_eq!(shaped["new_field_from_platform"], json!({"x": 1}));
    }

    #[test]
    fn profiles_ignore_what_shaping_does_not_use() {
        let a = ShapeProfile::of(
            &access(&["invoices:read:division", "jobs:read:own"]),
            catalog(),
            "invoices",
        );
        let b = ShapeProfile::of(
            &access(&[
                "invoices:read:tenant",
                "jobs:read:tenant",
                "bids:read:tenant",
            ]),
            catalog(),
            "invoices",
        );
        assert_eq!(a, b, "scopes decide visibility, not shape");
        let c = ShapeProfile::of(
            &access(&["invoices:read:tenant", "invoices:fields:financials"]),
            catalog(),
            "invoices",
        );
        assert_ne!(a, c);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn all_examples() -> Vec<(String, Value)> {
            catalog()
                .collections()
                .iter()
                .flat_map(|c| {
                    c.event_types
                        .iter()
                        .map(move |t| (c.name.clone(), t.example.clone()))
                })
                .collect()
        }

        /// A random profile: each collection readable or not, each group held or not.
        fn any_profile(collection: String) -> impl Strategy<Value = (String, ShapeProfile)> {
            let flags = proptest::collection::vec(any::<bool>(), 64);
            flags.prop_map(move |flags| {
                let mut index = 0;
                let profile = ShapeProfile::build(catalog(), &collection, |_, _| {
                    index += 1;
                    flags[index % flags.len()]
                });
                (collection.clone(), profile)
            })
        }

        fn example_and_profile() -> impl Strategy<Value = (Value, String, ShapeProfile)> {
            let examples = all_examples();
            (0..examples.len()).prop_flat_map(move |index| {
                let (collection, data) = examples[index].clone();
                any_profile(collection)
                    .prop_map(move |(collection, profile)| (data.clone(), collection, profile))
            })
        }

        /// Whether anything exists at `steps` in `value`.
        fn present(value: &Value, steps: &[Step]) -> bool {
            let Some((step, rest)) = steps.split_first() else {
                return true;
            };
            let Some(child) = value.get(&step.key) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            match child {
                Value::Array(items) if step.each => items.iter().any(|item| present(item, rest)),
                other => present(other, rest),
            }
        }

        /// No field of a group the profile lacks, in the resource or any embedded object.
        fn assert_no_withheld_field(
            collection: &Collection,
            value: &Value,
            profile: &ShapeProfile,
        ) {
            for (group, paths) in &collection.field_groups {
                if !profile.holds(&collection.name, group) {
                    for path in paths {
                        assert!(
                            !present(value, path.steps()),
                            "{}: {path} leaked",
                            collection.name
                        );
                    }
                }
            }
            for (path, target) in &collection.embedded {
                let embedded = catalog().collection(target).unwrap();
                let mut copy = value.clone();
                each_at(&mut copy, path.steps(), &mut |object| {
                    if !object.is_object() {
                        return;
                    }
                    if profile.can_read(target) {
                        assert_no_withheld_field(embedded, object, profile);
                    } else {
                        assert_eq!(
                            object.as_object().unwrap().len(),
                            1,
                            "{path} shrinks to its id"
                        );
                    }
                });
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn an_owner_with_every_permission_gets_the_input(index in 0usize..56) {
                let examples = all_examples();
                let (collection, data) = &examples[index % examples.len()];
                let profile = ShapeProfile::everything(catalog(), collection);
                prop_assert_eq!(&shape(catalog(), collection, data, &profile), data);
            }

            #[test]
            fn withheld_groups_never_appear((data, collection, profile) in example_and_profile()) {
                let shaped = shape(catalog(), &collection, &data, &profile);
                assert_no_withheld_field(catalog().collection(&collection).unwrap(), &shaped, &profile);
            }

            #[test]
            fn shaping_is_idempotent((data, collection, profile) in example_and_profile()) {
                let once = shape(catalog(), &collection, &data, &profile);
                let twice = shape(catalog(), &collection, &once, &profile);
                prop_assert_eq!(once, twice);
            }

            #[test]
            fn undeclared_fields_pass_through(
                (data, collection, profile) in example_and_profile(),
                key in "x_[a-z]{1,8}",
                extra in any::<i64>(),
            ) {
                let mut data = data;
                data[key.as_str()] = json!({"value": extra});
                let shaped = shape(catalog(), &collection, &data, &profile);
                prop_assert_eq!(&shaped[key.as_str()], &json!({"value": extra}));
            }
        }
    }
}
