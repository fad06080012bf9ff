//! The list of endpoints to watch, read from `apis.toml`.
//!
//! ```toml
//! [defaults]            # optional; applies to every [[api]]
//! interval = "15s"
//! timeout = "30s"
//!
//! [[api]]
//! name = "GitHub"
//! url = "https://api.github.com/zen"
//! method = "GET"                       # optional, default GET
//! expected_status = [200]              # optional, default any 2xx
//! timeout = "10s"                      # optional
//! interval = "15s"                     # optional
//! headers = { Authorization = "Bearer ${GITHUB_TOKEN}" }   # optional
//! follow_redirects = false             # optional, default false
//! ca_file = "certs/internal-ca.pem"    # optional: also trust this CA (PEM),
//!                                      # relative to this file's directory
//!
//! [[api]]
//! name = "db port"
//! kind = "tcp"                         # a TCP connect
//! address = "db.example.com:5432"
//!
//! [[api]]
//! name = "api record"
//! kind = "dns"                         # a DNS query
//! dns_name = "api.example.com"
//! record_type = "A"                    # optional, default A
//! expect = "192.0.2.10"                # optional: an answer that must be there
//! resolver = "192.0.2.53:53"           # optional, default the system's
//! ```
//!
//! The URL and header values may name environment variables as `${NAME}`,
//! so that tokens stay out of the file. Parsing yields validated
//! [`Endpoint`]s: an unknown key, a duplicate name, a bad URL or a bad value
//! is an error naming the entry. A URL is only ever shown redacted (see
//! [`crate::redact`]), in errors too.
//!
//! The file may also hold `[[maintenance]]` entries (see
//! [`crate::maintenance`]): [`parse`] validates them too, so a bad one stops
//! every binary that reads the file, and [`parse_maintenance`] returns them
//! for the alerter without the endpoints (whose `${NAME}` references it
//! need not resolve).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use secrecy::ExposeSecret;
use serde::Deserialize;
use url::Url;

use crate::assertions::{Assertions, JsonAssertion, DEFAULT_MAX_BODY_BYTES};
use crate::certs::CaBundle;
use crate::config::{parse_duration, ConfigError, Env};
use crate::maintenance::{self, MaintenanceRaw, MaintenanceWindow};
use crate::redact::{RedactedUrl, SecretUrl};

/// Default time between two checks of an endpoint.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Default limit on one check, from connect to the end of the body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Which HTTP statuses count as success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedStatus {
    /// Any 2xx.
    AnySuccess,
    /// Exactly these codes.
    Codes(Vec<u16>),
}

impl ExpectedStatus {
    pub fn matches(&self, status: u16) -> bool {
        match self {
            ExpectedStatus::AnySuccess => (200..300).contains(&status),
            ExpectedStatus::Codes(codes) => codes.contains(&status),
        }
    }
}

impl fmt::Display for ExpectedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedStatus::AnySuccess => f.write_str("2xx"),
            ExpectedStatus::Codes(c) => {
                let parts: Vec<String> = c.iter().map(u16::to_string).collect();
                f.write_str(&parts.join(" or "))
            }
        }
    }
}

/// A `kind = "heartbeat"` check.
#[derive(Clone)]
pub struct HeartbeatProbe {
    /// The secret of `POST /heartbeat/<token>`; never printed.
    pub token: secrecy::SecretString,
    /// How late a heartbeat may be beyond `interval` (`grace`).
    pub grace: Duration,
}

impl fmt::Debug for HeartbeatProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatProbe")
            .field("token", &"[redacted]")
            .field("grace", &self.grace)
            .finish()
    }
}

/// Default `grace` of a heartbeat.
pub const DEFAULT_HEARTBEAT_GRACE: Duration = Duration::from_secs(60);

/// Shortest heartbeat token accepted: it is the only secret of the push
/// URL.
pub const MIN_TOKEN_LEN: usize = 16;

/// The kinds of check (`kind` in `apis.toml`).
pub const KINDS: &[&str] = &["http", "tcp", "dns", "heartbeat"];

/// One endpoint to check, validated.
#[derive(Clone)]
pub struct Endpoint {
    /// Unique name; the key of its rows in `api_metrics`.
    pub name: String,
    /// What is requested. It may hold a key (userinfo, query, a `${NAME}`):
    /// show `url.redacted()`, never the URL itself.
    pub url: SecretUrl,
    pub method: Method,
    /// Sent with every request. Values may hold tokens: never printed.
    pub headers: HeaderMap,
    /// Request body, for methods that take one.
    pub body: Option<String>,
    pub expected_status: ExpectedStatus,
    /// Limit on one check, from connect to the end of the body.
    pub timeout: Duration,
    /// Time between the starts of two checks.
    pub interval: Duration,
    /// Follow redirects (`follow_redirects = true`): then a redirect to
    /// another origin is followed without the endpoint's headers and body,
    /// and one from https to http is refused. Otherwise a 3xx is the
    /// check's result.
    pub follow_redirects: bool,
    /// What is checked: an HTTP request (the default), a TCP connect, a DNS
    /// query, or heartbeats pushed to the pinger.
    pub probe: Probe,
    /// What an HTTP answer must hold besides its status.
    pub assertions: Assertions,
    /// A private CA trusted for this endpoint, besides the web PKI roots
    /// (`ca_file`).
    pub ca: Option<CaBundle>,
}

/// The kind of check of an endpoint (`kind` in `apis.toml`). Every kind
/// writes the same `api_metrics` rows; its `url` column holds the target
/// (`tcp://host:port` for a TCP check, `dns://resolver/name/TYPE` for a
/// DNS check), and its response time is the request's, the connect's or
/// the resolve's.
#[derive(Clone, Debug)]
pub enum Probe {
    /// An HTTP request to `url`.
    Http,
    /// A TCP connect to `address` (`host:port`).
    Tcp { address: String },
    /// Heartbeats pushed to `POST /heartbeat/<token>` on the pinger's HTTP
    /// port (a cron job, a batch worker); none for `interval + grace` is a
    /// failed check.
    Heartbeat(HeartbeatProbe),
    /// A DNS query.
    Dns(DnsProbe),
}

impl Probe {
    /// The `kind` as written in `apis.toml`.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Http => "http",
            Probe::Tcp { .. } => "tcp",
            Probe::Heartbeat(_) => "heartbeat",
            Probe::Dns(_) => "dns",
        }
    }
}

