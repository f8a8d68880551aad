//! Abuse limits kept in memory per instance: token buckets keyed by whatever is being limited
//! (an API key, a sign-in account, a client address or its IPv6 prefix).
//!
//! Memory is bounded whatever callers send. A key is never stored: it is reduced to a 64-bit
//! keyed hash (SipHash under a random key per limiter, so nobody can aim for collisions), and
//! each limiter holds at most as many of these fixed-size entries as its byte budget allows.
//! When it is full, buckets that have filled up again go first (they are worth no more than a
//! fresh one); if that is not enough, the fullest go, so a bucket drained by an attacker is the
//! last to be forgotten.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one limiter may hold, in bytes.
pub const DEFAULT_BUDGET: usize = 4 * 1024 * 1024;

/// IPv6 clients are limited per prefix of this length unless configured otherwise: a /64 is
/// usually one subscriber, who can use any of its 2^64 addresses.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    max_entries: usize,
    hasher: RandomState,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The bytes one entry may take in the map: key and bucket, a control byte, at most 1/8 of
/// the table left empty, and at worst twice the room right after the table grew.
const ENTRY_BYTES: usize = (size_of::<(u64, Bucket)>() + 1) * 16 / 7;

impl RateLimiter {
    /// `per_second` tokens refill each second, up to `burst`; at most [`DEFAULT_BUDGET`] bytes.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self::with_budget(per_second, burst, DEFAULT_BUDGET)
    }

    /// A limiter holding at most `budget` bytes of buckets (and at least one bucket).
    pub fn with_budget(per_second: f64, burst: u32, budget: usize) -> Self {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            max_entries: (budget / ENTRY_BYTES).max(1),
            hasher: RandomState::new(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The most buckets this limiter holds.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Takes a token for `key`; when none is left, how long until one is.
    pub fn take<K: Hash + ?Sized>(&self, key: &K) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    /// `take` at the moment `now` (the tests' clock).
    fn take_at<K: Hash + ?Sized>(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let key = self.hasher.hash_one(key);
        let mut buckets = self.lock();
        if buckets.len() >= self.max_entries && !buckets.contains_key(&key) {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.level(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.until_one(bucket.tokens))
        }
    }

    /// Gives back a token taken for `key` (up to the burst).
    pub fn refund<K: Hash + ?Sized>(&self, key: &K) {
        let key = self.hasher.hash_one(key);
        let now = Instant::now();
        if let Some(bucket) = self.lock().get_mut(&key) {
            bucket.tokens = (self.level(bucket, now) + 1.0).min(self.burst);
            bucket.at = now;
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bucket's tokens as of `now`.
    fn level(&self, bucket: &Bucket, now: Instant) -> f64 {
        (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.per_second)
            .min(self.burst)
    }

    fn until_one(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64((1.0 - tokens) / self.per_second)
    }

    /// Frees at least an eighth of the map (so this pass over it runs once per so many new
    /// keys): every full bucket, then the fullest others.
    fn make_room(&self, buckets: &mut HashMap<u64, Bucket>, now: Instant) {
        let mut levels: Vec<(f64, u64)> = buckets
            .iter()
            .map(|(key, bucket)| (self.level(bucket, now), *key))
            .collect();
        let full = levels
            .iter()
            .filter(|(level, _)| *level >= self.burst)
            .count();
        let evict = full.max(self.max_entries / 8).clamp(1, levels.len());
        // The `evict` fullest first.
        levels.select_nth_unstable_by(evict - 1, |a, b| b.0.total_cmp(&a.0));
        for (_, key) in &levels[..evict] {
            buckets.remove(key);
        }
    }
}

/// The bucket of a client address: an IPv4 address (also when written as IPv4-mapped IPv6)
/// alone, an IPv6 address with the others of its prefix of `ipv6_prefix` bits.
pub fn address_bucket(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Failed API key authentications allowed per client address before it gets 429 without any
/// lookup (then one more every 3 seconds).
pub const FAILED_KEYS_PER_ADDRESS: u32 = 20;
const FAILED_KEYS_WINDOW: Duration = Duration::from_secs(60);

/// Counts API key lookups that fail per client address (IPv6 per prefix). A client that keeps
/// presenting keys that do not exist is refused before its keys are looked up, so a flood of
/// made-up keys costs no database work. The token is taken before the lookup and given back
/// when the key authenticates, so concurrent requests cannot get past the gate together; keys
/// that authenticated lately pass it, so a neighbour's flood cannot lock out working clients.
pub struct FailedKeyLimiter {
    failures: RateLimiter,
    known: KnownKeys,
    ipv6_prefix: u8,
}

impl FailedKeyLimiter {
    pub fn new(ipv6_prefix: u8) -> Self {
        FailedKeyLimiter {
            failures: RateLimiter::new(
                f64::from(FAILED_KEYS_PER_ADDRESS) / FAILED_KEYS_WINDOW.as_secs_f64(),
                FAILED_KEYS_PER_ADDRESS,
            ),
            known: KnownKeys::new(DEFAULT_BUDGET),
            ipv6_prefix,
        }
    }

    /// Before `key` from `ip` is looked up: `Ok(true)` when the address spent a token on it
    /// (see [`Self::settle`]), `Ok(false)` when the key worked lately, `Err(wait)` when the
    /// address has failed too often to be heard now.
    pub fn admit(&self, key: &str, ip: IpAddr) -> Result<bool, Duration> {
        if self.known.contains(key) {
            return Ok(false);
        }
        self.failures
            .take(&address_bucket(ip, self.ipv6_prefix))
            .map(|()| true)
    }

    /// After the lookup: a key that authenticated is remembered and its token given back; one
    /// that did not is forgotten and its token stays spent; `None` (the lookup itself failed)
    /// gives the token back.
    pub fn settle(&self, key: &str, ip: IpAddr, spent: bool, authenticated: Option<bool>) {
        match authenticated {
            Some(true) => self.known.remember(key),
            Some(false) => {
                self.known.forget(key);
                return;
            }
            None => {}
        }
        if spent {
            self.failures.refund(&address_bucket(ip, self.ipv6_prefix));
        }
    }
}

/// How long a key that authenticated passes the failed-key gate of its address.
const KNOWN_FOR: Duration = Duration::from_secs(600);

/// API keys that authenticated lately, as keyed 64-bit hashes (never the key), within a byte
/// budget.
struct KnownKeys {
    hasher: RandomState,
    max_entries: usize,
    seen: Mutex<HashMap<u64, Instant>>,
}

impl KnownKeys {
    fn new(budget: usize) -> Self {
        KnownKeys {
            hasher: RandomState::new(),
            max_entries: (budget / ENTRY_BYTES).max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn contains(&self, key: &str) -> bool {
        let key = self.hasher.hash_one(key);
        self.lock()
            .get(&key)
            .is_some_and(|at| at.elapsed() < KNOWN_FOR)
    }

    fn remember(&self, key: &str) {
        let key = self.hasher.hash_one(key);
        let now = Instant::now();
        let mut seen = self.lock();
        if seen.len() >= self.max_entries && !seen.contains_key(&key) {
            seen.retain(|_, at| now.duration_since(*at) < KNOWN_FOR);
            if seen.len() >= self.max_entries {
                // Still full of live keys: the oldest eighth goes.
                let mut ages: Vec<(Instant, u64)> = seen.iter().map(|(k, at)| (*at, *k)).collect();
                let evict = (self.max_entries / 8).clamp(1, ages.len());
                ages.select_nth_unstable(evict - 1);
                for (_, old) in &ages[..evict] {
                    seen.remove(old);
                }
            }
        }
        seen.insert(key, now);
    }

    fn forget(&self, key: &str) {
        let key = self.hasher.hash_one(key);
        self.lock().remove(&key);
    }
}

impl Default for FailedKeyLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_IPV6_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(1.0, 3);
        for _ in 0..3 {
            assert!(limiter.take("k").is_ok());
        }
        let wait = limiter.take("k").unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.take("other").is_ok(), "keys are independent");
    }

    #[test]
    fn keys_of_any_length_take_one_fixed_size_entry() {
        let limiter = RateLimiter::with_budget(1.0, 2, 64 * 1024);
        let huge = "x".repeat(1 << 20);
        assert!(limiter.take(huge.as_str()).is_ok());
        assert!(limiter.take(huge.as_str()).is_ok());
        assert!(limiter.take(huge.as_str()).is_err(), "the same key");
        let mut other = huge.clone();
        other.push('y');
        assert!(limiter.take(other.as_str()).is_ok(), "another key");
        assert_eq!(limiter.len(), 2);
        // What is kept is a 64-bit digest and a bucket, whatever the key.
        const { assert!(ENTRY_BYTES < 128) };
    }

    #[test]
    fn the_map_never_grows_past_its_budget() {
        let limiter = RateLimiter::with_budget(0.001, 5, 64 * 1024);
        let max = limiter.max_entries();
        assert_eq!(max, 64 * 1024 / ENTRY_BYTES);
        // Every key drained: nothing is idle, and still the map stays within bounds.
        for n in 0..max * 10 {
            for _ in 0..6 {
                let _ = limiter.take(&n);
            }
            assert!(limiter.len() <= max, "{} > {max} after {n}", limiter.len());
        }
        assert!(
            limiter.len() >= max * 7 / 8,
            "room is made an eighth at a time"
        );
    }

    #[test]
    fn full_buckets_go_first_then_the_fullest() {
        let limiter = RateLimiter::with_budget(0.001, 10, 16 * ENTRY_BYTES);
        assert_eq!(limiter.max_entries(), 16);
        // A drained bucket, which matters, and fifteen touched once each.
        for _ in 0..10 {
            limiter.take("victim").unwrap();
        }
        assert!(limiter.take("victim").is_err());
        for n in 0..15 {
            limiter.take(&n).unwrap();
        }
        assert_eq!(limiter.len(), 16);
        // A flood of new keys evicts the nearly full buckets, never the drained one.
        for n in 100..10_000 {
            limiter.take(&n).unwrap();
            assert!(limiter.len() <= 16);
        }
        assert!(
            limiter.take("victim").is_err(),
            "the drained bucket is still remembered"
        );
    }

    #[test]
    fn idle_buckets_are_dropped_before_others() {
        // Refills at once: every bucket but the one just drained is full again.
        let limiter = RateLimiter::with_budget(1_000_000.0, 1, 8 * ENTRY_BYTES);
        let start = Instant::now();
        for n in 0..8 {
            limiter.take_at(&n, start).unwrap();
        }
        limiter
            .take_at(&100, start + Duration::from_millis(5))
            .unwrap();
        assert!(
            limiter.len() <= 2,
            "all the full ones went: {}",
            limiter.len()
        );
    }

    #[test]
    fn ipv6_addresses_share_a_bucket_per_prefix() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            address_bucket(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            address_bucket(ip("2001:db8:1:2:aaaa::1"), 48),
            ip("2001:db8:1::")
        );
        assert_eq!(
            address_bucket(ip("2001:db8:1:2:aaaa::1"), 128),
            ip("2001:db8:1:2:aaaa::1")
        );
        assert_eq!(address_bucket(ip("2001:db8::1"), 0), ip("::"));
        // IPv4 addresses are never grouped, also when they come IPv4-mapped.
        assert_eq!(address_bucket(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(address_bucket(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[test]
    fn failed_keys_are_limited_per_address_and_ipv6_prefix() {
        let limiter = FailedKeyLimiter::default();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let flooding = ip("2001:db8:1:2::1");
        for n in 0..FAILED_KEYS_PER_ADDRESS {
            let key = format!("made-up-{n}");
            assert_eq!(limiter.admit(&key, flooding), Ok(true));
            limiter.settle(&key, flooding, true, Some(false));
        }
        let wait = limiter.admit("made-up", flooding).unwrap_err();
        assert!(wait <= Duration::from_secs(3), "{wait:?}");
        assert!(
            limiter.admit("k", ip("2001:db8:1:2:ffff::9")).is_err(),
            "the same /64"
        );
        assert!(
            limiter.admit("k", ip("2001:db8:1:3::1")).is_ok(),
            "another /64"
        );
        assert!(limiter.admit("k", ip("192.0.2.1")).is_ok());
        let per_address = FailedKeyLimiter::new(128);
        for _ in 0..FAILED_KEYS_PER_ADDRESS {
            let _ = per_address.admit("k", flooding);
        }
        assert!(per_address.admit("k", flooding).is_err());
        assert!(
            per_address.admit("k", ip("2001:db8:1:2::2")).is_ok(),
            "per /128"
        );
    }

    #[test]
    fn concurrent_lookups_spend_their_tokens_before_they_run() {
        let limiter = FailedKeyLimiter::default();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        // Many requests at once, none settled yet: no more than the burst are let through.
        let admitted = (0..200)
            .filter(|n| limiter.admit(&format!("k{n}"), ip).is_ok())
            .count();
        assert_eq!(admitted, FAILED_KEYS_PER_ADDRESS as usize);
    }

    #[test]
    fn keys_that_work_pass_a_flooded_address_and_get_their_token_back() {
        let limiter = FailedKeyLimiter::default();
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(limiter.admit("good", ip), Ok(true));
        limiter.settle("good", ip, true, Some(true));
        // A token given back: the address can still make the full burst of failures.
        for n in 0..FAILED_KEYS_PER_ADDRESS {
            assert!(limiter.admit(&format!("bad{n}"), ip).is_ok(), "{n}");
            limiter.settle(&format!("bad{n}"), ip, true, Some(false));
        }
        assert!(limiter.admit("bad", ip).is_err(), "the address is gated");
        assert_eq!(
            limiter.admit("good", ip),
            Ok(false),
            "a key that works passes"
        );
        // A key that stops working is forgotten.
        limiter.settle("good", ip, false, Some(false));
        assert!(limiter.admit("good", ip).is_err());
        // A lookup that could not decide gives its token back.
        let other: IpAddr = "192.0.2.11".parse().unwrap();
        for _ in 0..FAILED_KEYS_PER_ADDRESS {
            assert_eq!(limiter.admit("k", other), Ok(true));
            limiter.settle("k", other, true, None);
        }
        assert!(limiter.admit("k", other).is_ok());
    }
}
