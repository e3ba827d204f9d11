//! Time conventions in one place: the provider's zone-less local times, and the ledger's
//! fixed-width UTC text (sortable as text in SQLite and PostgreSQL alike).

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};

/// Formats a UTC time as the ledger stores it: `2026-11-23T19:30:00.000Z`.
pub fn to_ledger(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Reads a time written by [`to_ledger`] (or any RFC 3339 time).
pub fn from_ledger(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a provider time. The provider writes `YYYY-MM-DD HH:MM:SS` in its own zone (`tz`),
/// sometimes Unix seconds, sometimes nothing at all (`""` → `Ok(None)`).
pub fn parse_provider_time(raw: &str, tz: FixedOffset) -> Result<Option<DateTime<Utc>>, String> {
    let s = raw.trim();
    if s.is_empty() || s == "0000-00-00 00:00:00" {
        return Ok(None);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().map_err(|_| format!("bad Unix time {s:?}"))?;
        return DateTime::from_timestamp(secs, 0)
            .map(Some)
            .ok_or_else(|| format!("Unix time out of range {s:?}"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y/%m/%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return tz
                .from_local_datetime(&naive)
                .single()
                .map(|t| Some(t.with_timezone(&Utc)))
                .ok_or_else(|| format!("time {s:?} does not exist in {tz}"));
        }
    }
    Err(format!("unrecognised time {s:?}"))
}

/// A `--since`/`--until` bound: a date (`2026-08-01`, midnight in `tz`; as an upper bound the
/// whole day is included, so it means the next midnight) or a time as the provider writes it.
pub fn parse_bound(raw: &str, tz: FixedOffset, upper: bool) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    if let Ok(day) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let day = if upper {
            day.succ_opt()
                .ok_or_else(|| format!("date out of range {s:?}"))?
        } else {
            day
        };
        return tz
            .from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
            .single()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("date {s:?} does not exist in {tz}"));
    }
    parse_provider_time(s, tz)?.ok_or_else(|| "a date or time is needed".to_owned())
}

/// The provider's zone (UTC+8), the default when `CALLVAULT_PROVIDER_TZ` is not set.
pub const PROVIDER_TZ: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(tz) => tz,
    None => panic!("UTC+8 is a valid offset"),
};

pub fn default_provider_tz() -> FixedOffset {
    PROVIDER_TZ
}

/// Parses `+08:00`, `-05:30`, `UTC` or `Z`.
pub fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    s.parse::<FixedOffset>()
        .map_err(|_| format!("invalid time-zone offset {s:?} (expected e.g. +08:00)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_bounds_cover_whole_days_in_the_provider_zone() {
        let tz = default_provider_tz();
        let since = parse_bound("2026-08-01", tz, false).unwrap();
        let until = parse_bound("2026-08-01", tz, true).unwrap();
        assert_eq!(to_ledger(since), "2026-07-31T16:00:00.000Z");
        assert_eq!(to_ledger(until), "2026-08-01T16:00:00.000Z");
        let exact = parse_bound("2026-08-01 12:00:00", tz, true).unwrap();
        assert_eq!(to_ledger(exact), "2026-08-01T04:00:00.000Z");
        assert!(parse_bound("soon", tz, false).is_err());
        assert!(parse_bound("", tz, false).is_err());
    }

    #[test]
    fn provider_times_convert_to_utc() {
        let tz = default_provider_tz();
        let t = parse_provider_time("2018-03-14 12:18:21", tz)
            .unwrap()
            .unwrap();
        assert_eq!(to_ledger(t), "2018-03-14T04:18:21.000Z");
        let unix = parse_provider_time("1598598959", tz).unwrap().unwrap();
        assert_eq!(unix.timestamp(), 1_598_598_959);
        assert_eq!(parse_provider_time("  ", tz), Ok(None));
        assert!(parse_provider_time("yesterday", tz).is_err());
    }

    #[test]
    fn ledger_text_round_trips_and_sorts() {
        let a = parse_provider_time("2026-01-02 03:04:05", parse_offset("UTC").unwrap())
            .unwrap()
            .unwrap();
        let b = a + chrono::Duration::milliseconds(1);
        assert_eq!(from_ledger(&to_ledger(a)), Some(a));
        assert!(to_ledger(a) < to_ledger(b));
        assert_eq!(
            parse_offset("-05:30").unwrap().local_minus_utc(),
            -(5 * 3600 + 1800)
        );
    }
}
