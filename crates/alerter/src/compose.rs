//! What the messages say: subject, plain text, HTML and a JSON payload for
//! each kind of notification. Pure functions. Every value that comes from
//! the database or from a remote server is escaped in the HTML.

use chrono::{DateTime, Utc};
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
use serde_json::json;

use crate::dispatch::{Event, Item, Notice};
use apimon_core::incidents::Kind;

/// A rendered notification, before it is queued per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `alert`, `down`, `recovered`, `report`, `test`.
    pub kind: &'static str,
    pub api_name: Option<String>,
    /// The event's identity: queued once per channel.
    pub dedup_key: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// For webhooks.
    pub payload: serde_json::Value,
}

/// An API's usual response times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub mean_ms: f64,
    pub p95_ms: f64,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Link to the dashboard, filtered on one API when given.
pub fn dashboard_link(base: &str, api: Option<&str>) -> String {
    let mut url = format!("{base}/d/apimon/api-monitoring");
    if let Some(api) = api {
        let encoded: String = url::form_urlencoded::byte_serialize(api.as_bytes()).collect();
        url.push_str("?var-api=");
        url.push_str(&encoded);
    }
    url
}

fn html_page(title: &str, body: &str, link: &str) -> String {
    format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\
         <h2>{}</h2>{body}<p><a href=\"{}\">Open the dashboard</a></p>\
         <p style=\"color:#888;font-size:small\">Sent by apimon</p></body></html>",
        text(title),
        attr(link)
    )
}

fn table(rows: &[(&str, String)]) -> String {
    let mut s = String::from("<table cellpadding=\"4\" style=\"border-collapse:collapse\">");
    for (k, v) in rows {
        s.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            text(k),
            text(v)
        ));
    }
    s.push_str("</table>");
    s
}

/// A duration in words: `45s`, `4m 30s`, `2h 5m`, `3d 4h`.
pub fn duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

/// What one incident's part of a notification says, as `Key: value` rows.
fn incident_rows(event: Event, i: &Item, now: DateTime<Utc>) -> Vec<(&'static str, String)> {
    let e = &i.evidence;
    let first = match i.kind {
        Kind::Down => "first failed check",
        Kind::Slow => "first slow check",
        Kind::Certificate => "first check within the warning",
    };
    let mut rows = vec![
        ("API", i.api_name.clone()),
        (
            "Incident",
            format!("{} ({}), #{}", i.kind, i.severity, i.incident_id),
        ),
        ("Since", format!("{} ({first})", when(i.started_at))),
        ("Why", i.reason.clone()),
    ];
    if let Some(latency) = e.latency_summary() {
        rows.push(("Latency", latency));
    }
    if let Some(expires) = e.tls_expires_at {
        rows.push(("Certificate expires", when(expires)));
    }
    let mut seen = format!("{} checks, {} failed", e.checks, e.failures);
    let anomalies = e.anomalies_critical + e.anomalies_high + e.anomalies_medium;
    if anomalies > 0 {
        seen.push_str(&format!(
            "; {anomalies} anomalies ({} critical, {} high, {} medium)",
            e.anomalies_critical, e.anomalies_high, e.anomalies_medium
        ));
    }
    if let Some(max) = e.max_ms {
        seen.push_str(&format!("; slowest check {}", ms(max)));
    }
    rows.push(("Seen", seen));
    if let Some(err) = &e.last_error {
        rows.push(("Last error", err.clone()));
    }
    match event {
        Event::Open => {}
        Event::Reminder => rows.push((
            "Open for",
            duration(now.signed_duration_since(i.started_at)),
        )),
        Event::Resolve if i.retired => {
            let end = i.resolved_at.unwrap_or(now);
            rows.push((
                "Ended",
                format!(
                    "{} (the endpoint was removed from the configuration at {}; \
                     it is no longer checked)",
                    duration(end.signed_duration_since(i.started_at)),
                    when(end)
                ),
            ));
        }
        Event::Resolve => {
            let end = i.recovered_at.or(i.resolved_at).unwrap_or(now);
            rows.push((
                "Lasted",
                format!(
                    "{} (recovered at {})",
                    duration(end.signed_duration_since(i.started_at)),
                    when(end)
                ),
            ));
        }
    }
    if i.flaps > 0 {
        rows.push((
            "Flapped",
            format!(
                "re-opened {} time{} within the flap window",
                i.flaps,
                if i.flaps == 1 { "" } else { "s" }
            ),
        ));
    }
    rows
}

