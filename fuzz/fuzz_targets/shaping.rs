//! Resource data of any shape, shaped for a reader who may see everything and for one who may
//! see only what the catalog calls public: never a panic, and never more than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use zivio_core::catalog::Catalog;
use zivio_core::shaping::{ShapeProfile, shape};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let catalog = Catalog::builtin();
    for collection in catalog.collections() {
        let everything = ShapeProfile::everything(catalog, &collection.name);
        let full = shape(catalog, &collection.name, &value, &everything);
        let nothing = ShapeProfile::build(catalog, &collection.name, |_, group| group.is_none());
        let narrow = shape(catalog, &collection.name, &value, &nothing);
        assert!(narrow.to_string().len() <= full.to_string().len().max(value.to_string().len()));
    }
});
