//! A programmable DNS server over UDP on loopback, for tests of DNS
//! checks: it answers the records set for a (name, type), NOERROR without
//! answers for another type of a name it knows, NXDOMAIN for a name it does
//! not, and counts every query it receives. [`DnsServer::silence`] makes it
//! read queries and never answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// A query as received: its name (lower case, without the trailing dot)
/// and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub name: String,
    pub record_type: RecordType,
}

type Zone = Arc<Mutex<HashMap<(String, RecordType), Vec<RData>>>>;

/// The server; it stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Zone,
    queries: Arc<Mutex<Vec<Query>>>,
    silent: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    /// Starts on `127.0.0.1` on a UDP port the OS picks, knowing no name.
    pub async fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback UDP port");
        let addr = socket.local_addr().expect("local address");
        let zone: Zone = Arc::default();
        let queries: Arc<Mutex<Vec<Query>>> = Arc::default();
        let silent = Arc::new(AtomicBool::new(false));
        let (z, q, s) = (zone.clone(), queries.clone(), silent.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(request) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                if let Some(query) = request.query() {
                    lock(&q).push(Query {
                        name: key(query.name()),
                        record_type: query.query_type(),
                    });
                }
                if s.load(Ordering::SeqCst) {
                    continue;
                }
                if let Ok(bytes) = answer(&request, &z).to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        DnsServer {
            addr,
            zone,
            queries,
            silent,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the answers to (`name`, `record_type`) from now on, each in
    /// the text a zone file gives it: `"192.0.2.10"` (A), `"2001:db8::1"`
    /// (AAAA), `"target.test"` (CNAME, NS, PTR), `"10 mail.test"` (MX),
    /// `"10 5 443 sip.test"` (SRV), any text (TXT, one string). No answer
    /// makes the name known, without records of that type.
    pub fn set(&self, name: &str, record_type: &str, answers: &[&str]) {
        let rtype = RecordType::from_str(record_type).expect("a record type such as A");
        let data = answers.iter().map(|a| rdata(rtype, a)).collect();
        lock(&self.zone).insert((key_text(name), rtype), data);
    }

    /// From now on, reads queries (still counted) and never answers.
    pub fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    /// Every query received so far.
    pub fn queries(&self) -> Vec<Query> {
        lock(&self.queries).clone()
    }

    /// How many queries for (`name`, `record_type`) it received.
    pub fn queries_for(&self, name: &str, record_type: &str) -> usize {
        let rtype = RecordType::from_str(record_type).expect("a record type such as A");
        let name = key_text(name);
        lock(&self.queries)
            .iter()
            .filter(|q| q.name == name && q.record_type == rtype)
            .count()
    }
}

/// The answer to `request`: its records, NOERROR without records for a
/// name known with other types only, NXDOMAIN for an unknown name.
fn answer(request: &Message, zone: &Zone) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    let Some(query) = request.query() else {
        response.set_response_code(ResponseCode::FormErr);
        return response;
    };
    response.add_query(query.clone());
    let name = key(query.name());
    let zone = lock(zone);
    match zone.get(&(name.clone(), query.query_type())) {
        Some(data) => {
            for d in data {
                response.add_answer(Record::from_rdata(query.name().clone(), 60, d.clone()));
            }
        }
        None if zone.keys().any(|(n, _)| *n == name) => {}
        None => {
            response.set_response_code(ResponseCode::NXDomain);
        }
    }
    response
}

fn rdata(rtype: RecordType, text: &str) -> RData {
    let name = |t: &str| Name::from_ascii(t).expect("a DNS name");
    let fields: Vec<&str> = text.split_whitespace().collect();
    let num = |t: &str| t.parse::<u16>().expect("a number");
    match rtype {
        RecordType::A => RData::A(A(text.parse().expect("an IPv4 address"))),
        RecordType::AAAA => RData::AAAA(AAAA(text.parse().expect("an IPv6 address"))),
        RecordType::CNAME => RData::CNAME(CNAME(name(text))),
        RecordType::NS => RData::NS(NS(name(text))),
        RecordType::PTR => RData::PTR(PTR(name(text))),
        RecordType::MX => match fields[..] {
            [p, n] => RData::MX(MX::new(num(p), name(n))),
            _ => panic!("MX answers are \"preference exchange\", got {text:?}"),
        },
        RecordType::SRV => match fields[..] {
            [p, w, port, n] => RData::SRV(SRV::new(num(p), num(w), num(port), name(n))),
            _ => panic!("SRV answers are \"priority weight port target\", got {text:?}"),
        },
        RecordType::TXT => RData::TXT(TXT::new(vec![text.to_string()])),
        other => panic!("the test DNS server does not serve {other} records"),
    }
}

fn key(name: &Name) -> String {
    key_text(&name.to_ascii())
}

fn key_text(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