/// One DNS query of a `kind = "dns"` entry, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsProbe {
    /// The name asked for (`dns_name`), ASCII, without its trailing dot:
    /// it is always asked as written, never completed with the system's
    /// search domains.
    pub name: String,
    /// `record_type`, A by default.
    pub record_type: DnsRecordType,
    /// `expect`: an answer that must be among those of `record_type`, in
    /// its canonical text (see [`DnsRecordType::canonical_expect`]).
    pub expect: Option<String>,
    /// `resolver` (`ip:port`); `None` for the system's configuration.
    pub resolver: Option<SocketAddr>,
}

/// The record types a DNS check may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DnsRecordType {
    A,
    Aaaa,
    Cname,
    Mx,
    Ns,
    Txt,
    Srv,
    Caa,
    Soa,
    Ptr,
}

impl DnsRecordType {
    pub const ALL: [DnsRecordType; 10] = [
        DnsRecordType::A,
        DnsRecordType::Aaaa,
        DnsRecordType::Cname,
        DnsRecordType::Mx,
        DnsRecordType::Ns,
        DnsRecordType::Txt,
        DnsRecordType::Srv,
        DnsRecordType::Caa,
        DnsRecordType::Soa,
        DnsRecordType::Ptr,
    ];

    /// Its name in upper case, as DNS tools write it.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsRecordType::A => "A",
            DnsRecordType::Aaaa => "AAAA",
            DnsRecordType::Cname => "CNAME",
            DnsRecordType::Mx => "MX",
            DnsRecordType::Ns => "NS",
            DnsRecordType::Txt => "TXT",
            DnsRecordType::Srv => "SRV",
            DnsRecordType::Caa => "CAA",
            DnsRecordType::Soa => "SOA",
            DnsRecordType::Ptr => "PTR",
        }
    }

    /// The type named `text`, in any case.
    pub fn parse(text: &str) -> Option<DnsRecordType> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
    }

    /// `expect` in the canonical text of an answer of this type, which is
    /// what the pinger makes of each answer before comparing:
    ///
    /// | type | canonical text |
    /// |------|----------------|
    /// | A, AAAA | the address (`192.0.2.10`, `2001:db8::10` as RFC 5952 writes it) |
    /// | CNAME, NS, PTR | the name (`target.example.com`) |
    /// | MX | preference and exchange (`10 mail.example.com`) |
    /// | SRV | priority, weight, port and target (`10 5 443 sip.example.com`) |
    /// | TXT | the record's strings joined, exactly (case matters) |
    /// | CAA | flags, tag and value unquoted (`0 issue letsencrypt.org`) |
    /// | SOA | mname rname serial refresh retry expire minimum |
    ///
    /// Names are in lower case without their trailing dot; fields are
    /// separated by one space. So `expect` may write a name in any case,
    /// with or without its trailing dot, and an address in any valid form.
    pub fn canonical_expect(self, text: &str) -> Result<String, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let bad = |form: &str| {
            format!(
                "expected {form} for record_type = \"{}\", got `{}`",
                self.as_str(),
                text.escape_debug()
            )
        };
        let number = |t: &str, form: &str| -> Result<String, String> {
            t.parse::<u32>()
                .map(|n| n.to_string())
                .map_err(|_| bad(form))
        };
        let name = |t: &str| t.trim_end_matches('.').to_ascii_lowercase();
        match self {
            DnsRecordType::A => text
                .trim()
                .parse::<std::net::Ipv4Addr>()
                .map(|a| a.to_string())
                .map_err(|_| bad("an IPv4 address such as \"192.0.2.10\"")),
            DnsRecordType::Aaaa => text
                .trim()
                .parse::<std::net::Ipv6Addr>()
                .map(|a| a.to_string())
                .map_err(|_| bad("an IPv6 address such as \"2001:db8::10\"")),
            DnsRecordType::Cname | DnsRecordType::Ns | DnsRecordType::Ptr => match fields[..] {
                [n] => Ok(name(n)),
                _ => Err(bad("a name such as \"target.example.com\"")),
            },
            DnsRecordType::Mx => {
                let form = "\"preference exchange\" such as \"10 mail.example.com\"";
                match fields[..] {
                    [p, n] => Ok(format!("{} {}", number(p, form)?, name(n))),
                    _ => Err(bad(form)),
                }
            }
            DnsRecordType::Srv => {
                let form = "\"priority weight port target\" such as \"10 5 443 sip.example.com\"";
                match fields[..] {
                    [p, w, port, n] => Ok(format!(
                        "{} {} {} {}",
                        number(p, form)?,
                        number(w, form)?,
                        number(port, form)?,
                        name(n)
                    )),
                    _ => Err(bad(form)),
                }
            }
            DnsRecordType::Soa => {
                let form = "\"mname rname serial refresh retry expire minimum\"";
                match fields.as_slice() {
                    [m, r, rest @ ..] if rest.len() == 5 => {
                        let mut out = format!("{} {}", name(m), name(r));
                        for n in rest {
                            out.push(' ');
                            out.push_str(&number(n, form)?);
                        }
                        Ok(out)
                    }
                    _ => Err(bad(form)),
                }
            }
            DnsRecordType::Caa => {
                let form = "\"flags tag value\" such as \"0 issue letsencrypt.org\"";
                let trimmed = text.trim();
                let (flags, rest) = trimmed
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| bad(form))?;
                let (tag, value) = rest
                    .trim_start()
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| bad(form))?;
                let flags = flags.parse::<u8>().map_err(|_| bad(form))?;
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                Ok(format!("{flags} {} {value}", tag.to_ascii_lowercase()))
            }
            DnsRecordType::Txt if text.is_empty() => Err(bad("a text")),
            DnsRecordType::Txt => Ok(text.to_string()),
        }
    }
}

