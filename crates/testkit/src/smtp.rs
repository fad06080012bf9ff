//! A real SMTP server on loopback for tests: it speaks the protocol over TCP
//! (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT), keeps every
//! message it accepts, and can be stopped and started again on the same
//! port to play an outage.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The raw message (headers and body), dot-unstuffed.
    pub data: String,
    /// The user of AUTH, when the client logged in.
    pub user: Option<String>,
}

/// The server. Dropping it stops it.
pub struct SmtpServer {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    tasks: Option<JoinSet<()>>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(t) = self.tasks.as_mut() {
            t.abort_all();
        }
    }
}

impl SmtpServer {
    /// Starts on a free loopback port.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind SMTP port");
        let port = listener.local_addr().expect("local address").port();
        let mut s = SmtpServer {
            port,
            mails: Arc::default(),
            tasks: None,
        };
        s.serve(listener);
        s
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops listening and cuts every open connection.
    pub fn stop(&mut self) {
        if let Some(mut t) = self.tasks.take() {
            t.abort_all();
        }
    }

    /// Listens again on the same port after [`SmtpServer::stop`].
    pub async fn restart(&mut self) {
        self.stop();
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => {
                    self.serve(l);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot listen again on port {}: {last:?}", self.port);
    }

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `pred` holds for the messages, or `limit` passes.
    pub async fn wait_for(&self, limit: Duration, pred: impl Fn(&[Mail]) -> bool) -> Vec<Mail> {
        let start = std::time::Instant::now();
        loop {
            let mails = self.mails();
            if pred(&mails) || start.elapsed() >= limit {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let mails = self.mails.clone();
        let mut tasks = JoinSet::new();
        let conns: Arc<Mutex<JoinSet<()>>> = Arc::new(Mutex::new(JoinSet::new()));
        let conns_for_accept = conns.clone();
        tasks.spawn(async move {
            // Holding `conns` here ties the connections' lives to this task.
            let _guard = AbortOnDrop(conns_for_accept.clone());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let mails = mails.clone();
                conns_for_accept
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .spawn(session(stream, mails));
            }
        });
        self.tasks = Some(tasks);
    }
}

struct AbortOnDrop(Arc<Mutex<JoinSet<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
    }
}

async fn session(stream: TcpStream, mails: Arc<Mutex<Vec<Mail>>>) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r);
    macro_rules! reply {
        ($s:expr) => {
            if w.write_all(format!("{}\r\n", $s).as_bytes()).await.is_err() {
                return;
            }
        };
    }
    reply!("220 localhost apimon-test ESMTP");
    let mut from = String::new();
    let mut to: Vec<String> = Vec::new();
    let mut user: Option<String> = None;
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            reply!("250-localhost\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SIZE 10485760");
        } else if upper.starts_with("HELO") {
            reply!("250 localhost");
        } else if upper.starts_with("AUTH PLAIN") {
            let arg = cmd.split_whitespace().nth(2).map(str::to_string);
            let arg = match arg {
                Some(a) => a,
                None => {
                    reply!("334 ");
                    line.clear();
                    if lines.read_line(&mut line).await.is_err() {
                        return;
                    }
                    line.trim().to_string()
                }
            };
            user = Some(decode_plain_user(&arg));
            reply!("235 2.7.0 Authentication successful");
        } else if upper.starts_with("AUTH LOGIN") {
            reply!("334 VXNlcm5hbWU6");
            line.clear();
            if lines.read_line(&mut line).await.is_err() {
                return;
            }
            user = Some(b64_text(line.trim()));
            reply!("334 UGFzc3dvcmQ6");
            line.clear();
            if lines.read_line(&mut line).await.is_err() {
                return;
            }
            reply!("235 2.7.0 Authentication successful");
        } else if upper.starts_with("MAIL FROM:") {
            from = addr(&cmd[10..]);
            to.clear();
            reply!("250 2.1.0 Ok");
        } else if upper.starts_with("RCPT TO:") {
            to.push(addr(&cmd[8..]));
            reply!("250 2.1.5 Ok");
        } else if upper == "DATA" {
            reply!("354 End data with <CR><LF>.<CR><LF>");
            let mut data = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            mails.lock().unwrap_or_else(|e| e.into_inner()).push(Mail {
                from: from.clone(),
                to: to.clone(),
                data,
                user: user.clone(),
            });
            reply!("250 2.0.0 Ok: queued");
        } else if upper == "RSET" {
            from.clear();
            to.clear();
            reply!("250 2.0.0 Ok");
        } else if upper == "NOOP" {
            reply!("250 2.0.0 Ok");
        } else if upper == "QUIT" {
            reply!("221 2.0.0 Bye");
            return;
        } else {
            reply!("502 5.5.2 Command not recognized");
        }
    }
}

fn addr(s: &str) -> String {
    let s = s.trim();
    let s = s.split_whitespace().next().unwrap_or(s);
    s.trim_start_matches('<').trim_end_matches('>').to_string()
}

fn decode_plain_user(b64: &str) -> String {
    // \0user\0password
    b64_text(b64).split('\0').nth(1).unwrap_or("").to_string()
}

/// Minimal base64 decoding (standard alphabet) for the AUTH exchange.
fn b64_text(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let Some(v) = A.iter().position(|a| *a == c) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8_lossy(&out).to_string()
}
