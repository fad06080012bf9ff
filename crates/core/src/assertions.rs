//! What an HTTP check's answer must hold besides its status: a substring
//! or a regular expression in the body, values at JSONPaths (RFC 9535),
//! headers, and a hard limit on the response time.
//!
//! The pinger reads at most [`Assertions::max_body_bytes`] of a body for
//! them (it still counts the size to the end), and [`Assertions::evaluate`]
//! judges an answer: a pure function, tested without a network. A failure
//! names the assertion and what was seen, bounded, and never the URL.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use regex::Regex;
use serde_json_path::JsonPath;

/// Default most bytes of a body read for assertions (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Longest excerpt of what was seen, in a failure's message.
const MAX_SEEN: usize = 120;

/// The assertions of one endpoint, validated.
#[derive(Clone, Default)]
pub struct Assertions {
    /// `expect_body`: a substring the body must contain.
    pub body: Option<String>,
    /// `expect_body_regex`: a regular expression the body must match.
    pub body_regex: Option<Regex>,
    /// `expect_json`: JSONPath (as written) and its compiled form, and the
    /// value the first node it selects must equal.
    pub json: Vec<JsonAssertion>,
    /// `expect_headers`: header and the value it must have (compared
    /// ignoring ASCII case, as HTTP header values mostly are).
    pub headers: Vec<(HeaderName, String)>,
    /// `max_response_time`: a hard limit; slower is a failed check.
    pub max_response_time: Option<Duration>,
    /// Most bytes of the body read for the assertions.
    pub max_body_bytes: usize,
}

/// One `expect_json` entry.
#[derive(Clone)]
pub struct JsonAssertion {
    /// The path as written in `apis.toml`.
    pub path_text: String,
    pub path: JsonPath,
    pub expected: serde_json::Value,
}

/// A failed assertion: which one, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionFailure(pub String);

impl fmt::Display for AssertionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Assertions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe().join(", "))
    }
}

impl Assertions {
    /// Whether the body must be read (and kept up to `max_body_bytes`).
    pub fn need_body(&self) -> bool {
        self.body.is_some() || self.body_regex.is_some() || !self.json.is_empty()
    }

    /// Whether there is anything to check at all.
    pub fn is_empty(&self) -> bool {
        !self.need_body() && self.headers.is_empty() && self.max_response_time.is_none()
    }

