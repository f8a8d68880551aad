//! Human durations as used in configuration: a whole number followed by `ms`, `s`, `m`, `h` or `d`
//! (`250ms`, `30s`, `5m`, `2h`, `5d`).

use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error(
        "`{0}` is not a duration: expected a whole number followed by ms, s, m, h or d (e.g. 30s)"
    )]
    Malformed(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses `<digits><unit>`; surrounding whitespace is ignored.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| DurationError::Malformed(text.to_owned()))?;
    let (digits, unit) = text.split_at(split);
    let millis_per_unit = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, millis)| *millis)
        .ok_or_else(|| DurationError::Malformed(text.to_owned()))?;
    if digits.is_empty() {
        return Err(DurationError::Malformed(text.to_owned()));
    }
    let count: u64 = digits
        .parse()
        .map_err(|_| DurationError::TooLarge(text.to_owned()))?;
    count
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError::TooLarge(text.to_owned()))
}

/// Formats with the largest unit that represents the duration exactly (sub-millisecond parts are
/// dropped), so that `parse(&format(d)) == d` for whole milliseconds.
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let (unit, per) = UNITS
        .iter()
        .rev()
        .find(|(_, per)| millis.is_multiple_of(u128::from(*per)))
        .copied()
        .unwrap_or(UNITS[0]);
    format!("{}{unit}", millis / u128::from(per))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse(" 5d "), Ok(Duration::from_secs(432_000)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "banana", "30", "s", "-5s", "1.5s", "5 s", "5sec", "5S", "1e3ms",
        ] {
            assert!(
                matches!(parse(bad), Err(DurationError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(parse("  "), Err(DurationError::Empty));
        assert!(matches!(
            parse("99999999999999999999d"),
            Err(DurationError::TooLarge(_))
        ));
        assert!(matches!(
            parse("999999999999999999d"),
            Err(DurationError::TooLarge(_))
        ));
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(86_400 * 365)), "365d");
        assert_eq!(format(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(format(Duration::ZERO), "0s");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(millis in 0u64..10_000_000_000_000) {
            let duration = Duration::from_millis(millis);
            prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,24}") {
            let _ = parse(&text);
        }
    }
}
