//! Page cursors come back from callers: any text decodes to a cursor or to an error, never a
//! panic or an overflow, and every cursor decoded encodes back to one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zivio_app::cursor::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((at, id)) = decode(text) {
        assert_eq!(decode(&encode(at, &id)).ok(), Some((at, id)));
    }
});
