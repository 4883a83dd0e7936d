//! Wall-clock times as S3 writes them: ISO 8601 in policies and STS answers
//! (`2026-12-01T12:00:00Z`) and SigV4's basic form (`20261201T120000Z`). The driver reads the
//! wall clock; these only convert (proleptic Gregorian, UTC, whole seconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An ISO 8601 UTC time as policies write it: `2026-12-01T12:00:00Z`, optionally with a
/// fraction of a second (`…:00.000Z`).
pub fn parse_iso8601(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (time, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time = time.splitn(3, ':').map(|part| part.parse::<u64>().ok());
    let (hour, minute, second) = (time.next()??, time.next()??, time.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// `time` as policies write it (`2026-12-01T12:00:00Z`, whole seconds).
pub fn format_iso8601(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX / 2));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `time` as SigV4 writes it: `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(time: SystemTime) -> String {
    format_iso8601(time).replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        parse_iso8601(text).expect("a valid time")
    }

    #[test]
    fn iso8601_times_read_and_write_as_utc() {
        assert_eq!(at("1970-01-01T00:00:00Z"), UNIX_EPOCH);
        assert_eq!(
            at("2026-12-01T12:00:00Z"),
            UNIX_EPOCH + Duration::from_secs(1_796_126_400)
        );
        assert_eq!(
            at("2000-03-01T00:00:01.5Z"),
            UNIX_EPOCH + Duration::from_secs(951_868_801)
        );
        for bad in [
            "2026-12-01T12:00:00",
            "2026-13-01T00:00:00Z",
            "2026-12-01 12:00:00Z",
            "2026-12-01T12:00:00.xZ",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
        assert_eq!(format_iso8601(at("2000-02-29T23:59:59Z")), "2000-02-29T23:59:59Z");
    }

    #[test]
    fn amz_dates_are_utc_calendar_times() {
        let at = |seconds| UNIX_EPOCH + Duration::from_secs(seconds);
        assert_eq!(amz_date(at(0)), "19700101T000000Z");
        assert_eq!(amz_date(at(1_796_126_400)), "20261201T120000Z");
        assert_eq!(amz_date(at(951_868_801)), "20000301T000001Z");
        assert_eq!(amz_date(at(951_782_399)), "20000228T235959Z");
    }
}
