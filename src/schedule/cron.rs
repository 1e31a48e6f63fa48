//! Quartz cron expressions (api.md §6.8): parsing, a canonical text form, the next fire time in an
//! IANA time zone, and the frequency check behind "at most once every 24 hours" (api.md §6).
//!
//! We parse and evaluate expressions ourselves instead of handing them to tokio-cron-scheduler
//! (crates.md, "tokio-cron-scheduler in detail"): its croner parser reads numeric weekdays the
//! POSIX way (0 = Sunday) where Quartz counts 1 = Sunday … 7 = Saturday, and its `*_tz` jobs
//! freeze the UTC offset at creation, so they drift by an hour across DST. The runner is meant to
//! arm one-shot jobs at the instants [`QuartzCron::next_after`] returns.
//!
//! # Syntax
//!
//! Six or seven whitespace-separated fields: seconds, minutes, hours, day-of-month, month,
//! day-of-week and an optional year (1970–2099). Input is case-insensitive.
//!
//! - Every field: `*`, values, ranges `a-b`, lists `a,b`, steps `a/s`, `*/s`, `a-b/s`. Ranges in
//!   the cyclic fields wrap around (`22-2` hours, `FRI-MON`), as in Quartz.
//! - Month: `1`–`12` or `JAN`–`DEC`.
//! - Day-of-week: **Quartz numbering `1` = `SUN` … `7` = `SAT`**, or `SUN`–`SAT`; `L` alone is
//!   Saturday; `dL` is the last weekday `d` of the month (`6L` = last Friday); `d#n` is the n-th
//!   weekday `d` of the month (`2#1` = first Monday), `n` in 1–5, no fire in a month without it.
//! - Day-of-month: `L` (last day), `L-n` (n days before the last day), `nW` (the weekday nearest
//!   to day n, staying within the month; no fire in a month shorter than n days), `LW` (last
//!   weekday), `L-nW`.
//! - `?` ("no specific value"): exactly one of day-of-month and day-of-week must be `?`, as Quartz
//!   itself requires; `0 0 1 * * *` is rejected with a message pointing at `0 0 1 * * ?`. This also
//!   means a day never has to satisfy both fields, a combination Quartz does not implement.
//! - `L`, `W` and `#` stand alone in their field, as in Quartz (`L,15` is rejected).
//!
//! # Time zones and DST
//!
//! Fields are matched against the local wall-clock time of the zone given to
//! [`QuartzCron::next_after`] (Adobe's schedules are UTC: pass [`chrono_tz::UTC`]).
//!
//! - A local time skipped by a spring-forward transition fires at the first instant after the gap
//!   (a `02:30` Europe/Paris schedule fires at 03:00 CEST on the last Sunday of March), once
//!   however many skipped times match. A daily job therefore still runs that day.
//! - A local time repeated by a fall-back transition fires once, at its first occurrence. An
//!   hourly schedule thus has a two-hour gap across the repeated hour.

use std::fmt;

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Timelike, Utc,
    Weekday,
};
use chrono_tz::Tz;

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Day-of-week names in Quartz order: index 0 is value 1.
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The Gregorian calendar repeats every 400 years (146,097 days, a whole number of weeks), so an
/// expression with no fire time in 400 years has none at all.
const CYCLE_YEARS: i32 = 400;

/// Bounds the search for the end of a DST gap; the longest gap on record is a whole day (Samoa
/// skipped 30 December 2011).
const MAX_GAP_SECONDS: i64 = 26 * 3600;

const SECONDS_PER_DAY: i64 = 86_400;

/// A field of a Quartz cron expression, in expression order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    /// Seconds, 0–59.
    Seconds,
    /// Minutes, 0–59.
    Minutes,
    /// Hours, 0–23.
    Hours,
    /// Day of the month, 1–31.
    DayOfMonth,
    /// Month, 1–12 or `JAN`–`DEC`.
    Month,
    /// Day of the week, 1 (`SUN`) – 7 (`SAT`).
    DayOfWeek,
    /// Year, 1970–2099 (optional seventh field).
    Year,
}

impl CronField {
    fn bounds(self) -> (u32, u32) {
        match self {
            Self::Seconds | Self::Minutes => (0, 59),
            Self::Hours => (0, 23),
            Self::DayOfMonth => (1, 31),
            Self::Month => (1, 12),
            Self::DayOfWeek => (1, 7),
            Self::Year => (1970, 2099),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Self::Month => &MONTH_NAMES,
            Self::DayOfWeek => &DAY_NAMES,
            _ => &[],
        }
    }

    /// Describes the accepted values, for error messages.
    fn expected(self) -> &'static str {
        match self {
            Self::Seconds | Self::Minutes => "0-59",
            Self::Hours => "0-23",
            Self::DayOfMonth => "1-31",
            Self::Month => "1-12 or JAN-DEC",
            Self::DayOfWeek => "1-7 (Quartz numbering: 1 = SUN ... 7 = SAT) or SUN-SAT",
            Self::Year => "1970-2099",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Seconds => "seconds",
            Self::Minutes => "minutes",
            Self::Hours => "hours",
            Self::DayOfMonth => "day-of-month",
            Self::Month => "month",
            Self::DayOfWeek => "day-of-week",
            Self::Year => "year",
        })
    }
}

/// Why a cron expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The expression does not have 6 or 7 fields.
    #[error(
        "expected 6 or 7 fields (seconds minutes hours day-of-month month day-of-week [year]), found {found}"
    )]
    FieldCount {
        /// The number of whitespace-separated fields found.
        found: usize,
    },
    /// A field contains an invalid token.
    #[error("{field} field `{token}`: {reason}")]
    InvalidToken {
        /// The field the token belongs to.
        field: CronField,
        /// The offending token (one list element, or the whole field).
        token: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither day-of-month nor day-of-week is `?`.
    #[error(
        "day-of-month `{day_of_month}` and day-of-week `{day_of_week}` are both set: Quartz requires `?` in exactly one of them, e.g. `0 0 1 * * ?`"
    )]
    BothDaysSpecified {
        /// The day-of-month field as written.
        day_of_month: String,
        /// The day-of-week field as written.
        day_of_week: String,
    },
    /// Both day-of-month and day-of-week are `?`.
    #[error(
        "day-of-month and day-of-week are both `?`: Quartz requires `?` in exactly one of them, e.g. `0 0 1 * * ?`"
    )]
    NeitherDaySpecified,
}

