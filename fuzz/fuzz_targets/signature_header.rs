//! Receivers' side of signing: `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
//! of any content never panic the verifier; our own signature of any id, timestamp and body
//! verifies (also among other signatures), and one byte changed in the body makes it fail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zivio_core::secret::SigningSecret;
use zivio_core::signing::{sign, verify};

const NOW: i64 = 1_790_000_000;
const TOLERANCE: i64 = 300;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (id, timestamp, signatures, body) = (parts.next(), parts.next(), parts.next(), parts.next());
    let secret = SigningSecret::generate([9; 32]);
    let body = body.unwrap_or_default().as_bytes();
    // Whatever the headers hold: an answer, never a panic.
    let _ = verify(&secret, id, timestamp, signatures, body, NOW, TOLERANCE);

    let id = id.unwrap_or_default();
    let at = NOW + i64::from(data.first().copied().unwrap_or(0)) - 128;
    let ours = sign(&secret, id, at, body);
    let header = format!("{} {ours}", signatures.unwrap_or_default());
    let at_text = at.to_string();
    assert!(
        verify(&secret, Some(id), Some(&at_text), Some(&header), body, NOW, TOLERANCE).is_ok(),
        "our own signature must verify"
    );
    let mut tampered = body.to_vec();
    tampered.push(b'x');
    assert!(verify(&secret, Some(id), Some(&at_text), Some(&ours), &tampered, NOW, TOLERANCE).is_err());
});
