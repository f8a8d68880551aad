//! Payload contracts at publish (docs/product.md §5): each event's `resource.data` is checked
//! against the `data` part of its type's schema (`zivio_core::contract`), with a validator
//! compiled once per type. Non-conforming events are refused (400, JSON pointers into the
//! request body), accepted and counted, or not checked, as the operator chose. Messages name
//! the rule, never the value. Shaping fails closed on its own whatever the setting.

use std::collections::HashMap;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;
use zivio_core::catalog::{Catalog, TEST_EVENT_TYPE};
use zivio_core::contract::{Contracts, Refs};

use crate::{AppError, AppResult, FieldError, Services};

/// At most this many violations are reported for one publish.
pub const MAX_ERRORS: usize = 100;

/// What publishing does with an event that does not conform to its type's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checking {
    /// Refuse it (and its whole batch) with a 400.
    Enforce,
    /// Accept it; log the pointer and rule and count it.
    Warn,
    Off,
}

impl Checking {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "enforce" => Ok(Checking::Enforce),
            "warn" => Ok(Checking::Warn),
            "off" => Ok(Checking::Off),
            _ => Err(format!(
                "`{text}` is not a mode: expected enforce, warn or off"
            )),
        }
    }
}

/// The schemas receivers fetch and the validators publishing uses, built once at start-up.
pub struct PayloadContracts {
    schemas: Contracts,
    validators: HashMap<String, Validator>,
    checking: Checking,
}

/// One way an event's data does not conform: where (a JSON pointer relative to `data`) and
/// which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub rule: String,
}

impl PayloadContracts {
    pub fn new(catalog: &Catalog, checking: Checking) -> Self {
        let schemas = Contracts::of(catalog, Refs::Defs);
        let options = jsonschema::options()
            // Linear-time matching: a pattern can never make a publish slow.
            .with_pattern_options(jsonschema::PatternOptions::regex());
        let validators = catalog
            .collections()
            .iter()
            .flat_map(|collection| collection.event_types.iter().map(|t| t.name.as_str()))
            .chain([TEST_EVENT_TYPE])
            .map(|event_type| {
                let data = schemas
                    .data(event_type)
                    .expect("every catalog type has a contract");
                let validator = options
                    .build(&schemas.standalone(data, None))
                    .expect("generated schemas compile");
                (event_type.to_owned(), validator)
            })
            .collect();
        PayloadContracts {
            schemas,
            validators,
            checking,
        }
    }

    pub fn checking(&self) -> Checking {
        self.checking
    }

    /// The schemas, with shared definitions under `#/$defs/`.
    pub fn schemas(&self) -> &Contracts {
        &self.schemas
    }

    /// The standalone schema of `event_type`'s envelope, published under `id`.
    pub fn envelope_schema(&self, event_type: &str, id: &str) -> Option<Value> {
        let envelope = self.schemas.envelope(event_type)?;
        Some(self.schemas.standalone(envelope, Some(id)))
    }

    /// How `data` fails its type's contract (at most `limit` violations); empty when it
    /// conforms or the type has no contract.
    pub fn violations(&self, event_type: &str, data: &Value, limit: usize) -> Vec<Violation> {
        let Some(validator) = self.validators.get(event_type) else {
            return Vec::new();
        };
        if validator.is_valid(data) {
            return Vec::new();
        }
        let mut found = Vec::new();
        for error in validator.iter_errors(data) {
            collect(&error, &mut found);
            if found.len() >= limit {
                break;
            }
        }
        found.truncate(limit);
        found
    }
}

/// The violations one error stands for: an embedded resource that may also be null fails as
/// `anyOf`; what matters is why it is not the resource.
fn collect(error: &ValidationError<'_>, found: &mut Vec<Violation>) {
    if let ValidationErrorKind::AnyOf { context } = error.kind()
        && let Some(branch) = context.first().filter(|branch| !branch.is_empty())
    {
        for inner in branch {
            collect(inner, found);
        }
        return;
    }
    found.push(Violation {
        pointer: error.instance_path().as_str().to_owned(),
        rule: rule(error.kind()),
    });
}

/// The rule in words; never the offending value.
fn rule(kind: &ValidationErrorKind) -> String {
    match kind {
        ValidationErrorKind::Type { kind } => {
            let names: Vec<&str> = match kind {
                TypeKind::Single(single) => vec![single.as_str()],
                // `null` last: "string or null" reads as what is wanted.
                TypeKind::Multiple(set) => {
                    let mut names: Vec<&str> = set.iter().map(|t| t.as_str()).collect();
                    names.sort_by_key(|name| *name == "null");
                    names
                }
            };
            format!("must be of type {}", names.join(" or "))
        }
        ValidationErrorKind::Pattern { pattern } => format!("must match the pattern {pattern}"),
        ValidationErrorKind::Required { property } => format!(
            "is missing the required property `{}`",
            property.as_str().unwrap_or_default()
        ),
        ValidationErrorKind::Format { format } => format!("must be a valid {format}"),
        ValidationErrorKind::Constant { expected_value } => format!("must be {expected_value}"),
        other => format!("does not satisfy the `{}` rule", other.keyword()),
    }
}