    /// The assertions in words, for `pinger --check-config`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = &self.body {
            out.push(format!("body contains {:?}", b));
        }
        if let Some(r) = &self.body_regex {
            out.push(format!("body matches /{}/", r.as_str()));
        }
        for j in &self.json {
            out.push(format!("{} == {}", j.path_text, j.expected));
        }
        for (h, v) in &self.headers {
            out.push(format!("header {h}: {v:?}"));
        }
        if let Some(t) = self.max_response_time {
            out.push(format!("response within {}", humantime::format_duration(t)));
        }
        out
    }

    /// Judges one answer. `body` is what was read of it (at most
    /// `max_body_bytes`); `truncated` says the body went on beyond.
    pub fn evaluate(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        truncated: bool,
        elapsed: Duration,
    ) -> Result<(), AssertionFailure> {
        if let Some(limit) = self.max_response_time {
            if elapsed > limit {
                return Err(AssertionFailure(format!(
                    "max_response_time: took {} ms, limit {} ms",
                    elapsed.as_millis(),
                    limit.as_millis()
                )));
            }
        }
        for (name, want) in &self.headers {
            match headers.get(name) {
                None => {
                    return Err(AssertionFailure(format!(
                        "expect_headers: {name} is missing, expected {}",
                        excerpt(want)
                    )))
                }
                Some(v) => {
                    let seen = String::from_utf8_lossy(v.as_bytes());
                    if !seen.trim().eq_ignore_ascii_case(want.trim()) {
                        return Err(AssertionFailure(format!(
                            "expect_headers: {name} is {}, expected {}",
                            excerpt(&seen),
                            excerpt(want)
                        )));
                    }
                }
            }
        }
        if !self.need_body() {
            return Ok(());
        }
        let cut = if truncated {
            format!(" (first {} bytes read)", body.len())
        } else {
            String::new()
        };
        let text = String::from_utf8_lossy(body);
        if let Some(want) = &self.body {
            if !text.contains(want.as_str()) {
                return Err(AssertionFailure(format!(
                    "expect_body: {} not found in the body{cut}, which begins {}",
                    excerpt(want),
                    excerpt(&text)
                )));
            }
        }
        if let Some(re) = &self.body_regex {
            if !re.is_match(&text) {
                return Err(AssertionFailure(format!(
                    "expect_body_regex: /{}/ does not match the body{cut}, which begins {}",
                    excerpt(re.as_str()),
                    excerpt(&text)
                )));
            }
        }
        if !self.json.is_empty() {
            let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
                AssertionFailure(format!(
                    "expect_json: the body{cut} is not JSON ({e}); it begins {}",
                    excerpt(&text)
                ))
            })?;
            for j in &self.json {
                let nodes = j.path.query(&doc).all();
                match nodes.first() {
                    None => {
                        return Err(AssertionFailure(format!(
                            "expect_json: {} selects nothing, expected {}",
                            j.path_text,
                            json_excerpt(&j.expected)
                        )))
                    }
                    Some(v) if !same_value(v, &j.expected) => {
                        return Err(AssertionFailure(format!(
                            "expect_json: {} is {}, expected {}",
                            j.path_text,
                            json_excerpt(v),
                            json_excerpt(&j.expected)
                        )))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// JSON equality, where numbers are equal by value (`3` and `3.0`).
fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

/// A JSON value as JSON text (already escaped), cut to [`MAX_SEEN`]
/// characters.
fn json_excerpt(v: &serde_json::Value) -> String {
    let text = v.to_string();
    let mut out: String = text.chars().take(MAX_SEEN).collect();
    if text.chars().nth(MAX_SEEN).is_some() {
        out.push('…');
    }
    out
}

/// `s` quoted, cut to [`MAX_SEEN`] characters, control characters escaped.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_SEEN).collect();
    if s.chars().nth(MAX_SEEN).is_some() {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn json(path: &str, expected: serde_json::Value) -> JsonAssertion {
        JsonAssertion {
            path_text: path.to_string(),
            path: JsonPath::parse(path).unwrap(),
            expected,
        }
    }

    fn ok(a: &Assertions, body: &str) -> Result<(), AssertionFailure> {
        a.evaluate(
            &HeaderMap::new(),
            body.as_bytes(),
            false,
            Duration::from_millis(5),
        )
    }

    #[test]
    fn a_body_substring_and_regex_must_be_found() {
        let a = Assertions {
            body: Some("\"ok\"".into()),
            body_regex: Some(Regex::new(r#""version":\s*"2\.\d+""#).unwrap()),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            ..Assertions::default()
        };
        assert_eq!(ok(&a, r#"{"status":"ok","version": "2.7"}"#), Ok(()));
        let e = ok(&a, r#"{"status":"degraded","version":"2.7"}"#).unwrap_err();
        assert!(
            e.0.starts_with("expect_body: \"\\\"ok\\\"\" not found"),
            "{e}"
        );
        assert!(e.0.contains("degraded"), "{e}");
        let e = ok(&a, r#"{"status":"ok","version":"3.0"}"#).unwrap_err();
        assert!(e.0.starts_with("expect_body_regex:"), "{e}");
    }

    #[test]
    fn json_values_must_equal_what_their_paths_select() {
        let a = Assertions {
            json: vec![
                json("$.status", serde_json::json!("ok")),
                json("$.checks[?@.name == 'db'].up", serde_json::json!(true)),
                json("$.count", serde_json::json!(3)),
            ],
            ..Assertions::default()
        };
        let good = r#"{"status":"ok","count":3,"checks":[{"name":"cache","up":false},{"name":"db","up":true}]}"#;
        assert_eq!(ok(&a, good), Ok(()));
        let e = ok(&a, &good.replace("\"ok\"", "\"degraded\"")).unwrap_err();
        assert_eq!(e.0, r#"expect_json: $.status is "degraded", expected "ok""#);
        let e = ok(&a, r#"{"status":"ok","count":3,"checks":[]}"#).unwrap_err();
        assert!(e.0.contains("selects nothing"), "{e}");
        let e = ok(&a, "<html>502 Bad Gateway</html>").unwrap_err();
        assert!(e.0.starts_with("expect_json: the body is not JSON"), "{e}");
        assert!(e.0.contains("502 Bad Gateway"), "{e}");
    }

    #[test]
    fn headers_and_the_response_time_limit_are_checked() {
        let a = Assertions {
            headers: vec![(
                HeaderName::from_static("content-type"),
                "application/json".into(),
            )],
            max_response_time: Some(Duration::from_secs(2)),
            ..Assertions::default()
        };
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("Application/JSON"));
        assert_eq!(
            a.evaluate(&h, b"", false, Duration::from_millis(1999)),
            Ok(())
        );
        let e = a
            .evaluate(&h, b"", false, Duration::from_millis(2500))
            .unwrap_err();
        assert_eq!(e.0, "max_response_time: took 2500 ms, limit 2000 ms");
        h.insert("content-type", HeaderValue::from_static("text/html"));
        let e = a
            .evaluate(&h, b"", false, Duration::from_millis(5))
            .unwrap_err();
        assert!(e.0.contains("content-type is \"text/html\""), "{e}");
        let e = a
            .evaluate(&HeaderMap::new(), b"", false, Duration::from_millis(5))
            .unwrap_err();
        assert!(e.0.contains("missing"), "{e}");
    }

    #[test]
    fn what_was_seen_is_bounded_and_a_truncated_body_says_so() {
        let a = Assertions {
            body: Some("needle".into()),
            ..Assertions::default()
        };
        let hay = "x".repeat(10_000);
        let e = a
            .evaluate(&HeaderMap::new(), hay.as_bytes(), true, Duration::ZERO)
            .unwrap_err();
        assert!(e.0.len() < 300, "{} bytes", e.0.len());
        assert!(e.0.contains("(first 10000 bytes read)"), "{e}");
        assert!(e.0.ends_with("…\""), "{e}");
    }
}