fn short(i: &Item) -> String {
    format!("{} {}", i.api_name, i.kind)
}

fn listing(items: &[Item]) -> String {
    let mut names: Vec<String> = items.iter().take(3).map(short).collect();
    if items.len() > 3 {
        names.push(format!("{} more", items.len() - 3));
    }
    names.join(", ")
}

/// The subject of a notification.
pub fn notice_subject(n: &Notice) -> String {
    let now = n.at;
    match (n.event, n.items.as_slice()) {
        (_, []) => "[apimon] (no incidents)".to_string(),
        (Event::Open, [i]) => match i.kind {
            Kind::Down => format!("[apimon] DOWN: {} ({})", i.api_name, i.reason),
            Kind::Certificate => format!(
                "[apimon] CERTIFICATE{}: {} ({})",
                if i.severity == "critical" {
                    " CRITICAL"
                } else {
                    ""
                },
                i.api_name,
                i.reason
            ),
            Kind::Slow => format!(
                "[apimon] SLOW: {}{}",
                i.api_name,
                i.evidence
                    .median_ms
                    .zip(i.evidence.baseline_ms)
                    .map(|(m, b)| format!(
                        " ({}, {:.1}x its baseline {})",
                        ms(m),
                        m / b.max(0.01),
                        ms(b)
                    ))
                    .unwrap_or_default()
            ),
        },
        (Event::Reminder, [i]) => format!(
            "[apimon] Still {}: {} (for {})",
            i.kind,
            i.api_name,
            duration(now.signed_duration_since(i.started_at))
        ),
        (Event::Resolve, [i]) if i.retired => format!(
            "[apimon] RESOLVED: {} {} (endpoint removed from the configuration)",
            i.api_name, i.kind
        ),
        (Event::Resolve, [i]) => format!(
            "[apimon] RESOLVED: {} {} after {}",
            i.api_name,
            i.kind,
            duration(
                i.recovered_at
                    .or(i.resolved_at)
                    .unwrap_or(now)
                    .signed_duration_since(i.started_at)
            )
        ),
        (Event::Open, items) => format!(
            "[apimon] {} incidents opened: {}",
            items.len(),
            listing(items)
        ),
        (Event::Reminder, items) => format!(
            "[apimon] {} incidents still open: {}",
            items.len(),
            listing(items)
        ),
        (Event::Resolve, items) => format!(
            "[apimon] {} incidents resolved: {}",
            items.len(),
            listing(items)
        ),
    }
}

/// Renders a notification about one or more incidents.
pub fn notice(n: &Notice, dashboard: &str) -> Message {
    let single = (n.items.len() == 1).then(|| n.items[0].api_name.as_str());
    let link = dashboard_link(dashboard, single);
    let subject = notice_subject(n);
    let intro = match n.event {
        Event::Open => "Opened",
        Event::Reminder => "Still open",
        Event::Resolve => "Resolved",
    };
    let mut t = String::new();
    let mut h = String::new();
    for (k, i) in n.items.iter().enumerate() {
        let rows = incident_rows(n.event, i, n.at);
        if n.items.len() > 1 {
            t.push_str(&format!("{intro} ({} of {}):\n", k + 1, n.items.len()));
        }
        for (key, v) in &rows {
            t.push_str(&format!("{key}: {v}\n"));
        }
        t.push('\n');
        h.push_str(&table(&rows));
        h.push_str("<hr>");
    }
    t.push_str(&format!("Dashboard: {link}\n"));
    let kind = match n.event {
        Event::Open => "incident_open",
        Event::Reminder => "incident_reminder",
        Event::Resolve => "incident_resolve",
    };
    Message {
        kind,
        api_name: single.map(str::to_string),
        dedup_key: n.key.clone(),
        subject: subject.clone(),
        text: t,
        html: html_page(&subject, &h, &link),
        payload: json!({
            "kind": kind,
            "event": n.event.as_str(),
            "incidents": n.items.iter().map(|i| json!({
                "id": i.incident_id,
                "api": i.api_name,
                "kind": i.kind.as_str(),
                "severity": i.severity,
                "started_at": i.started_at,
                "opened_at": i.opened_at,
                "recovered_at": i.recovered_at,
                "resolved_at": i.resolved_at,
                "reason": i.reason,
                "evidence": i.evidence,
                "flaps": i.flaps,
                "resolution": i.retired.then_some("retired"),
            })).collect::<Vec<_>>(),
            "dashboard": link,
        }),
    }
}

