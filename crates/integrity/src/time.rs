//! Time as a DBA reads it: a [`Micros`] written as UTC ISO 8601 with
//! microseconds (`2026-12-04T22:51:24.000000Z`), as `to_char` would.

use crate::{Micros, SECOND};

/// The days since 1970-01-01 of a proleptic Gregorian date, and back
/// (Howard Hinnant's civil-from-days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `at` as UTC ISO 8601 with microseconds.
pub fn utc(at: Micros) -> String {
    let (seconds, micros) = (at.div_euclid(SECOND), at.rem_euclid(SECOND));
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_written_in_utc_with_microseconds() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(utc(1), "1970-01-01T00:00:00.000001Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999999Z");
        // PostgreSQL's epoch, a leap day, and a date of this project.
        assert_eq!(utc(946_684_800 * SECOND), "2000-01-01T00:00:00.000000Z");
        assert_eq!(utc(951_782_400 * SECOND + 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(
            utc(1_796_424_684 * SECOND + 250_000),
            "2026-12-04T22:51:24.250000Z"
        );
    }
}
