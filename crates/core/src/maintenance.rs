//! Maintenance windows: the `[[maintenance]]` entries of `apis.toml`.
//! Incidents of the APIs a window covers are recorded but not notified
//! while it lasts.
//!
//! ```toml
//! [[maintenance]]
//! api = "Billing*"            # optional glob on API names; absent: all
//! cron = "0 2 * * SUN"        # 5-field cron: when each window starts
//! duration = "2h"
//! reason = "weekly DB maintenance"
//! timezone = "Europe/Berlin"  # optional IANA zone of cron/start; default UTC
//! # instead of cron:  weekdays = ["sat", "sun"], start = "22:00"
//! ```
//!
//! A window is the half-open interval `[start, start + duration)`, where
//! each start is a time the schedule gives in the window's time zone (so a
//! 02:00 window stays at 02:00 local across daylight saving changes) and
//! the duration is elapsed time. Parsing yields validated
//! [`MaintenanceWindow`]s; [`MaintenanceWindow::covers`] is a pure function.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::Deserialize;

use crate::apis::{duration_value, DurationRaw};
use crate::glob::Glob;

/// One `[[maintenance]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaintenanceRaw {
    api: Option<String>,
    cron: Option<String>,
    weekdays: Option<Vec<String>>,
    start: Option<String>,
    duration: Option<DurationRaw>,
    reason: Option<String>,
    timezone: Option<String>,
}

/// A recurring maintenance window, validated.
#[derive(Clone)]
pub struct MaintenanceWindow {
    /// Which APIs it covers; `None`: every API.
    pub api: Option<Glob>,
    /// The schedule as written, for messages: `0 2 * * SUN` or
    /// `sat, sun at 22:00`.
    pub schedule: String,
    /// When each window starts, evaluated in `timezone`.
    cron: Cron,
    /// How long each window lasts (elapsed time).
    pub duration: Duration,
    /// Why there is a window; names it in messages.
    pub reason: Option<String>,
    /// Zone of the schedule's wall-clock times (default UTC).
    pub timezone: Tz,
}

impl fmt::Debug for MaintenanceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaintenanceWindow")
            .field("api", &self.api.as_ref().map(Glob::as_str))
            .field("schedule", &self.schedule)
            .field("duration", &self.duration)
            .field("reason", &self.reason)
            .field("timezone", &self.timezone.name())
            .finish()
    }
}

impl MaintenanceWindow {
    /// Whether a window of this schedule that covers `api` has started at
    /// or before `at` and not yet ended: also a window that crosses
    /// midnight, or that started the day before.
    pub fn covers(&self, api: &str, at: DateTime<Utc>) -> bool {
        self.end_if_covering(api, at).is_some()
    }

    /// The end of the window that covers `api` at `at`, if one does. When
    /// windows overlap (a duration longer than the time between starts),
    /// the one that ends last.
    pub fn end_if_covering(&self, api: &str, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.applies_to(api) {
            return None;
        }
        let length = chrono::Duration::from_std(self.duration).ok()?;
        // The latest start at or before `at` ends last of all the windows
        // that started by then: `at` is covered when that one is still on.
        let start = self
            .cron
            .find_previous_occurrence(&at.with_timezone(&self.timezone), true)
            .ok()?
            .with_timezone(&Utc);
        let end = start.checked_add_signed(length)?;
        (start <= at && at < end).then_some(end)
    }

    /// Whether the window is about `api` (its glob matches, or it has none).
    pub fn applies_to(&self, api: &str) -> bool {
        self.api.as_ref().is_none_or(|g| g.matches(api))
    }

    /// What to call it in messages: its reason, else its schedule.
    pub fn name(&self) -> String {
        match &self.reason {
            Some(r) => r.clone(),
            None => format!("{} for {}", self.schedule, human_duration(self.duration)),
        }
    }
}

/// `2h`, `1h 30m`, `1day 2h`, `45s`: a duration as people write it (in
/// whole seconds, as `humantime` prints it).
pub fn human_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

const DAYS: [(&str, &str, u8); 7] = [
    ("sun", "sunday", 0),
    ("mon", "monday", 1),
    ("tue", "tuesday", 2),
    ("wed", "wednesday", 3),
    ("thu", "thursday", 4),
    ("fri", "friday", 5),
    ("sat", "saturday", 6),
];