impl fmt::Display for DnsRecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url.redacted())
            .field("method", &self.method.as_str())
            .field("headers", &header_names)
            .field("expected_status", &self.expected_status)
            .field("timeout", &self.timeout)
            .field("interval", &self.interval)
            .field("follow_redirects", &self.follow_redirects)
            .field("probe", &self.probe)
            .field("assertions", &self.assertions)
            .field("ca", &self.ca)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRaw {
    #[serde(default)]
    defaults: Option<DefaultsRaw>,
    #[serde(default)]
    api: Vec<ApiRaw>,
    #[serde(default)]
    maintenance: Vec<MaintenanceRaw>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefaultsRaw {
    timeout: Option<DurationRaw>,
    interval: Option<DurationRaw>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expected_status: Option<StatusRaw>,
    follow_redirects: Option<bool>,
    #[serde(default)]
    expect_headers: BTreeMap<String, String>,
    max_response_time: Option<DurationRaw>,
    max_body_bytes: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiRaw {
    name: Option<String>,
    kind: Option<String>,
    url: Option<String>,
    address: Option<String>,
    token: Option<String>,
    grace: Option<DurationRaw>,
    dns_name: Option<String>,
    record_type: Option<String>,
    expect: Option<String>,
    resolver: Option<String>,
    expect_body: Option<String>,
    expect_body_regex: Option<String>,
    #[serde(default)]
    expect_json: BTreeMap<String, toml::Value>,
    #[serde(default)]
    expect_headers: BTreeMap<String, String>,
    max_response_time: Option<DurationRaw>,
    max_body_bytes: Option<i64>,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    expected_status: Option<StatusRaw>,
    timeout: Option<DurationRaw>,
    interval: Option<DurationRaw>,
    follow_redirects: Option<bool>,
    ca_file: Option<String>,
}

/// A duration as the file may write it: a number of seconds or a text
/// such as `"2h"`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum DurationRaw {
    Seconds(f64),
    Text(String),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum StatusRaw {
    One(i64),
    Many(Vec<i64>),
    Text(String),
}

/// Reads and validates the endpoints file at `path`. `env` resolves
/// `${NAME}` references in header values.
pub fn load_file(path: &Path, env: &Env) -> Result<Vec<Endpoint>, ConfigError> {
    let text = read(path)?;
    let base = path.parent().unwrap_or(Path::new(""));
    parse_in(&text, &path.display().to_string(), env, base)
}

/// Reads the `[[maintenance]]` entries of the endpoints file at `path`.
pub fn load_maintenance(path: &Path) -> Result<Vec<MaintenanceWindow>, ConfigError> {
    let text = read(path)?;
    parse_maintenance(&text, &path.display().to_string())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "APIS_FILE",
            format!("cannot read endpoints file `{}`: {e}", path.display()),
        )
    })
}

fn parse_raw(text: &str, source: &str) -> Result<FileRaw, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let key = match line {
            Some(l) => format!("{source}:{l}"),
            None => source.to_string(),
        };
        ConfigError::new(key, e.message().replace('\n', " "))
    })
}

/// Parses an endpoints file's text and validates its `[[maintenance]]`
/// entries only (the endpoints are checked for unknown keys, not
/// validated); `source` names it in errors.
pub fn parse_maintenance(text: &str, source: &str) -> Result<Vec<MaintenanceWindow>, ConfigError> {
    maintenance_windows(parse_raw(text, source)?.maintenance, source)
}

fn maintenance_windows(
    raw: Vec<MaintenanceRaw>,
    source: &str,
) -> Result<Vec<MaintenanceWindow>, ConfigError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| {
            maintenance::validate(m)
                .map_err(|msg| ConfigError::new(format!("{source}: maintenance[{i}]"), msg))
        })
        .collect()
}

/// Parses and validates an endpoints file's text; `source` names it in
/// errors. Its `[[maintenance]]` entries are validated too, and dropped.
pub fn parse(text: &str, source: &str, env: &Env) -> Result<Vec<Endpoint>, ConfigError> {
    parse_in(text, source, env, Path::new(""))
}

