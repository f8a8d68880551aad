//! Configuration values as operators write them (durations, retry schedules, keys, event
//! filters): parsing never panics, and what parses formats back to something that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zivio_core::catalog::Catalog;
use zivio_core::{duration, keys, retry, subscription};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = duration::parse(&text) {
        assert_eq!(duration::parse(&duration::format(parsed)), Ok(parsed));
    }
    if let Ok(schedule) = retry::RetrySchedule::parse(&text) {
        let _ = (schedule.total(), schedule.largest_delay(), schedule.max_attempts());
        for attempt in 0..=schedule.max_attempts() + 1 {
            let _ = schedule.next_delay(attempt, 1.0, None);
        }
    }
    let _ = keys::SecretsKey::parse(&text);
    let _ = keys::PlatformKeys::parse(&text);
    let _ = subscription::EventFilter::parse(&text, Catalog::builtin());
});