/// Validates one entry; the error is the message, starting with the key
/// that is wrong.
pub(crate) fn validate(raw: MaintenanceRaw) -> Result<MaintenanceWindow, String> {
    let api = match raw.api {
        None => None,
        Some(p) => Some(Glob::new(&p).map_err(|m| format!("api: {m}"))?),
    };
    let timezone = match raw.timezone.as_deref().map(str::trim) {
        None => Tz::UTC,
        Some(name) => name.parse::<Tz>().map_err(|_| {
            format!(
                "timezone: unknown time zone `{}` (expected an IANA name such as \
                 \"Europe/Berlin\", or \"UTC\")",
                name.escape_debug()
            )
        })?,
    };
    let (cron_text, schedule) = match (raw.cron, raw.weekdays) {
        (Some(_), Some(_)) => {
            return Err("expected either `cron` or `weekdays` with `start`, not both".to_string())
        }
        (None, None) => {
            return Err(
                "expected `cron` (such as \"0 2 * * SUN\") or `weekdays` with `start` \
                 (such as weekdays = [\"sat\", \"sun\"], start = \"22:00\")"
                    .to_string(),
            )
        }
        (Some(c), None) => {
            if raw.start.is_some() {
                return Err(
                    "start: goes with `weekdays`; with `cron`, the cron gives the start".into(),
                );
            }
            let c = c.trim().to_string();
            (c.clone(), c)
        }
        (None, Some(days)) => {
            let start = raw
                .start
                .ok_or("start: missing (expected a time of day such as \"22:00\")")?;
            let (hour, minute) = time_of_day(&start)?;
            weekly(&days, hour, minute)?
        }
    };
    let cron = parse_cron(&cron_text)?;
    // A pattern such as "0 0 30 2 *" never happens; say so now rather
    // than never silence anything.
    let probe = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single();
    if let Some(p) = probe {
        if cron
            .find_next_occurrence(&p.with_timezone(&timezone), false)
            .is_err()
        {
            return Err(format!(
                "cron: `{}` never happens",
                cron_text.escape_debug()
            ));
        }
    }
    let duration = match raw.duration {
        None => return Err("duration: missing (expected a duration such as \"2h\")".into()),
        Some(d) => duration_value(d).map_err(|m| format!("duration: {m}"))?,
    };
    if duration.is_zero() {
        return Err("duration: expected a duration above zero, such as \"2h\"".into());
    }
    let reason = match raw.reason.map(|r| r.trim().to_string()) {
        None => None,
        Some(r) if r.is_empty() || r.chars().any(char::is_control) => {
            return Err("reason: expected one line of text".into())
        }
        Some(r) => Some(r),
    };
    Ok(MaintenanceWindow {
        api,
        schedule,
        cron,
        duration,
        reason,
        timezone,
    })
}

/// A 5-field cron pattern: minute, hour, day of month, month, day of week.
fn parse_cron(text: &str) -> Result<Cron, String> {
    let expected = || {
        format!(
            "cron: expected 5 fields (minute hour day-of-month month day-of-week) such as \
             \"0 2 * * SUN\", got `{}`",
            text.escape_debug()
        )
    };
    if text.split_whitespace().count() != 5 {
        return Err(expected());
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| {
            format!(
                "{} ({})",
                expected(),
                e.to_string().replace(['\n', '\r'], " ")
            )
        })
}

/// `22:00`, `7:30` into (hour, minute).
fn time_of_day(text: &str) -> Result<(u8, u8), String> {
    let bad = || {
        format!(
            "start: expected a time of day from 00:00 to 23:59 such as \"22:00\", got `{}`",
            text.escape_debug()
        )
    };
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let digits = |s: &str, max_len: usize| {
        !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(bad());
    }
    let hour: u8 = h.parse().map_err(|_| bad())?;
    let minute: u8 = m.parse().map_err(|_| bad())?;
    if hour > 23 || minute > 59 {
        return Err(bad());
    }
    Ok((hour, minute))
}

