use proptest::prelude::*;

use super::*;
use crate::event::envelope;
use crate::shaping::{ShapeProfile, shape};

fn catalog() -> &'static Catalog {
    Catalog::builtin()
}

fn contracts() -> &'static Contracts {
    static CONTRACTS: std::sync::LazyLock<Contracts> =
        std::sync::LazyLock::new(|| Contracts::of(Catalog::builtin(), Refs::Defs));
    &CONTRACTS
}

fn validator(schema: Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&contracts().standalone(schema, None))
        .expect("a valid schema")
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| {
            format!(
                "{} {}",
                error.instance_path().as_str(),
                error.kind().keyword()
            )
        })
        .collect()
}

#[test]
fn the_schemas_are_valid_draft_2020_12() {
    for (event_type, _, _) in catalog().examples() {
        let document = contracts().standalone(contracts().envelope(&event_type).unwrap(), None);
        assert!(
            jsonschema::draft202012::meta::is_valid(&document),
            "{event_type}"
        );
    }
    let test = contracts().standalone(contracts().envelope(TEST_EVENT_TYPE).unwrap(), None);
    assert!(jsonschema::draft202012::meta::is_valid(&test));
}

#[test]
fn every_catalog_example_conforms_in_its_envelope() {
    let at = time::macros::datetime!(2026-11-27 10:30 UTC);
    for (event_type, _, example) in catalog().examples() {
        let body = envelope("evt_0192f3c4a5b6", &event_type, at, &example);
        let body: Value = serde_json::from_slice(&body).unwrap();
        let envelope = validator(contracts().envelope(&event_type).unwrap());
        assert_eq!(
            errors(&envelope, &body),
            Vec::<String>::new(),
            "{event_type}"
        );
        assert!(validator(contracts().data(&event_type).unwrap()).is_valid(&example));
    }
    let test = envelope("evt_test_1", TEST_EVENT_TYPE, at, &json!({"test": true}));
    let test: Value = serde_json::from_slice(&test).unwrap();
    assert!(validator(contracts().envelope(TEST_EVENT_TYPE).unwrap()).is_valid(&test));
}

#[test]
fn payloads_for_the_least_and_the_most_access_conform() {
    for (event_type, collection, example) in catalog().examples() {
        let data = validator(contracts().data(&event_type).unwrap());
        let least = ShapeProfile::build(catalog(), &collection, |name, group| {
            name == collection && group.is_none()
        });
        for profile in [least, ShapeProfile::everything(catalog(), &collection)] {
            let shaped = shape(catalog(), &collection, &example, &profile);
            assert_eq!(errors(&data, &shaped), Vec::<String>::new(), "{event_type}");
        }
    }
}

/// The schema at a declared path (each `[]` step into `items`), following references.
fn schema_at<'a>(
    definitions: &'a BTreeMap<String, Value>,
    root: &'a Value,
    path: &FieldPath,
) -> &'a Value {
    let mut schema = root;
    for step in path.steps() {
        schema = &resolve(definitions, schema)["properties"][&step.key];
        assert!(
            !schema.is_null(),
            "{path}: `{}` is not in the schema",
            step.key
        );
        if step.each {
            assert!(
                types(schema).contains(&"array"),
                "{path}: `{}` is not an array",
                step.key
            );
            schema = &schema["items"];
        }
    }
    schema
}

fn resolve<'a>(definitions: &'a BTreeMap<String, Value>, schema: &'a Value) -> &'a Value {
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema["anyOf"][0]["$ref"].as_str());
    match reference {
        Some(reference) => &definitions[reference.trim_start_matches("#/$defs/")],
        None => schema,
    }
}

fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_declared_shaping_path_has_its_declared_shape() {
    let definitions = contracts().definitions();
    for collection in catalog().collections() {
        let root = &definitions[&collection.name];
        // `milestones[]` names each element: objects too.
        for path in collection.objects.iter().chain(&collection.free_form) {
            let schema = schema_at(&definitions, root, path);
            assert!(
                types(schema).contains(&"object"),
                "{}: {path}",
                collection.name
            );
        }
        for path in &collection.free_form {
            let schema = schema_at(&definitions, root, path);
            assert!(
                schema.get("properties").is_none(),
                "{}: {path}",
                collection.name
            );
        }
        for (path, target) in &collection.embedded {
            let schema = schema_at(&definitions, root, path);
            let reference = schema["$ref"]
                .as_str()
                .or_else(|| schema["anyOf"][0]["$ref"].as_str());
            assert_eq!(
                reference,
                Some(format!("#/$defs/{target}").as_str()),
                "{}: {path}",
                collection.name
            );
        }
        for path in collection.field_groups.values().flatten() {
            let schema = schema_at(&definitions, root, path);
            assert!(
                !types(schema).is_empty()
                    || schema.get("$ref").is_some()
                    || schema.get("anyOf").is_some()
            );
        }
        assert_eq!(root["required"], json!(["id"]), "only the id is required");
    }
}

#[test]
fn mutations_fail_at_the_right_pointer() {
    let invoice = catalog()
        .event_type("invoice.paid")
        .unwrap()
        .example
        .clone();
    let data = validator(contracts().data("invoice.paid").unwrap());
    let mut array_to_object = invoice.clone();
    array_to_object["invoice_items"] = json!({"id": "1"});
    assert_eq!(errors(&data, &array_to_object), ["/invoice_items type"]);
    let mut amount_to_number = invoice.clone();
    amount_to_number["total"] = json!(1200.5);
    assert_eq!(errors(&data, &amount_to_number), ["/total type"]);
    let mut bad_amount = invoice.clone();
    bad_amount["total"] = json!("12,00");
    assert_eq!(errors(&data, &bad_amount), ["/total pattern"]);
    let mut no_id = invoice.clone();
    no_id.as_object_mut().unwrap().remove("id");
    assert_eq!(errors(&data, &no_id), [" required"]);
    let mut embedded = invoice.clone();
    embedded["created_by"] = json!({"email": "x@example.com"});
    assert_eq!(
        errors(&data, &embedded),
        ["/created_by anyOf"],
        "an embedded resource or null"
    );
    let mut custom = invoice.clone();
    custom["custom_fields"] = json!({"anything": [1, {"goes": true}]});
    custom["a_field_added_later"] = json!({"x": 1});
    assert_eq!(
        errors(&data, &custom),
        Vec::<String>::new(),
        "free-form and unknown fields"
    );
}

proptest! {
    #[test]
    fn payloads_for_any_access_conform(index in 0usize..1_000, flags in proptest::collection::vec(any::<bool>(), 64)) {
        let all = catalog().examples();
        let (event_type, collection, example) = &all[index % all.len()];
        let mut next = 0;
        let profile = ShapeProfile::build(catalog(), collection, |_, _| {
            next += 1;
            flags[next % flags.len()]
        });
        let shaped = shape(catalog(), collection, example, &profile);
        let data = validator(contracts().data(event_type).unwrap());
        prop_assert_eq!(errors(&data, &shaped), Vec::<String>::new());
    }
}
