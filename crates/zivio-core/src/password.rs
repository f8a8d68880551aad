//! Admin passwords: Argon2id hashes in PHC string form (docs/product.md §8). The salt comes in as
//! an argument so this stays pure.
//!
//! Argon2id with the default parameters fills 19 MiB per hash. [`hash_in`] and [`verify_in`]
//! work in a [`Memory`] the caller keeps and reuses, so that a few long-lived threads doing all
//! the hashing hold a fixed amount of memory instead of allocating (and, with glibc's arenas,
//! keeping) 19 MiB per hash on whatever thread runs it.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

/// Passwords shorter than this are refused wherever one is set.
pub const MIN_LENGTH: usize = 12;
/// Passwords longer than this (in bytes) are refused wherever one is set, so none matches.
pub const MAX_LENGTH: usize = 1_024;

/// A stored hash asking for more memory (in KiB), passes or lanes than the default parameters
/// matches nothing: verifying it would grow a hashing thread's memory for good, or its time.
pub const MAX_VERIFY_M_COST: u32 = Params::DEFAULT_M_COST;

/// Argon2 working memory, grown on first use to what a hash needs and then reused.
#[derive(Default)]
pub struct Memory(Vec<Block>);

impl Memory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes held now.
    pub fn bytes(&self) -> usize {
        self.0.len() * Block::SIZE
    }

    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::new());
        }
        &mut self.0[..count]
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memory({} KiB)", self.0.len())
    }
}

/// The Argon2id PHC string of `password` with the given random salt.
pub fn hash(password: &str, salt: [u8; 16]) -> String {
    hash_in(password, salt, &mut Memory::new())
}

/// [`hash`], working in `memory`.
pub fn hash_in(password: &str, salt: [u8; 16], memory: &mut Memory) -> String {
    let params = Params::default();
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let blocks = memory.blocks(params.block_count());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut output, blocks)
        .expect("default Argon2id parameters and a 16-byte salt are valid");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).expect("default parameters encode"),
        salt: Some(Salt::new(&salt).expect("16 bytes are a valid salt")),
        hash: Some(Output::new(&output).expect("32 bytes are a valid output")),
    }
    .to_string()
}

/// Whether `password` matches the stored PHC string; a malformed string matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    verify_in(password, phc, &mut Memory::new())
}

/// [`verify`], working in `memory`. The comparison takes constant time.
pub fn verify_in(password: &str, phc: &str, memory: &mut Memory) -> bool {
    let Ok(stored) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(stored.algorithm.as_str()) else {
        return false;
    };
    let version = match stored.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&stored) else {
        return false;
    };
    if params.m_cost() > MAX_VERIFY_M_COST
        || params.t_cost() > Params::DEFAULT_T_COST
        || params.p_cost() > Params::DEFAULT_P_COST
    {
        return false;
    }
    let mut output = vec![0u8; expected.len()];
    let blocks = memory.blocks(params.block_count());
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt.as_ref(),
        &mut output,
        blocks,
    );
    computed.is_ok() && bool::from(output.ct_eq(expected.as_bytes()))
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
    fn reused_memory_gives_the_same_hashes_and_stays_one_size() {
        let mut memory = Memory::new();
        let phc = hash_in("correct horse battery", [3; 16], &mut memory);
        assert_eq!(phc, hash("correct horse battery", [3; 16]));
        let held = memory.bytes();
        assert_eq!(held, 19 * 1024 * 1024, "the default Argon2id memory");
        assert!(verify_in("correct horse battery", &phc, &mut memory));
        assert!(!verify_in("correct horse batterY", &phc, &mut memory));
        let other = hash_in("another password here", [4; 16], &mut memory);
        assert!(verify_in("another password here", &other, &mut memory));
        assert_eq!(memory.bytes(), held, "reused, not grown");
    }

    #[test]
    fn hashes_made_by_the_argon2_crate_still_verify() {
        use argon2::password_hash::PasswordHasher as _;
        let made = Argon2::default()
            .hash_password_with_salt(b"correct horse battery", &[9; 16])
            .unwrap()
            .to_string();
        assert!(verify_in(
            "correct horse battery",
            &made,
            &mut Memory::new()
        ));
        // Other parameters are read from the string.
        let cheap = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password_with_salt(b"pw", &[1; 16])
        .unwrap()
        .to_string();
        assert!(verify("pw", &cheap) && !verify("px", &cheap));
    }

    #[test]
    fn hashes_asking_for_too_much_memory_match_nothing() {
        let greedy = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(MAX_VERIFY_M_COST + 8, 1, 1, None).unwrap(),
        );
        // Not computed: a made-up string with the greedy parameters is enough.
        let phc = format!(
            "$argon2id$v=19${}$AQEBAQEBAQEBAQEBAQEBAQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ParamsString::try_from(greedy.params()).unwrap()
        );
        let mut memory = Memory::new();
        assert!(!verify_in("pw", &phc, &mut memory));
        assert_eq!(memory.bytes(), 0, "nothing was allocated");
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