/// The cron pattern of a weekly schedule, and its description.
fn weekly(days: &[String], hour: u8, minute: u8) -> Result<(String, String), String> {
    if days.is_empty() {
        return Err("weekdays: expected at least one day such as \"sat\"".into());
    }
    let mut numbers = Vec::new();
    let mut names = Vec::new();
    for d in days {
        let lower = d.trim().to_ascii_lowercase();
        let (short, _, n) = DAYS
            .iter()
            .find(|(short, long, _)| lower == *short || lower == *long)
            .ok_or_else(|| {
                format!(
                    "weekdays: unknown day `{}` (expected mon, tue, wed, thu, fri, sat or sun)",
                    d.escape_debug()
                )
            })?;
        if !numbers.contains(n) {
            numbers.push(*n);
            names.push(*short);
        }
    }
    let list: Vec<String> = numbers.iter().map(u8::to_string).collect();
    Ok((
        format!("{minute} {hour} * * {}", list.join(",")),
        format!("{} at {hour:02}:{minute:02}", names.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::parse_maintenance;

    fn window(toml: &str) -> MaintenanceWindow {
        let mut w = parse_maintenance(&format!("[[maintenance]]\n{toml}"), "apis.toml").unwrap();
        assert_eq!(w.len(), 1);
        w.remove(0)
    }

    fn error(toml: &str) -> String {
        parse_maintenance(&format!("[[maintenance]]\n{toml}"), "apis.toml")
            .unwrap_err()
            .to_string()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    // 2026-12-06 is a Sunday.

    #[test]
    fn a_cron_window_covers_from_its_start_to_its_end_only() {
        let w = window("cron = \"0 2 * * SUN\"\nduration = \"2h\"\nreason = \"db\"");
        assert!(!w.covers("any", utc(2026, 12, 6, 1, 59, 59)));
        assert!(w.covers("any", utc(2026, 12, 6, 2, 0, 0)));
        assert!(w.covers("any", utc(2026, 12, 6, 3, 59, 59)));
        assert!(
            !w.covers("any", utc(2026, 12, 6, 4, 0, 0)),
            "the end is excluded"
        );
        assert!(!w.covers("any", utc(2026, 12, 7, 2, 30, 0)), "Monday");
        assert_eq!(
            w.end_if_covering("any", utc(2026, 12, 6, 2, 0, 0)),
            Some(utc(2026, 12, 6, 4, 0, 0))
        );
        assert_eq!(w.name(), "db");
    }

    #[test]
    fn fractions_of_a_second_at_the_edges_count() {
        let w = window("cron = \"0 2 * * *\"\nduration = \"1h\"");
        let ms = chrono::Duration::milliseconds(1);
        assert!(!w.covers("a", utc(2026, 12, 6, 2, 0, 0) - ms));
        assert!(w.covers("a", utc(2026, 12, 6, 3, 0, 0) - ms));
        assert!(!w.covers("a", utc(2026, 12, 6, 3, 0, 0)));
    }

    #[test]
    fn a_window_crossing_midnight_covers_the_next_morning() {
        let w = window("weekdays = [\"sat\"]\nstart = \"22:00\"\nduration = \"4h\"");
        // Saturday 2026-12-05 22:00 to Sunday 02:00.
        assert!(!w.covers("a", utc(2026, 12, 5, 21, 59, 0)));
        assert!(w.covers("a", utc(2026, 12, 5, 23, 30, 0)));
        assert!(w.covers("a", utc(2026, 12, 6, 0, 0, 0)));
        assert!(
            w.covers("a", utc(2026, 12, 6, 1, 59, 59)),
            "started the day before"
        );
        assert!(!w.covers("a", utc(2026, 12, 6, 2, 0, 0)));
        assert!(!w.covers("a", utc(2026, 12, 6, 23, 0, 0)), "not on Sundays");
        assert_eq!(w.name(), "sat at 22:00 for 4h");
    }

    #[test]
    fn a_window_longer_than_a_day_covers_the_days_after() {
        let w = window("weekdays = [\"fri\"]\nstart = \"18:00\"\nduration = \"60h\"");
        // Friday 2026-12-04 18:00 to Monday 06:00.
        assert!(w.covers("a", utc(2026, 12, 5, 12, 0, 0)));
        assert!(w.covers("a", utc(2026, 12, 7, 5, 59, 0)));
        assert!(!w.covers("a", utc(2026, 12, 7, 6, 0, 0)));
    }

    #[test]
    fn overlapping_windows_report_the_end_of_the_latest() {
        // Every hour for 90 minutes: at 02:30 both the 01:00 and the 02:00
        // windows are on; the 02:00 one ends last.
        let w = window("cron = \"0 * * * *\"\nduration = \"90m\"");
        assert_eq!(
            w.end_if_covering("a", utc(2026, 12, 6, 2, 30, 0)),
            Some(utc(2026, 12, 6, 3, 30, 0))
        );
        assert_eq!(
            w.end_if_covering("a", utc(2026, 12, 6, 2, 10, 0)),
            Some(utc(2026, 12, 6, 3, 30, 0))
        );
    }

    #[test]
    fn weekdays_list_several_days_and_full_names() {
        let w =
            window("weekdays = [\"Saturday\", \"sun\", \"SAT\"]\nstart = \"7:05\"\nduration = 600");
        assert_eq!(w.schedule, "sat, sun at 07:05");
        assert_eq!(w.duration, Duration::from_secs(600));
        assert!(w.covers("a", utc(2026, 12, 5, 7, 10, 0)));
        assert!(w.covers("a", utc(2026, 12, 6, 7, 10, 0)));
        assert!(!w.covers("a", utc(2026, 12, 7, 7, 10, 0)));
    }

    #[test]
    fn the_api_glob_limits_which_apis_are_covered() {
        let w = window("api = \"Billing*\"\ncron = \"* * * * *\"\nduration = \"1m\"");
        let at = utc(2026, 12, 6, 12, 0, 30);
        assert!(w.covers("Billing", at));
        assert!(w.covers("Billing EU", at));
        assert!(!w.covers("billing", at));
        assert!(!w.covers("Old Billing", at));
        let all = window("cron = \"* * * * *\"\nduration = \"1m\"");
        assert!(all.covers("anything at all", at));
    }

    #[test]
    fn the_time_zone_moves_the_window_and_follows_daylight_saving() {
        let w = window("cron = \"0 2 * * SUN\"\nduration = \"2h\"\ntimezone = \"Europe/Berlin\"");
        // Winter (CET, UTC+1): 02:00 Berlin is 01:00 UTC.
        assert!(w.covers("a", utc(2026, 12, 6, 1, 0, 0)));
        assert!(!w.covers("a", utc(2026, 12, 6, 0, 59, 0)));
        assert!(!w.covers("a", utc(2026, 12, 6, 3, 0, 0)));
        // Summer (CEST, UTC+2): 02:00 Berlin is 00:00 UTC (2026-07-05 is
        // a Sunday).
        assert!(w.covers("a", utc(2026, 7, 5, 0, 0, 0)));
        assert!(w.covers("a", utc(2026, 7, 5, 1, 59, 0)));
        assert!(!w.covers("a", utc(2026, 7, 5, 2, 0, 0)));
        assert!(!w.covers("a", utc(2026, 7, 4, 23, 59, 0)));
    }

    #[test]
    fn a_window_over_the_spring_forward_lasts_its_elapsed_duration() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT. A window at
        // 01:00 local (06:00 UTC) for 2h ends at 08:00 UTC, 04:00 EDT.
        let w = window("cron = \"0 1 * * *\"\nduration = \"2h\"\ntimezone = \"America/New_York\"");
        assert!(w.covers("a", utc(2026, 3, 8, 6, 0, 0)));
        assert!(w.covers("a", utc(2026, 3, 8, 7, 59, 0)));
        assert!(!w.covers("a", utc(2026, 3, 8, 8, 0, 0)));
        // The next day 01:00 EDT is 05:00 UTC.
        assert!(w.covers("a", utc(2026, 3, 9, 5, 0, 0)));
        assert!(!w.covers("a", utc(2026, 3, 9, 4, 59, 0)));
    }

    #[test]
    fn a_start_in_the_skipped_hour_opens_the_window_when_the_clock_jumps() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not
        // exist that day. The window opens at the jump, 03:00 CEST (01:00
        // UTC), and lasts its hour.
        let w = window("cron = \"30 2 * * *\"\nduration = \"1h\"\ntimezone = \"Europe/Berlin\"");
        assert!(!w.covers("a", utc(2026, 3, 29, 0, 59, 0)));
        assert!(w.covers("a", utc(2026, 3, 29, 1, 0, 0)));
        assert!(w.covers("a", utc(2026, 3, 29, 1, 59, 0)));
        assert!(!w.covers("a", utc(2026, 3, 29, 2, 0, 0)));
        // The day before (CET): 02:30 local is 01:30 UTC.
        assert!(w.covers("a", utc(2026, 3, 28, 1, 30, 0)));
        assert!(!w.covers("a", utc(2026, 3, 28, 1, 29, 0)));
        // The day after (CEST): 02:30 local is 00:30 UTC.
        assert!(w.covers("a", utc(2026, 3, 30, 0, 30, 0)));
        assert!(!w.covers("a", utc(2026, 3, 30, 1, 30, 0)));
    }

    #[test]
    fn a_start_in_the_repeated_hour_opens_one_window_only() {
        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30
        // happens twice (00:30 and 01:30 UTC). One window, at the first.
        let w = window("cron = \"30 2 * * *\"\nduration = \"1h\"\ntimezone = \"Europe/Berlin\"");
        assert!(!w.covers("a", utc(2026, 10, 25, 0, 29, 0)));
        assert!(w.covers("a", utc(2026, 10, 25, 0, 30, 0)));
        assert!(w.covers("a", utc(2026, 10, 25, 1, 29, 0)));
        assert!(!w.covers("a", utc(2026, 10, 25, 1, 30, 0)));
        assert!(!w.covers("a", utc(2026, 10, 25, 2, 0, 0)));
    }

    #[test]
    fn bad_entries_are_config_errors_naming_the_entry() {
        let cases = [
            ("cron = \"0 2 * *\"\nduration = \"2h\"", "cron:"),
            ("cron = \"0 25 * * *\"\nduration = \"2h\"", "cron:"),
            ("cron = \"0 2 * * * *\"\nduration = \"2h\"", "cron:"),
            ("cron = \"0 0 30 2 *\"\nduration = \"2h\"", "never happens"),
            ("cron = \"0 2 * * SUN\"", "duration: missing"),
            ("cron = \"0 2 * * SUN\"\nduration = \"0s\"", "duration: expected a duration above zero"),
            ("cron = \"0 2 * * SUN\"\nduration = \"soon\"", "duration:"),
            (
                "cron = \"0 2 * * SUN\"\nweekdays = [\"sat\"]\nstart = \"22:00\"\nduration = \"2h\"",
                "not both",
            ),
            ("duration = \"2h\"", "expected `cron`"),
            ("weekdays = [\"sat\", \"caturday\"]\nstart = \"22:00\"\nduration = \"2h\"", "caturday"),
            ("weekdays = []\nstart = \"22:00\"\nduration = \"2h\"", "weekdays: expected at least one"),
            ("weekdays = [\"sat\"]\nduration = \"2h\"", "start: missing"),
            ("weekdays = [\"sat\"]\nstart = \"24:00\"\nduration = \"2h\"", "start: expected a time"),
            ("weekdays = [\"sat\"]\nstart = \"22:0\"\nduration = \"2h\"", "start: expected a time"),
            ("weekdays = [\"sat\"]\nstart = \"10pm\"\nduration = \"2h\"", "start: expected a time"),
            ("cron = \"0 2 * * *\"\nstart = \"22:00\"\nduration = \"2h\"", "start: goes with"),
            ("cron = \"0 2 * * *\"\nduration = \"2h\"\ntimezone = \"Mars/Olympus\"", "Mars/Olympus"),
            ("cron = \"0 2 * * *\"\nduration = \"2h\"\napi = \"\"", "api:"),
            ("cron = \"0 2 * * *\"\nduration = \"2h\"\nreason = \"  \"", "reason:"),
        ];
        for (toml, expected) in cases {
            let e = error(toml);
            assert!(e.starts_with("apis.toml: maintenance[0]: "), "{toml}: {e}");
            assert!(e.contains(expected), "{toml}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn the_entry_is_named_by_its_index() {
        let text = "[[maintenance]]\ncron = \"0 2 * * *\"\nduration = \"1h\"\n\
                    [[maintenance]]\ncron = \"0 3 * * *\"\nduration = \"1h\"\n\
                    [[maintenance]]\ncron = \"0 4 * * *\"\nduration = \"1h\"\ntimezone = \"Nowhere\"\n";
        let e = parse_maintenance(text, "apis.toml").unwrap_err();
        assert_eq!(e.key, "apis.toml: maintenance[2]");
        assert!(
            e.message
                .starts_with("timezone: unknown time zone `Nowhere`"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_in_an_entry_is_refused_with_its_line() {
        let e = parse_maintenance(
            "[[maintenance]]\ncron = \"0 2 * * *\"\nduration = \"1h\"\ntimzone = \"UTC\"\n",
            "apis.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "apis.toml:4");
        assert!(e.message.contains("timzone"), "{e}");
    }

    #[test]
    fn durations_read_back_as_people_write_them() {
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(human_duration(Duration::from_secs(86_400 + 5)), "1day 5s");
        assert_eq!(human_duration(Duration::from_millis(90_500)), "1m 30s");
        assert_eq!(human_duration(Duration::from_secs(0)), "0s");
    }
}