fn invalid(field: CronField, token: &str, reason: impl Into<String>) -> CronError {
    CronError::InvalidToken {
        field,
        token: token.to_owned(),
        reason: reason.into(),
    }
}

/// A parsed Quartz cron expression.
///
/// Equality is equality of the canonical form (see [`QuartzCron`]'s `Display`), so `0 0 12 ? * 2`
/// equals `0 0 12 ? * mon`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuartzCron {
    seconds: List,
    minutes: List,
    hours: List,
    days: Days,
    months: List,
    /// `None` when the year field is absent or `*`.
    years: Option<List>,
}

impl QuartzCron {
    /// Parses a Quartz cron expression of 6 or 7 fields.
    ///
    /// # Errors
    ///
    /// [`CronError`] naming the field and the offending token.
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        // Quartz upper-cases the whole expression, which makes names, `L`, `W` case-insensitive.
        let upper = expr.to_ascii_uppercase();
        let fields: Vec<&str> = upper.split_whitespace().collect();
        if !(6..=7).contains(&fields.len()) {
            return Err(CronError::FieldCount {
                found: fields.len(),
            });
        }
        let seconds = List::parse(CronField::Seconds, fields[0])?;
        let minutes = List::parse(CronField::Minutes, fields[1])?;
        let hours = List::parse(CronField::Hours, fields[2])?;
        let day_of_month = DayOfMonth::parse(fields[3])?;
        let months = List::parse(CronField::Month, fields[4])?;
        let day_of_week = DayOfWeek::parse(fields[5])?;
        let years = match fields.get(6) {
            Some(token) => {
                Some(List::parse(CronField::Year, token)?).filter(|list| list.items != [Item::All])
            }
            None => None,
        };
        let days = match (day_of_month, day_of_week) {
            (Some(day_of_month), None) => Days::OfMonth(day_of_month),
            (None, Some(day_of_week)) => Days::OfWeek(day_of_week),
            (Some(_), Some(_)) => {
                return Err(CronError::BothDaysSpecified {
                    day_of_month: fields[3].to_owned(),
                    day_of_week: fields[5].to_owned(),
                });
            }
            (None, None) => return Err(CronError::NeitherDaySpecified),
        };
        Ok(Self {
            seconds,
            minutes,
            hours,
            days,
            months,
            years,
        })
    }

    /// Returns the first fire time strictly after `after`, with the fields read as wall-clock time
    /// in `tz`, or `None` if the expression never fires again.
    ///
    /// DST gaps and overlaps are handled as the module documentation describes.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // A local time earlier than `after`'s never maps to an instant later than `after`
        // (repeated times fire at their first occurrence, skipped ones at the end of their gap),
        // so the scan starts at `after`'s local time, truncated to the second.
        let local = after.with_timezone(&tz).naive_local();
        let last_year = match &self.years {
            Some(years) => i32::try_from(years.set.last()?).ok()?,
            None => local.year().checked_add(CYCLE_YEARS)?,
        };
        let mut date = local.date();
        let mut from = local.time().with_nanosecond(0)?;
        while date.year() <= last_year {
            if let Some(years) = &self.years {
                let year = u32::try_from(date.year()).unwrap_or(0);
                if !years.set.contains(year) {
                    let next = years.set.next_at_or_after(year)?;
                    date = NaiveDate::from_ymd_opt(i32::try_from(next).ok()?, 1, 1)?;
                    from = NaiveTime::MIN;
                    continue;
                }
            }
            if !self.months.set.contains(date.month()) {
                date = first_of_next_month(date)?;
                from = NaiveTime::MIN;
                continue;
            }
            if self.days.matches(date)
                && let Some(fire) = self.first_fire_on(date, from, after, tz)
            {
                return Some(fire);
            }
            date = date.succ_opt()?;
            from = NaiveTime::MIN;
        }
        None
    }

    /// Tells whether two consecutive fire times can be less than `window` apart, so the API can
    /// enforce "at most once every 24 hours" with `fires_more_than_once_per(TimeDelta::days(1))`.
    ///
    /// The answer is derived from the fields, not from sampling a few fire times (two upcoming
    /// fires of `0 0 1 1,2 * ?` are a month apart, yet it fires on two consecutive days):
    /// the shortest gap is the smaller of the shortest gap between two times of day, and the
    /// shortest gap between two fire days (found over a whole 400-year calendar cycle, or over the
    /// year field's span) less the spread of the times of day. Gaps are measured in local
    /// wall-clock time, so a daily schedule stays daily although DST makes some days 23 or 25
    /// hours long.
    pub fn fires_more_than_once_per(&self, window: TimeDelta) -> bool {
        // Hours, minutes and seconds ascend together, so this walks the times of day in order.
        let mut times = self.hours.set.iter_from(0).flat_map(|hour| {
            self.minutes.set.iter_from(0).flat_map(move |minute| {
                self.seconds
                    .set
                    .iter_from(0)
                    .map(move |second| i64::from(hour * 3600 + minute * 60 + second))
            })
        });
        // Every plain field holds at least one value, so there is a first time of day.
        let Some(first) = times.next() else {
            return false;
        };
        let mut last = first;
        let mut shortest_in_day = None::<i64>;
        for time in times {
            let gap = time - last;
            shortest_in_day = Some(shortest_in_day.map_or(gap, |shortest| shortest.min(gap)));
            last = time;
        }
        if shortest_in_day.is_some_and(|gap| TimeDelta::seconds(gap) < window) {
            return true;
        }
        let spread = last - first;
        // Fire days are at least one day apart, so a window this short cannot be broken.
        if TimeDelta::seconds(SECONDS_PER_DAY - spread) >= window {
            return false;
        }
        self.shortest_gap_between_fire_days()
            .is_some_and(|days| TimeDelta::seconds(days * SECONDS_PER_DAY - spread) < window)
    }

    /// Returns the fewest days between two consecutive fire days, or `None` with fewer than two.
    fn shortest_gap_between_fire_days(&self) -> Option<i64> {
        let (first_year, last_year) = match &self.years {
            Some(years) => (
                i32::try_from(years.set.first()?).ok()?,
                i32::try_from(years.set.last()?).ok()?,
            ),
            // One extra year so the pairs spanning the end of the cycle are seen too.
            None => (2000, 2000 + CYCLE_YEARS),
        };
        let mut date = NaiveDate::from_ymd_opt(first_year, 1, 1)?;
        let end = NaiveDate::from_ymd_opt(last_year, 12, 31)?;
        let mut previous = None::<NaiveDate>;
        let mut shortest = None::<i64>;
        while date <= end {
            if self.matches_date(date) {
                if let Some(previous) = previous {
                    let gap = (date - previous).num_days();
                    shortest = Some(shortest.map_or(gap, |shortest| shortest.min(gap)));
                }
                previous = Some(date);
            }
            date = date.succ_opt()?;
        }
        shortest
    }

    fn matches_date(&self, date: NaiveDate) -> bool {
        let year_matches = self.years.as_ref().is_none_or(|years| {
            u32::try_from(date.year()).is_ok_and(|year| years.set.contains(year))
        });
        year_matches && self.months.set.contains(date.month()) && self.days.matches(date)
    }

    /// Returns the first fire on `date` at or after the local time `from` that is strictly after
    /// `after`.
    fn first_fire_on(
        &self,
        date: NaiveDate,
        mut from: NaiveTime,
        after: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        loop {
            let time = self.first_time_at_or_after(from)?;
            let fire = resolve_local(tz, date.and_time(time))?;
            if fire > after {
                return Some(fire);
            }
            // Only the local time of `after` itself, a repeated hour or a DST gap get here.
            from = NaiveTime::from_num_seconds_from_midnight_opt(
                time.num_seconds_from_midnight() + 1,
                0,
            )?;
        }
    }

    fn first_time_at_or_after(&self, from: NaiveTime) -> Option<NaiveTime> {
        let (from_hour, from_minute, from_second) = (from.hour(), from.minute(), from.second());
        for hour in self.hours.set.iter_from(from_hour) {
            let minute_from = if hour == from_hour { from_minute } else { 0 };
            for minute in self.minutes.set.iter_from(minute_from) {
                let second_from = if hour == from_hour && minute == from_minute {
                    from_second
                } else {
                    0
                };
                if let Some(second) = self.seconds.set.next_at_or_after(second_from) {
                    return NaiveTime::from_hms_opt(hour, minute, second);
                }
            }
        }
        None
    }
}