/// One API's line in a status report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub api_name: String,
    pub checks: i64,
    pub successes: i64,
    pub mean_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub baseline: Option<Baseline>,
    pub critical: i64,
    pub high: i64,
    pub medium: i64,
    pub status: Status,
    /// Why the status reads as it does, when the figures alone could
    /// mislead (anomalies on a healthy API, data that did not arrive).
    pub note: Option<String>,
}

/// How an API did over a report's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Down,
    Slow,
    /// The period's checks had not all arrived when the report was due.
    Missing,
    NoData,
    Healthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Down => "down",
            Status::Slow => "slow",
            Status::Missing => "data missing",
            Status::NoData => "no data",
            Status::Healthy => "healthy",
        }
    }
}

/// A status report over `[start, end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub rows: Vec<ReportRow>,
    /// Incidents open at the end of the period, and those opened or
    /// resolved in it.
    pub incidents: Vec<Item>,
    /// Certificates that expire within `TLS_EXPIRY_WARN_DAYS` of the
    /// period's end, as its latest checks saw them: (API, notAfter),
    /// soonest first.
    pub certificates: Vec<(String, DateTime<Utc>)>,
}

impl Report {
    pub fn count(&self, s: Status) -> usize {
        self.rows.iter().filter(|r| r.status == s).count()
    }

    pub fn all_healthy(&self) -> bool {
        self.rows.iter().all(|r| r.status == Status::Healthy)
    }

