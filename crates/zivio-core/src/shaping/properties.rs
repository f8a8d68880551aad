//! Properties of shaping over every catalog example and arbitrary owners, and over data that
//! arrives in shapes the catalog does not declare.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn catalog() -> &'static Catalog {
    Catalog::builtin()
}

fn all_examples() -> Vec<(String, Value)> {
    let examples = catalog().examples().into_iter();
    examples
        .map(|(_, collection, example)| (collection, example))
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
fn assert_no_withheld_field(collection: &Collection, value: &Value, profile: &ShapeProfile) {
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
        for object in objects_at(value, path.steps()) {
            if profile.can_read(target) {
                assert_no_withheld_field(embedded, object, profile);
            } else {
                assert_eq!(
                    object.as_object().unwrap().len(),
                    1,
                    "{path} shrinks to its id"
                );
            }
        }
    }
}

/// The objects at `steps` (through arrays).
fn objects_at<'a>(value: &'a Value, steps: &[Step]) -> Vec<&'a Value> {
    let Some((step, rest)) = steps.split_first() else {
        return vec![value].into_iter().filter(|v| v.is_object()).collect();
    };
    let elements: Vec<&Value> = match value.get(&step.key) {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => vec![other],
        None => Vec::new(),
    };
    elements
        .into_iter()
        .flat_map(|e| objects_at(e, rest))
        .collect()
}

/// How data may arrive around a declared path, other than as declared.
#[derive(Debug, Clone, Copy)]
enum Misshape {
    AsDeclared,
    InArray,
    InArrayOfArrays,
    KeyedById,
    NestedDeeper,
    FirstElementOnly,
    AsString,
    AsNull,
    UnderId,
}

fn misshape(value: Value, how: Misshape) -> Value {
    match how {
        Misshape::AsDeclared => value,
        Misshape::InArray => json!([value]),
        Misshape::InArrayOfArrays => json!([[value]]),
        Misshape::KeyedById => json!({"A1": value, "A2": {"note": "other"}}),
        Misshape::NestedDeeper => json!({"id": "wrapper", "inner": value}),
        Misshape::FirstElementOnly => match value {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            other => other,
        },
        Misshape::AsString => Value::String(value.to_string()),
        Misshape::AsNull => Value::Null,
        Misshape::UnderId => json!({"id": value}),
    }
}

fn any_misshape() -> impl Strategy<Value = Misshape> {
    prop_oneof![
        3 => Just(Misshape::AsDeclared),
        1 => Just(Misshape::InArray),
        1 => Just(Misshape::InArrayOfArrays),
        1 => Just(Misshape::KeyedById),
        1 => Just(Misshape::NestedDeeper),
        1 => Just(Misshape::FirstElementOnly),
        1 => Just(Misshape::AsString),
        1 => Just(Misshape::AsNull),
        1 => Just(Misshape::UnderId),
    ]
}

/// Puts `secret` at `steps` below `value` (making the way there as declared where it is
/// missing), then reshapes each value on the way as `hows` says, innermost first.
fn plant(value: &mut Value, steps: &[Step], hows: &[Misshape], secret: &str) {
    let (Some((step, rest)), Some((how, hows_rest))) = (steps.split_first(), hows.split_first())
    else {
        return;
    };
    if !value.is_object() {
        *value = json!({});
    }
    let object = value.as_object_mut().expect("made an object above");
    let child = if rest.is_empty() {
        json!(secret)
    } else {
        let mut child = object.remove(&step.key).unwrap_or(Value::Null);
        if step.each {
            let mut items = match child {
                Value::Array(items) if items.iter().any(Value::is_object) => items,
                _ => vec![json!({})],
            };
            items.retain(Value::is_object);
            for item in &mut items {
                plant(item, rest, hows_rest, secret);
            }
            child = Value::Array(items);
        } else {
            plant(&mut child, rest, hows_rest, secret);
        }
        child
    };
    object.insert(step.key.clone(), misshape(child, *how));
}

/// Every sensitive path below a resource of `collection`, as (steps from its root, the
/// collection that declares the group, the group), through embedded objects two levels deep.
fn sensitive_paths(collection: &str, depth: usize) -> Vec<(Vec<Step>, String, String)> {
    let Some(declared) = catalog().collection(collection) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<Step>, String, String)> = declared
        .field_groups
        .iter()
        .flat_map(|(group, paths)| {
            paths
                .iter()
                .map(move |path| (path.steps().to_vec(), collection.to_owned(), group.clone()))
        })
        .collect();
    if depth > 0 {
        for (path, target) in &declared.embedded {
            for (inner, owner, group) in sensitive_paths(target, depth - 1) {
                let steps = path.steps().iter().cloned().chain(inner).collect();
                out.push((steps, owner, group));
            }
        }
    }
    out
}

