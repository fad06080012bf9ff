//! `kind = "dns"` checks: one query for one name and record type, asked of
//! the entry's `resolver` or of the servers in the system's configuration
//! (`/etc/resolv.conf`). The response time is the resolve alone.
//!
//! [`Resolvers`] keeps one hickory resolver per resolver address and
//! timeout, built at the first check that needs it, not one per check. Its
//! cache is off (no entry is kept, every TTL is cut to zero) so that each
//! check asks the server; it sends one query per check (no retry: a lost
//! answer is a failed check), does not read `/etc/hosts`, and never appends
//! the system's search domains (the name is asked fully qualified).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimon_core::apis::{DnsProbe, DnsRecordType};
use apimon_core::assertions::Assertions;
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::check::{Done, ErrorKind, Failure};

/// Most answers shown in a failed `expect`'s message.
const MAX_SHOWN: usize = 5;
/// Most characters of one answer shown in a message.
const MAX_ANSWER_CHARS: usize = 120;

/// A resolver's server (`None`: the system's) and timeout.
type Key = (Option<SocketAddr>, Duration);

/// The resolvers of the DNS checks, shared by every clone of the
/// [`crate::check::Checker`].
#[derive(Clone, Default)]
pub(crate) struct Resolvers {
    /// One resolver per (`resolver` address or the system's, timeout): the
    /// timeout is a setting of the resolver, and entries with the same
    /// server almost always share it.
    built: Arc<Mutex<HashMap<Key, TokioResolver>>>,
}

