//! Instants, calendar periods and the `occurs` semantics (pql.md §4.9).
//!
//! Instants are milliseconds since the Unix epoch (UTC) in an `i64`, so time-window tests on
//! events are integer comparisons. Timestamps are parsed by a hand-written RFC 3339 fast path
//! (no allocation, no locale), falling back to chrono for unusual forms.

use super::ast::{Anchor, CmpOp, Direction, TimeUnit, TimeWord};

/// Milliseconds per day.
pub const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month 1–12, day 1–31).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Validated calendar date to the instant of its midnight UTC.
pub fn date_ms(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(-9999..=9999).contains(&y) {
        return None;
    }
    let m = m as u32;
    if d < 1 || d > i64::from(days_in_month(y, m)) {
        return None;
    }
    Some(days_from_civil(y, m, d as u32) * DAY_MS)
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// Parses an RFC 3339 date-time (`2024-06-15T09:00:00Z`, fractional seconds and offsets
/// allowed) or an XDM date (`1985-06-20`, read as midnight UTC, pql.md §3) into epoch ms.
pub fn parse_instant(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let day = date_ms(digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?)?;
    if b.len() == 10 {
        return Some(day);
    }
    if b.len() >= 20 && matches!(b[10], b'T' | b't' | b' ') && b[13] == b':' && b[16] == b':' {
        let (h, mi, sec) = (
            digits(&b[11..13])?,
            digits(&b[14..16])?,
            digits(&b[17..19])?,
        );
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        let mut i = 19;
        let mut frac_ms = 0;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let frac = &b[start..i];
            if frac.is_empty() {
                return None;
            }
            // Keep millisecond precision; finer digits are truncated.
            let mut ms = 0;
            for k in 0..3 {
                ms = ms * 10 + frac.get(k).map_or(0, |c| i64::from(c - b'0'));
            }
            frac_ms = ms;
        }
        let offset_min = match &b[i..] {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let v = digits(&[*h1, *h2])? * 60 + digits(&[*m1, *m2])?;
                if *sign == b'+' { v } else { -v }
            }
            _ => return None,
        };
        return Some(day + ((h * 60 + mi - offset_min) * 60 + sec) * 1000 + frac_ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// Renders epoch ms as RFC 3339 UTC with millisecond precision, omitting a zero fraction.
pub fn format_instant(ms: i64) -> String {
    render_instant(ms, false)
}

/// Renders epoch ms as `YYYY-MM-DDTHH:MM:SS.mmmZ`, always with milliseconds: how XDM date-time
/// values are written, and the form the columnar sample keeps as instants.
pub fn format_instant_millis(ms: i64) -> String {
    render_instant(ms, true)
}

fn render_instant(ms: i64, always_millis: bool) -> String {
    let days = ms.div_euclid(DAY_MS);
    let rem = ms.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, f) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    if f == 0 && !always_millis {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{f:03}Z")
    }
}

/// Length in ms of a fixed unit, or the number of calendar months of a calendar unit.
enum Step {
    Fixed(i64),
    Months(i64),
}

fn step(unit: TimeUnit) -> Step {
    match unit {
        TimeUnit::Millisecond => Step::Fixed(1),
        TimeUnit::Second => Step::Fixed(1000),
        TimeUnit::Minute => Step::Fixed(60_000),
        TimeUnit::Hour => Step::Fixed(3_600_000),
        TimeUnit::Day => Step::Fixed(DAY_MS),
        TimeUnit::Week => Step::Fixed(7 * DAY_MS),
        TimeUnit::Month => Step::Months(1),
        TimeUnit::Year => Step::Months(12),
        TimeUnit::Decade => Step::Months(120),
        TimeUnit::Century => Step::Months(1200),
        TimeUnit::Millennium => Step::Months(12_000),
    }
}

/// `t + n units`. Calendar units keep the day of month where possible and clamp it to the
/// month's length otherwise (pql.md §4.9 rule 5): Jan 31 + 1 month = Feb 28/29.
pub fn add_units(t: i64, unit: TimeUnit, n: i64) -> i64 {
    match step(unit) {
        Step::Fixed(ms) => t.saturating_add(ms.saturating_mul(n)),
        Step::Months(k) => {
            let days = t.div_euclid(DAY_MS);
            let tod = t.rem_euclid(DAY_MS);
            let (y, m, d) = civil_from_days(days);
            let total = y * 12 + i64::from(m - 1) + k.saturating_mul(n);
            let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
            let nd = d.min(days_in_month(ny, nm));
            days_from_civil(ny, nm, nd) * DAY_MS + tod
        }
    }
}

/// Start of the calendar period of `unit` containing `t` (weeks start on Monday, ISO 8601;
/// decades, centuries and millennia start at years divisible by 10, 100, 1000).
pub fn truncate(t: i64, unit: TimeUnit) -> i64 {
    let months = |div: i64| {
        let (y, m, _) = civil_from_days(t.div_euclid(DAY_MS));
        let y = if div == 0 { y } else { y - y.rem_euclid(div) };
        let m = if div == 0 { m } else { 1 };
        days_from_civil(y, m, 1) * DAY_MS
    };
    match unit {
        TimeUnit::Week => {
            let days = t.div_euclid(DAY_MS);
            // 1970-01-01 was a Thursday: Monday-based weekday index is (days + 3) mod 7.
            (days - (days + 3).rem_euclid(7)) * DAY_MS
        }
        TimeUnit::Month => months(0),
        TimeUnit::Year => months(1),
        TimeUnit::Decade => months(10),
        TimeUnit::Century => months(100),
        TimeUnit::Millennium => months(1000),
        fixed => {
            let Step::Fixed(ms) = step(fixed) else {
                unreachable!("fixed units only")
            };
            t - t.rem_euclid(ms)
        }
    }
}

/// A half-open period `[start, end)`; for an instant `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Inclusive start (ms).
    pub start: i64,
    /// Exclusive end (ms); equal to `start` for an instant.
    pub end: i64,
}

