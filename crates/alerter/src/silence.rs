//! Silences and maintenance windows, the alerter's side: the [`Silencer`]
//! the dispatcher asks whether an incident's notification is held back
//! (and why), and the pieces of the `alerter silence` commands (argument
//! parsing, the table `silence list` prints).

use std::time::Duration;

use apimon_core::config::parse_duration;
use apimon_core::db::silences::Silence;
use apimon_core::glob::Glob;
use apimon_core::maintenance::MaintenanceWindow;
use chrono::{DateTime, Utc};

use crate::config::AlerterConfig;

/// Longest reason accepted by `silence add`, and shown in a reason.
pub const MAX_REASON: usize = 500;
/// Longest name accepted by `silence add --by`.
pub const MAX_BY: usize = 100;

/// Decides whether an incident is silenced: by an active silence, else by
/// a maintenance window of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Silencer {
    /// The `[[maintenance]]` windows of the endpoints file, in file order.
    windows: Vec<MaintenanceWindow>,
}

impl Silencer {
    pub fn new(windows: Vec<MaintenanceWindow>) -> Silencer {
        Silencer { windows }
    }

    pub fn from_config(cfg: &AlerterConfig) -> Silencer {
        Silencer::new(cfg.maintenance.clone())
    }

    pub fn windows(&self) -> &[MaintenanceWindow] {
        &self.windows
    }

    /// Why notifications about `api` are held back at `at`, or `None` when
    /// they are not. `active` are the silences to consider (as
    /// `db::silences::active_at` gives them; each is checked again against
    /// `api` and `at`). A silence wins over a maintenance window; among
    /// silences, the one that ends last.
    ///
    /// The answer is one short line of plain text, such as
    /// `silence #4 by alice until 14:00 UTC: deploy` or
    /// `maintenance window "weekly DB maintenance" until 04:00 UTC`.
    pub fn why_silenced(&self, api: &str, at: DateTime<Utc>, active: &[Silence]) -> Option<String> {
        let silence = active
            .iter()
            .filter(|s| s.covers(api, at))
            .max_by(|a, b| a.ends_at.cmp(&b.ends_at).then(b.id.cmp(&a.id)));
        if let Some(s) = silence {
            return Some(format!(
                "silence #{} by {} until {}: {}",
                s.id,
                one_line(&s.created_by, MAX_BY),
                time_after(s.ends_at, at),
                one_line(&s.reason, MAX_REASON)
            ));
        }
        self.windows.iter().find_map(|w| {
            let end = w.end_if_covering(api, at)?;
            Some(format!(
                "maintenance window \"{}\" until {}",
                one_line(&w.name(), MAX_REASON),
                time_after(end, at)
            ))
        })
    }
}

/// `14:00 UTC` when `t` falls on the day of `now`, else
/// `2026-12-02 14:00 UTC`.
fn time_after(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M UTC").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M UTC").to_string()
    }
}

/// `2026-12-01 14:00 UTC`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Text from outside on one line: control characters become spaces, and
/// it is cut at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > max {
        let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        clean
    }
}

/// `--api`: an API name or glob.
pub fn parse_pattern(text: &str) -> Result<Glob, String> {
    Glob::new(text)
}

/// `--for`: a duration above zero (`30m`, `2h`, `1d`).
pub fn parse_for(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "expected a duration of at least 1s such as 30m, 2h or 1d, got `{text}`"
        ));
    }
    Ok(d)
}

/// `--reason`: one line of text, not empty.
pub fn parse_reason(text: &str) -> Result<String, String> {
    one_line_arg(text, MAX_REASON, "a reason such as \"deploy of v2.3\"")
}

/// `--by`: a name, one line, not empty.
pub fn parse_by(text: &str) -> Result<String, String> {
    one_line_arg(text, MAX_BY, "a name")
}

fn one_line_arg(text: &str, max: usize, what: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("expected {what}, got nothing"));
    }
    if t.chars().any(char::is_control) {
        return Err(format!("expected {what} on one line"));
    }
    if t.chars().count() > max {
        return Err(format!("expected {what} of at most {max} characters"));
    }
    Ok(t.to_string())
}

/// `--start`: an RFC 3339 time such as `2026-12-01T22:00:00+01:00`.
pub fn parse_start(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("expected an RFC 3339 time such as 2026-12-01T22:00:00Z, got `{text}` ({e})")
        })
}

