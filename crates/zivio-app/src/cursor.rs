//! Opaque page cursors: the time and id of the last row of a page, which the next page starts
//! strictly after (keyset paging, stable while new rows arrive).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

use crate::{AppError, AppResult, FieldError};

/// 9999-12-31T23:59:59Z in microseconds.
const MAX_MICROS: i64 = 253_402_300_799_000_000;

pub fn encode(at: OffsetDateTime, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.unix_timestamp_nanos() / 1_000))
}

pub fn decode(text: &str) -> AppResult<(OffsetDateTime, String)> {
    let invalid = || {
        AppError::InvalidParameter(FieldError::new(
            "cursor",
            "is not a cursor this service returned",
        ))
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (micros, id) = text.split_once(':').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    // What every backend can compare: no time before 1970 or after 9999, an id of printable
    // characters (PostgreSQL refuses NUL, SQLite does not: one answer for both).
    if !(0..=MAX_MICROS).contains(&micros)
        || id.is_empty()
        || id.len() > 100
        || id.chars().any(char::is_control)
    {
        return Err(invalid());
    }
    // Checked: a crafted cursor must be a 400, never an overflow.
    let nanos = i128::from(micros).checked_mul(1_000).ok_or_else(invalid)?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?;
    Ok((at, id.to_owned()))
}

/// The page size asked for: 1 to `max`, `default` when not given.
pub fn limit(asked: Option<u32>, default: u32, max: u32) -> AppResult<u32> {
    match asked {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(_) => Err(AppError::InvalidParameter(FieldError::new(
            "limit",
            format!("must be 1 to {max}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(
            decode(&encode(at, "dlv_1")).unwrap(),
            (at, "dlv_1".to_owned())
        );
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("x:y"),
            &URL_SAFE_NO_PAD.encode("12"),
            &URL_SAFE_NO_PAD.encode("12:"),
            &URL_SAFE_NO_PAD.encode("170141183460469231731687303715884105727:dlv_1"),
            &URL_SAFE_NO_PAD.encode("-170141183460469231731687303715884105:dlv_1"),
            &URL_SAFE_NO_PAD.encode("9223372036854775807:dlv_1"),
            &URL_SAFE_NO_PAD.encode("-9223372036854775808:dlv_1"),
            &URL_SAFE_NO_PAD.encode("-1:dlv_1"),
            &URL_SAFE_NO_PAD.encode("253402300800000000:dlv_1"),
            &URL_SAFE_NO_PAD.encode("1700000000000000:\0"),
            &URL_SAFE_NO_PAD.encode("1700000000000000:dlv\n1"),
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None, 50, 100).unwrap(), 50);
        assert_eq!(limit(Some(100), 50, 100).unwrap(), 100);
        assert!(limit(Some(0), 50, 100).is_err());
        assert!(limit(Some(101), 50, 100).is_err());
    }
}