impl Period {
    /// A single instant.
    pub fn instant(t: i64) -> Self {
        Period { start: t, end: t }
    }

    /// The UTC day starting at `day_start`.
    pub fn day(day_start: i64) -> Self {
        Period {
            start: day_start,
            end: day_start + DAY_MS,
        }
    }

    /// `start(P) <= t < end(P)`; an instant period contains exactly itself.
    pub fn contains(&self, t: i64) -> bool {
        if self.start == self.end {
            t == self.start
        } else {
            self.start <= t && t < self.end
        }
    }
}

/// The period named by `now`/`today`/`yesterday`/`tomorrow` at evaluation instant `now`.
pub fn word_period(word: TimeWord, now: i64) -> Period {
    let today = now - now.rem_euclid(DAY_MS);
    match word {
        TimeWord::Now => Period::instant(now),
        TimeWord::Today => Period::day(today),
        TimeWord::Yesterday => Period::day(today - DAY_MS),
        TimeWord::Tomorrow => Period::day(today + DAY_MS),
    }
}

/// `this/last/next unit`: the calendar period containing now, or the one before or after it.
pub fn relative_period(anchor: Anchor, unit: TimeUnit, now: i64) -> Period {
    let this = truncate(now, unit);
    let start = match anchor {
        Anchor::This => this,
        Anchor::Last => add_units(this, unit, -1),
        Anchor::Next => add_units(this, unit, 1),
    };
    Period {
        start,
        end: add_units(start, unit, 1),
    }
}