impl Resolvers {
    /// The resolver for `server` (`None`: the system's configuration) with
    /// `timeout` per query, built once.
    fn get(&self, server: Option<SocketAddr>, timeout: Duration) -> Result<TokioResolver, Failure> {
        let key = (server, timeout);
        if let Some(r) = self.lock().get(&key) {
            return Ok(r.clone());
        }
        let mut builder = match server {
            Some(addr) => TokioResolver::builder_with_config(
                ResolverConfig::from_parts(
                    None,
                    vec![],
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
                ),
                TokioConnectionProvider::default(),
            ),
            // Read at each try until it succeeds: it may be fixed while
            // the pinger runs.
            None => TokioResolver::builder_tokio().map_err(|e| {
                Failure::new(
                    ErrorKind::Dns,
                    None,
                    format!("cannot read the system's resolver configuration: {e}"),
                )
            })?,
        };
        let opts = builder.options_mut();
        opts.timeout = timeout;
        // Retries after the first query: none.
        opts.attempts = 0;
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver = builder.build();
        self.lock().insert(key, resolver.clone());
        Ok(resolver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, TokioResolver>> {
        // A panic while holding it leaves the map as it was: usable.
        self.built.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for `probe` once, within `timeout`; then judges the answers:
    /// `max_response_time` (in `assertions`), then `expect`.
    pub(crate) async fn check(
        &self,
        probe: &DnsProbe,
        timeout: Duration,
        assertions: &Assertions,
    ) -> Result<Done, Failure> {
        let resolver = self.get(probe.resolver, timeout)?;
        let mut name = Name::from_ascii(&probe.name).map_err(|e| {
            Failure::new(
                ErrorKind::Dns,
                None,
                format!("`{}` is not a valid DNS name: {e}", probe.name),
            )
        })?;
        name.set_fqdn(true);
        let record_type = hickory_type(probe.record_type);
        let timed_out = || {
            Failure::new(
                ErrorKind::Timeout,
                None,
                format!(
                    "no answer for {} {} within {} ms",
                    probe.record_type,
                    probe.name,
                    timeout.as_millis()
                ),
            )
        };
        let started = Instant::now();
        let lookup = match tokio::time::timeout(timeout, resolver.lookup(name, record_type)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) if is_timeout(&e) => return Err(timed_out()),
            Ok(Err(e)) => return Err(failed(probe, &e, started.elapsed())),
            Ok(Ok(lookup)) => lookup,
        };
        let elapsed = started.elapsed();
        let answers: Vec<String> = lookup
            .record_iter()
            .filter(|r| r.record_type() == record_type)
            .filter_map(|r| canonical(r.data()))
            .collect();
        let fail = |kind: ErrorKind, message: String| Failure {
            kind,
            status: None,
            message,
            size: None,
            elapsed: Some(elapsed),
            tls_expires_at: None,
        };
        if answers.is_empty() {
            return Err(fail(
                ErrorKind::Dns,
                format!("no {} record for {}", probe.record_type, probe.name),
            ));
        }
        let no_headers = reqwest::header::HeaderMap::new();
        if let Err(e) = assertions.evaluate(&no_headers, &[], false, elapsed) {
            return Err(fail(ErrorKind::Assertion, e.0));
        }
        if let Some(want) = &probe.expect {
            if !answers.iter().any(|a| a == want) {
                return Err(fail(
                    ErrorKind::Assertion,
                    format!(
                        "expect: {} not among the {} answers for {}: {}",
                        shown(want),
                        probe.record_type,
                        probe.name,
                        seen(&answers)
                    ),
                ));
            }
        }
        Ok(Done {
            status: None,
            size: None,
            elapsed,
            tls_expires_at: None,
        })
    }
}

fn hickory_type(t: DnsRecordType) -> RecordType {
    match t {
        DnsRecordType::A => RecordType::A,
        DnsRecordType::Aaaa => RecordType::AAAA,
        DnsRecordType::Cname => RecordType::CNAME,
        DnsRecordType::Mx => RecordType::MX,
        DnsRecordType::Ns => RecordType::NS,
        DnsRecordType::Txt => RecordType::TXT,
        DnsRecordType::Srv => RecordType::SRV,
        DnsRecordType::Caa => RecordType::CAA,
        DnsRecordType::Soa => RecordType::SOA,
        DnsRecordType::Ptr => RecordType::PTR,
    }
}

/// A query's timeout as hickory reports it.
fn is_timeout(e: &ResolveError) -> bool {
    e.proto()
        .is_some_and(|p| matches!(p.kind(), ProtoErrorKind::Timeout))
}

/// A failed lookup, by the error's kind: an answer without records (the
/// name does not exist, or has none of this type) and a server's error
/// code are `dns`; a server that cannot be reached is `connect`.
fn failed(probe: &DnsProbe, e: &ResolveError, elapsed: Duration) -> Failure {
    let what = format!("{} {}", probe.record_type, probe.name);
    let (kind, message, answered) = match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            let why = match *response_code {
                ResponseCode::NXDomain => " (NXDOMAIN: the name does not exist)".to_string(),
                ResponseCode::NoError => String::new(),
                other => format!(" ({other})"),
            };
            (
                ErrorKind::Dns,
                format!("no {} record for {}{why}", probe.record_type, probe.name),
                true,
            )
        }
        Some(ProtoErrorKind::Io(io)) => (
            ErrorKind::Connect,
            format!("cannot ask the DNS server for {what}: {io}"),
            false,
        ),
        Some(ProtoErrorKind::NoConnections) => (
            ErrorKind::Connect,
            format!("no DNS server to ask for {what}"),
            false,
        ),
        _ => (ErrorKind::Dns, format!("cannot resolve {what}: {e}"), false),
    };
    Failure {
        kind,
        status: None,
        message,
        size: None,
        // An answer came: its time is kept, as for an HTTP error status.
        elapsed: answered.then_some(elapsed),
        tls_expires_at: None,
    }
}

