//! URLs without their secrets, for everything that shows a URL: rows,
//! logs, tracing spans, configuration errors and `pinger --check-config`.
//!
//! An endpoint's URL may carry a key in its userinfo (`user:pass@host`), in
//! a query value (`?api_key=…`), in its fragment, or anywhere a `${NAME}`
//! of the endpoints file put an environment variable's value. [`redact`]
//! removes the userinfo and the fragment and replaces every query value
//! with [`REDACTED`] (parameter names are kept). Applied to the URL as
//! written in the file, before `${NAME}` is expanded, it shows `${NAME}`
//! where the value goes. It is pure text processing, so it works on text
//! that is not a valid URL too (a configuration error shows what was
//! written).
//!
//! [`SecretUrl`] holds a URL to request together with its redacted form:
//! it has no `Display`, and its `Debug` shows the redacted form, so the
//! secret cannot be printed by accident.

use std::fmt;

use url::Url;

/// What replaces a query value.
pub const REDACTED: &str = "REDACTED";

/// `text` (a URL, or text meant as one) without userinfo and fragment,
/// and with each query value replaced by [`REDACTED`]: `name=value`
/// becomes `name=REDACTED`, a parameter without `=` (which may be a bare
/// token) becomes `REDACTED`. Everything else is kept as written.
pub fn redact(text: &str) -> String {
    // The fragment is never sent, and may hold a token (`#access_token=`).
    let text = text.split('#').next().unwrap_or("");
    let (before_query, query) = match text.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (text, None),
    };
    let mut out = without_userinfo(before_query);
    if let Some(q) = query {
        out.push('?');
        out.push_str(&redact_query(q));
    }
    out
}

/// `scheme://[userinfo@]host/path` without its `userinfo@`. The authority
/// starts after `scheme:` and its slashes (or at the start when there is
/// no scheme, or no slash after it: `user:pass@host/x`, `http:u:p@host`),
/// and ends at the first `/` or `\` after that; the userinfo is everything
/// in it up to its last `@`.
fn without_userinfo(s: &str) -> String {
    let auth_start = scheme_and_slashes(s).unwrap_or(0);
    let rest = &s[auth_start..];
    let auth_len = rest.find(['/', '\\']).unwrap_or(rest.len());
    let authority = &rest[..auth_len];
    match authority.rfind('@') {
        Some(at) => {
            let mut out = String::with_capacity(s.len());
            out.push_str(&s[..auth_start]);
            out.push_str(&authority[at + 1..]);
            out.push_str(&rest[auth_len..]);
            out
        }
        None => s.to_string(),
    }
}

/// Length of a leading `scheme:` followed by at least one `/` or `\`
/// (and those slashes), if `s` starts so.
fn scheme_and_slashes(s: &str) -> Option<usize> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return None;
    }
    let after = &s[colon + 1..];
    let slashes = after.len() - after.trim_start_matches(['/', '\\']).len();
    (slashes > 0).then_some(colon + 1 + slashes)
}