/// Who sets a silence when `--by` is not given: `$USER`, else `$LOGNAME`,
/// else `unknown`.
pub fn default_by(user: Option<&str>, logname: Option<&str>) -> String {
    [user, logname]
        .into_iter()
        .flatten()
        .find_map(|n| parse_by(n).ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The table `alerter silence list` prints: one row per silence, its state
/// at `now`.
pub fn table(silences: &[Silence], now: DateTime<Utc>) -> String {
    let header = ["ID", "PATTERN", "FROM", "UNTIL", "BY", "STATE", "REASON"];
    let rows: Vec<[String; 7]> = silences
        .iter()
        .map(|s| {
            [
                format!("#{}", s.id),
                one_line(&s.api_pattern, 200),
                timestamp(s.starts_at),
                timestamp(s.ends_at),
                one_line(&s.created_by, MAX_BY),
                s.state_at(now).as_str().to_string(),
                one_line(&s.reason, MAX_REASON),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimon_core::apis::parse_maintenance;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, h, m, 0).unwrap()
    }

    fn silence(id: i64, pattern: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Silence {
        Silence {
            id,
            api_pattern: pattern.into(),
            starts_at: from,
            ends_at: to,
            created_by: "alice".into(),
            reason: "deploy".into(),
            created_at: from,
            expired_at: None,
        }
    }

    fn windows(toml: &str) -> Vec<MaintenanceWindow> {
        parse_maintenance(toml, "apis.toml").unwrap()
    }

    #[test]
    fn an_active_matching_silence_is_the_reason() {
        let s = Silencer::default();
        let active = [silence(4, "Billing*", t(12, 0), t(14, 0))];
        assert_eq!(
            s.why_silenced("Billing EU", t(13, 0), &active).as_deref(),
            Some("silence #4 by alice until 14:00 UTC: deploy")
        );
        assert_eq!(s.why_silenced("Payments", t(13, 0), &active), None);
        assert_eq!(s.why_silenced("Billing", t(14, 0), &active), None, "ended");
        assert_eq!(
            s.why_silenced("Billing", t(11, 59), &active),
            None,
            "not yet"
        );
    }

    #[test]
    fn an_expired_silence_is_no_reason() {
        let mut s = silence(4, "*", t(12, 0), t(14, 0));
        s.expired_at = Some(t(12, 30));
        assert_eq!(Silencer::default().why_silenced("a", t(13, 0), &[s]), None);
    }

    #[test]
    fn the_silence_ending_last_is_named_and_a_later_day_shows_its_date() {
        let active = [
            silence(1, "*", t(10, 0), t(15, 0)),
            silence(2, "a*", t(10, 0), t(0, 0) + chrono::Duration::days(1)),
            silence(3, "b*", t(10, 0), t(23, 0) + chrono::Duration::days(1)),
        ];
        assert_eq!(
            Silencer::default()
                .why_silenced("api", t(13, 0), &active)
                .as_deref(),
            Some("silence #2 by alice until 2026-12-07 00:00 UTC: deploy")
        );
    }

    #[test]
    fn a_maintenance_window_is_the_reason_when_no_silence_is() {
        let s = Silencer::new(windows(
            "[[maintenance]]\napi = \"Billing*\"\ncron = \"0 2 * * SUN\"\nduration = \"2h\"\n\
             reason = \"weekly DB maintenance\"\n\
             [[maintenance]]\nweekdays = [\"sun\"]\nstart = \"22:00\"\nduration = \"4h\"\n",
        ));
        assert_eq!(
            s.why_silenced("Billing", t(3, 0), &[]).as_deref(),
            Some("maintenance window \"weekly DB maintenance\" until 04:00 UTC")
        );
        assert_eq!(s.why_silenced("Payments", t(3, 0), &[]), None);
        assert_eq!(
            s.why_silenced("Payments", t(23, 0), &[]).as_deref(),
            Some("maintenance window \"sun at 22:00 for 4h\" until 2026-12-07 02:00 UTC")
        );
        let active = [silence(9, "Billing", t(2, 0), t(5, 0))];
        assert!(s
            .why_silenced("Billing", t(3, 0), &active)
            .unwrap()
            .starts_with("silence #9 "));
    }

    #[test]
    fn text_from_outside_stays_on_one_short_line() {
        let mut s = silence(1, "*", t(10, 0), t(15, 0));
        s.reason = format!("line one\nline two{}", "x".repeat(1000));
        let why = Silencer::default()
            .why_silenced("a", t(11, 0), &[s])
            .unwrap();
        assert!(!why.contains('\n'), "{why}");
        assert!(why.chars().count() < MAX_REASON + 100, "{why}");
        assert!(why.ends_with('…'));
    }

    #[test]
    fn arguments_are_checked_with_a_message() {
        assert_eq!(parse_for("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_for("0s").unwrap_err().contains("at least 1s"));
        assert!(parse_for("soon").unwrap_err().contains("duration"));
        assert_eq!(parse_reason("  deploy ").unwrap(), "deploy");
        assert!(parse_reason("   ").is_err());
        assert!(parse_reason("a\nb").is_err());
        assert!(parse_reason(&"x".repeat(MAX_REASON + 1)).is_err());
        assert!(parse_pattern("").is_err());
        assert_eq!(parse_pattern("Billing*").unwrap().as_str(), "Billing*");
        assert_eq!(parse_start("2026-12-06T13:00:00+01:00").unwrap(), t(12, 0));
        assert!(parse_start("tomorrow").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn the_author_defaults_to_user_then_logname_then_unknown() {
        assert_eq!(default_by(Some("alice"), Some("bob")), "alice");
        assert_eq!(default_by(None, Some("bob")), "bob");
        assert_eq!(default_by(Some(" "), Some("bob")), "bob");
        assert_eq!(default_by(None, None), "unknown");
    }

    #[test]
    fn the_table_aligns_columns_and_shows_each_state() {
        let mut expired = silence(2, "Billing*", t(9, 0), t(10, 30));
        expired.expired_at = Some(t(10, 30));
        let rows = [
            silence(1, "*", t(8, 0), t(9, 0)),
            expired,
            silence(3, "GitHub", t(11, 0), t(13, 0)),
            silence(14, "Pay?", t(13, 0), t(14, 0)),
        ];
        let out = table(&rows, t(12, 0));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[0].starts_with("ID   PATTERN   FROM"), "{out}");
        assert!(
            lines[3].starts_with(
                "#3   GitHub    2026-12-06 11:00 UTC  2026-12-06 13:00 UTC  alice  active"
            ),
            "{out}"
        );
        let states: Vec<&str> = lines[1..]
            .iter()
            .map(|l| {
                l.split("  ")
                    .filter(|c| !c.is_empty())
                    .nth(5)
                    .unwrap()
                    .trim()
            })
            .collect();
        assert_eq!(states, ["ended", "expired", "active", "scheduled"], "{out}");
        // The reason column starts at the same place on every line.
        let at = lines[0].find("REASON").unwrap();
        assert!(lines[1..].iter().all(|l| &l[at..] == "deploy"), "{out}");
    }
}