    pub fn subject(&self) -> String {
        if self.all_healthy() {
            return format!("[apimon] Status: all {} APIs healthy", self.rows.len());
        }
        let mut parts = Vec::new();
        for s in [
            Status::Down,
            Status::Slow,
            Status::Missing,
            Status::NoData,
            Status::Healthy,
        ] {
            let n = self.count(s);
            if n > 0 {
                parts.push(format!("{n} {}", s.as_str()));
            }
        }
        format!("[apimon] Status: {}", parts.join(", "))
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(ms).unwrap_or_else(|| "-".into())
}

/// The report's incident lines: open ones, then the period's others.
fn incident_lines(r: &Report) -> (Vec<String>, Vec<String>) {
    let mut open = Vec::new();
    let mut closed = Vec::new();
    for i in &r.incidents {
        match i.resolved_at.filter(|t| *t <= r.end) {
            None => open.push(format!(
                "{} {} ({}) since {}, open for {}: {}",
                i.api_name,
                i.kind,
                i.severity,
                when(i.started_at),
                duration(r.end.signed_duration_since(i.started_at)),
                i.reason
            )),
            Some(resolved) => {
                let end = i.recovered_at.unwrap_or(resolved);
                closed.push(format!(
                    "{} {} ({}) from {} to {}, lasted {}: {}",
                    i.api_name,
                    i.kind,
                    i.severity,
                    when(i.started_at),
                    when(end),
                    duration(end.signed_duration_since(i.started_at)),
                    i.reason
                ))
            }
        }
    }
    (open, closed)
}

/// Renders a status report.
pub fn report(r: &Report, dashboard: &str) -> Message {
    let link = dashboard_link(dashboard, None);
    let subject = r.subject();
    let names = |s: Status| -> Vec<&str> {
        r.rows
            .iter()
            .filter(|x| x.status == s)
            .map(|x| x.api_name.as_str())
            .collect()
    };
    let (slow, down) = (names(Status::Slow), names(Status::Down));
    // Open incidents first, then the period's, then slow/down and the table.
    let (open, closed) = incident_lines(r);
    let mut t_inc = String::new();
    let mut h_inc = String::new();
    for (title, lines) in [
        ("Open incidents", &open),
        ("Incidents of the period", &closed),
    ] {
        let none = if lines.is_empty() { " none" } else { "" };
        t_inc.push_str(&format!("{title}:{none}\n"));
        h_inc.push_str(&format!("<p><b>{}:</b>{none}</p>", text(title)));
        if !lines.is_empty() {
            h_inc.push_str("<ul>");
            for l in lines {
                t_inc.push_str(&format!("- {l}\n"));
                h_inc.push_str(&format!("<li>{}</li>", text(l)));
            }
            h_inc.push_str("</ul>");
        }
    }
    if !r.certificates.is_empty() {
        let title = "Certificates expiring soon";
        t_inc.push_str(&format!("{title}:\n"));
        h_inc.push_str(&format!("<p><b>{}:</b></p><ul>", text(title)));
        for (api, expires) in &r.certificates {
            let left = expires.signed_duration_since(r.end);
            let line = if left <= chrono::Duration::zero() {
                format!("{api}: expired at {}", when(*expires))
            } else {
                format!(
                    "{api}: expires at {} (in {})",
                    when(*expires),
                    duration(left)
                )
            };
            t_inc.push_str(&format!("- {line}\n"));
            h_inc.push_str(&format!("<li>{}</li>", text(&line)));
        }
        h_inc.push_str("</ul>");
    }
    t_inc.push('\n');
    let mut t = format!("Period: {} to {}\n\n{t_inc}", when(r.start), when(r.end));
    t.push_str(&format!(
        "Slow: {}\nDown: {}\n\n",
        if slow.is_empty() {
            "none".to_string()
        } else {
            slow.join(", ")
        },
        if down.is_empty() {
            "none".to_string()
        } else {
            down.join(", ")
        }
    ));
    let mut h = format!(
        "<p>Period: {} to {}</p>{h_inc}<p><b>Slow:</b> {}<br><b>Down:</b> {}</p>",
        text(&when(r.start)),
        text(&when(r.end)),
        text(&if slow.is_empty() {
            "none".to_string()
        } else {
            slow.join(", ")
        }),
        text(&if down.is_empty() {
            "none".to_string()
        } else {
            down.join(", ")
        }),
    );
    let header = [
        "API",
        "status",
        "checks",
        "success",
        "mean",
        "p95",
        "baseline p95",
        "critical",
        "high",
        "medium",
        "note",
    ];
    t.push_str(&header.join(" | "));
    t.push('\n');
    h.push_str("<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr>");
    for c in header {
        h.push_str(&format!("<th>{}</th>", text(c)));
    }
    h.push_str("</tr>");
    for row in &r.rows {
        let rate = if row.checks > 0 {
            format!("{:.1}%", 100.0 * row.successes as f64 / row.checks as f64)
        } else {
            "-".into()
        };
        let cells = [
            row.api_name.clone(),
            row.status.as_str().to_string(),
            row.checks.to_string(),
            rate,
            opt_ms(row.mean_ms),
            opt_ms(row.p95_ms),
            opt_ms(row.baseline.map(|b| b.p95_ms)),
            row.critical.to_string(),
            row.high.to_string(),
            row.medium.to_string(),
            row.note.clone().unwrap_or_default(),
        ];
        t.push_str(&cells.join(" | "));
        t.push('\n');
        let color = match row.status {
            Status::Down => "#fdd",
            Status::Slow => "#ffd",
            Status::Missing | Status::NoData => "#eee",
            Status::Healthy => "#fff",
        };
        h.push_str(&format!("<tr style=\"background:{color}\">"));
        for c in cells {
            h.push_str(&format!("<td>{}</td>", text(&c)));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    t.push_str(&format!("\nDashboard: {link}\n"));
    Message {
        kind: "report",
        api_name: None,
        dedup_key: format!("report:{}", r.end.timestamp()),
        subject: subject.clone(),
        text: t,
        html: html_page(&subject, &h, &link),
        payload: json!({
            "kind": "report",
            "start": r.start,
            "end": r.end,
            "slow": slow,
            "down": down,
            "apis": r.rows.iter().map(|x| json!({
                "api": x.api_name, "status": x.status.as_str(), "checks": x.checks,
                "successes": x.successes, "mean_ms": x.mean_ms, "p95_ms": x.p95_ms,
                "baseline_p95_ms": x.baseline.map(|b| b.p95_ms),
                "critical": x.critical, "high": x.high, "medium": x.medium,
                "note": x.note,
            })).collect::<Vec<_>>(),
            "incidents": r.incidents.iter().map(|i| json!({
                "id": i.incident_id, "api": i.api_name, "kind": i.kind.as_str(),
                "severity": i.severity, "started_at": i.started_at,
                "recovered_at": i.recovered_at, "resolved_at": i.resolved_at,
                "reason": i.reason,
            })).collect::<Vec<_>>(),
            "certificates": r.certificates.iter().map(|(api, expires)| json!({
                "api": api,
                "expires_at": expires,
                "days_left": expires.signed_duration_since(r.end).num_minutes() as f64 / 1440.0,
            })).collect::<Vec<_>>(),
            "dashboard": link,
        }),
    }
}

/// The message of `alerter test-email`.
pub fn test_message(dashboard: &str) -> Message {
    let link = dashboard_link(dashboard, None);
    let subject = "[apimon] Test message".to_string();
    let body = "If you can read this, apimon can send you alerts.";
    Message {
        kind: "test",
        api_name: None,
        dedup_key: format!("test:{}", Utc::now().timestamp_micros()),
        subject: subject.clone(),
        text: format!("{body}\nDashboard: {link}\n"),
        html: html_page(&subject, &format!("<p>{}</p>", text(body)), &link),
        payload: json!({"kind": "test", "text": body}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn item(api: &str, kind: Kind) -> Item {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        Item {
            incident_id: 7,
            api_name: api.into(),
            kind,
            severity: "critical".into(),
            started_at: t,
            opened_at: t + chrono::Duration::seconds(15),
            recovered_at: Some(t + chrono::Duration::seconds(285)),
            resolved_at: Some(t + chrono::Duration::seconds(585)),
            reason: "median of the last 8 checks 660 ms, 3.0x the baseline 220 ms".into(),
            evidence: apimon_core::incidents::Evidence {
                checks: 19,
                failures: 2,
                anomalies_critical: 3,
                baseline_ms: Some(220.0),
                baseline_p95_ms: Some(300.0),
                median_ms: Some(660.0),
                peak_median_ms: Some(700.0),
                max_ms: Some(900.0),
                last_error: Some("<b>boom</b>".into()),
                ..Default::default()
            },
            flaps: 1,
            retired: false,
        }
    }

    fn notice_of(event: Event, items: Vec<Item>) -> Notice {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 14, 0, 0).unwrap();
        Notice {
            event,
            items,
            key: "k".into(),
            at,
        }
    }

    #[test]
    fn an_opening_says_what_since_when_why_and_against_which_baseline() {
        let m = notice(
            &notice_of(Event::Open, vec![item("Git<Hub>", Kind::Slow)]),
            "http://grafana:3000",
        );
        assert_eq!(
            m.subject,
            "[apimon] SLOW: Git<Hub> (660 ms, 3.0x its baseline 220 ms)"
        );
        for needle in [
            "Since: 2026-11-25 10:00:00 UTC (first slow check)",
            "Why: median of the last 8 checks 660 ms",
            "healthy baseline of 220 ms",
            "19 checks, 2 failed; 3 anomalies (3 critical, 0 high, 0 medium); slowest check 900 ms",
            "http://grafana:3000/d/apimon/api-monitoring?var-api=Git%3CHub%3E",
        ] {
            assert!(m.text.contains(needle), "{needle} in {}", m.text);
        }
        assert_eq!(m.payload["incidents"][0]["kind"], "slow");
    }

    #[test]
    fn a_resolution_says_how_long_it_lasted_and_a_group_lists_every_incident() {
        let m = notice(
            &notice_of(Event::Resolve, vec![item("a", Kind::Down)]),
            "http://g",
        );
        assert_eq!(m.subject, "[apimon] RESOLVED: a down after 4m 45s");
        assert!(
            m.text
                .contains("Lasted: 4m 45s (recovered at 2026-11-25 10:04:45 UTC)"),
            "{}",
            m.text
        );
        assert!(
            m.text.contains("re-opened 1 time within the flap window"),
            "{}",
            m.text
        );
        let items: Vec<Item> = (0..50)
            .map(|i| item(&format!("api{i}"), Kind::Down))
            .collect();
        let m = notice(&notice_of(Event::Open, items), "http://g");
        assert_eq!(
            m.subject,
            "[apimon] 50 incidents opened: api0 down, api1 down, api2 down, 47 more"
        );
        assert!(m.text.contains("Opened (50 of 50):"), "{}", m.text);
        assert_eq!(m.payload["incidents"].as_array().unwrap().len(), 50);
        let m = notice(
            &notice_of(Event::Reminder, vec![item("a", Kind::Down)]),
            "http://g",
        );
        assert_eq!(m.subject, "[apimon] Still down: a (for 4h 0m)");
    }

    #[test]
    fn the_end_of_an_incident_whose_endpoint_was_removed_says_so_not_recovered() {
        let mut i = item("a", Kind::Down);
        i.recovered_at = None;
        i.retired = true;
        let m = notice(&notice_of(Event::Resolve, vec![i]), "http://g");
        assert_eq!(
            m.subject,
            "[apimon] RESOLVED: a down (endpoint removed from the configuration)"
        );
        assert!(
            m.text.contains(
                "Ended: 9m 45s (the endpoint was removed from the configuration at \
                 2026-11-25 10:09:45 UTC; it is no longer checked)"
            ),
            "{}",
            m.text
        );
        assert!(!m.text.contains("recovered"), "{}", m.text);
        assert_eq!(m.payload["incidents"][0]["resolution"], "retired");
    }

    #[test]
    fn hostile_values_are_escaped_in_the_html() {
        let m = notice(
            &notice_of(Event::Open, vec![item("<img src=x onerror=1>", Kind::Down)]),
            "http://g",
        );
        assert!(
            !m.html.contains("<img") && !m.html.contains("<b>boom"),
            "{}",
            m.html
        );
        assert!(m.html.contains("&lt;b&gt;boom"), "{}", m.html);
    }

    #[test]
    fn report_subject_counts_statuses_or_says_all_healthy() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        let row = |name: &str, status| ReportRow {
            api_name: name.into(),
            checks: 20,
            successes: 20,
            mean_ms: Some(100.0),
            p95_ms: Some(120.0),
            baseline: None,
            critical: 0,
            high: 0,
            medium: 0,
            status,
            note: None,
        };
        let mut r = Report {
            start: t,
            end: t,
            rows: (0..8)
                .map(|i| row(&format!("a{i}"), Status::Healthy))
                .collect(),
            incidents: vec![item("a1", Kind::Down)],
            certificates: vec![],
        };
        assert_eq!(r.subject(), "[apimon] Status: all 8 APIs healthy");
        r.rows[0].status = Status::Slow;
        r.rows[1].status = Status::Down;
        assert_eq!(r.subject(), "[apimon] Status: 1 down, 1 slow, 6 healthy");
        let m = report(&r, "http://g");
        assert!(m.text.contains("Slow: a0\nDown: a1\n"), "{}", m.text);
        // Incidents come first: the period ended before the resolution.
        let open = m
            .text
            .find("Open incidents:\n- a1 down (critical) since 2026-11-25 10:00:00 UTC")
            .unwrap();
        let slow = m.text.find("Slow: a0").unwrap();
        assert!(open < slow, "{}", m.text);
        assert_eq!(m.payload["slow"][0], "a0");
        assert!(!m.text.contains("Certificates"), "{}", m.text);
        // Certificates expiring soon: listed, soonest first, escaped in HTML.
        r.certificates = vec![
            ("<pay>".into(), t + chrono::Duration::hours(50)),
            ("a3".into(), t + chrono::Duration::days(9)),
        ];
        let m = report(&r, "http://g");
        assert!(
            m.text.contains(
                "Certificates expiring soon:\n- <pay>: expires at 2026-11-27 12:00:00 UTC (in 2d 2h)\n\
                 - a3: expires at 2026-12-04 10:00:00 UTC (in 9d 0h)\n"
            ),
            "{}",
            m.text
        );
        assert!(m.html.contains("<li>&lt;pay&gt;: expires at"), "{}", m.html);
        // And in the webhook payload.
        assert_eq!(m.payload["certificates"][0]["api"], "<pay>");
        let days = m.payload["certificates"][1]["days_left"].as_f64().unwrap();
        assert!((days - 9.0).abs() < 1e-9, "{days}");
        assert!(!m.html.contains("<pay>"), "{}", m.html);
    }
}
