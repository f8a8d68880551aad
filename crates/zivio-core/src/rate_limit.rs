//! A webhook's rate limit (docs/product.md §4): requests per second, counted in whole seconds of
//! the clock. At most `limit` requests start in each second, so any ten-second window, which
//! touches at most eleven such seconds, sees at most ten times the limit plus one second's worth.

use time::OffsetDateTime;

/// Requests per second a webhook may receive, 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RateLimit(u32);

impl RateLimit {
    pub const MAX: u32 = 10_000;

    pub fn new(per_second: i64) -> Result<Self, String> {
        match u32::try_from(per_second) {
            Ok(value @ 1..=Self::MAX) => Ok(Self(value)),
            _ => Err(format!(
                "must be a whole number of requests per second from 1 to {}",
                Self::MAX
            )),
        }
    }

    /// A value read back from storage (written through [`RateLimit::new`]).
    pub fn from_stored(per_second: i64) -> Option<Self> {
        Self::new(per_second).ok()
    }

    pub fn per_second(self) -> u32 {
        self.0
    }
}

/// The second of the clock a request starting `at` counts in.
pub fn second_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

/// When the second after `second` begins.
pub fn next_second(second: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(second.saturating_add(1))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Whether a delivery due at `due` has waited for its rate limit longer than `max_wait` by `now`.
pub fn waited_too_long(due: OffsetDateTime, now: OffsetDateTime, max_wait: time::Duration) -> bool {
    now - due > max_wait
}

/// What one instance holds of a webhook's allowance: requests it may still start in one second.
/// Tokens of a past second are worth nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowance {
    second: i64,
    tokens: u32,
}

impl Allowance {
    /// Takes a token for a request starting in `second`, if one is left.
    pub fn take(&mut self, second: i64) -> bool {
        if self.second != second {
            *self = Allowance { second, tokens: 0 };
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Adds tokens granted for `second` (nothing, if that second is already over here).
    pub fn add(&mut self, second: i64, granted: u32) {
        if second > self.second {
            *self = Allowance { second, tokens: 0 };
        }
        if second == self.second {
            self.tokens = self.tokens.saturating_add(granted);
        }
    }

    pub fn left(&self, second: i64) -> u32 {
        if self.second == second {
            self.tokens
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_whole_numbers_from_one_to_ten_thousand() {
        assert_eq!(RateLimit::new(1).unwrap().per_second(), 1);
        assert_eq!(RateLimit::new(10_000).unwrap().per_second(), 10_000);
        for bad in [0, -1, 10_001, i64::MAX, i64::MIN] {
            let error = RateLimit::new(bad).unwrap_err();
            assert!(error.contains("from 1 to 10000"), "{error}");
        }
    }

    #[test]
    fn tokens_belong_to_their_second() {
        let mut allowance = Allowance::default();
        assert!(!allowance.take(100));
        allowance.add(100, 2);
        assert_eq!(allowance.left(100), 2);
        assert!(allowance.take(100));
        assert!(allowance.take(100));
        assert!(!allowance.take(100));
        allowance.add(100, 1);
        // The second is over: its token is worth nothing.
        assert!(!allowance.take(101));
        assert_eq!(allowance.left(101), 0);
        // A grant for a second already over here adds nothing.
        allowance.add(100, 5);
        assert_eq!(allowance.left(101), 0);
        allowance.add(102, 3);
        assert_eq!(allowance.left(102), 3);
    }

    #[test]
    fn waiting_is_measured_from_the_due_time() {
        let due = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let max = time::Duration::hours(24);
        assert!(!waited_too_long(due, due + max, max));
        assert!(waited_too_long(
            due,
            due + max + time::Duration::SECOND,
            max
        ));
    }

    #[test]
    fn seconds_follow_the_clock() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
            + time::Duration::milliseconds(999);
        assert_eq!(second_of(at), 1_700_000_000);
        assert_eq!(next_second(second_of(at)).unix_timestamp(), 1_700_000_001);
    }
}