/// [`parse`], with relative `ca_file` paths resolved against `base` (the
/// endpoints file's directory).
pub fn parse_in(
    text: &str,
    source: &str,
    env: &Env,
    base: &Path,
) -> Result<Vec<Endpoint>, ConfigError> {
    let raw = parse_raw(text, source)?;
    let defaults = raw.defaults.unwrap_or_default();
    if raw.api.is_empty() {
        return Err(ConfigError::new(
            source,
            "expected at least one [[api]] entry with a name and a url",
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.api.len());
    for (i, api) in raw.api.into_iter().enumerate() {
        let label = match &api.name {
            Some(n) => format!("{source}: api[{i}] \"{n}\""),
            None => format!("{source}: api[{i}]"),
        };
        let ep = validate(api, &defaults, env, base).map_err(|m| ConfigError::new(&label, m))?;
        if !seen.insert(ep.name.clone()) {
            return Err(ConfigError::new(
                label,
                format!(
                    "duplicate endpoint name `{}`: names must be unique",
                    ep.name
                ),
            ));
        }
        out.push(ep);
    }
    // A token names one endpoint: two with the same would be ambiguous.
    for (i, a) in out.iter().enumerate() {
        if let Probe::Heartbeat(h) = &a.probe {
            let same = out[..i].iter().any(|b| {
                matches!(&b.probe, Probe::Heartbeat(o) if o.token.expose_secret() == h.token.expose_secret())
            });
            if same {
                return Err(ConfigError::new(
                    format!("{source}: api[{i}] \"{}\"", a.name),
                    "token: the same as another heartbeat's: give each its own",
                ));
            }
        }
    }
    maintenance_windows(raw.maintenance, source)?;
    Ok(out)
}

fn validate(
    mut api: ApiRaw,
    defaults: &DefaultsRaw,
    env: &Env,
    base: &Path,
) -> Result<Endpoint, String> {
    let name = api
        .name
        .clone()
        .ok_or("name: missing (expected a unique text)")?;
    let name = name.trim().to_string();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(format!(
            "name: expected 1 to 200 printable characters, got `{name}`"
        ));
    }
    let kind = api.kind.as_deref().map(str::trim).unwrap_or("http");
    if !KINDS.contains(&kind) {
        return Err(format!(
            "kind: expected one of \"{}\", got `{kind}`",
            KINDS.join("\", \"")
        ));
    }
    // Keys that belong to another kind are refused, naming the kind.
    let http_only = [
        ("url", api.url.is_some()),
        ("method", api.method.is_some()),
        ("headers", !api.headers.is_empty()),
        ("body", api.body.is_some()),
        ("expected_status", api.expected_status.is_some()),
        ("follow_redirects", api.follow_redirects.is_some()),
        ("expect_body", api.expect_body.is_some()),
        ("expect_body_regex", api.expect_body_regex.is_some()),
        ("expect_json", !api.expect_json.is_empty()),
        ("expect_headers", !api.expect_headers.is_empty()),
        ("max_body_bytes", api.max_body_bytes.is_some()),
        ("ca_file", api.ca_file.is_some()),
    ];
    let per_kind = [
        ("address", api.address.is_some(), "tcp"),
        ("token", api.token.is_some(), "heartbeat"),
        ("grace", api.grace.is_some(), "heartbeat"),
        ("dns_name", api.dns_name.is_some(), "dns"),
        ("record_type", api.record_type.is_some(), "dns"),
        ("expect", api.expect.is_some(), "dns"),
        ("resolver", api.resolver.is_some(), "dns"),
    ];
    for (key, present, owner) in per_kind
        .into_iter()
        .chain(http_only.into_iter().map(|(k, p)| (k, p, "http")))
    {
        if present && owner != kind {
            return Err(format!(
                "{key}: only for kind = \"{owner}\" (this entry is kind = \"{kind}\")"
            ));
        }
    }
    let timeout = duration(
        api.timeout.take().or(defaults.timeout.clone()),
        DEFAULT_TIMEOUT,
    )
    .map_err(|m| format!("timeout: {m}"))?;
    let interval = duration(
        api.interval.take().or(defaults.interval.clone()),
        DEFAULT_INTERVAL,
    )
    .map_err(|m| format!("interval: {m}"))?;
    if timeout.is_zero() {
        return Err("timeout: expected a duration above zero".into());
    }
    if interval < MIN_INTERVAL {
        return Err(format!(
            "interval: expected at least {} ms, got {} ms",
            MIN_INTERVAL.as_millis(),
            interval.as_millis()
        ));
    }
    let max_response_time = match api
        .max_response_time
        .take()
        .or(defaults.max_response_time.clone())
    {
        None => None,
        Some(raw) => Some(
            duration_value(raw)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or("max_response_time: expected a duration above zero, e.g. \"2s\"")?,
        ),
    };
    let mut ep = Endpoint {
        name,
        url: SecretUrl::from(Url::parse("http://unset.invalid/").map_err(|e| e.to_string())?),
        method: Method::GET,
        headers: HeaderMap::new(),
        body: None,
        expected_status: ExpectedStatus::AnySuccess,
        timeout,
        interval,
        follow_redirects: false,
        probe: Probe::Http,
        assertions: Assertions {
            max_response_time,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            ..Assertions::default()
        },
        ca: None,
    };
    match kind {
        "http" => http_entry(&mut ep, api, defaults, env, base)?,
        "tcp" => {
            let address = api
                .address
                .ok_or("address: missing (kind = \"tcp\" needs address = \"host:port\")")?;
            let address = address.trim().to_string();
            check_address(&address).map_err(|m| format!("address: {m}"))?;
            ep.url = target(&format!("tcp://{address}"))?;
            ep.probe = Probe::Tcp { address };
        }
        "heartbeat" => {
            let token = api.token.ok_or(
                "token: missing (kind = \"heartbeat\" needs a secret token, e.g. token = \"${JOB_TOKEN}\")",
            )?;
            let token = expand_env(token.trim(), env).map_err(|m| format!("token: {m}"))?;
            if token.len() < MIN_TOKEN_LEN
                || !token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
            {
                return Err(format!(
                    "token: expected at least {MIN_TOKEN_LEN} characters from A-Z a-z 0-9 - _ . ~ \
                     (it is the secret part of POST /heartbeat/<token>)"
                ));
            }
            let grace =
                duration(api.grace, DEFAULT_HEARTBEAT_GRACE).map_err(|m| format!("grace: {m}"))?;
            ep.url = target("heartbeat://pinger/heartbeat/REDACTED")?;
            ep.probe = Probe::Heartbeat(HeartbeatProbe {
                token: token.into(),
                grace,
            });
        }
        "dns" => {
            let probe = dns_entry(api)?;
            let server = probe.resolver.map(|a| a.to_string()).unwrap_or_default();
            ep.url = target(&format!(
                "dns://{server}/{}/{}",
                probe.name, probe.record_type
            ))?;
            ep.probe = Probe::Dns(probe);
        }
        other => return Err(format!("kind: `{other}` is not handled")),
    }
    Ok(ep)
}

/// The `url` shown and stored for a check that is not an HTTP request.
fn target(text: &str) -> Result<SecretUrl, String> {
    Url::parse(text)
        .map(SecretUrl::from)
        .map_err(|e| format!("cannot describe the target `{text}` as a URL ({e})"))
}

/// The keys of a `kind = "dns"` entry.
fn dns_entry(api: ApiRaw) -> Result<DnsProbe, String> {
    let name = api
        .dns_name
        .ok_or("dns_name: missing (kind = \"dns\" needs dns_name = \"the.name.to.resolve\")")?;
    let name = check_dns_name(name.trim()).map_err(|m| format!("dns_name: {m}"))?;
    let record_type = match api.record_type {
        None => DnsRecordType::A,
        Some(t) => DnsRecordType::parse(&t).ok_or_else(|| {
            let all: Vec<&str> = DnsRecordType::ALL.iter().map(|t| t.as_str()).collect();
            format!(
                "record_type: expected one of {}, got `{}`",
                all.join(", "),
                t.escape_debug()
            )
        })?,
    };
    let expect = match api.expect {
        None => None,
        Some(e) => Some(
            record_type
                .canonical_expect(&e)
                .map_err(|m| format!("expect: {m}"))?,
        ),
    };
    let resolver = match api.resolver {
        None => None,
        Some(r) => Some(resolver_address(r.trim()).map_err(|m| format!("resolver: {m}"))?),
    };
    Ok(DnsProbe {
        name,
        record_type,
        expect,
        resolver,
    })
}

/// A DNS name as written (ASCII: an internationalised name in its
/// `xn--` form), without its trailing dot.
fn check_dns_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    let shown = text.escape_debug();
    if name.is_empty() {
        return Err(format!(
            "expected a name such as \"api.example.com\", got `{shown}`"
        ));
    }
    if !name.chars().all(|c| c.is_ascii_graphic()) || name.contains('/') {
        return Err(format!(
            "expected letters, digits, `-`, `_` and dots (an internationalised name in its \
             xn-- form), got `{shown}`"
        ));
    }
    if name.len() > 253 || name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!(
            "expected labels of 1 to 63 characters, 253 in all, got `{shown}`"
        ));
    }
    Ok(name.to_string())
}

/// `ip:port` (an IPv6 address in brackets), or an address alone for
/// port 53.
fn resolver_address(text: &str) -> Result<SocketAddr, String> {
    let addr = text
        .parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!(
                "expected \"ip:port\" such as \"192.0.2.53:53\" or \"[2001:db8::53]:53\", got `{}`",
                text.escape_debug()
            )
        })?;
    if addr.port() == 0 {
        return Err(format!("port 0 is not a DNS server's port, got `{text}`"));
    }
    Ok(addr)
}

