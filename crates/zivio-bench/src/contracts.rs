//! The cost of checking published events against their payload contracts, measured in process
//! (the check runs before anything is stored, on the publishing request's task): the mean time
//! to check one conforming event, over every catalog example, against the service's CPU per
//! delivery measured by `throughput`.

use std::time::{Duration, Instant};

use zivio_app::contracts::{Checking, PayloadContracts};
use zivio_core::catalog::Catalog;

use crate::report::Report;

/// How long the check is repeated.
const MEASURE: Duration = Duration::from_secs(2);

pub fn contracts(report: &mut Report) {
    let catalog = Catalog::builtin();
    let compiling = Instant::now();
    let contracts = PayloadContracts::new(catalog, Checking::Enforce);
    let compiled = compiling.elapsed();
    let examples: Vec<(&str, &serde_json::Value)> = catalog
        .collections()
        .iter()
        .flat_map(|c| c.event_types.iter().map(|t| (t.name.as_str(), &t.example)))
        .collect();
    let started = Instant::now();
    let mut checked = 0u64;
    while started.elapsed() < MEASURE {
        for (event_type, example) in &examples {
            let violations = contracts.violations(event_type, example, 100);
            assert!(violations.is_empty(), "{event_type} conforms");
            checked += 1;
        }
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let per_event = started.elapsed().as_secs_f64() * 1e6 / checked as f64;
    report.add(
        "contracts",
        None,
        "payload check per conforming event (enforce)",
        per_event,
        "µs",
        None,
    );
    report.add(
        "contracts",
        None,
        "compiling every type's validator at start-up",
        compiled.as_secs_f64() * 1e3,
        "ms",
        None,
    );
}
