//! What the messages say: subject, plain text, HTML and a JSON payload for
//! each kind of notification. Pure functions. Every value that comes from
//! the database or from a remote server is escaped in the HTML.

use chrono::{DateTime, Utc};
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
use serde_json::json;

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

/// What an alert about one anomaly says.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFacts {
    pub api_name: String,
    pub timestamp: DateTime<Utc>,
    /// First anomaly of this episode (within the cooldown before this one).
    pub since: DateTime<Utc>,
    pub severity: String,
    pub score: f64,
    pub response_time_ms: Option<f64>,
    pub details: String,
    /// Mean of the last 10 response times before it, when the forest scored it.
    pub rolling_mean_ms: Option<f64>,
    /// The API's usual values over the baseline window.
    pub baseline: Option<Baseline>,
    /// Anomalies held back by the cooldown since the previous alert.
    pub suppressed: i32,
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

/// `Key: value` lines, then the dashboard link.
fn plain_rows(rows: &[(&str, String)], link: &str) -> String {
    rows.iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .chain(std::iter::once(format!("Dashboard: {link}\n")))
        .collect()
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

/// An instant alert.
pub fn alert(f: &AlertFacts, dashboard: &str) -> Message {
    let link = dashboard_link(dashboard, Some(&f.api_name));
    let subject = format!(
        "[apimon] {} anomaly: {}",
        f.severity.to_uppercase(),
        f.api_name
    );
    let observed = f
        .response_time_ms
        .map(ms)
        .unwrap_or_else(|| "no response".into());
    let mut usual = Vec::new();
    if let Some(m) = f.rolling_mean_ms {
        usual.push(format!("{} mean of the last 10 checks", ms(m)));
    }
    if let Some(b) = f.baseline {
        usual.push(format!(
            "{} mean, {} p95 over the baseline window",
            ms(b.mean_ms),
            ms(b.p95_ms)
        ));
    }
    let usual = if usual.is_empty() {
        "not known yet".to_string()
    } else {
        usual.join("; ")
    };
    let mut rows = vec![
        ("API", f.api_name.clone()),
        ("Severity", f.severity.clone()),
        ("Score", format!("{:.3}", f.score)),
        ("Since", when(f.since)),
        ("Observed at", when(f.timestamp)),
        ("Observed", observed.clone()),
        ("Usual", usual.clone()),
        ("Details", f.details.clone()),
    ];
    if f.suppressed > 0 {
        rows.push((
            "Held back",
            format!(
                "{} more anomalies during the cooldown since the previous alert",
                f.suppressed
            ),
        ));
    }
    let body_text = plain_rows(&rows, &link);
    Message {
        kind: "alert",
        api_name: Some(f.api_name.clone()),
        dedup_key: format!("alert:{}:{}", f.api_name, f.timestamp.timestamp_micros()),
        subject: subject.clone(),
        text: body_text,
        html: html_page(&subject, &table(&rows), &link),
        payload: json!({
            "kind": "alert",
            "api": f.api_name,
            "severity": f.severity,
            "score": f.score,
            "timestamp": f.timestamp,
            "since": f.since,
            "response_time_ms": f.response_time_ms,
            "usual": usual,
            "details": f.details,
            "suppressed": f.suppressed,
            "dashboard": link,
        }),
    }
}

/// An API has failed `failures` checks in a row.
pub fn down(
    api: &str,
    since: DateTime<Utc>,
    failures: i64,
    last_error: Option<&str>,
    dashboard: &str,
) -> Message {
    let link = dashboard_link(dashboard, Some(api));
    let subject = format!("[apimon] DOWN: {api}");
    let rows = vec![
        ("API", api.to_string()),
        ("Down since", when(since)),
        ("Failed checks in a row", failures.to_string()),
        ("Last error", last_error.unwrap_or("unknown").to_string()),
    ];
    Message {
        kind: "down",
        api_name: Some(api.to_string()),
        dedup_key: format!("down:{api}:{}", since.timestamp_micros()),
        subject: subject.clone(),
        text: plain_rows(&rows, &link),
        html: html_page(&subject, &table(&rows), &link),
        payload: json!({
            "kind": "down", "api": api, "since": since, "failures": failures,
            "last_error": last_error, "dashboard": link,
        }),
    }
}

/// An API that was down answers again.
pub fn recovered(api: &str, since: DateTime<Utc>, at: DateTime<Utc>, dashboard: &str) -> Message {
    let link = dashboard_link(dashboard, Some(api));
    let subject = format!("[apimon] RECOVERED: {api}");
    let downtime = at.signed_duration_since(since);
    let rows = vec![
        ("API", api.to_string()),
        ("Down since", when(since)),
        ("Answering again at", when(at)),
        ("Downtime", format!("{} s", downtime.num_seconds().max(0))),
    ];
    Message {
        kind: "recovered",
        api_name: Some(api.to_string()),
        dedup_key: format!("recovered:{api}:{}", since.timestamp_micros()),
        subject: subject.clone(),
        text: plain_rows(&rows, &link),
        html: html_page(&subject, &table(&rows), &link),
        payload: json!({
            "kind": "recovered", "api": api, "since": since, "at": at,
            "downtime_seconds": downtime.num_seconds().max(0), "dashboard": link,
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
    /// Anomalies held back by the cooldown (not yet in any alert).
    pub suppressed: i64,
    pub status: Status,
}

/// How an API did over a report's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Down,
    Slow,
    NoData,
    Healthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Down => "down",
            Status::Slow => "slow",
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
        for s in [Status::Down, Status::Slow, Status::NoData, Status::Healthy] {
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
    let mut t = format!("Period: {} to {}\n", when(r.start), when(r.end));
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
        "held back",
    ];
    t.push_str(&header.join(" | "));
    t.push('\n');
    let mut h = format!(
        "<p>Period: {} to {}</p><p><b>Slow:</b> {}<br><b>Down:</b> {}</p>\
         <table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr>",
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
            row.suppressed.to_string(),
        ];
        t.push_str(&cells.join(" | "));
        t.push('\n');
        let color = match row.status {
            Status::Down => "#fdd",
            Status::Slow => "#ffd",
            Status::NoData => "#eee",
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
                "suppressed": x.suppressed,
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

    fn facts(details: &str) -> AlertFacts {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        AlertFacts {
            api_name: "Git<Hub>".into(),
            timestamp: t,
            since: t,
            severity: "critical".into(),
            score: -0.31,
            response_time_ms: Some(1000.0),
            details: details.into(),
            rolling_mean_ms: Some(100.0),
            baseline: Some(Baseline {
                mean_ms: 98.0,
                p95_ms: 130.0,
            }),
            suppressed: 2,
        }
    }

    #[test]
    fn an_alert_says_which_api_since_when_observed_against_usual_and_links() {
        let m = alert(&facts("slow"), "http://grafana:3000");
        assert_eq!(m.subject, "[apimon] CRITICAL anomaly: Git<Hub>");
        for needle in [
            "Git<Hub>",
            "Since: 2026-11-25 10:00:00 UTC",
            "Observed: 1000 ms",
            "100 ms mean of the last 10",
            "130 ms p95",
            "-0.310",
            "2 more anomalies",
            "http://grafana:3000/d/apimon/api-monitoring?var-api=Git%3CHub%3E",
        ] {
            assert!(m.text.contains(needle), "{needle} in {}", m.text);
        }
    }

    #[test]
    fn hostile_values_are_escaped_in_the_html() {
        let m = alert(
            &facts("<script>alert('x')</script> & \"quotes\""),
            "http://g",
        );
        assert!(!m.html.contains("<script>"), "{}", m.html);
        assert!(m.html.contains("&lt;script&gt;"));
        assert!(m.html.contains("Git&lt;Hub&gt;"));
        let d = down(
            "<img src=x onerror=1>",
            Utc::now(),
            3,
            Some("<b>boom</b>"),
            "http://g",
        );
        assert!(
            !d.html.contains("<img") && !d.html.contains("<b>boom"),
            "{}",
            d.html
        );
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
            suppressed: 0,
            status,
        };
        let mut r = Report {
            start: t,
            end: t,
            rows: (0..8)
                .map(|i| row(&format!("a{i}"), Status::Healthy))
                .collect(),
        };
        assert_eq!(r.subject(), "[apimon] Status: all 8 APIs healthy");
        r.rows[0].status = Status::Slow;
        r.rows[1].status = Status::Down;
        assert_eq!(r.subject(), "[apimon] Status: 1 down, 1 slow, 6 healthy");
        let m = report(&r, "http://g");
        assert!(m.text.contains("Slow: a0\nDown: a1\n"), "{}", m.text);
        assert_eq!(m.payload["slow"][0], "a0");
    }
}