/// Writes the canonical form: single spaces; months as numbers; days of the week as names (so the
/// Quartz numbering is never misread as POSIX), except in steps, where Quartz only takes numbers;
/// `*/s` as `min/s`; list elements sorted without duplicates; `L` alone in day-of-week as `SAT`;
/// no `*` year field.
impl fmt::Display for QuartzCron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (day_of_month, day_of_week) = match &self.days {
            Days::OfMonth(days) => (days.to_string(), "?".to_owned()),
            Days::OfWeek(days) => ("?".to_owned(), days.to_string()),
        };
        write!(
            f,
            "{} {} {} {} {} {}",
            self.seconds.render(CronField::Seconds),
            self.minutes.render(CronField::Minutes),
            self.hours.render(CronField::Hours),
            day_of_month,
            self.months.render(CronField::Month),
            day_of_week,
        )?;
        if let Some(years) = &self.years {
            write!(f, " {}", years.render(CronField::Year))?;
        }
        Ok(())
    }
}

/// Maps a local time to the instant it fires at: its first occurrence, or the end of the DST gap
/// that skips it.
fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    if let Some(instant) = tz.from_local_datetime(&local).earliest() {
        return Some(instant.with_timezone(&Utc));
    }
    // `local` lies in a gap: binary-search the first valid local time after it. Validity is
    // monotonic over this span because transitions are months apart.
    let valid = |seconds: i64| {
        let shifted = local.checked_add_signed(TimeDelta::seconds(seconds))?;
        tz.from_local_datetime(&shifted).earliest()
    };
    let (mut invalid_at, mut valid_at) = (0, MAX_GAP_SECONDS);
    valid(valid_at)?;
    while valid_at - invalid_at > 1 {
        let middle = invalid_at + (valid_at - invalid_at) / 2;
        if valid(middle).is_some() {
            valid_at = middle;
        } else {
            invalid_at = middle;
        }
    }
    valid(valid_at).map(|instant| instant.with_timezone(&Utc))
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year().checked_add(1)?, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

fn last_day_of_month(date: NaiveDate) -> u32 {
    first_of_next_month(date)
        .and_then(|first| first.pred_opt())
        .map_or(31, |last| last.day())
}

/// Returns the weekday nearest to day `target` of `date`'s month without leaving the month
/// (Quartz `W`): Saturday moves to Friday, or to Monday the 3rd when it is the 1st; Sunday moves
/// to Monday, or to Friday when it is the last day.
fn nearest_weekday(date: NaiveDate, target: u32, last: u32) -> Option<u32> {
    let weekday = date.with_day(target)?.weekday();
    Some(match weekday {
        Weekday::Sat if target == 1 => 3,
        Weekday::Sat => target - 1,
        Weekday::Sun if target == last => target - 2,
        Weekday::Sun => target + 1,
        _ => target,
    })
}

/// The day selection: exactly one of day-of-month and day-of-week is `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Days {
    OfMonth(DayOfMonth),
    OfWeek(DayOfWeek),
}

