//! Event batches as the platform posts them: the request body parsed as the platform API does,
//! then validated; accepted events fingerprint and shape without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zivio_core::catalog::Catalog;
use zivio_http::platform::PublishBatchRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<PublishBatchRequest>(data) else {
        return;
    };
    let now = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap();
    let _ = zivio_app::events::accept(Catalog::builtin(), request.into_inputs(), true, now);
});
