//! `WHEN` on the command line: an RFC 3339 time, or a duration back from now (`90s`,
//! `15m`, `2h`, `7d`, or combined: `1h30m`).

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// `when` as a point in time, with `now` for durations.
pub fn parse(when: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let w = when.trim();
    if w.is_empty() {
        return Err("is empty: give an RFC 3339 time (2026-05-01T09:00:00Z) or a duration back from now (90s, 15m, 2h, 7d)".into());
    }
    if let Ok(t) = OffsetDateTime::parse(w, &Rfc3339) {
        return Ok(t);
    }
    match duration(w) {
        Some(d) => now
            .checked_sub(d)
            .ok_or_else(|| format!("`{w}` reaches before the year 0")),
        None => Err(format!(
            "`{w}` is neither an RFC 3339 time (2026-05-01T09:00:00Z, 2026-05-01T11:00:00+02:00) nor a duration back from now (90s, 15m, 2h, 7d, 1h30m)"
        )),
    }
}

/// `90s`, `15m`, `2h`, `7d`, `1w`, or several of them in a row (`1h30m`).
fn duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            's' => Duration::seconds(1),
            'm' => Duration::minutes(1),
            'h' => Duration::hours(1),
            'd' => Duration::days(1),
            'w' => Duration::weeks(1),
            _ => return None,
        };
        total = total.checked_add(unit.checked_mul(i32::try_from(n).ok()?)?)?;
        any = true;
    }
    (digits.is_empty() && any).then_some(total)
}

/// Whole seconds since the epoch (the AMQP timestamp RabbitMQ takes for
/// `x-stream-offset`), rounded down.
pub fn unix_seconds(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn rfc3339_and_durations() {
        let now = datetime!(2026-05-10 12:00:00 UTC);
        assert_eq!(
            parse("2026-05-01T09:00:00Z", now).unwrap(),
            datetime!(2026-05-01 09:00:00 UTC)
        );
        assert_eq!(
            parse("2026-05-01T11:00:00+02:00", now).unwrap(),
            datetime!(2026-05-01 09:00:00 UTC)
        );
        assert_eq!(
            parse("90s", now).unwrap(),
            datetime!(2026-05-10 11:58:30 UTC)
        );
        assert_eq!(
            parse("15m", now).unwrap(),
            datetime!(2026-05-10 11:45:00 UTC)
        );
        assert_eq!(
            parse("2h", now).unwrap(),
            datetime!(2026-05-10 10:00:00 UTC)
        );
        assert_eq!(
            parse("7d", now).unwrap(),
            datetime!(2026-05-03 12:00:00 UTC)
        );
        assert_eq!(
            parse("1h30m", now).unwrap(),
            datetime!(2026-05-10 10:30:00 UTC)
        );
        for bad in ["", "yesterday", "7", "d", "7x", "-5m", "2026-05-01", "1.5h"] {
            let e = parse(bad, now).unwrap_err();
            assert!(!e.is_empty(), "{bad:?}");
        }
    }
}
