//! `alerter replay`: a backtest of the alert policy. History (response
//! times in ms; an empty or negative value is a failed check) goes through
//! the detector's replay and the incident rules, in data time, and the
//! notifications that would have been sent come out as CSV:
//! `timestamp,api_name,event,kind,detail`, one row per incident in each
//! notification (`event` is `open`, `reminder` or `resolve`).
//!
//! Grouping and reminders follow the service's rules ([`crate::dispatch`])
//! in data time. Silences and maintenance windows are not applied: the
//! replay shows what the rules page.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use apimon_core::incidents::{Change, IncidentPolicy, Kind, Transition};
use chrono::{DateTime, Utc};
use detector::replay::{replay_with_incidents, Point, ReplayOptions};

use crate::dispatch::{group_due, Event};

/// Notification settings of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub incidents: IncidentPolicy,
    pub group_wait: Duration,
    /// 0: no reminders.
    pub repeat_interval: Duration,
}

/// One incident in one notification that would have been sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// When the notification goes out (data time).
    pub timestamp: DateTime<Utc>,
    pub api_name: String,
    pub event: Event,
    pub kind: Kind,
    /// Number of the notification (rows of one notification share it).
    pub notification: usize,
    /// Incidents in that notification.
    pub group_size: usize,
    /// First bad check of the incident.
    pub started_at: DateTime<Utc>,
    /// The rule and what was seen, in words.
    pub detail: String,
}

/// Replays each API's series and simulates the notifications.
pub fn replay(series: &[(String, Vec<Point>)], opts: &ReplayOptions, p: &Policy) -> Vec<Page> {
    let mut changes = Vec::new();
    for (api, points) in series {
        let (_, t) = replay_with_incidents(points, opts, Some(&p.incidents));
        changes.extend(t.into_iter().map(|t| (api.clone(), t)));
    }
    let end = series
        .iter()
        .filter_map(|(_, pts)| pts.last().map(|x| x.timestamp))
        .max();
    simulate(changes, p, end)
}

struct Pending {
    api: String,
    t: Transition,
}

/// The notifications the dispatcher sends for these incident changes, in
/// data time: openings grouped from their first sign, resolutions from
/// their decision, reminders every `repeat_interval`, until `end` (the
/// end of the data; no end: until the last change).
pub fn simulate(
    mut changes: Vec<(String, Transition)>,
    p: &Policy,
    end: Option<DateTime<Utc>>,
) -> Vec<Page> {
    let at = |t: &Transition| match t.change {
        Change::Resolved => t.incident.resolved_at.unwrap_or(t.incident.opened_at),
        _ => t.incident.opened_at,
    };
    changes.retain(|(_, t)| matches!(t.change, Change::Opened | Change::Resolved));
    changes.sort_by_key(|(_, t)| at(t));
    let repeat = chrono::Duration::from_std(p.repeat_interval).unwrap_or_default();
    let mut pages = Vec::new();
    let mut notification = 0usize;
    let mut opens: Vec<Pending> = Vec::new();
    let mut resolves: Vec<Pending> = Vec::new();
    // Notified incidents still open: last notification time.
    let mut notified: BTreeMap<(String, Kind), (DateTime<Utc>, Transition)> = BTreeMap::new();
    let mut next = changes.into_iter().peekable();
    loop {
        let open_due = group_due(opens.iter().map(|x| x.t.incident.started_at), p.group_wait);
        // A resolution waits for its opening's group.
        let held = |x: &Pending| {
            opens
                .iter()
                .any(|o| o.api == x.api && o.t.incident.kind == x.t.incident.kind)
        };
        let resolve_due = group_due(
            resolves.iter().filter(|x| !held(x)).map(|x| at(&x.t)),
            p.group_wait,
        );
        let reminder_due = (!repeat.is_zero())
            .then(|| notified.values().map(|(last, _)| *last + repeat).min())
            .flatten();
        let event_at = next.peek().map(|(_, t)| at(t));
        let Some(now) = [open_due, resolve_due, reminder_due, event_at]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        let last_change = next.peek().is_none() && opens.is_empty() && resolves.is_empty();
        if end.map_or(last_change, |e| now > e) {
            break;
        }
        while let Some((api, t)) = next.next_if(|(_, t)| at(t) <= now) {
            match t.change {
                Change::Opened => opens.push(Pending { api, t }),
                _ => resolves.push(Pending { api, t }),
            }
        }
        if group_due(opens.iter().map(|x| x.t.incident.started_at), p.group_wait)
            .is_some_and(|d| d <= now)
        {
            notification += 1;
            let n = opens.len();
            for x in opens.drain(..) {
                pages.push(page(&x, Event::Open, now, notification, n));
                notified.insert((x.api.clone(), x.t.incident.kind), (now, x.t));
            }
        }
        let waiting: Vec<(String, Kind)> = opens
            .iter()
            .map(|x| (x.api.clone(), x.t.incident.kind))
            .collect();
        let ready_due = group_due(
            resolves
                .iter()
                .filter(|x| !waiting.contains(&(x.api.clone(), x.t.incident.kind)))
                .map(|x| at(&x.t)),
            p.group_wait,
        );
        if ready_due.is_some_and(|d| d <= now) {
            let (held, ready): (Vec<Pending>, Vec<Pending>) = resolves
                .drain(..)
                .partition(|x| waiting.contains(&(x.api.clone(), x.t.incident.kind)));
            resolves = held;
            let ready: Vec<Pending> = ready
                .into_iter()
                .filter(|x| {
                    notified
                        .remove(&(x.api.clone(), x.t.incident.kind))
                        .is_some()
                })
                .collect();
            if !ready.is_empty() {
                notification += 1;
                let n = ready.len();
                for x in &ready {
                    pages.push(page(x, Event::Resolve, now, notification, n));
                }
            }
        }
        if !repeat.is_zero() {
            let due: Vec<(String, Kind)> = notified
                .iter()
                .filter(|(_, (last, _))| *last + repeat <= now)
                .map(|(k, _)| k.clone())
                .collect();
            if !due.is_empty() {
                notification += 1;
                let n = due.len();
                for k in due {
                    if let Some((last, t)) = notified.get_mut(&k) {
                        *last = now;
                        let x = Pending {
                            api: k.0.clone(),
                            t: t.clone(),
                        };
                        pages.push(page(&x, Event::Reminder, now, notification, n));
                    }
                }
            }
        }
    }
    pages
}

