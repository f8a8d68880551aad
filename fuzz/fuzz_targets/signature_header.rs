//! Receivers' side of signing: `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
//! of any content never panic the verifier, and only a signature made with the secret verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zivio_core::secret::SigningSecret;
use zivio_core::signing::{sign, verify};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (id, timestamp, signatures, body) = (parts.next(), parts.next(), parts.next(), parts.next());
    let secret = SigningSecret::generate([9; 32]);
    let now = 1_790_000_000;
    let body = body.unwrap_or_default().as_bytes();
    if verify(&secret, id, timestamp, signatures, body, now, 300).is_ok() {
        // Only possible if the input carried our own signature for these exact values.
        let expected = sign(&secret, id.unwrap(), timestamp.unwrap().trim().parse().unwrap(), body);
        assert!(signatures.unwrap().split(' ').any(|s| s == expected));
    }
});
