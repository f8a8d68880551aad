//! Webhook signing secrets (docs/product.md §4): `whsec_` + base64 of 32 random bytes, shown once,
//! stored only encrypted (AES-256-GCM under the secrets key, the webhook id as associated data so
//! a ciphertext cannot be moved to another webhook). `Debug` never shows a secret.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::keys::SecretsKey;

const PREFIX: &str = "whsec_";
pub(crate) const NONCE_LENGTH: usize = 12;

// No `PartialEq`: a secret is never compared with `==` (timing); tests compare `expose()`.
#[derive(Clone)]
pub struct SigningSecret(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a signing secret is `whsec_` followed by base64 of 24 to 64 bytes")]
    Malformed,
    #[error("the secret cannot be decrypted with this secrets key")]
    Undecryptable,
}

impl SigningSecret {
    /// A new secret from 32 bytes of the operating system's randomness.
    pub fn generate(random: [u8; 32]) -> Self {
        Self(format!("{PREFIX}{}", STANDARD.encode(random)))
    }

    /// Accepts `whsec_<base64>` as receivers and tools hold it.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SecretError::Malformed)?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::Malformed)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(SecretError::Malformed);
        }
        Ok(Self(format!("{PREFIX}{encoded}")))
    }

    /// The full secret, for the one answer that shows it and for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the base64-decoded part after `whsec_`.
    pub fn key_bytes(&self) -> Vec<u8> {
        STANDARD
            .decode(&self.0[PREFIX.len()..])
            .expect("validated on construction")
    }

    /// The last four characters, shown in place of the secret.
    pub fn hint(&self) -> String {
        let start = self.0.len().saturating_sub(4);
        self.0[start..].to_owned()
    }

    /// Encrypts for storage: `nonce || ciphertext+tag`. The nonce must be fresh randomness.
    pub fn seal(&self, key: &SecretsKey, webhook_id: &str, nonce: [u8; NONCE_LENGTH]) -> Vec<u8> {
        seal_bytes(key, webhook_id.as_bytes(), self.0.as_bytes(), nonce)
    }

    /// Decrypts what [`SigningSecret::seal`] produced for the same webhook id and key.
    pub fn open(sealed: &[u8], key: &SecretsKey, webhook_id: &str) -> Result<Self, SecretError> {
        let plain = open_bytes(key, webhook_id.as_bytes(), sealed)?;
        let text = String::from_utf8(plain).map_err(|_| SecretError::Undecryptable)?;
        Self::parse(&text).map_err(|_| SecretError::Undecryptable)
    }
}

/// AES-256-GCM under the secrets key: `nonce || ciphertext+tag`, bound to `aad` (what the
/// plain text belongs to, so that a ciphertext cannot be moved elsewhere).
pub(crate) fn seal_bytes(
    key: &SecretsKey,
    aad: &[u8],
    plain: &[u8],
    nonce: [u8; NONCE_LENGTH],
) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
        .expect("AES-GCM encryption of a short message cannot fail");
    [nonce.as_slice(), &ciphertext].concat()
}

/// Decrypts what [`seal_bytes`] produced with the same key and `aad`.
pub(crate) fn open_bytes(
    key: &SecretsKey,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, SecretError> {
    if sealed.len() <= NONCE_LENGTH {
        return Err(SecretError::Undecryptable);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LENGTH);
    let nonce: [u8; NONCE_LENGTH] = nonce.try_into().expect("split at the nonce length");
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| SecretError::Undecryptable)
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret(…{})", self.hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_standard_webhooks_form() {
        let secret = SigningSecret::generate([7; 32]);
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(secret.key_bytes(), vec![7; 32]);
        assert_eq!(secret.hint().len(), 4);
        assert!(secret.expose().ends_with(&secret.hint()));
        assert_eq!(
            SigningSecret::parse(secret.expose()).unwrap().expose(),
            secret.expose()
        );
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        for bad in [
            "",
            "whsec_",
            "whsec_!!!",
            "sk_AAAA",
            &format!("whsec_{}", STANDARD.encode([1; 8])),
        ] {
            assert_eq!(
                SigningSecret::parse(bad).err(),
                Some(SecretError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_webhook() {
        let key = SecretsKey::from_bytes([1; 32]);
        let secret = SigningSecret::generate([9; 32]);
        let sealed = secret.seal(&key, "wh_1", [3; 12]);
        assert!(
            !sealed
                .windows(8)
                .any(|w| secret.expose().as_bytes().windows(8).any(|s| s == w))
        );
        assert_eq!(
            SigningSecret::open(&sealed, &key, "wh_1").unwrap().expose(),
            secret.expose()
        );
        assert_eq!(
            SigningSecret::open(&sealed, &key, "wh_2").err(),
            Some(SecretError::Undecryptable),
            "bound to its webhook"
        );
        let other = SecretsKey::from_bytes([2; 32]);
        assert_eq!(
            SigningSecret::open(&sealed, &other, "wh_1").err(),
            Some(SecretError::Undecryptable)
        );
        assert_eq!(
            SigningSecret::open(&sealed[..5], &key, "wh_1").err(),
            Some(SecretError::Undecryptable)
        );
    }
}