/// `host:port`, with an IPv6 host in brackets.
fn check_address(address: &str) -> Result<(), String> {
    let bad = || format!("expected \"host:port\" such as \"db.example.com:5432\", got `{address}`");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port == 0 || host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    Ok(())
}

/// The keys of a `kind = "http"` entry.
fn http_entry(
    ep: &mut Endpoint,
    api: ApiRaw,
    defaults: &DefaultsRaw,
    env: &Env,
    base: &Path,
) -> Result<(), String> {
    if let Some(file) = &api.ca_file {
        let file = file.trim();
        if file.is_empty() {
            return Err("ca_file: expected the path of a PEM file of CA certificates".into());
        }
        let ca = CaBundle::load(&base.join(file)).map_err(|m| format!("ca_file: {m}"))?;
        ep.ca = Some(ca);
    }
    let raw_url = api
        .url
        .ok_or("url: missing (expected an http:// or https:// URL)")?;
    // Errors show what was written, redacted: never a variable's value.
    let shown = RedactedUrl::from_text(&raw_url);
    let expanded = expand_env(raw_url.trim(), env).map_err(|m| format!("url: {m}"))?;
    let url = Url::parse(&expanded)
        .map_err(|e| format!("url: expected an http:// or https:// URL, got `{shown}` ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "url: expected an http:// or https:// URL with a host, got `{shown}`"
        ));
    }
    ep.url = SecretUrl::new(url, raw_url.trim());
    if let Some(m) = api.method {
        let upper = m.trim().to_ascii_uppercase();
        ep.method = Method::from_bytes(upper.as_bytes())
            .map_err(|_| format!("method: expected an HTTP method such as GET, got `{m}`"))?;
    }
    for (k, v) in defaults.headers.iter().chain(api.headers.iter()) {
        let hname = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("headers: `{k}` is not a valid header name"))?;
        let value = expand_env(v, env).map_err(|m| format!("headers.{k}: {m}"))?;
        let mut hvalue = HeaderValue::from_str(&value)
            .map_err(|_| format!("headers.{k}: the value is not a valid header value"))?;
        hvalue.set_sensitive(true);
        ep.headers.insert(hname, hvalue);
    }
    ep.body = api.body;
    if let Some(s) = api.expected_status.or(defaults.expected_status.clone()) {
        ep.expected_status = status(s)?;
    }
    ep.follow_redirects = api
        .follow_redirects
        .or(defaults.follow_redirects)
        .unwrap_or(false);
    let a = &mut ep.assertions;
    a.body = api.expect_body;
    if let Some(re) = api.expect_body_regex {
        a.body_regex = Some(regex::Regex::new(&re).map_err(|e| {
            // Its text spans lines (the pattern, a caret, the reason):
            // the reason is the last.
            let text = e.to_string();
            let why = text
                .lines()
                .last()
                .unwrap_or("")
                .trim_start_matches("error: ");
            format!("expect_body_regex: invalid regular expression ({why})")
        })?);
    }
    for (path, value) in api.expect_json {
        let compiled = serde_json_path::JsonPath::parse(&path).map_err(|e| {
            format!("expect_json: `{path}` is not a valid JSONPath (RFC 9535): {e}")
        })?;
        let expected = serde_json::to_value(&value)
            .map_err(|e| format!("expect_json.`{path}`: the value cannot be JSON ({e})"))?;
        a.json.push(JsonAssertion {
            path_text: path,
            path: compiled,
            expected,
        });
    }
    let mut expect_headers = defaults.expect_headers.clone();
    expect_headers.extend(api.expect_headers);
    for (k, v) in expect_headers {
        let hname = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("expect_headers: `{k}` is not a valid header name"))?;
        a.headers.push((hname, v));
    }
    if let Some(n) = api.max_body_bytes.or(defaults.max_body_bytes) {
        if !(1..=1 << 30).contains(&n) {
            return Err(format!(
                "max_body_bytes: expected 1 to {} (1 GiB), got {n}",
                1u64 << 30
            ));
        }
        a.max_body_bytes = n as usize;
    }
    Ok(())
}

fn duration(raw: Option<DurationRaw>, default: Duration) -> Result<Duration, String> {
    raw.map_or(Ok(default), duration_value)
}