fn page(x: &Pending, event: Event, now: DateTime<Utc>, notification: usize, n: usize) -> Page {
    let i = &x.t.incident;
    let detail = match event {
        Event::Open => {
            let mut d = i.reason.clone();
            if let Some(l) = i.evidence.latency_summary() {
                d.push_str("; ");
                d.push_str(&l);
            }
            d
        }
        Event::Reminder => format!(
            "still open after {}: {}",
            crate::compose::duration(now.signed_duration_since(i.started_at)),
            i.reason
        ),
        Event::Resolve => {
            let end = i.recovered_at.or(i.resolved_at).unwrap_or(now);
            format!(
                "lasted {}: {} checks, {} failed{}",
                crate::compose::duration(end.signed_duration_since(i.started_at)),
                i.evidence.checks,
                i.evidence.failures,
                if i.flaps > 0 {
                    format!(", {} flaps", i.flaps)
                } else {
                    String::new()
                }
            )
        }
    };
    Page {
        timestamp: now,
        api_name: x.api.clone(),
        event,
        kind: i.kind,
        notification,
        group_size: n,
        started_at: i.started_at,
        detail: if n > 1 {
            format!("notification {notification} ({n} incidents); {detail}")
        } else {
            detail
        },
    }
}

/// Writes `timestamp,api_name,event,kind,detail`.
pub fn write_csv(out: impl Write, pages: &[Page]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["timestamp", "api_name", "event", "kind", "detail"])?;
    for p in pages {
        w.write_record([
            p.timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .as_str(),
            p.api_name.as_str(),
            p.event.as_str(),
            p.kind.as_str(),
            p.detail.as_str(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Reads response times from CSV: `time_col`, `value_col` and, when given,
/// `api_col` naming the API of each row (else every row is `default_api`).
/// An empty, non-numeric or negative value is a failed check.
pub fn read_csv(
    input: impl std::io::Read,
    time_col: &str,
    value_col: &str,
    api_col: Option<&str>,
    default_api: &str,
) -> Result<Vec<(String, Vec<Point>)>, detector::replay::CsvError> {
    use detector::replay::CsvError;
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = rdr.headers()?.clone();
    let find = |c: &str| {
        headers
            .iter()
            .position(|h| h == c)
            .ok_or_else(|| CsvError::MissingColumn(c.to_string()))
    };
    let (ti, vi) = (find(time_col)?, find(value_col)?);
    let ai = api_col.map(find).transpose()?;
    let mut by_api: HashMap<String, Vec<Point>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec?;
        let raw_t = rec.get(ti).unwrap_or("");
        let timestamp =
            detector::replay::parse_timestamp(raw_t).ok_or_else(|| CsvError::Timestamp {
                row: i + 2,
                value: raw_t.to_string(),
            })?;
        let value = rec
            .get(vi)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0);
        let api = ai
            .and_then(|a| rec.get(a))
            .filter(|a| !a.is_empty())
            .unwrap_or(default_api)
            .to_string();
        if !by_api.contains_key(&api) {
            order.push(api.clone());
        }
        by_api.entry(api).or_default().push(Point {
            timestamp,
            value,
            success: value.is_some(),
        });
    }
    Ok(order
        .into_iter()
        .map(|a| {
            let mut pts = by_api.remove(&a).unwrap_or_default();
            pts.sort_by_key(|p| p.timestamp);
            (a, pts)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use apimon_core::incidents::{Evidence, Incident, State};
    use apimon_core::model::Severity;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn change(
        change: Change,
        kind: Kind,
        started: i64,
        opened: i64,
        resolved: Option<i64>,
    ) -> Transition {
        Transition {
            change,
            incident: Incident {
                kind,
                state: if resolved.is_some() {
                    State::Resolved
                } else {
                    State::Open
                },
                started_at: t(started),
                opened_at: t(opened),
                recovered_at: resolved.map(|r| t(r - 300)),
                resolved_at: resolved.map(t),
                severity: Severity::Critical,
                reason: "2 consecutive failed checks".into(),
                evidence: Evidence::default(),
                flaps: 0,
            },
        }
    }

    fn policy(repeat: u64) -> Policy {
        Policy {
            incidents: IncidentPolicy::default(),
            group_wait: Duration::from_secs(30),
            repeat_interval: Duration::from_secs(repeat),
        }
    }

    #[test]
    fn fifty_apis_failing_together_are_one_opening_and_one_resolution() {
        let mut changes = Vec::new();
        for i in 0..50 {
            let phase = i % 15;
            changes.push((
                format!("api{i}"),
                change(Change::Opened, Kind::Down, 100 + phase, 115 + phase, None),
            ));
            changes.push((
                format!("api{i}"),
                change(
                    Change::Resolved,
                    Kind::Down,
                    100 + phase,
                    115 + phase,
                    Some(900 + phase),
                ),
            ));
        }
        let pages = simulate(changes, &policy(0), None);
        let opens: Vec<&Page> = pages.iter().filter(|p| p.event == Event::Open).collect();
        let resolves: Vec<&Page> = pages.iter().filter(|p| p.event == Event::Resolve).collect();
        assert_eq!((opens.len(), resolves.len()), (50, 50));
        assert!(opens
            .iter()
            .all(|p| p.notification == 1 && p.group_size == 50));
        assert!(
            opens.iter().all(|p| p.timestamp == t(130)),
            "30 s after the first failure"
        );
        assert!(resolves
            .iter()
            .all(|p| p.notification == 2 && p.group_size == 50));
    }

    #[test]
    fn reminders_repeat_while_open_and_stop_at_the_resolution() {
        let changes = vec![
            (
                "a".to_string(),
                change(Change::Opened, Kind::Slow, 0, 60, None),
            ),
            (
                "a".to_string(),
                change(Change::Resolved, Kind::Slow, 0, 60, Some(10 * 3600)),
            ),
        ];
        let pages = simulate(changes.clone(), &policy(4 * 3600), Some(t(11 * 3600)));
        let events: Vec<(&str, i64)> = pages
            .iter()
            .map(|p| (p.event.as_str(), (p.timestamp - t(0)).num_seconds()))
            .collect();
        assert_eq!(
            events,
            [
                ("open", 60),
                ("reminder", 60 + 4 * 3600),
                ("reminder", 60 + 8 * 3600),
                ("resolve", 10 * 3600 + 30)
            ]
        );
        let pages = simulate(changes, &policy(0), None);
        assert_eq!(pages.len(), 2, "0 turns reminders off");
    }

    #[test]
    fn csv_rows_are_split_by_api_and_negative_values_are_failures() {
        let csv = "timestamp,api,ms\n2026-12-01 00:00:00,a,10\n2026-12-01 00:00:00,b,-1\n2026-12-01 00:00:15,a,\n";
        let s = read_csv(csv.as_bytes(), "timestamp", "ms", Some("api"), "x").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "a");
        assert!(s[0].1[0].success && !s[0].1[1].success);
        assert!(!s[1].1[0].success);
        let mut out = Vec::new();
        write_csv(&mut out, &[]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "timestamp,api_name,event,kind,detail\n"
        );
    }
}
