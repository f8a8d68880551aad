//! The retry schedule (docs/product.md §6): the delay after each failed attempt. A schedule of `n`
//! delays allows `n + 1` attempts.

use std::time::Duration;

use crate::duration::{self, DurationError};

/// The default: 10 attempts over about 3 days, frequent first.
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,14h,20h,24h";

/// More steps than this is a configuration mistake, not a schedule.
const MAX_STEPS: usize = 50;

/// Delays after attempt 1, 2, ...; never empty, every delay positive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryScheduleError {
    #[error("the schedule is empty: expected comma-separated durations such as 5s,5m,30m")]
    Empty,
    #[error("step {step}: {source}")]
    Step { step: usize, source: DurationError },
    #[error("step {step}: a delay must be longer than zero")]
    Zero { step: usize },
    #[error("the schedule has {0} steps; at most {MAX_STEPS} are allowed")]
    TooLong(usize),
}

impl RetrySchedule {
    /// Parses comma-separated durations (`5s,5m,30m`).
    pub fn parse(text: &str) -> Result<Self, RetryScheduleError> {
        if text.trim().is_empty() {
            return Err(RetryScheduleError::Empty);
        }
        let delays = text
            .split(',')
            .enumerate()
            .map(|(index, part)| {
                let step = index + 1;
                match duration::parse(part) {
                    Ok(delay) if delay.is_zero() => Err(RetryScheduleError::Zero { step }),
                    Ok(delay) => Ok(delay),
                    Err(source) => Err(RetryScheduleError::Step { step, source }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > MAX_STEPS {
            return Err(RetryScheduleError::TooLong(delays.len()));
        }
        Ok(Self { delays })
    }

    /// How many attempts an event gets at most.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len() + 1).unwrap_or(u32::MAX)
    }

    /// The delay after failed attempt `attempt` (1-based), or `None` when it was the last.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.delays.get(index).copied()
    }

    /// The longest step: the upper clamp for a receiver's `Retry-After`.
    pub fn largest_delay(&self) -> Duration {
        self.delays.iter().copied().max().unwrap_or_default()
    }

    /// The sum of all delays: how long an event keeps being retried.
    pub fn total(&self) -> Duration {
        self.delays.iter().sum()
    }
}

impl RetrySchedule {
    /// When to try again after failed attempt `attempt` (1-based), or `None` when it was the
    /// last. `jitter` in `-1.0..=1.0` moves the step by up to ±10%. A receiver's `Retry-After`
    /// (on 429 or 503) is honoured, clamped between this step's delay and the largest step; it
    /// never adds attempts.
    pub fn next_delay(
        &self,
        attempt: u32,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let step = self.delay_after(attempt)?;
        if let Some(asked) = retry_after {
            return Some(asked.clamp(step, self.largest_delay().max(step)));
        }
        let factor = 1.0 + 0.1 * jitter.clamp(-1.0, 1.0);
        Some(step.mul_f64(factor))
    }
}

/// What an attempt's outcome means for its delivery (docs/product.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// A temporary failure: try again on the schedule.
    Retry,
    /// A permanent failure: stop.
    GiveUp,
}

/// 2xx delivers; 408, 429 and 5xx are temporary; a 3xx is not followed and, like every other
/// 4xx, permanent.
pub fn verdict_for_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::GiveUp,
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::parse(DEFAULT_SCHEDULE).expect("the default schedule is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_gives_ten_attempts_over_about_three_days() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.max_attempts(), 10);
        let hours = schedule.total().as_secs() / 3_600;
        assert!((72..=84).contains(&hours), "{hours}h");
        assert_eq!(schedule.largest_delay(), Duration::from_secs(24 * 3_600));
    }

    #[test]
    fn delays_follow_attempt_numbers() {
        let schedule = RetrySchedule::parse("5s, 5m").unwrap();
        assert_eq!(schedule.delay_after(0), None);
        assert_eq!(schedule.delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(schedule.delay_after(2), Some(Duration::from_secs(300)));
        assert_eq!(schedule.delay_after(3), None);
    }

    #[test]
    fn statuses_map_to_verdicts() {
        for status in [200, 201, 204, 299] {
            assert_eq!(verdict_for_status(status), Verdict::Delivered, "{status}");
        }
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(verdict_for_status(status), Verdict::Retry, "{status}");
        }
        for status in [301, 302, 307, 400, 401, 403, 404, 410, 422] {
            assert_eq!(verdict_for_status(status), Verdict::GiveUp, "{status}");
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_attempts_run_out() {
        let schedule = RetrySchedule::parse("10s,100s").unwrap();
        assert_eq!(
            schedule.next_delay(1, 0.0, None),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            schedule.next_delay(1, 1.0, None),
            Some(Duration::from_secs(11))
        );
        assert_eq!(
            schedule.next_delay(1, -1.0, None),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            schedule.next_delay(2, 5.0, None),
            Some(Duration::from_secs(110)),
            "clamped jitter"
        );
        assert_eq!(
            schedule.next_delay(3, 0.0, None),
            None,
            "three attempts in all"
        );
        assert_eq!(
            schedule.next_delay(3, 0.0, Some(Duration::from_secs(5))),
            None,
            "Retry-After adds none"
        );
    }

    #[test]
    fn retry_after_is_clamped_between_the_step_and_the_largest_step() {
        let schedule = RetrySchedule::parse("10s,100s,50s").unwrap();
        let after =
            |attempt, secs| schedule.next_delay(attempt, 0.7, Some(Duration::from_secs(secs)));
        assert_eq!(
            after(1, 1),
            Some(Duration::from_secs(10)),
            "never sooner than the step"
        );
        assert_eq!(after(1, 60), Some(Duration::from_secs(60)));
        assert_eq!(
            after(1, 86_400),
            Some(Duration::from_secs(100)),
            "never later than the largest step"
        );
    }

    #[test]
    fn refuses_bad_schedules_naming_the_step() {
        assert_eq!(RetrySchedule::parse(" "), Err(RetryScheduleError::Empty));
        assert_eq!(
            RetrySchedule::parse("5s,0s"),
            Err(RetryScheduleError::Zero { step: 2 })
        );
        let err = RetrySchedule::parse("5s,5m,soon").unwrap_err();
        assert!(err.to_string().starts_with("step 3:"), "{err}");
        let long = vec!["1s"; 51].join(",");
        assert_eq!(
            RetrySchedule::parse(&long),
            Err(RetryScheduleError::TooLong(51))
        );
    }
}