fn redact_query(q: &str) -> String {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((name, "")) => format!("{name}="),
            Some((name, _)) => format!("{name}={REDACTED}"),
            None => REDACTED.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A URL fit to be shown and stored: see [`redact`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// `url` redacted.
    pub fn new(url: &Url) -> RedactedUrl {
        RedactedUrl(redact(url.as_str()))
    }

    /// Any text meant as a URL (valid or not), redacted.
    pub fn from_text(text: &str) -> RedactedUrl {
        RedactedUrl(redact(text.trim()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A URL to request, which may hold secrets, with the form to show
/// instead. It has no `Display`; its `Debug` is the redacted form.
#[derive(Clone)]
pub struct SecretUrl {
    url: Url,
    shown: RedactedUrl,
}

impl SecretUrl {
    /// `url`, shown as `written` redacted: `written` is the URL as the user
    /// wrote it, before any `${NAME}` was replaced by its value, so that
    /// the shown form names the variables rather than their values.
    pub fn new(url: Url, written: &str) -> SecretUrl {
        let shown = if written.contains("${") {
            RedactedUrl::from_text(written)
        } else {
            RedactedUrl::new(&url)
        };
        SecretUrl { url, shown }
    }

    /// The URL itself, secrets included: only for sending the request.
    pub fn expose(&self) -> &Url {
        &self.url
    }

    /// What to show and store.
    pub fn redacted(&self) -> &RedactedUrl {
        &self.shown
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown, f)
    }
}

impl From<Url> for SecretUrl {
    fn from(url: Url) -> SecretUrl {
        let shown = RedactedUrl::new(&url);
        SecretUrl { url, shown }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed() {
        assert_eq!(
            redact("https://user:pa55@api.test:8443/v1/x"),
            "https://api.test:8443/v1/x"
        );
        assert_eq!(redact("http://token@api.test/"), "http://api.test/");
        // The last @ of the authority ends the userinfo.
        assert_eq!(redact("http://a@b:c@d@api.test/p@q"), "http://api.test/p@q");
    }

    #[test]
    fn query_values_are_replaced_and_names_kept() {
        assert_eq!(
            redact("https://api.test/q?api_key=S3CR3T&page=2&flag&empty="),
            "https://api.test/q?api_key=REDACTED&page=REDACTED&REDACTED&empty="
        );
        assert_eq!(
            redact("https://api.test/?sig=a%2Fb%3D%3D&x=1=2"),
            "https://api.test/?sig=REDACTED&x=REDACTED"
        );
        assert_eq!(redact("https://api.test/?"), "https://api.test/?");
    }

    #[test]
    fn the_fragment_is_dropped() {
        assert_eq!(
            redact("https://api.test/cb#access_token=S3CR3T"),
            "https://api.test/cb"
        );
        assert_eq!(
            redact("https://api.test/cb?a=1#b?c=S3CR3T"),
            "https://api.test/cb?a=REDACTED"
        );
    }

    #[test]
    fn a_url_without_secrets_is_unchanged() {
        for u in [
            "https://api.github.com/zen",
            "http://127.0.0.1:8080/health",
            "https://[::1]:9/x/y",
        ] {
            assert_eq!(redact(u), u);
        }
    }

    #[test]
    fn variables_show_by_name_when_redacting_what_was_written() {
        let written = "https://${USER}:${PASS}@api.test/v1/${KEY}/data?token=${TOKEN}";
        let url = Url::parse("https://bob:hunter2@api.test/v1/K3Y/data?token=T0K").unwrap();
        let s = SecretUrl::new(url, written);
        assert_eq!(
            s.redacted().as_str(),
            "https://api.test/v1/${KEY}/data?token=REDACTED"
        );
        let shown = format!("{s:?} {}", s.redacted());
        for secret in ["bob", "hunter2", "K3Y", "T0K"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(s.expose().password(), Some("hunter2"));
    }

    #[test]
    fn odd_and_invalid_urls_lose_their_secrets_too() {
        let cases = [
            // Not a URL at all: no scheme.
            ("user:S3CR3T@api.test/x?k=S3CR3T", "api.test/x?k=REDACTED"),
            // A special scheme without slashes.
            ("http:user:S3CR3T@api.test/", "api.test/"),
            // Backslashes, as WHATWG reads them for http.
            (
                "http:\\\\user:S3CR3T@api.test\\x?k=S3CR3T",
                "http:\\\\api.test\\x?k=REDACTED",
            ),
            // An invalid host or port.
            (
                "https://u:S3CR3T@bad host:99999/?a=S3CR3T",
                "https://bad host:99999/?a=REDACTED",
            ),
            // Unclosed IPv6 bracket, an @ in the password.
            ("https://u:S3@CR3T@[::1/x", "https://[::1/x"),
            ("?S3CR3T", "?REDACTED"),
            ("#S3CR3T", ""),
            ("", ""),
        ];
        for (input, want) in cases {
            let got = redact(input);
            assert_eq!(got, want, "{input}");
            assert!(!got.contains("S3CR3T") && !got.contains("CR3T"), "{got}");
        }
    }

    #[test]
    fn a_parsed_url_is_redacted_in_its_normal_form() {
        let url = Url::parse("HTTPS://U:P@API.test:443/a/../b?X=1#f").unwrap();
        assert_eq!(
            RedactedUrl::new(&url).as_str(),
            "https://api.test/b?X=REDACTED"
        );
        let s: SecretUrl = url.into();
        assert_eq!(format!("{s:?}"), "\"https://api.test/b?X=REDACTED\"");
    }

    #[test]
    fn redacting_twice_changes_nothing() {
        for u in [
            "https://u:p@a.test/x?k=v&b#f",
            "u:p@a.test?x",
            "http:\\\\u@a.test",
        ] {
            let once = redact(u);
            assert_eq!(redact(&once), once, "{u}");
        }
    }
}
