//! Admin passwords: Argon2id hashes in PHC string form (PRODUCT.md §8). The salt comes in as an
//! argument so this stays pure.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Passwords shorter than this are refused wherever one is set.
pub const MIN_LENGTH: usize = 12;

/// The Argon2id PHC string of `password` with the given random salt.
pub fn hash(password: &str, salt: [u8; 16]) -> String {
    let hash: argon2::PasswordHash = Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .expect("default Argon2id parameters and a 16-byte salt are valid");
    hash.to_string()
}

/// Whether `password` matches the stored PHC string; a malformed string matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// A readable random password from 18 random bytes (24 characters, no look-alikes).
pub fn generate(random: [u8; 18]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // 18 bytes = 144 bits; mapping each 6-bit group keeps ~5.8 bits of entropy per character.
    let mut bits = random
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| (byte >> i) & 1));
    (0..24)
        .map(|_| {
            let value = (0..6).fold(0usize, |acc, _| {
                (acc << 1) | usize::from(bits.next().unwrap_or(0))
            });
            char::from(ALPHABET[value % ALPHABET.len()])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_and_verifies_only_the_password() {
        let phc = hash("correct horse battery", [3; 16]);
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterY", &phc));
        assert!(!verify("correct horse battery", "not a hash"));
    }

    #[test]
    fn generated_passwords_are_long_and_differ_by_input() {
        let a = generate([0x5a; 18]);
        let b = generate([0xa5; 18]);
        assert_eq!(a.chars().count(), 24);
        assert!(a.len() >= MIN_LENGTH);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
