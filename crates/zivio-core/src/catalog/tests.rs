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
fn undeclared(catalog: &Catalog, collection: &Collection, value: &Value, out: &mut Vec<String>) {
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