/// Checks the events of one publish: non-conforming events are refused with a 400
/// naming each violation (a batch as a whole), or accepted, logged and counted, or not checked.
pub(crate) fn check<'a>(
    services: &Services,
    events: impl Iterator<Item = (&'a str, &'a Value)>,
    batch: bool,
) -> AppResult<()> {
    let contracts = &services.contracts;
    let checking = contracts.checking();
    if checking == Checking::Off {
        return Ok(());
    }
    let mut errors = Vec::new();
    for (index, (event_type, data)) in events.enumerate() {
        let limit = match checking {
            Checking::Warn => WARNED_VIOLATIONS,
            _ => MAX_ERRORS - errors.len(),
        };
        let found = contracts.violations(event_type, data, limit);
        if found.is_empty() {
            continue;
        }
        if checking == Checking::Warn {
            services.metrics.record_nonconforming(event_type);
            for violation in &found {
                tracing::warn!(
                    event_type = %event_type,
                    pointer = %violation.pointer,
                    rule = %violation.rule,
                    "a published event does not conform to its type's schema; accepted (ZIVIO_WEBHOOKS_EVENT_VALIDATION=warn)"
                );
            }
            continue;
        }
        errors.extend(found.iter().map(|v| field_error(batch.then_some(index), v)));
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::BadRequest(errors))
    }
}

/// In `warn` mode, at most this many violations of one event are logged.
const WARNED_VIOLATIONS: usize = 10;

/// A violation as a field error of the publish request: its pointer into the request body.
fn field_error(event: Option<usize>, violation: &Violation) -> FieldError {
    let base = match event {
        Some(index) => format!("/events/{index}/resource/data"),
        None => "/resource/data".to_owned(),
    };
    FieldError::new(
        format!("{base}{}", violation.pointer),
        violation.rule.clone(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn violations_name_the_pointer_and_the_rule_never_the_value() {
        let contracts = PayloadContracts::new(Catalog::builtin(), Checking::Enforce);
        let mut invoice = Catalog::builtin()
            .event_type("invoice.paid")
            .unwrap()
            .example
            .clone();
        assert!(
            contracts
                .violations("invoice.paid", &invoice, 100)
                .is_empty()
        );
        invoice["total"] = json!(98765.4321);
        invoice["invoice_items"] = json!({"secret-looking": "s3cr3t"});
        invoice["created_by"] = json!({"email": "someone@example.com"});
        let found = contracts.violations("invoice.paid", &invoice, 100);
        let text = format!("{found:?}");
        assert!(
            !text.contains("98765") && !text.contains("s3cr3t") && !text.contains("someone"),
            "{text}"
        );
        let pointers: Vec<&str> = found.iter().map(|v| v.pointer.as_str()).collect();
        assert!(
            pointers.contains(&"/total") && pointers.contains(&"/invoice_items"),
            "{pointers:?}"
        );
        let missing = found.iter().find(|v| v.pointer == "/created_by").unwrap();
        assert_eq!(missing.rule, "is missing the required property `id`");
        assert_eq!(contracts.violations("invoice.paid", &invoice, 2).len(), 2);
        assert_eq!(
            field_error(Some(3), &found[0]).field,
            format!("/events/3/resource/data{}", found[0].pointer)
        );
    }

    /// The generated schemas are also kept in the repository, beside the catalog, so that a
    /// change of an example that changes the contract shows up in review. After such a change:
    /// `ZIVIO_BLESS=1 cargo test -p zivio-app committed`, then read the diff.
    #[test]
    fn the_committed_schemas_are_the_generated_ones() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../catalog/payload-schemas.json"
        );
        let definitions = Contracts::of(Catalog::builtin(), Refs::Defs).definitions();
        let generated = serde_json::to_string_pretty(&definitions).unwrap() + "\n";
        if std::env::var_os("ZIVIO_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "catalog/payload-schemas.json differs from what the catalog generates: run \
             `ZIVIO_BLESS=1 cargo test -p zivio-app committed` and review the change"
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Checking::parse("warn"), Ok(Checking::Warn));
        assert!(Checking::parse("strict").is_err());
    }
}
