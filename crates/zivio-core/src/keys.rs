//! Operator keys: the secrets key that encrypts signing secrets at rest, and the platform keys that
//! authenticate the platform API (docs/product.md §4, §8). Neither ever appears in `Debug` output.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The 32-byte key that encrypts webhook signing secrets.
#[derive(Clone)]
pub struct SecretsKey([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected base64 of exactly 32 bytes")]
    NotBase64Of32Bytes,
    #[error("no key given")]
    Empty,
    #[error("key {0} is shorter than 16 characters")]
    TooShort(usize),
    #[error("key {0} contains whitespace")]
    Whitespace(usize),
}

impl SecretsKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses standard base64 (padding optional) of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .map_err(|_| KeyError::NotBase64Of32Bytes)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::NotBase64Of32Bytes)?;
        Ok(Self(bytes))
    }

    /// The form written to key files and accepted by [`SecretsKey::parse`].
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A value derived from the key that reveals nothing about it, stored in the database so
    /// that an instance started with a different key refuses to run instead of failing to
    /// decrypt secrets later.
    pub fn check_value(&self) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"zivio-webhooks secrets key check v1");
        let tag = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&tag[..16])
    }

    /// A short public identifier of this key, stored beside each ciphertext so that keys can
    /// be rotated by re-encryption.
    pub fn id(&self) -> String {
        self.check_value()[..8].to_owned()
    }
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

/// The accepted platform API keys (several during a rotation). Only their SHA-256 digests are
/// kept, and a presented key is compared in constant time against each.
#[derive(Clone)]
pub struct PlatformKeys(Vec<[u8; 32]>);

impl PlatformKeys {
    /// Parses comma-separated keys of at least 16 characters each.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut digests = Vec::new();
        for (index, key) in text.split(',').map(str::trim).enumerate() {
            let number = index + 1;
            if key.chars().any(char::is_whitespace) {
                return Err(KeyError::Whitespace(number));
            }
            if key.chars().count() < 16 {
                return Err(if text.trim().is_empty() {
                    KeyError::Empty
                } else {
                    KeyError::TooShort(number)
                });
            }
            digests.push(Sha256::digest(key.as_bytes()).into());
        }
        Ok(Self(digests))
    }

    /// A new platform key from 32 random bytes.
    pub fn generate(random: [u8; 32]) -> String {
        format!("zpk_{}", URL_SAFE_NO_PAD.encode(random))
    }

    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Check every key so that timing does not tell which one matched.
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.ct_eq(&digest)
            })
            .into()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlatformKeys(<{} redacted>)", self.0.len())
    }
}

/// API keys of tenant admins: `zk_` and the URL-safe base64 (no padding) of 32 random bytes,
/// 46 characters in all. Only their SHA-256 digest is stored.
pub struct ApiKeyFormat;

impl ApiKeyFormat {
    pub const PREFIX: &'static str = "zk_";
    /// Characters of a key: the prefix and 43 of base64.
    pub const LENGTH: usize = 46;

    /// A new API key from 32 random bytes.
    pub fn generate(random: [u8; 32]) -> String {
        format!("{}{}", Self::PREFIX, URL_SAFE_NO_PAD.encode(random))
    }

    /// Whether `presented` has the form of an issued key (every key ever issued has it). One
    /// that does not cannot exist in the directory, so it is refused without a lookup.
    pub fn is_well_formed(presented: &str) -> bool {
        presented.len() == Self::LENGTH
            && presented.strip_prefix(Self::PREFIX).is_some_and(|encoded| {
                // Strict decoding: no padding, and the unused low bits of the last character
                // must be zero, as the encoder writes them.
                URL_SAFE_NO_PAD
                    .decode(encoded)
                    .is_ok_and(|bytes| bytes.len() == 32)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_key_round_trips_through_base64() {
        let key = SecretsKey::from_bytes([7; 32]);
        let parsed = SecretsKey::parse(&key.to_base64()).unwrap();
        assert_eq!(parsed.as_bytes(), key.as_bytes());
        assert_eq!(parsed.check_value(), key.check_value());
    }

    #[test]
    fn secrets_key_refuses_wrong_lengths_and_garbage() {
        for bad in [
            "",
            "banana",
            &STANDARD.encode([1u8; 31]),
            &STANDARD.encode([1u8; 33]),
        ] {
            assert_eq!(
                SecretsKey::parse(bad).unwrap_err(),
                KeyError::NotBase64Of32Bytes,
                "{bad}"
            );
        }
    }

    #[test]
    fn different_keys_have_different_check_values() {
        let a = SecretsKey::from_bytes([1; 32]);
        let b = SecretsKey::from_bytes([2; 32]);
        assert_ne!(a.check_value(), b.check_value());
        assert_eq!(a.id().len(), 8);
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let key = SecretsKey::from_bytes([9; 32]);
        assert!(!format!("{key:?}").contains(&key.to_base64()));
        let platform = PlatformKeys::parse("0123456789abcdefXYZ").unwrap();
        assert!(!format!("{platform:?}").contains("0123456789"));
    }

    #[test]
    fn platform_keys_accept_any_configured_key_and_nothing_else() {
        let first = PlatformKeys::generate([1; 32]);
        let second = PlatformKeys::generate([2; 32]);
        let keys = PlatformKeys::parse(&format!("{first}, {second}")).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.accepts(&first));
        assert!(keys.accepts(&second));
        assert!(!keys.accepts(&PlatformKeys::generate([3; 32])));
        assert!(!keys.accepts(""));
    }

    #[test]
    fn platform_keys_refuse_short_or_blank_keys() {
        let refusal = |text| PlatformKeys::parse(text).unwrap_err();
        assert_eq!(refusal(""), KeyError::Empty);
        assert_eq!(refusal("0123456789abcdef,short"), KeyError::TooShort(2));
        assert_eq!(refusal("0123456789abcdef,,"), KeyError::TooShort(2));
        assert_eq!(refusal("0123456789 abcdef"), KeyError::Whitespace(1));
    }

    #[test]
    fn api_keys_are_checked_for_their_form_before_any_lookup() {
        let key = ApiKeyFormat::generate([0xab; 32]);
        assert_eq!(key.len(), ApiKeyFormat::LENGTH);
        assert!(ApiKeyFormat::is_well_formed(&key));
        for n in 0..=255u8 {
            assert!(ApiKeyFormat::is_well_formed(&ApiKeyFormat::generate(
                [n; 32]
            )));
        }
        let body = &key[3..];
        let last_changed = |c: char| format!("zk_{}{c}", &body[..42]);
        for bad in [
            String::new(),
            "zk_".to_owned(),
            "zk_guess".to_owned(),
            "zk_made_up".to_owned(),
            format!("zpk_{body}"),
            format!("ZK_{body}"),
            format!("{key}A"),
            key[..45].to_owned(),
            format!("zk_{}=", &body[..42]),
            format!("zk_{}+", &body[..42]),
            format!("zk_{}/", &body[..42]),
            format!(" {}", &key[1..]),
            format!("zk_{}é", &body[..41]),
            "zk_".to_owned() + &"A".repeat(10_000),
        ] {
            assert!(!ApiKeyFormat::is_well_formed(&bad), "{bad:?}");
        }
        // 43 characters carry 258 bits: a last character with a low bit set encodes no key.
        let well_formed_ends = ('A'..='Z')
            .chain('a'..='z')
            .chain('0'..='9')
            .chain(['-', '_'])
            .filter(|&c| ApiKeyFormat::is_well_formed(&last_changed(c)))
            .count();
        assert_eq!(well_formed_ends, 16);
    }
}