/// Every embedded object below a resource of `collection` (steps from its root), two levels
/// deep.
fn embedded_paths(collection: &str, depth: usize) -> Vec<Vec<Step>> {
    let Some(declared) = catalog().collection(collection) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (path, target) in &declared.embedded {
        out.push(path.steps().to_vec());
        if depth > 0 {
            for inner in embedded_paths(target, depth - 1) {
                out.push(path.steps().iter().cloned().chain(inner).collect());
            }
        }
    }
    out
}

/// Every key path in `value` (arrays not counted).
fn key_paths(value: &Value, at: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                at.push(key.clone());
                out.insert(at.clone());
                key_paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => items.iter().for_each(|item| key_paths(item, at, out)),
        _ => {}
    }
}

fn keys_of(steps: &[Step]) -> Vec<String> {
    steps.iter().map(|step| step.key.clone()).collect()
}

/// A catalog example, one of its sensitive paths with a secret planted there in an arbitrary
/// shape, and an owner who lacks that path's group (everything else random).
fn misshapen_secret() -> impl Strategy<Value = (String, Value, ShapeProfile, String)> {
    let examples = all_examples();
    (0..examples.len())
        .prop_flat_map(move |index| {
            let (collection, data) = examples[index].clone();
            let paths = sensitive_paths(&collection, 2);
            let count = paths.len().max(1);
            (
                Just((collection, data, paths)),
                0..count,
                proptest::collection::vec(any_misshape(), 8),
                proptest::collection::vec(any::<bool>(), 64),
            )
        })
        .prop_filter_map(
            "collections without sensitive paths",
            |((collection, data, paths), pick, hows, flags)| {
                let (steps, owner, group) = paths.get(pick)?.clone();
                let secret = format!("SECRET-{owner}-{group}");
                let mut data = data;
                plant(&mut data, &steps, &hows, &secret);
                let mut index = 0;
                let profile = ShapeProfile::build(catalog(), &collection, |name, asked| {
                    if name == owner && asked == Some(group.as_str()) {
                        return false;
                    }
                    index += 1;
                    flags[index % flags.len()]
                });
                Some((collection, data, profile, secret))
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_owner_with_every_permission_gets_the_input(index in 0usize..56) {
        let examples = all_examples();
        let (collection, data) = &examples[index % examples.len()];
        let profile = ShapeProfile::everything(catalog(), collection);
        prop_assert_eq!(&shape(catalog(), collection, data, &profile).into_owned(), data);
    }

    #[test]
    fn withheld_groups_never_appear((data, collection, profile) in example_and_profile()) {
        let shaped = shape(catalog(), &collection, &data, &profile);
        assert_no_withheld_field(catalog().collection(&collection).unwrap(), &shaped, &profile);
    }

    #[test]
    fn no_withheld_value_survives_any_shape_around_its_path(
        (collection, data, profile, secret) in misshapen_secret()
    ) {
        let shaped = shape(catalog(), &collection, &data, &profile);
        let text = shaped.to_string();
        prop_assert!(!text.contains(&secret), "{} leaked from {}: {}", secret, data, text);
    }

    #[test]
    fn well_shaped_examples_lose_only_what_is_withheld(
        (data, collection, profile) in example_and_profile()
    ) {
        let shaped = shape(catalog(), &collection, &data, &profile);
        let (mut before, mut after) = (BTreeSet::new(), BTreeSet::new());
        key_paths(&data, &mut Vec::new(), &mut before);
        key_paths(&shaped, &mut Vec::new(), &mut after);
        let sensitive: Vec<Vec<String>> = sensitive_paths(&collection, 2)
            .iter()
            .map(|(steps, _, _)| keys_of(steps))
            .collect();
        let embedded: Vec<Vec<String>> =
            embedded_paths(&collection, 2).iter().map(|steps| keys_of(steps)).collect();
        for lost in before.difference(&after) {
            let explained = sensitive.iter().any(|path| lost.starts_with(path))
                || embedded.iter().any(|path| lost.len() > path.len() && lost.starts_with(path));
            prop_assert!(explained, "{} lost {:?}", collection, lost);
        }
    }

    #[test]
    fn shaping_is_idempotent((data, collection, profile) in example_and_profile()) {
        let once = shape(catalog(), &collection, &data, &profile).into_owned();
        let twice = shape(catalog(), &collection, &once, &profile).into_owned();
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
