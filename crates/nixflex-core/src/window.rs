//! Calling windows of campaigns (docs/campaigns.md#calling-windows): the local hours and days a
//! campaign may dial, in its own timezone, and when the next opening is.
//!
//! A window is `start..end` minutes after local midnight (0–1440) on a set of weekdays. With
//! `start > end` it runs overnight: it opens on one day and closes the next morning, and the
//! weekday that counts is the day it *opens* (a Friday 22:00–06:00 window runs into Saturday).
//!
//! Wall-clock times are turned into instants by one rule: **a window opens (or closes) the first
//! time the local clock reads its start (or end) or later.** So on the day clocks go forward, a
//! start inside the skipped hour opens when the clock jumps past it; on the day they go back, a
//! start inside the repeated hour opens at its first occurrence, and the window closes at the
//! first time the clock reads its end. Each local day yields at most one interval, so a window is
//! never skipped nor doubled across a change; a whole-day window lasts 23 or 25 hours on those
//! days. Pure: callers pass the time in.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// Minutes in a day: the largest `end`.
pub const DAY_MINUTES: u16 = 1440;

/// Why a window is invalid (each names the field, for `invalid_schedule`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A bound outside 0–1440.
    #[error("`{0}` must be between 0 and 1440 (minutes after local midnight)")]
    OutOfRange(&'static str),
    /// `start == end` (other than the whole day): the window would never open.
    #[error("`window_start_minutes` and `window_end_minutes` are equal, so the window never opens")]
    Empty,
    /// A day that is not `mon`…`sun`.
    #[error("`window_days` has `{0}`; use mon, tue, wed, thu, fri, sat, sun")]
    BadDay(String),
    /// No day at all.
    #[error("`window_days` must name at least one day")]
    NoDays,
    /// Not an IANA timezone name.
    #[error("`timezone` `{0}` is not an IANA timezone name (like Europe/London)")]
    BadTimezone(String),
}

/// A set of weekdays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days(u8);

impl Days {
    /// Every day.
    pub const ALL: Self = Self(0x7f);

    /// Parses `["mon", "tue", …]` (case-insensitive; full names accepted too).
    ///
    /// # Errors
    /// [`WindowError::BadDay`] or [`WindowError::NoDays`].
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, WindowError> {
        let mut bits = 0u8;
        for name in names {
            let name = name.as_ref();
            let day: Weekday =
                name.trim().parse().map_err(|_| WindowError::BadDay(name.to_owned()))?;
            bits |= 1 << day.num_days_from_monday();
        }
        if bits == 0 {
            return Err(WindowError::NoDays);
        }
        Ok(Self(bits))
    }

    /// Whether `day` is in the set.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    /// The days as `mon`…`sun`, in week order.
    pub fn names(self) -> Vec<&'static str> {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        (0..7).filter(|i| self.0 & (1 << i) != 0).map(|i| NAMES[i]).collect()
    }
}

/// When a campaign may dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingWindow {
    start: u16,
    end: u16,
    days: Days,
    tz: Tz,
}

impl CallingWindow {
    /// A window of `start..end` minutes on `days` in `tz`.
    ///
    /// # Errors
    /// A bound outside 0–1440, or `start == end` other than 0–1440 (the whole day is `0..1440`).
    pub fn new(start: u16, end: u16, days: Days, tz: Tz) -> Result<Self, WindowError> {
        if start > DAY_MINUTES {
            return Err(WindowError::OutOfRange("window_start_minutes"));
        }
        if end > DAY_MINUTES {
            return Err(WindowError::OutOfRange("window_end_minutes"));
        }
        // 1440..0 would be an overnight window that is open no time at all.
        if start == end || (start == DAY_MINUTES && end == 0) {
            return Err(WindowError::Empty);
        }
        Ok(Self { start, end, days, tz })
    }

    /// The whole of every day in `tz`.
    pub fn always(tz: Tz) -> Self {
        Self { start: 0, end: DAY_MINUTES, days: Days::ALL, tz }
    }

    /// Parses an IANA timezone name.
    ///
    /// # Errors
    /// [`WindowError::BadTimezone`].
    pub fn timezone(name: &str) -> Result<Tz, WindowError> {
        name.parse().map_err(|_| WindowError::BadTimezone(name.to_owned()))
    }