/// A duration of the file: seconds, or a text such as `"2h"`.
pub(crate) fn duration_value(raw: DurationRaw) -> Result<Duration, String> {
    match raw {
        DurationRaw::Seconds(s) if (0.0..1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
        DurationRaw::Seconds(s) => Err(format!("expected a positive duration, got {s}")),
        DurationRaw::Text(t) => parse_duration(&t),
    }
}

fn status(raw: StatusRaw) -> Result<ExpectedStatus, String> {
    let check = |c: i64| -> Result<u16, String> {
        if (100..=599).contains(&c) {
            Ok(c as u16)
        } else {
            Err(format!(
                "expected_status: expected HTTP codes from 100 to 599, got {c}"
            ))
        }
    };
    match raw {
        StatusRaw::One(c) => Ok(ExpectedStatus::Codes(vec![check(c)?])),
        StatusRaw::Many(v) if !v.is_empty() => Ok(ExpectedStatus::Codes(
            v.into_iter().map(check).collect::<Result<_, _>>()?,
        )),
        StatusRaw::Many(_) => Err("expected_status: expected at least one code".into()),
        StatusRaw::Text(t) if t.eq_ignore_ascii_case("2xx") => Ok(ExpectedStatus::AnySuccess),
        StatusRaw::Text(t) => Err(format!(
            "expected_status: expected a code, a list of codes or \"2xx\", got `{t}`"
        )),
    }
}

/// Replaces each `${NAME}` with the value of environment variable NAME.
fn expand_env(value: &str, env: &Env) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${` in value".to_string())?;
        let var = &after[..end];
        let v = env
            .get(var)
            .ok_or_else(|| format!("refers to environment variable {var}, which is not set"))?;
        out.push_str(v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Vec<Endpoint> {
        parse(text, "apis.toml", &Env::default()).unwrap()
    }

    fn parse_err(text: &str) -> ConfigError {
        parse(text, "apis.toml", &Env::default()).unwrap_err()
    }

    #[test]
    fn minimal_entry_gets_the_defaults() {
        let eps = parse_ok("[[api]]\nname = \"A\"\nurl = \"http://a.test/x\"\n");
        assert_eq!(eps.len(), 1);
        let a = &eps[0];
        assert_eq!(a.method, Method::GET);
        assert_eq!(a.expected_status, ExpectedStatus::AnySuccess);
        assert_eq!(a.timeout, DEFAULT_TIMEOUT);
        assert_eq!(a.interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn every_field_is_read() {
        let eps = parse_ok(
            r#"
[defaults]
interval = "5s"
headers = { User-Agent = "t" }
[[api]]
name = "B"
url = "https://b.test/"
method = "post"
headers = { Accept = "application/json" }
body = "{}"
expected_status = [200, 204]
timeout = 2.5
"#,
        );
        let b = &eps[0];
        assert_eq!(b.method, Method::POST);
        assert_eq!(b.interval, Duration::from_secs(5));
        assert_eq!(b.timeout, Duration::from_millis(2500));
        assert_eq!(b.expected_status, ExpectedStatus::Codes(vec![200, 204]));
        assert_eq!(b.headers.len(), 2);
        assert_eq!(b.body.as_deref(), Some("{}"));
    }

    #[test]
    fn assertions_are_read_with_their_defaults() {
        let eps = parse_ok(
            r#"
[defaults]
max_response_time = "2s"
expect_headers = { Content-Type = "application/json" }
[[api]]
name = "A"
url = "https://a.test/health"
expect_body = "ok"
expect_body_regex = 'v\d+'
expect_json = { "$.status" = "ok", "$.count" = 3 }
expect_headers = { X-Region = "eu" }
max_body_bytes = 4096
[[api]]
name = "B"
url = "https://b.test/"
max_response_time = "500ms"
"#,
        );
        let a = &eps[0].assertions;
        assert_eq!(a.body.as_deref(), Some("ok"));
        assert_eq!(a.body_regex.as_ref().map(|r| r.as_str()), Some("v\\d+"));
        assert_eq!(a.json.len(), 2);
        assert_eq!(a.json[0].path_text, "$.count");
        assert_eq!(a.json[0].expected, serde_json::json!(3));
        assert_eq!(a.headers.len(), 2);
        assert_eq!(a.max_body_bytes, 4096);
        assert_eq!(a.max_response_time, Some(Duration::from_secs(2)));
        let b = &eps[1].assertions;
        assert!(!b.need_body());
        assert_eq!(b.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(b.max_response_time, Some(Duration::from_millis(500)));
        assert_eq!(
            eps[0].assertions.describe(),
            vec![
                "body contains \"ok\"",
                "body matches /v\\d+/",
                "$.count == 3",
                "$.status == \"ok\"",
                "header content-type: \"application/json\"",
                "header x-region: \"eu\"",
                "response within 2s",
            ]
        );
    }

    #[test]
    fn a_tcp_entry_has_an_address_and_no_http_keys() {
        let eps = parse_ok(
            "[[api]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"db.test:5432\"\n\
             max_response_time = \"1s\"\n[[api]]\nname = \"v6\"\nkind = \"tcp\"\naddress = \"[::1]:22\"\n",
        );
        assert!(matches!(&eps[0].probe, Probe::Tcp { address } if address == "db.test:5432"));
        assert_eq!(eps[0].url.redacted().as_str(), "tcp://db.test:5432");
        assert_eq!(eps[0].probe.kind(), "tcp");
        assert_eq!(
            eps[0].assertions.max_response_time,
            Some(Duration::from_secs(1))
        );
        assert_eq!(eps[1].url.redacted().as_str(), "tcp://[::1]:22");
        for (entry, key) in [
            (
                "kind = \"tcp\"\naddress = \"h:1\"\nurl = \"http://a.test/\"",
                "url: only for kind = \"http\"",
            ),
            (
                "kind = \"tcp\"\naddress = \"h:1\"\nexpect_body = \"x\"",
                "expect_body: only for kind = \"http\"",
            ),
            (
                "url = \"http://a.test/\"\naddress = \"h:1\"",
                "address: only for kind = \"tcp\"",
            ),
            ("kind = \"tcp\"", "address: missing"),
            (
                "kind = \"tcp\"\naddress = \"h\"",
                "address: expected \"host:port\"",
            ),
            (
                "kind = \"tcp\"\naddress = \"h:0\"",
                "address: expected \"host:port\"",
            ),
            (
                "kind = \"ping\"",
                "kind: expected one of \"http\", \"tcp\", \"dns\", \"heartbeat\", got `ping`",
            ),
            (
                "url = \"http://a.test/\"\nexpect_json = { \"status\" = 1 }",
                "expect_json: `status` is not a valid JSONPath",
            ),
            (
                "url = \"http://a.test/\"\nexpect_body_regex = \"a{2\"",
                "expect_body_regex: invalid regular expression",
            ),
            (
                "url = \"http://a.test/\"\nmax_body_bytes = 0",
                "max_body_bytes: expected 1 to",
            ),
            (
                "url = \"http://a.test/\"\nmax_response_time = 0",
                "max_response_time: expected a duration above zero",
            ),
        ] {
            let err = parse_err(&format!("[[api]]\nname = \"A\"\n{entry}\n"));
            assert_eq!(err.key, "apis.toml: api[0] \"A\"", "{entry}: {err}");
            assert!(err.message.starts_with(key), "{entry}: `{key}` in {err}");
        }
    }

    #[test]
    fn a_dns_entry_has_a_name_a_type_an_expected_answer_and_a_resolver() {
        let eps = parse_ok(
            r#"
[[api]]
name = "record"
kind = "dns"
dns_name = "API.example.com."
record_type = "aaaa"
expect = "2001:DB8:0:0::0010"
resolver = "127.0.0.1:5353"
max_response_time = "1s"
[[api]]
name = "system"
kind = "dns"
dns_name = "api.example.com"
[[api]]
name = "v6 resolver"
kind = "dns"
dns_name = "example.com"
record_type = "MX"
expect = "10   Mail.Example.COM."
resolver = "::1"
"#,
        );
        let Probe::Dns(p) = &eps[0].probe else {
            panic!("{:?}", eps[0].probe)
        };
        assert_eq!(p.name, "API.example.com");
        assert_eq!(p.record_type, DnsRecordType::Aaaa);
        assert_eq!(p.expect.as_deref(), Some("2001:db8::10"));
        assert_eq!(p.resolver, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(eps[0].probe.kind(), "dns");
        assert_eq!(
            eps[0].url.redacted().as_str(),
            "dns://127.0.0.1:5353/API.example.com/AAAA"
        );
        assert_eq!(
            eps[0].assertions.max_response_time,
            Some(Duration::from_secs(1))
        );
        let Probe::Dns(p) = &eps[1].probe else {
            panic!("{:?}", eps[1].probe)
        };
        assert_eq!(
            (p.record_type, &p.expect, p.resolver),
            (DnsRecordType::A, &None, None)
        );
        assert_eq!(eps[1].url.redacted().as_str(), "dns:///api.example.com/A");
        let Probe::Dns(p) = &eps[2].probe else {
            panic!("{:?}", eps[2].probe)
        };
        assert_eq!(p.expect.as_deref(), Some("10 mail.example.com"));
        assert_eq!(p.resolver, Some("[::1]:53".parse().unwrap()));
        assert_eq!(
            eps[2].url.redacted().as_str(),
            "dns://[::1]:53/example.com/MX"
        );
    }

    #[test]
    fn expected_dns_answers_are_read_in_their_canonical_text() {
        for (t, written, canonical) in [
            ("A", " 192.0.2.10 ", "192.0.2.10"),
            ("AAAA", "2001:0db8::0001", "2001:db8::1"),
            ("CNAME", "Target.Example.com.", "target.example.com"),
            ("NS", "ns1.example.com", "ns1.example.com"),
            ("PTR", "host.example.com.", "host.example.com"),
            ("MX", "010 mail.example.com.", "10 mail.example.com"),
            (
                "SRV",
                "10 5 443 SIP.example.com.",
                "10 5 443 sip.example.com",
            ),
            ("TXT", "v=spf1 -all", "v=spf1 -all"),
            (
                "CAA",
                "0 ISSUE \"letsencrypt.org\"",
                "0 issue letsencrypt.org",
            ),
            (
                "SOA",
                "ns1.example.com. Hostmaster.example.com. 2024010101 7200 3600 1209600 300",
                "ns1.example.com hostmaster.example.com 2024010101 7200 3600 1209600 300",
            ),
        ] {
            let rt = DnsRecordType::parse(t).unwrap();
            assert_eq!(
                rt.canonical_expect(written).as_deref(),
                Ok(canonical),
                "{t}"
            );
        }
        for (t, written) in [
            ("A", "2001:db8::1"),
            ("AAAA", "192.0.2.1"),
            ("CNAME", "two names"),
            ("MX", "mail.example.com"),
            ("MX", "high mail.example.com"),
            ("SRV", "10 5 sip.example.com"),
            ("CAA", "issue letsencrypt.org"),
            ("SOA", "ns1.example.com hostmaster.example.com 1 2 3"),
            ("TXT", ""),
        ] {
            let rt = DnsRecordType::parse(t).unwrap();
            let err = rt.canonical_expect(written).unwrap_err();
            assert!(err.starts_with("expected "), "{t} {written}: {err}");
            assert!(err.contains(&format!("record_type = \"{t}\"")), "{err}");
        }
    }

    #[test]
    fn bad_dns_entries_are_named() {
        for (entry, key) in [
            ("kind = \"dns\"", "dns_name: missing"),
            ("kind = \"dns\"\ndns_name = \"\"", "dns_name: expected a name"),
            ("kind = \"dns\"\ndns_name = \"a b.test\"", "dns_name: expected letters"),
            ("kind = \"dns\"\ndns_name = \"a..test\"", "dns_name: expected labels"),
            ("kind = \"dns\"\ndns_name = \"bücher.test\"", "dns_name: expected letters"),
            (
                "kind = \"dns\"\ndns_name = \"a.test\"\nrecord_type = \"AXFR\"",
                "record_type: expected one of A, AAAA, CNAME, MX, NS, TXT, SRV, CAA, SOA, PTR, got `AXFR`",
            ),
            (
                "kind = \"dns\"\ndns_name = \"a.test\"\nresolver = \"dns.test:53\"",
                "resolver: expected \"ip:port\"",
            ),
            (
                "kind = \"dns\"\ndns_name = \"a.test\"\nresolver = \"127.0.0.1:0\"",
                "resolver: port 0",
            ),
            (
                "kind = \"dns\"\ndns_name = \"a.test\"\nexpect = \"not-an-ip\"",
                "expect: expected an IPv4 address",
            ),
            (
                "kind = \"dns\"\ndns_name = \"a.test\"\nurl = \"http://a.test/\"",
                "url: only for kind = \"http\"",
            ),
            (
                "kind = \"dns\"\ndns_name = \"a.test\"\nexpected_status = 200",
                "expected_status: only for kind = \"http\"",
            ),
            (
                "kind = \"dns\"\ndns_name = \"a.test\"\naddress = \"a.test:53\"",
                "address: only for kind = \"tcp\"",
            ),
            (
                "url = \"http://a.test/\"\ndns_name = \"a.test\"",
                "dns_name: only for kind = \"dns\" (this entry is kind = \"http\")",
            ),
            (
                "url = \"http://a.test/\"\nexpect = \"ok\"",
                "expect: only for kind = \"dns\"",
            ),
            (
                "kind = \"tcp\"\naddress = \"a.test:53\"\nresolver = \"127.0.0.1:53\"",
                "resolver: only for kind = \"dns\"",
            ),
            (
                "kind = \"tcp\"\naddress = \"a.test:53\"\nrecord_type = \"A\"",
                "record_type: only for kind = \"dns\"",
            ),
        ] {
            let err = parse_err(&format!("[[api]]\nname = \"A\"\n{entry}\n"));
            assert_eq!(err.key, "apis.toml: api[0] \"A\"", "{entry}: {err}");
            assert!(err.message.starts_with(key), "{entry}: `{key}` in {err}");
        }
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = parse_err("[[api]]\nname = \"A\"\nurl = \"http://a.test\"\ntiemout = 3\n");
        assert!(err.key.starts_with("apis.toml:"), "{err}");
        assert!(err.message.contains("tiemout"), "{err}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let err = parse_err(
            "[[api]]\nname = \"A\"\nurl = \"http://a.test\"\n[[api]]\nname = \"A\"\nurl = \"http://b.test\"\n",
        );
        assert!(err.key.contains("api[1]"), "{err}");
        assert!(err.message.contains("duplicate"), "{err}");
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["not a url", "ftp://a.test/", "http://"] {
            let err = parse_err(&format!("[[api]]\nname = \"A\"\nurl = \"{url}\"\n"));
            assert!(err.message.starts_with("url:"), "{url}: {err}");
        }
    }

    #[test]
    fn missing_fields_and_bad_values_are_named() {
        assert!(parse_err("[[api]]\nurl = \"http://a.test\"\n")
            .message
            .starts_with("name:"));
        assert!(parse_err("[[api]]\nname = \"A\"\n")
            .message
            .starts_with("url:"));
        assert!(
            parse_err("[[api]]\nname=\"A\"\nurl=\"http://a.test\"\nexpected_status = 999\n")
                .message
                .starts_with("expected_status:")
        );
        assert!(
            parse_err("[[api]]\nname=\"A\"\nurl=\"http://a.test\"\ninterval = \"10ms\"\n")
                .message
                .starts_with("interval:")
        );
        assert!(parse_err("").message.contains("at least one"));
    }

    #[test]
    fn header_values_expand_environment_variables_and_stay_hidden() {
        let env = Env::from_pairs([("TOKEN", "s3cr3t")]);
        let eps = parse(
            "[[api]]\nname=\"A\"\nurl=\"http://a.test\"\nheaders = { Authorization = \"Bearer ${TOKEN}\" }\n",
            "apis.toml",
            &env,
        )
        .unwrap();
        assert_eq!(eps[0].headers["authorization"], "Bearer s3cr3t");
        assert!(!format!("{:?}", eps[0]).contains("s3cr3t"));
        let err = parse(
            "[[api]]\nname=\"A\"\nurl=\"http://a.test\"\nheaders = { X = \"${NOPE}\" }\n",
            "apis.toml",
            &Env::default(),
        )
        .unwrap_err();
        assert!(err.message.contains("NOPE"), "{err}");
    }

    #[test]
    fn urls_expand_variables_and_are_shown_without_secrets() {
        let env = Env::from_pairs([("KEY", "k3y-SECRET"), ("PASS", "pa55-SECRET")]);
        let eps = parse(
            "[[api]]\nname=\"A\"\nurl=\"https://bob:${PASS}@a.test/v1/${KEY}/x?api_key=${KEY}&n=1\"\n",
            "apis.toml",
            &env,
        )
        .unwrap();
        let url = &eps[0].url;
        assert_eq!(url.expose().path(), "/v1/k3y-SECRET/x");
        assert_eq!(url.expose().password(), Some("pa55-SECRET"));
        assert_eq!(
            url.redacted().as_str(),
            "https://a.test/v1/${KEY}/x?api_key=REDACTED&n=REDACTED"
        );
        let debug = format!("{:?}", eps[0]);
        assert!(
            !debug.contains("SECRET") && !debug.contains("bob"),
            "{debug}"
        );
    }

    #[test]
    fn a_bad_url_is_named_without_its_secrets() {
        let env = Env::from_pairs([("KEY", "k3y-SECRET")]);
        for url in [
            "ftp://bob:pa55-SECRET@a.test/?k=SECRET",
            "https://bob:pa55-SECRET@bad host/?k=SECRET",
            "https://bob@/x?api_key=${KEY}",
            "https://a.test:99999/${KEY}?api_key=SECRET",
        ] {
            let err = parse(
                &format!("[[api]]\nname = \"A\"\nurl = \"{url}\"\n"),
                "apis.toml",
                &env,
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(err.message.starts_with("url:"), "{text}");
            assert!(!text.contains("SECRET") && !text.contains("bob"), "{text}");
        }
        let err = parse(
            "[[api]]\nname = \"A\"\nurl = \"https://a.test/${NOPE}\"\n",
            "apis.toml",
            &env,
        )
        .unwrap_err();
        assert!(err.message.contains("NOPE"), "{err}");
    }

    #[test]
    fn redirects_are_followed_only_when_asked() {
        let eps = parse_ok(
            "[[api]]\nname = \"A\"\nurl = \"http://a.test\"\n\
             [[api]]\nname = \"B\"\nurl = \"http://b.test\"\nfollow_redirects = true\n",
        );
        assert!(!eps[0].follow_redirects);
        assert!(eps[1].follow_redirects);
        let eps = parse_ok(
            "[defaults]\nfollow_redirects = true\n\
             [[api]]\nname = \"A\"\nurl = \"http://a.test\"\nexpected_status = 302\n\
             [[api]]\nname = \"B\"\nurl = \"http://b.test\"\nfollow_redirects = false\n",
        );
        assert!(eps[0].follow_redirects);
        assert_eq!(eps[0].expected_status, ExpectedStatus::Codes(vec![302]));
        assert!(!eps[1].follow_redirects);
        let err = parse_err(
            "[[api]]\nname = \"A\"\nurl = \"http://a.test\"\nfollow_redirects = \"yes\"\n",
        );
        assert!(err.message.contains("bool"), "{err}");
    }

    #[test]
    fn endpoints_parse_beside_maintenance_entries() {
        let text = "[[api]]\nname = \"A\"\nurl = \"http://a.test\"\n\
                    headers = { X = \"${TOKEN}\" }\n\
                    [[maintenance]]\nweekdays = [\"sun\"]\nstart = \"22:00\"\nduration = \"2h\"\n";
        let env = Env::from_pairs([("TOKEN", "t")]);
        let eps = parse(text, "apis.toml", &env).unwrap();
        assert_eq!(eps.len(), 1);
        // The alerter reads the windows without the endpoints' variables.
        let windows = parse_maintenance(text, "apis.toml").unwrap();
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].schedule, "sun at 22:00");
        assert!(
            parse_maintenance("[[api]]\nname = \"A\"\nurl = \"x\"\n", "apis.toml")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_bad_maintenance_entry_stops_the_endpoints_too() {
        let err = parse_err(
            "[[api]]\nname = \"A\"\nurl = \"http://a.test\"\n\
             [[maintenance]]\ncron = \"0 2 * * SUN\"\nduration = \"0s\"\n",
        );
        assert_eq!(err.key, "apis.toml: maintenance[0]");
        assert!(err.message.starts_with("duration:"), "{err}");
    }

    #[test]
    fn the_shipped_file_lists_the_eight_seed_apis() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../apis.toml");
        let eps = load_file(&path, &Env::default()).unwrap();
        let names: Vec<&str> = eps.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "JSONPlaceholder",
                "PokeAPI",
                "CatFacts",
                "BoredAPI",
                "IPify",
                "RandomUser",
                "JokesAPI",
                "GitHub"
            ]
        );
    }
}