/// Distance form `t occurs OP n unit DIR ref` (pql.md §4.9 rule 1).
///
/// `reference` is the start of the reference period (so `before today` measures from today's
/// midnight). The distance exists only on the named side: with `before`, `t > reference` is
/// false whatever the operator. The boundary `b = reference ∓ n units` is calendar-aware; `<`
/// means "closer than b", `>` "further than b", and `=` means `t` lies in the unit-sized bucket
/// `[b, b + 1 unit)` ("exactly 3 days before today" = that whole calendar day). `!=` is the
/// negation of `=` on the same side; `from` behaves as `after`.
pub fn distance_holds(
    t: i64,
    op: CmpOp,
    n: u32,
    unit: TimeUnit,
    dir: Direction,
    reference: i64,
) -> bool {
    let n = i64::from(n);
    let before = dir == Direction::Before;
    if (before && t > reference) || (!before && t < reference) {
        return false;
    }
    let b = add_units(reference, unit, if before { -n } else { n });
    let in_bucket = b <= t && t < add_units(b, unit, 1);
    // Distance comparisons: on the `before` side larger distance means earlier `t`.
    let (closer, closer_eq) = if before {
        (t > b, t >= b)
    } else {
        (t < b, t <= b)
    };
    match op {
        CmpOp::Lt => closer,
        CmpOp::Le => closer_eq,
        CmpOp::Gt => !closer_eq,
        CmpOp::Ge => !closer,
        CmpOp::Eq => in_bucket,
        CmpOp::Ne => !in_bucket,
    }
}

/// Direction form (rule 2): `before` = `t < start(P)`, `after`/`from` = `t >= end(P)`.
pub fn direction_holds(t: i64, dir: Direction, p: Period) -> bool {
    match dir {
        Direction::Before => t < p.start,
        Direction::After | Direction::From => t >= p.end,
    }
}

/// Between form (rule 4): `start(A) <= t < end(B)`, inclusive of both days for dates; when `B`
/// is an instant the end is inclusive.
pub fn between_holds(t: i64, a: Period, b: Period) -> bool {
    a.start <= t && (t < b.end || (b.start == b.end && t == b.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 19_889, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2024, 6, 15), 19_889);
    }

    #[test]
    fn parses_instants() {
        assert_eq!(parse_instant("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_instant("1970-01-02"), Some(DAY_MS));
        assert_eq!(parse_instant("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_instant("1970-01-01T00:00:00.25Z"), Some(250));
        assert_eq!(parse_instant("2024-02-30"), None);
        assert_eq!(parse_instant("hello world"), None);
        assert_eq!(
            format_instant(parse_instant("2024-06-15T12:00:00Z").unwrap()),
            "2024-06-15T12:00:00Z"
        );
    }

    #[test]
    fn month_arithmetic_clamps() {
        let jan31 = date_ms(2024, 1, 31).unwrap();
        assert_eq!(
            add_units(jan31, TimeUnit::Month, 1),
            date_ms(2024, 2, 29).unwrap()
        );
        assert_eq!(
            add_units(jan31, TimeUnit::Year, -1),
            date_ms(2023, 1, 31).unwrap()
        );
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2024-06-15 is a Saturday; its week starts on Monday 2024-06-10.
        let sat = date_ms(2024, 6, 15).unwrap() + 5;
        assert_eq!(truncate(sat, TimeUnit::Week), date_ms(2024, 6, 10).unwrap());
    }

    #[test]
    fn distance_forms() {
        let now = parse_instant("2024-06-15T12:00:00Z").unwrap();
        let h = 3_600_000;
        assert!(distance_holds(
            now - 3 * h,
            CmpOp::Lt,
            24,
            TimeUnit::Hour,
            Direction::Before,
            now
        ));
        assert!(!distance_holds(
            now + h,
            CmpOp::Lt,
            24,
            TimeUnit::Hour,
            Direction::Before,
            now
        ));
        assert!(distance_holds(
            now - 3 * h,
            CmpOp::Eq,
            3,
            TimeUnit::Hour,
            Direction::Before,
            now
        ));
        assert!(!distance_holds(
            now - 2 * h,
            CmpOp::Eq,
            3,
            TimeUnit::Hour,
            Direction::Before,
            now
        ));
        assert!(distance_holds(
            now + 2 * h,
            CmpOp::Gt,
            1,
            TimeUnit::Hour,
            Direction::After,
            now
        ));
        assert!(distance_holds(
            now + 2 * h,
            CmpOp::Gt,
            1,
            TimeUnit::Hour,
            Direction::From,
            now
        ));
    }
}