    /// The window's timezone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Whether the window is open at `at`.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let today = self.local_date(at);
        [today.pred_opt(), Some(today)]
            .into_iter()
            .flatten()
            .filter_map(|day| self.interval(day))
            .any(|(open, close)| open <= at && at < close)
    }

    /// When the window closes, if it is open at `at`.
    pub fn closes_at(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = self.local_date(at);
        [today.pred_opt(), Some(today)]
            .into_iter()
            .flatten()
            .filter_map(|day| self.interval(day))
            .find(|(open, close)| *open <= at && at < *close)
            .map(|(_, close)| close)
    }

    /// `at` itself if the window is open then, else the next time it opens (`None` only if it
    /// never opens, which a valid window cannot).
    pub fn next_opening(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.contains(at) {
            return Some(at);
        }
        let mut day = self.local_date(at).pred_opt()?;
        for _ in 0..9 {
            if let Some((open, _)) = self.interval(day)
                && open >= at
            {
                return Some(open);
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// The first instant of local day `date` (campaigns scheduled for a date become eligible
    /// then).
    pub fn start_of_day(&self, date: NaiveDate) -> DateTime<Utc> {
        resolve(self.tz, date, 0)
    }

    fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }

    /// The window opening on local day `day`, as instants, if that day is one of its days.
    fn interval(&self, day: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days.contains(day.weekday()) {
            return None;
        }
        let open = resolve(self.tz, day, self.start);
        let close = if self.start < self.end {
            resolve(self.tz, day, self.end)
        } else {
            resolve(self.tz, day.succ_opt()?, self.end)
        };
        (open < close).then_some((open, close))
    }
}

/// The first instant at which the local clock in `tz` reads `minutes` after midnight of `date`
/// or later (see the module documentation).
fn resolve(tz: Tz, date: NaiveDate, minutes: u16) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    let wanted = midnight + Duration::minutes(i64::from(minutes));
    // Daylight-saving gaps are at most a few hours; step through one a minute at a time.
    for step in 0..=24 * 60 {
        let local = wanted + Duration::minutes(step);
        if let Some(first) = tz.from_local_datetime(&local).earliest() {
            return first.with_timezone(&Utc);
        }
    }
    // Unreachable for real zones; the UTC reading of the wall time is a safe answer.
    Utc.from_utc_datetime(&wanted)
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn london() -> Tz {
        CallingWindow::timezone("Europe/London").unwrap()
    }

    fn weekdays() -> Days {
        Days::parse(&["mon", "tue", "wed", "thu", "fri"]).unwrap()
    }

    #[test]
    fn validation_names_the_problem() {
        let tz = london();
        assert_eq!(
            CallingWindow::new(0, 1441, Days::ALL, tz),
            Err(WindowError::OutOfRange("window_end_minutes"))
        );
        assert_eq!(
            CallingWindow::new(1500, 60, Days::ALL, tz),
            Err(WindowError::OutOfRange("window_start_minutes"))
        );
        assert_eq!(CallingWindow::new(540, 540, Days::ALL, tz), Err(WindowError::Empty));
        assert_eq!(CallingWindow::new(1440, 0, Days::ALL, tz), Err(WindowError::Empty));
        assert!(CallingWindow::new(0, 1440, Days::ALL, tz).is_ok());
        assert_eq!(Days::parse(&["mon", "funday"]), Err(WindowError::BadDay("funday".to_owned())));
        assert_eq!(Days::parse::<&str>(&[]), Err(WindowError::NoDays));
        assert_eq!(Days::parse(&["SAT", "Sunday", "sat"]).unwrap().names(), vec!["sat", "sun"]);
        assert!(matches!(
            CallingWindow::timezone("Mars/Olympus"),
            Err(WindowError::BadTimezone(_))
        ));
    }

    #[test]
    fn a_weekday_office_window_in_london() {
        let window = CallingWindow::new(540, 1080, weekdays(), london()).unwrap();
        // Wednesday 2026-07-01, BST (UTC+1): 09:00 local = 08:00 UTC.
        assert!(!window.contains(utc("2026-07-01T07:59:00Z")));
        assert!(window.contains(utc("2026-07-01T08:00:00Z")));
        assert!(window.contains(utc("2026-07-01T16:59:59Z")));
        assert!(!window.contains(utc("2026-07-01T17:00:00Z")));
        assert_eq!(
            window.closes_at(utc("2026-07-01T12:00:00Z")),
            Some(utc("2026-07-01T17:00:00Z"))
        );
        // Friday evening → Monday 09:00 BST.
        assert_eq!(
            window.next_opening(utc("2026-07-03T18:00:00Z")),
            Some(utc("2026-07-06T08:00:00Z"))
        );
        // Inside: now.
        assert_eq!(
            window.next_opening(utc("2026-07-01T10:00:00Z")),
            Some(utc("2026-07-01T10:00:00Z"))
        );
        // In winter 09:00 GMT = 09:00 UTC.
        assert_eq!(
            window.next_opening(utc("2026-12-01T00:00:00Z")),
            Some(utc("2026-12-01T09:00:00Z"))
        );
    }

    #[test]
    fn an_overnight_window_belongs_to_the_day_it_opens() {
        // Fridays only, 22:00–06:00, New York.
        let ny = CallingWindow::timezone("America/New_York").unwrap();
        let window = CallingWindow::new(1320, 360, Days::parse(&["fri"]).unwrap(), ny).unwrap();
        // Friday 2026-07-03 22:00 EDT = Saturday 02:00 UTC; it closes Saturday 06:00 EDT.
        assert!(!window.contains(utc("2026-07-04T01:59:00Z")));
        assert!(window.contains(utc("2026-07-04T02:00:00Z")));
        assert!(window.contains(utc("2026-07-04T09:59:00Z")), "Saturday 05:59 local");
        assert!(!window.contains(utc("2026-07-04T10:00:00Z")));
        // Saturday night is not a Friday: the next opening is a week later.
        assert_eq!(
            window.next_opening(utc("2026-07-04T10:00:00Z")),
            Some(utc("2026-07-11T02:00:00Z"))
        );
        // Thursday 23:00 local is not inside (Thursday is not a window day).
        assert!(!window.contains(utc("2026-07-03T03:00:00Z")));
    }

    /// Walks `from..to` minute by minute and returns each (opening, closing) pair seen.
    fn walk(window: &CallingWindow, from: &str, to: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let (mut at, end) = (utc(from), utc(to));
        let mut was_open = window.contains(at);
        let mut opened = None;
        let mut runs = Vec::new();
        while at < end {
            at += Duration::minutes(1);
            let open = window.contains(at);
            match (was_open, open) {
                (false, true) => opened = Some(at),
                (true, false) => {
                    if let Some(start) = opened.take() {
                        runs.push((start, at));
                    }
                }
                _ => {}
            }
            was_open = open;
        }
        runs
    }

    #[test]
    fn clocks_going_forward_neither_skip_nor_double_a_window() {
        // Europe/London, Sunday 2026-03-29: 01:00 GMT → 02:00 BST; local 01:00–02:00 never happens.
        let tz = london();
        // 01:30–03:00 local: 01:30 does not exist; it opens when the clock jumps, 02:00 BST (01:00 UTC).
        let window = CallingWindow::new(90, 180, Days::ALL, tz).unwrap();
        let runs = walk(&window, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z");
        assert_eq!(
            runs,
            vec![
                (utc("2026-03-29T01:00:00Z"), utc("2026-03-29T02:00:00Z")),
                (utc("2026-03-30T00:30:00Z"), utc("2026-03-30T02:00:00Z")),
            ]
        );
        // A whole-day window lasts 23 hours that day, and opens once.
        let always = CallingWindow::new(0, 1440, Days::parse(&["sun"]).unwrap(), tz).unwrap();
        let runs = walk(&always, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].1 - runs[0].0, Duration::hours(23));
    }

    #[test]
    fn clocks_going_back_neither_skip_nor_double_a_window() {
        // Europe/London, Sunday 2026-10-25: 02:00 BST → 01:00 GMT; local 01:00–02:00 happens twice.
        let tz = london();
        // 01:30–02:30: opens at the first 01:30 (00:30 UTC), closes at 02:30 GMT (02:30 UTC).
        let window = CallingWindow::new(90, 150, Days::ALL, tz).unwrap();
        let runs = walk(&window, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z");
        assert_eq!(
            runs,
            vec![
                (utc("2026-10-25T00:30:00Z"), utc("2026-10-25T02:30:00Z")),
                (utc("2026-10-26T01:30:00Z"), utc("2026-10-26T02:30:00Z")),
            ]
        );
        let always = CallingWindow::new(0, 1440, Days::parse(&["sun"]).unwrap(), tz).unwrap();
        let runs = walk(&always, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].1 - runs[0].0, Duration::hours(25));
    }

    #[test]
    fn an_overnight_window_across_a_clock_change_opens_once_a_night() {
        // New York, Sunday 2026-03-08 02:00 EST → 03:00 EDT. Window 22:00–06:00 every night.
        let ny = CallingWindow::timezone("America/New_York").unwrap();
        let window = CallingWindow::new(1320, 360, Days::ALL, ny).unwrap();
        let runs = walk(&window, "2026-03-06T12:00:00Z", "2026-03-10T12:00:00Z");
        assert_eq!(runs.len(), 4, "{runs:?}");
        // The night of the change is an hour shorter: 22:00 EST (03:00 UTC) to 06:00 EDT (10:00 UTC).
        assert_eq!(runs[1], (utc("2026-03-08T03:00:00Z"), utc("2026-03-08T10:00:00Z")));
        for (open, _) in &runs {
            assert_eq!(open.with_timezone(&ny).hour(), 22);
        }
    }

    #[test]
    fn next_opening_agrees_with_a_minute_by_minute_walk() {
        let tz = london();
        let window =
            CallingWindow::new(1380, 120, Days::parse(&["sat", "sun"]).unwrap(), tz).unwrap();
        let mut at = utc("2026-10-20T00:00:00Z");
        let end = utc("2026-11-05T00:00:00Z");
        while at < end {
            let next = window.next_opening(at).unwrap();
            assert!(next >= at);
            assert!(window.contains(next), "{at} → {next}");
            // Nothing opens in between.
            let mut probe = at;
            while probe < next {
                assert!(!window.contains(probe), "open at {probe}, before {next}");
                probe += Duration::minutes(29);
            }
            at += Duration::minutes(97);
        }
    }

    #[test]
    fn start_of_a_scheduled_day_is_local_midnight() {
        let window = CallingWindow::always(london());
        let date = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
        assert_eq!(window.start_of_day(date), utc("2026-06-30T23:00:00Z"));
    }
}
