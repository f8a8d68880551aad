//! Standard Webhooks signatures (PRODUCT.md §5): `v1,` + base64 HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}` with the base64-decoded part of the `whsec_` secret.
//! Receivers verify with the official `standardwebhooks` libraries as they are.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::secret::SigningSecret;

/// The `webhook-signature` header value for one attempt.
pub fn sign(secret: &SigningSecret, message_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&secret.key_bytes())
        .expect("HMAC takes any key length");
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's test vectors.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn any_change_changes_the_signature() {
        let secret = SigningSecret::generate([1; 32]);
        let base = sign(&secret, "evt_1", 100, b"{}");
        assert_ne!(base, sign(&secret, "evt_2", 100, b"{}"));
        assert_ne!(base, sign(&secret, "evt_1", 101, b"{}"));
        assert_ne!(base, sign(&secret, "evt_1", 100, b"{ }"));
        assert_ne!(
            base,
            sign(&SigningSecret::generate([2; 32]), "evt_1", 100, b"{}")
        );
    }
}