/// An answer in the canonical text that `expect` is compared with (see
/// [`DnsRecordType::canonical_expect`]); `None` for data of another type.
fn canonical(data: &RData) -> Option<String> {
    let name = |n: &Name| n.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    Some(match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(n) => name(&n.0),
        RData::NS(n) => name(&n.0),
        RData::PTR(n) => name(&n.0),
        RData::MX(mx) => format!("{} {}", mx.preference(), name(mx.exchange())),
        RData::SRV(srv) => format!(
            "{} {} {} {}",
            srv.priority(),
            srv.weight(),
            srv.port(),
            name(srv.target())
        ),
        RData::TXT(txt) => txt
            .iter()
            .map(|part| String::from_utf8_lossy(part))
            .collect::<String>(),
        RData::CAA(caa) => format!(
            "{} {} {}",
            caa.flags(),
            caa.tag().as_str().to_ascii_lowercase(),
            String::from_utf8_lossy(caa.raw_value())
        ),
        RData::SOA(soa) => format!(
            "{} {} {} {} {} {} {}",
            name(soa.mname()),
            name(soa.rname()),
            soa.serial(),
            soa.refresh(),
            soa.retry(),
            soa.expire(),
            soa.minimum()
        ),
        _ => return None,
    })
}

/// `s` quoted, cut to [`MAX_ANSWER_CHARS`] characters.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_ANSWER_CHARS).collect();
    if s.chars().nth(MAX_ANSWER_CHARS).is_some() {
        out.push('…');
    }
    format!("{out:?}")
}

/// The first [`MAX_SHOWN`] answers, quoted, and how many more there are.
fn seen(answers: &[String]) -> String {
    let mut parts: Vec<String> = answers.iter().take(MAX_SHOWN).map(|a| shown(a)).collect();
    if answers.len() > MAX_SHOWN {
        parts.push(format!("and {} more", answers.len() - MAX_SHOWN));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{CAA, MX, SOA, SRV, TXT};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// What the pinger makes of an answer is what `expect` is read into.
    #[test]
    fn answers_and_expected_answers_share_one_canonical_text() {
        for (t, data, written) in [
            (
                DnsRecordType::A,
                RData::A("192.0.2.10".parse::<std::net::Ipv4Addr>().unwrap().into()),
                "192.0.2.10",
            ),
            (
                DnsRecordType::Aaaa,
                RData::AAAA("2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap().into()),
                "2001:DB8:0::10",
            ),
            (
                DnsRecordType::Cname,
                RData::CNAME(hickory_resolver::proto::rr::rdata::CNAME(n(
                    "Edge.Example.net.",
                ))),
                "edge.example.net",
            ),
            (
                DnsRecordType::Mx,
                RData::MX(MX::new(10, n("mail.example.com."))),
                "10 Mail.example.com.",
            ),
            (
                DnsRecordType::Srv,
                RData::SRV(SRV::new(10, 5, 443, n("sip.example.com."))),
                "10 5 443 sip.example.com",
            ),
            (
                DnsRecordType::Txt,
                RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()])),
                "v=spf1 -all",
            ),
            (
                DnsRecordType::Caa,
                RData::CAA(CAA::new_issue(false, Some(n("letsencrypt.org")), vec![])),
                "0 issue \"letsencrypt.org\"",
            ),
            (
                DnsRecordType::Soa,
                RData::SOA(SOA::new(
                    n("ns1.example.com."),
                    n("hostmaster.example.com."),
                    2024010101,
                    7200,
                    3600,
                    1209600,
                    300,
                )),
                "ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300",
            ),
        ] {
            assert_eq!(
                canonical(&data),
                Some(t.canonical_expect(written).unwrap()),
                "{t}"
            );
        }
    }

    #[test]
    fn the_answers_seen_are_bounded() {
        let many: Vec<String> = (0..8).map(|i| format!("192.0.2.{i}")).collect();
        assert_eq!(
            seen(&many),
            "\"192.0.2.0\", \"192.0.2.1\", \"192.0.2.2\", \"192.0.2.3\", \"192.0.2.4\", and 3 more"
        );
        let long = "x".repeat(500);
        assert_eq!(shown(&long).chars().count(), MAX_ANSWER_CHARS + 3);
    }
}