impl Days {
    fn matches(&self, date: NaiveDate) -> bool {
        let day = date.day();
        match self {
            Self::OfMonth(DayOfMonth::List(list)) => list.set.contains(day),
            Self::OfMonth(DayOfMonth::Last { offset, weekday }) => {
                let last = last_day_of_month(date);
                let target = last.checked_sub(*offset).filter(|target| *target >= 1);
                let target = if *weekday {
                    target.and_then(|target| nearest_weekday(date, target, last))
                } else {
                    target
                };
                target == Some(day)
            }
            Self::OfMonth(DayOfMonth::NearestWeekday(target)) => {
                let last = last_day_of_month(date);
                *target <= last && nearest_weekday(date, *target, last) == Some(day)
            }
            Self::OfWeek(DayOfWeek::List(list)) => {
                list.set.contains(date.weekday().number_from_sunday())
            }
            Self::OfWeek(DayOfWeek::Last(weekday)) => {
                date.weekday().number_from_sunday() == *weekday && day + 7 > last_day_of_month(date)
            }
            Self::OfWeek(DayOfWeek::Nth { weekday, nth }) => {
                date.weekday().number_from_sunday() == *weekday && (day - 1) / 7 + 1 == *nth
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfMonth {
    List(List),
    /// `L`, `L-n`, `LW`, `L-nW`.
    Last {
        offset: u32,
        weekday: bool,
    },
    /// `nW`.
    NearestWeekday(u32),
}

impl DayOfMonth {
    /// Parses an upper-cased day-of-month field; `None` stands for `?`.
    fn parse(token: &str) -> Result<Option<Self>, CronError> {
        const FIELD: CronField = CronField::DayOfMonth;
        if token == "?" {
            return Ok(None);
        }
        if !token.contains(['L', 'W']) {
            return List::parse(FIELD, token).map(|list| Some(Self::List(list)));
        }
        if token.contains(',') {
            return Err(invalid(
                FIELD,
                token,
                "`L` and `W` cannot be combined with other days",
            ));
        }
        if let Some(rest) = token.strip_prefix('L') {
            let (rest, weekday) = match rest.strip_suffix('W') {
                Some(rest) => (rest, true),
                None => (rest, false),
            };
            let offset = match rest.strip_prefix('-') {
                None if rest.is_empty() => 0,
                Some(offset) => parse_number(offset)
                    .filter(|offset| *offset <= 30)
                    .ok_or_else(|| {
                        invalid(FIELD, token, "the offset in `L-n` must be a number in 0-30")
                    })?,
                None => return Err(invalid(FIELD, token, "expected `L`, `L-n`, `LW` or `L-nW`")),
            };
            return Ok(Some(Self::Last { offset, weekday }));
        }
        let target = token
            .strip_suffix('W')
            .and_then(parse_number)
            .ok_or_else(|| invalid(FIELD, token, "expected `nW` with n a day in 1-31"))?;
        if !(1..=31).contains(&target) {
            return Err(invalid(FIELD, token, format!("{target} is outside 1-31")));
        }
        Ok(Some(Self::NearestWeekday(target)))
    }
}

impl fmt::Display for DayOfMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::List(list) => f.write_str(&list.render(CronField::DayOfMonth)),
            Self::Last { offset, weekday } => {
                f.write_str("L")?;
                if *offset > 0 {
                    write!(f, "-{offset}")?;
                }
                if *weekday {
                    f.write_str("W")?;
                }
                Ok(())
            }
            Self::NearestWeekday(target) => write!(f, "{target}W"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfWeek {
    List(List),
    /// `dL`: the last weekday `d` (Quartz numbering) of the month.
    Last(u32),
    /// `d#n`: the n-th weekday `d` of the month.
    Nth {
        weekday: u32,
        nth: u32,
    },
}

impl DayOfWeek {
    /// Parses an upper-cased day-of-week field; `None` stands for `?`.
    fn parse(token: &str) -> Result<Option<Self>, CronError> {
        const FIELD: CronField = CronField::DayOfWeek;
        match token {
            "?" => return Ok(None),
            // Quartz reads a lone `L` as the last day of the week, Saturday.
            "L" => return List::parse(FIELD, "7").map(|list| Some(Self::List(list))),
            _ => {}
        }
        let special = token.contains('#') || (token.len() > 1 && token.ends_with('L'));
        if !special {
            return List::parse(FIELD, token).map(|list| Some(Self::List(list)));
        }
        if token.contains(',') {
            return Err(invalid(
                FIELD,
                token,
                "`L` and `#` cannot be combined with other days",
            ));
        }
        if let Some((weekday, nth)) = token.split_once('#') {
            let weekday = parse_value(FIELD, weekday)?;
            let nth = parse_number(nth)
                .filter(|nth| (1..=5).contains(nth))
                .ok_or_else(|| invalid(FIELD, token, "`#` must be followed by a number in 1-5"))?;
            return Ok(Some(Self::Nth { weekday, nth }));
        }
        let weekday = parse_value(FIELD, &token[..token.len() - 1])?;
        Ok(Some(Self::Last(weekday)))
    }
}

impl fmt::Display for DayOfWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::List(list) => f.write_str(&list.render(CronField::DayOfWeek)),
            Self::Last(weekday) => write!(f, "{}L", day_name(*weekday)),
            Self::Nth { weekday, nth } => write!(f, "{}#{nth}", day_name(*weekday)),
        }
    }
}

/// Returns the name of a day of the week, which parsing keeps within 1-7.
fn day_name(weekday: u32) -> &'static str {
    DAY_NAMES[weekday as usize - 1]
}

/// A plain comma-separated field: its elements as written (normalised) and the values they allow.
#[derive(Debug, Clone, PartialEq, Eq)]
struct List {
    items: Vec<Item>,
    set: ValueSet,
}

impl List {
    /// Parses an upper-cased field made of `*`, values, ranges and steps.
    fn parse(field: CronField, token: &str) -> Result<Self, CronError> {
        let mut items = token
            .split(',')
            .map(|element| {
                if element.is_empty() {
                    Err(invalid(field, token, "empty list element"))
                } else {
                    Item::parse(field, element)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if items.len() > 1 && items.contains(&Item::All) {
            return Err(invalid(
                field,
                token,
                "`*` cannot be combined with other values",
            ));
        }
        items.sort_by_key(|item| (item.first(field), *item));
        items.dedup();
        let (min, _) = field.bounds();
        let mut set = ValueSet::new(min);
        for item in &items {
            item.insert_into(field, &mut set);
        }
        Ok(Self { items, set })
    }

    fn render(&self, field: CronField) -> String {
        let rendered: Vec<String> = self.items.iter().map(|item| item.render(field)).collect();
        rendered.join(",")
    }
}

/// One element of a plain field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    /// `*`.
    All,
    /// `a`.
    Value(u32),
    /// `a-b`, wrapping past the field's maximum when `b < a`.
    Range(u32, u32),
    /// `a/s` (up to the maximum), `a-b/s`; `*/s` starts at the minimum.
    Step {
        start: u32,
        end: Option<u32>,
        step: u32,
    },
}

impl Item {
    fn parse(field: CronField, element: &str) -> Result<Self, CronError> {
        let (min, max) = field.bounds();
        let (range, step) = match element.split_once('/') {
            Some((range, step)) => {
                let span = max - min + 1;
                let step = parse_number(step)
                    .filter(|step| (1..=span).contains(step))
                    .ok_or_else(|| {
                        invalid(
                            field,
                            element,
                            format!("the step must be a number in 1-{span}"),
                        )
                    })?;
                (range, Some(step))
            }
            None => (element, None),
        };
        if range == "*" {
            return Ok(match step {
                Some(step) => Self::Step {
                    start: min,
                    end: None,
                    step,
                },
                None => Self::All,
            });
        }
        let Some((start, end)) = range.split_once('-') else {
            let value = parse_value(field, range)?;
            return Ok(match step {
                Some(step) => Self::Step {
                    start: value,
                    end: None,
                    step,
                },
                None => Self::Value(value),
            });
        };
        if start.is_empty() || end.is_empty() {
            return Err(invalid(
                field,
                element,
                format!("expected {}", field.expected()),
            ));
        }
        let (start, end) = (parse_value(field, start)?, parse_value(field, end)?);
        if field == CronField::Year && end < start {
            return Err(invalid(field, element, "the range ends before it starts"));
        }
        Ok(match step {
            Some(step) => Self::Step {
                start,
                end: Some(end),
                step,
            },
            None if start == end => Self::Value(start),
            None => Self::Range(start, end),
        })
    }

    fn first(&self, field: CronField) -> u32 {
        match *self {
            Self::All => field.bounds().0,
            Self::Value(start) | Self::Range(start, _) | Self::Step { start, .. } => start,
        }
    }

    fn insert_into(&self, field: CronField, set: &mut ValueSet) {
        let (min, max) = field.bounds();
        let (start, end, step) = match *self {
            Self::All => (min, max, 1),
            Self::Value(value) => (value, value, 1),
            Self::Range(start, end) => (start, end, 1),
            Self::Step { start, end, step } => (start, end.unwrap_or(max), step),
        };
        // Walks from `start` to `end`, wrapping past `max` back to `min` (Quartz wrap-around).
        let span = max - min + 1;
        let distance = (end + span - start) % span;
        for offset in (0..=distance).step_by(step as usize) {
            set.insert(min + (start - min + offset) % span);
        }
    }

    fn render(&self, field: CronField) -> String {
        let name = |value: u32| {
            if field == CronField::DayOfWeek {
                day_name(value).to_owned()
            } else {
                value.to_string()
            }
        };
        match *self {
            Self::All => "*".to_owned(),
            Self::Value(value) => name(value),
            Self::Range(start, end) => format!("{}-{}", name(start), name(end)),
            Self::Step {
                start,
                end: None,
                step,
            } => format!("{start}/{step}"),
            Self::Step {
                start,
                end: Some(end),
                step,
            } => format!("{start}-{end}/{step}"),
        }
    }
}

/// Parses a value: a number within the field's bounds, or a three-letter month or day name.
fn parse_value(field: CronField, token: &str) -> Result<u32, CronError> {
    let (min, max) = field.bounds();
    if token.bytes().all(|byte| byte.is_ascii_digit()) && !token.is_empty() {
        return match token.parse::<u32>() {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(invalid(
                field,
                token,
                format!("{token} is outside {}", field.expected()),
            )),
        };
    }
    if let Some(index) = field.names().iter().position(|name| *name == token) {
        // Names are listed in value order starting at 1 (JAN, SUN).
        return Ok(index as u32 + 1);
    }
    let reason = match (token, field) {
        ("?", CronField::DayOfMonth | CronField::DayOfWeek) => {
            "`?` must be the whole field".to_owned()
        }
        ("?", _) => "`?` is only allowed in day-of-month or day-of-week".to_owned(),
        _ => format!("expected {}", field.expected()),
    };
    Err(invalid(field, token, reason))
}

/// Parses an unsigned decimal number (no sign, no spaces).
fn parse_number(token: &str) -> Option<u32> {
    if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// A set of field values, as a bitmap indexed by `value - base` (192 bits hold the 130 years).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ValueSet {
    base: u32,
    bits: [u64; 3],
}

impl ValueSet {
    const CAPACITY: u32 = 192;

    fn new(base: u32) -> Self {
        Self { base, bits: [0; 3] }
    }

    fn insert(&mut self, value: u32) {
        let index = (value - self.base) as usize;
        self.bits[index / 64] |= 1 << (index % 64);
    }

    fn contains(&self, value: u32) -> bool {
        value
            .checked_sub(self.base)
            .filter(|index| *index < Self::CAPACITY)
            .is_some_and(|index| self.bits[index as usize / 64] & (1 << (index % 64)) != 0)
    }

    fn next_at_or_after(&self, value: u32) -> Option<u32> {
        let mut index = value.saturating_sub(self.base);
        while index < Self::CAPACITY {
            let word = self.bits[index as usize / 64] >> (index % 64);
            if word != 0 {
                return Some(self.base + index + word.trailing_zeros());
            }
            index = (index / 64 + 1) * 64;
        }
        None
    }

    fn iter_from(&self, value: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(self.next_at_or_after(value), |value| {
            self.next_at_or_after(value + 1)
        })
    }

    fn first(&self) -> Option<u32> {
        self.next_at_or_after(self.base)
    }

    fn last(&self) -> Option<u32> {
        (0..self.bits.len()).rev().find_map(|word| {
            let bits = self.bits[word];
            (bits != 0).then(|| self.base + word as u32 * 64 + 63 - bits.leading_zeros())
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Paris;
    use chrono_tz::UTC;
    use proptest::prelude::*;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|error| panic!("{text}: {error}"))
            .with_timezone(&Utc)
    }

    fn cron(expr: &str) -> QuartzCron {
        QuartzCron::parse(expr).unwrap_or_else(|error| panic!("{expr}: {error}"))
    }

    /// Checks a local time against the fields directly, independently of the search.
    fn matches(cron: &QuartzCron, local: NaiveDateTime) -> bool {
        cron.matches_date(local.date())
            && cron.hours.set.contains(local.hour())
            && cron.minutes.set.contains(local.minute())
            && cron.seconds.set.contains(local.second())
    }

    #[test]
    fn next_fire_times_in_utc() {
        // 2026-11-27 is a Friday.
        let now = "2026-11-27T12:00:00Z";
        let cases = [
            ("0 0 1 * * ?", now, Some("2026-11-28T01:00:00Z")),
            ("0 30 13 * * ?", now, Some("2026-11-27T13:30:00Z")),
            ("0 0 1 ? * *", now, Some("2026-11-28T01:00:00Z")),
            // Quartz numbering: 2 is Monday, 1 Sunday, 7 Saturday.
            ("0 0 12 ? * 2", now, Some("2026-11-30T12:00:00Z")),
            ("0 0 12 ? * MON", now, Some("2026-11-30T12:00:00Z")),
            ("0 0 12 ? * 1", now, Some("2026-11-29T12:00:00Z")),
            ("0 0 12 ? * 7", now, Some("2026-11-28T12:00:00Z")),
            ("0 0 12 ? * L", now, Some("2026-11-28T12:00:00Z")),
            ("0 0 12 ? * fri-mon", now, Some("2026-11-28T12:00:00Z")),
            // Last Friday: today at noon is not strictly after `now`, so the next is 25 December.
            ("0 0 12 ? * 6L", now, Some("2026-12-25T12:00:00Z")),
            (
                "0 0 12 ? * 6L",
                "2026-11-27T11:59:59Z",
                Some("2026-11-27T12:00:00Z"),
            ),
            // 24 December 2027 is a Friday too, but not the last one.
            (
                "0 0 12 ? * 6L",
                "2027-12-01T00:00:00Z",
                Some("2027-12-31T12:00:00Z"),
            ),
            // First Monday of December 2026 (1 December is a Tuesday).
            ("0 0 12 ? * 2#1", now, Some("2026-12-07T12:00:00Z")),
            ("0 0 12 ? * MON#1", now, Some("2026-12-07T12:00:00Z")),
            ("0 30 12 ? * 4#3", now, Some("2026-12-16T12:30:00Z")),
            ("0 13,38 5 ? 6 WED", now, Some("2027-06-02T05:13:00Z")),
            // 15 November 2026 is a Sunday: the nearest weekday is Monday the 16th.
            (
                "0 0 12 15W * ?",
                "2026-11-01T00:00:00Z",
                Some("2026-11-16T12:00:00Z"),
            ),
            // 1 May 2027 is a Saturday: `1W` stays in May, on Monday the 3rd.
            (
                "0 0 12 1W * ?",
                "2027-04-02T00:00:00Z",
                Some("2027-05-03T12:00:00Z"),
            ),
            // 31 January 2027 is a Sunday: the last weekday is Friday the 29th.
            (
                "0 0 12 LW * ?",
                "2027-01-01T00:00:00Z",
                Some("2027-01-29T12:00:00Z"),
            ),
            ("0 0 12 L * ?", now, Some("2026-11-30T12:00:00Z")),
            (
                "0 0 12 L * ?",
                "2028-02-01T00:00:00Z",
                Some("2028-02-29T12:00:00Z"),
            ),
            ("0 0 12 L-3 * ?", now, Some("2026-12-28T12:00:00Z")),
            (
                "0 0/15 * * * ?",
                "2026-11-27T12:07:30Z",
                Some("2026-11-27T12:15:00Z"),
            ),
            (
                "0 0/10 17 * * ?",
                "2026-11-27T17:50:00Z",
                Some("2026-11-28T17:00:00Z"),
            ),
            ("*/20 * * * * ?", now, Some("2026-11-27T12:00:20Z")),
            (
                "0 0 22-2 * * ?",
                "2026-11-27T23:00:00Z",
                Some("2026-11-28T00:00:00Z"),
            ),
            (
                "0 0 0 ? NOV-FEB MON",
                "2026-12-31T12:00:00Z",
                Some("2027-01-04T00:00:00Z"),
            ),
            ("0 30 9 * * ? 2027", now, Some("2027-01-01T09:30:00Z")),
            ("0 30 9 * * ? 2022", now, None),
            ("0 0 0 29 2 ?", now, Some("2028-02-29T00:00:00Z")),
            ("0 0 0 30 2 ?", now, None),
            // February with five Mondays: a leap year starting February on a Monday.
            ("0 0 0 ? 2 MON#5", now, Some("2044-02-29T00:00:00Z")),
            // Sub-second `after`: the fire time is still strictly later.
            (
                "0 0 12 * * ?",
                "2026-11-27T12:00:00.5Z",
                Some("2026-11-28T12:00:00Z"),
            ),
        ];
        for (expr, after, expected) in cases {
            assert_eq!(
                cron(expr).next_after(at(after), UTC),
                expected.map(at),
                "{expr} after {after}"
            );
        }
    }

    #[test]
    fn next_fire_times_across_dst() {
        let cases = [
            // 09:00 Paris is 08:00Z in winter and 07:00Z in summer.
            (
                "0 0 9 * * ?",
                Paris,
                "2026-11-27T12:00:00Z",
                "2026-11-28T08:00:00Z",
            ),
            (
                "0 0 9 * * ?",
                Paris,
                "2027-06-01T00:00:00Z",
                "2027-06-01T07:00:00Z",
            ),
            (
                "0 0 9 * * ?",
                New_York,
                "2026-11-27T12:00:00Z",
                "2026-11-27T14:00:00Z",
            ),
            (
                "0 0 9 * * ?",
                New_York,
                "2027-06-01T00:00:00Z",
                "2027-06-01T13:00:00Z",
            ),
            // Paris springs forward on 2027-03-28 at 02:00 CET (01:00Z): 02:30 is skipped and
            // fires at 03:00 CEST, then at 02:30 CEST the next day.
            (
                "0 30 2 * * ?",
                Paris,
                "2027-03-27T12:00:00Z",
                "2027-03-28T01:00:00Z",
            ),
            (
                "0 30 2 * * ?",
                Paris,
                "2027-03-28T01:00:00Z",
                "2027-03-29T00:30:00Z",
            ),
            // Four skipped quarter hours collapse into one fire at the end of the gap.
            (
                "0 0/15 * * * ?",
                Paris,
                "2027-03-28T00:45:00Z",
                "2027-03-28T01:00:00Z",
            ),
            (
                "0 0/15 * * * ?",
                Paris,
                "2027-03-28T01:00:00Z",
                "2027-03-28T01:15:00Z",
            ),
            // Paris falls back on 2027-10-31 at 03:00 CEST (01:00Z): 02:30 fires once, at its
            // first occurrence (CEST).
            (
                "0 30 2 * * ?",
                Paris,
                "2027-10-30T12:00:00Z",
                "2027-10-31T00:30:00Z",
            ),
            (
                "0 30 2 * * ?",
                Paris,
                "2027-10-31T00:30:00Z",
                "2027-11-01T01:30:00Z",
            ),
            (
                "0 0 * * * ?",
                Paris,
                "2027-10-31T00:00:00Z",
                "2027-10-31T02:00:00Z",
            ),
            // New York springs forward on 2027-03-14 at 02:00 EST (07:00Z).
            (
                "0 30 2 * * ?",
                New_York,
                "2027-03-13T12:00:00Z",
                "2027-03-14T07:00:00Z",
            ),
            (
                "0 30 2 * * ?",
                New_York,
                "2027-03-14T07:00:00Z",
                "2027-03-15T06:30:00Z",
            ),
            // New York falls back on 2027-11-07 at 02:00 EDT (06:00Z): 01:30 EDT, not EST.
            (
                "0 30 1 * * ?",
                New_York,
                "2027-11-06T12:00:00Z",
                "2027-11-07T05:30:00Z",
            ),
            (
                "0 30 1 * * ?",
                New_York,
                "2027-11-07T05:30:00Z",
                "2027-11-08T06:30:00Z",
            ),
            (
                "0 30 1 * * ?",
                New_York,
                "2027-11-07T06:00:00Z",
                "2027-11-08T06:30:00Z",
            ),
        ];
        for (expr, tz, after, expected) in cases {
            assert_eq!(
                cron(expr).next_after(at(after), tz),
                Some(at(expected)),
                "{expr} in {tz} after {after}"
            );
        }
    }

    #[test]
    fn canonical_text() {
        let cases = [
            ("0  0 1 * *   ?", "0 0 1 * * ?"),
            ("0 0 12 ? jan,mar mon-fri", "0 0 12 ? 1,3 MON-FRI"),
            ("0 0 12 ? * 2", "0 0 12 ? * MON"),
            ("*/15 0 0 * * ? *", "0/15 0 0 * * ?"),
            ("0 0 12 ? * 6L", "0 0 12 ? * FRIL"),
            ("0 0 12 ? * 4#3", "0 0 12 ? * WED#3"),
            ("0 0 12 ? * L", "0 0 12 ? * SAT"),
            ("0 0 12 5,1,3,1 * ?", "0 0 12 1,3,5 * ?"),
            ("0 0 12 l-3w * ?", "0 0 12 L-3W * ?"),
            ("0 0 12 15w * ?", "0 0 12 15W * ?"),
            ("0 0 12 ? * */2", "0 0 12 ? * 1/2"),
            ("0 0 12 3-3 * ? 2027", "0 0 12 3 * ? 2027"),
        ];
        for (expr, canonical) in cases {
            assert_eq!(cron(expr).to_string(), canonical, "{expr}");
        }
        assert_eq!(cron("0 0 12 ? * 2"), cron("0 0 12 ? * mon"));
        assert_ne!(cron("0 0 12 ? * 2"), cron("0 0 12 ? * 1"));
    }

    #[test]
    fn invalid_expressions_are_rejected_with_a_clear_message() {
        let fields = "(seconds minutes hours day-of-month month day-of-week [year])";
        let cases = [
            ("", format!("expected 6 or 7 fields {fields}, found 0")),
            ("0 1 * * *", format!("expected 6 or 7 fields {fields}, found 5")),
            ("0 0 1 * * ? 2027 1", format!("expected 6 or 7 fields {fields}, found 8")),
            ("60 0 1 * * ?", "seconds field `60`: 60 is outside 0-59".to_owned()),
            ("0 0 24 * * ?", "hours field `24`: 24 is outside 0-23".to_owned()),
            (
                "0 0 1 ? * 0",
                "day-of-week field `0`: 0 is outside 1-7 (Quartz numbering: 1 = SUN ... 7 = SAT) or SUN-SAT".to_owned(),
            ),
            (
                "0 0 1 * * *",
                "day-of-month `*` and day-of-week `*` are both set: Quartz requires `?` in exactly one of them, e.g. `0 0 1 * * ?`".to_owned(),
            ),
            (
                "0 0 1 ? * ?",
                "day-of-month and day-of-week are both `?`: Quartz requires `?` in exactly one of them, e.g. `0 0 1 * * ?`".to_owned(),
            ),
            ("? 0 1 * * ?", "seconds field `?`: `?` is only allowed in day-of-month or day-of-week".to_owned()),
            ("0 0 1 1,? * ?", "day-of-month field `?`: `?` must be the whole field".to_owned()),
            ("0 0 1 ? * 6#6", "day-of-week field `6#6`: `#` must be followed by a number in 1-5".to_owned()),
            ("0 0 1 ? * 2#1,3", "day-of-week field `2#1,3`: `L` and `#` cannot be combined with other days".to_owned()),
            ("0 0 1 32W * ?", "day-of-month field `32W`: 32 is outside 1-31".to_owned()),
            ("0 0 1 L,5 * ?", "day-of-month field `L,5`: `L` and `W` cannot be combined with other days".to_owned()),
            ("0 0 1 L-31 * ?", "day-of-month field `L-31`: the offset in `L-n` must be a number in 0-30".to_owned()),
            ("0 0 1 * FOO ?", "month field `FOO`: expected 1-12 or JAN-DEC".to_owned()),
            ("0 0/0 1 * * ?", "minutes field `0/0`: the step must be a number in 1-60".to_owned()),
            ("0 0 1 * * ? 1969", "year field `1969`: 1969 is outside 1970-2099".to_owned()),
            ("0 0 1 * * ? 2030-2027", "year field `2030-2027`: the range ends before it starts".to_owned()),
            ("0 0 1 1,,2 * ?", "day-of-month field `1,,2`: empty list element".to_owned()),
            ("0 *,5 1 * * ?", "minutes field `*,5`: `*` cannot be combined with other values".to_owned()),
            ("0 0 1 * * ? -1", "year field `-1`: expected 1970-2099".to_owned()),
        ];
        for (expr, message) in cases {
            match QuartzCron::parse(expr) {
                Ok(parsed) => panic!("{expr} parsed as {parsed}"),
                Err(error) => assert_eq!(error.to_string(), message, "{expr}"),
            }
        }
    }

    #[test]
    fn fire_frequency_against_a_window() {
        let day = TimeDelta::days(1);
        let week = TimeDelta::days(7);
        let cases = [
            ("0 0 1 * * ?", day, false),
            ("0 30 13 * * ?", day, false),
            ("0 30 9 * * ? 2022", day, false),
            ("0 30 12 ? * 4#3", day, false),
            ("0 * 18 * * ?", day, true),
            ("0 0/10 17 * * ?", day, true),
            ("0 13,38 5 ? 6 WED", day, true),
            ("0 0 1,13 * * ?", day, true),
            ("0 0 0,23 ? * MON", day, true),
            ("0 0 10 ? * MON", week, false),
            ("0 0 10 ? * 2#1", week, false),
            ("0 0 10 ? * MON,TUE", week, true),
            // 28 February to 1 March is a single day.
            ("0 0 10 1,28 * ?", week, true),
            ("0 0 12 ? * MON,WED", TimeDelta::days(2), false),
            ("0 0 12 ? * MON,WED", TimeDelta::days(3), true),
            // Tuesday 23:00 to Wednesday 01:00 is two hours.
            ("0 0 1,23 ? * TUE,WED", TimeDelta::hours(3), true),
            ("0 0 1,23 ? * TUE,THU", TimeDelta::hours(3), false),
            // 29 February comes every four years (1,461 days) at the most.
            ("0 0 12 29 2 ?", TimeDelta::days(1_500), true),
            ("0 0 12 29 2 ?", TimeDelta::days(1_461), false),
        ];
        for (expr, window, expected) in cases {
            assert_eq!(
                cron(expr).fires_more_than_once_per(window),
                expected,
                "{expr} per {window}"
            );
        }
    }

    const TIME_ZONES: [Tz; 5] = [
        UTC,
        Paris,
        New_York,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::America::Santiago,
    ];

    fn expression() -> impl Strategy<Value = String> {
        let seconds =
            prop::sample::select(vec!["0", "30", "*/20", "0,15,45", "10-12", "*", "58/1"]);
        let minutes = prop::sample::select(vec!["0", "*/15", "5,35", "50-10/20", "*", "59"]);
        let hours = prop::sample::select(vec!["0", "1", "2", "3", "9", "23", "22-2", "*/6", "*"]);
        let day_of_month = prop::sample::select(vec![
            "*", "1", "15W", "1W", "L", "LW", "L-3", "31", "29", "1-7", "*/10", "30W",
        ]);
        let month = prop::sample::select(vec!["*", "2", "JAN,JUL", "11-2", "*/3", "3,10"]);
        let day_of_week = prop::sample::select(vec![
            "*", "2", "MON-FRI", "6L", "2#1", "SUN#5", "FRI-MON", "L", "7", "1/3",
        ]);
        let year = prop::sample::select(vec!["", "*", "2027", "2026-2030", "2031", "2020"]);
        (
            seconds,
            minutes,
            hours,
            day_of_month,
            month,
            day_of_week,
            year,
            any::<bool>(),
        )
            .prop_map(
                |(second, minute, hour, day_of_month, month, day_of_week, year, by_month)| {
                    let (day_of_month, day_of_week) = if by_month {
                        (day_of_month, "?")
                    } else {
                        ("?", day_of_week)
                    };
                    format!("{second} {minute} {hour} {day_of_month} {month} {day_of_week} {year}")
                },
            )
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2025-01-01 to 2035-01-01, with sub-second noise.
        (1_735_689_600_i64..2_051_222_400, 0_u32..1_000_000_000).prop_map(|(seconds, nanos)| {
            DateTime::from_timestamp(seconds, nanos).expect("in range")
        })
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_canonical_text_round_trips(
            fields in prop::collection::vec("[0-9A-Za-z*?/,#-]{1,7}", 5..=8),
        ) {
            if let Ok(parsed) = QuartzCron::parse(&fields.join(" ")) {
                let canonical = parsed.to_string();
                prop_assert_eq!(QuartzCron::parse(&canonical), Ok(parsed));
            }
        }

        #[test]
        fn grammar_like_expressions_parse_or_fail_cleanly(
            second in "(\\*|[1-5]?[0-9])([-/][1-5]?[0-9])?(,[1-5]?[0-9]){0,2}",
            minute in "(\\*|[1-5]?[0-9])([-/][1-5]?[0-9])?",
            hour in "(\\*|1?[0-9]|2[0-3])([-/]1?[0-9])?(,1?[0-9])?",
            day_of_month in "\\?|L(-[0-3]?[0-9])?W?|[1-3]?[0-9]W|(\\*|[12]?[0-9])([-/][1-3]?[0-9])?(,[1-3]?[0-9])?",
            month in "(\\*|1?[0-9]|jan|Dec)([-/]1?[0-9])?",
            day_of_week in "\\?|L|[0-8]L|[0-8]#[0-6]|(\\*|[0-8]|mon|SAT)(-[0-8]|/[0-9])?(,[1-7])?",
            year in "|\\*|20[0-9]{2}(-20[0-9]{2})?",
            // Usually blanks one of the day fields, as Quartz requires, but not always.
            blank in prop::sample::select(vec![None, Some(3), Some(5), Some(3), Some(5)]),
            after in instant(),
        ) {
            let mut fields = [second, minute, hour, day_of_month, month, day_of_week, year];
            if let Some(index) = blank {
                fields[index] = "?".to_owned();
            }
            let expr = fields.join(" ");
            if let Ok(parsed) = QuartzCron::parse(&expr) {
                prop_assert_eq!(QuartzCron::parse(&parsed.to_string()), Ok(parsed.clone()));
                if let Some(fire) = parsed.next_after(after, UTC) {
                    prop_assert!(fire > after);
                    prop_assert!(matches(&parsed, fire.naive_utc()), "{} at {}", expr, fire);
                }
            }
        }

        #[test]
        fn next_fire_times_match_and_increase(
            expr in expression(),
            after in instant(),
            tz in prop::sample::select(TIME_ZONES.to_vec()),
            fraction in 0.0_f64..1.0,
        ) {
            let parsed = cron(&expr);
            prop_assert_eq!(cron(&parsed.to_string()), parsed.clone());
            let mut previous = after;
            for _ in 0..4 {
                let Some(fire) = parsed.next_after(previous, tz) else {
                    // No fire date at all in the next 400 years after the local day of `previous`.
                    let mut date = previous.with_timezone(&tz).date_naive().succ_opt().expect("in range");
                    for _ in 0..401 * 366 {
                        prop_assert!(!parsed.matches_date(date), "{} fires on {}", expr, date);
                        date = date.succ_opt().expect("in range");
                    }
                    break;
                };
                prop_assert!(fire > previous);
                let local = fire.with_timezone(&tz).naive_local();
                if matches(&parsed, local) {
                    // A repeated local time fires at its first occurrence only.
                    let first = tz.from_local_datetime(&local).earliest().map(|t| t.with_timezone(&Utc));
                    prop_assert_eq!(first, Some(fire));
                } else {
                    // Otherwise the fire stands for local times skipped by a DST gap ending here.
                    let before = local - TimeDelta::seconds(1);
                    prop_assert!(tz.from_local_datetime(&before).earliest().is_none(), "{} in {} at {}", expr, tz, fire);
                }
                // Nothing fires in between: any later starting point finds the same instant.
                let span = (fire - previous).num_milliseconds();
                let between = previous + TimeDelta::milliseconds((span as f64 * fraction) as i64);
                if between < fire {
                    prop_assert_eq!(parsed.next_after(between, tz), Some(fire));
                }
                previous = fire;
            }
        }
    }
}
