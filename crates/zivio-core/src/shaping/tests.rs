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

/// An owner of `invoices:read:tenant` without financials, who may read users and suppliers
/// but holds none of their groups.
fn division_owner() -> ShapeProfile {
    ShapeProfile::of(
        &access(&[
            "invoices:read:tenant",
            "users:read:tenant",
            "suppliers:read:tenant",
            "jobs:read:tenant",
        ]),
        catalog(),
        "invoices",
    )
}

fn assert_absent(shaped: &Value, secret: &str) {
    let text = shaped.to_string();
    assert!(!text.contains(secret), "{secret} leaked: {text}");
}

#[test]
fn items_as_an_array_of_arrays_or_keyed_by_id_are_removed_for_owners_without_the_group() {
    let data = example("invoice.paid");
    let item = data["invoice_items"][0].clone();
    let unit_cost = item["unit_cost"].as_str().unwrap().to_owned();
    for items in [
        json!([[item.clone()]]),
        json!({"A1": item.clone(), "A2": item.clone()}),
        json!(item.clone()),
        json!(item.to_string()),
        json!([item.to_string()]),
    ] {
        let mut misshapen = data.clone();
        misshapen["invoice_items"] = items.clone();
        let shaped = shape(catalog(), "invoices", &misshapen, &division_owner());
        assert!(shaped.get("invoice_items").is_none(), "{items}");
        assert_absent(&shaped, &unit_cost);
        let everything = ShapeProfile::everything(catalog(), "invoices");
        assert_eq!(
            shape(catalog(), "invoices", &misshapen, &everything).into_owned(),
            misshapen,
            "an owner who may see it all gets it as sent"
        );
    }
}

#[test]
fn withheld_fields_nested_deeper_than_declared_are_removed() {
    let data = example("invoice.approved");
    let email = data["approved_by"]["email"].as_str().unwrap().to_owned();
    let mut deeper = data.clone();
    deeper["approved_by"] = json!({"id": data["approved_by"]["id"], "user": data["approved_by"]});
    let shaped = shape(catalog(), "invoices", &deeper, &division_owner());
    assert_absent(&shaped, &email);
    assert_eq!(shaped["approved_by"]["id"], data["approved_by"]["id"]);

    let mut items = data.clone();
    items["invoice_items"][0]["detail"] =
        json!({"unit_cost": "SECRET-1", "x": [{"total": "SECRET-2"}]});
    let shaped = shape(catalog(), "invoices", &items, &division_owner());
    assert_absent(&shaped, "SECRET-");
    assert!(shaped["invoice_items"][0].get("detail").is_none());
    assert!(shaped["invoice_items"][0].get("description").is_some());
}

#[test]
fn misshapen_embedded_objects_are_removed_unless_the_owner_sees_all_of_them() {
    let mut data = example("purchase_order.issued");
    let job = data["owners"]["job"].clone();
    data["owners"]["job"] = json!([job.clone(), job]);
    let profile = ShapeProfile::of(
        &access(&["purchase_orders:read:tenant"]),
        catalog(),
        "purchase_orders",
    );
    let shaped = shape(catalog(), "purchase_orders", &data, &profile);
    assert!(shaped["owners"].get("job").is_none(), "{shaped}");
    assert!(shaped["owners"].get("supplier").is_some());
    let sees_jobs = ShapeProfile::of(
        &access(&[
            "purchase_orders:read:tenant",
            "jobs:read:tenant",
            "jobs:fields:financials",
            "users:read:tenant",
            "users:fields:contact",
        ]),
        catalog(),
        "purchase_orders",
    );
    let shaped = shape(catalog(), "purchase_orders", &data, &sees_jobs);
    assert_eq!(shaped["owners"]["job"], data["owners"]["job"]);

    let mut invoice = example("invoice.paid");
    invoice["total"] = json!(["1.00", "2.00"]);
    invoice["approved_by"] = json!("someone@example.com");
    let shaped = shape(catalog(), "invoices", &invoice, &division_owner());
    assert!(shaped.get("total").is_none());
    assert!(shaped.get("approved_by").is_none());
}

#[test]
fn nulls_on_the_way_stay_null() {
    let mut data = example("invoice.approved");
    data["approved_by"] = Value::Null;
    data["invoice_items"] = Value::Null;
    let shaped = shape(catalog(), "invoices", &data, &division_owner());
    assert_eq!(shaped["approved_by"], Value::Null);
    assert_eq!(shaped["invoice_items"], Value::Null);
}

#[test]
fn unknown_collections_and_fields_pass_through() {
    let data = json!({"id": "1", "anything": {"nested": true}});
    let profile = ShapeProfile::of(&access(&[]), catalog(), "gadgets");
    assert_eq!(
        shape(catalog(), "gadgets", &data, &profile).into_owned(),
        data
    );
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
