//! Delivery: email over SMTP (lettre's async transport) and the Slack,
//! Teams and generic JSON webhooks.

pub mod render;
pub mod thread;

use std::time::Duration;

use apimon_core::db::notifications::Notification;
use lettre::message::{header::ContentType, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::{Channels, EmailConfig, SmtpTls, TeamsFormat, WebhookUrl};
use thread::Thread;

/// Sends notifications through the configured channels.
pub struct Sender {
    email: Option<(AsyncSmtpTransport<Tokio1Executor>, EmailConfig)>,
    http: reqwest::Client,
    channels: Channels,
}

impl Sender {
    pub fn new(channels: &Channels) -> anyhow::Result<Sender> {
        let email = match &channels.email {
            None => None,
            Some(cfg) => Some((smtp_transport(cfg)?, cfg.clone())),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            // A webhook that redirects fails: following would send the
            // alert elsewhere, and reqwest logs both URLs of a redirect.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("apimon-alerter/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            email,
            http,
            channels: channels.clone(),
        })
    }

    /// Sends one queued notification on its channel.
    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        self.send_in_thread(n, &[]).await
    }

    /// The domain of `ALERT_EMAIL_FROM`, for `Message-ID`s; `None` without
    /// email.
    pub fn email_domain(&self) -> Option<String> {
        self.email
            .as_ref()
            .map(|(_, cfg)| cfg.from.email.domain().to_string())
    }

    /// Sends one queued notification on its channel; an email answers the
    /// `openings` (dedup key, creation time) of its incidents.
    #[tracing::instrument(skip_all, fields(id = n.id, channel = %n.channel, kind = %n.kind))]
    pub async fn send_in_thread(
        &self,
        n: &Notification,
        openings: &[(String, chrono::DateTime<chrono::Utc>)],
    ) -> Result<(), String> {
        match n.channel.as_str() {
            "email" => {
                let domain = self.email_domain().unwrap_or_default();
                let thread = Thread::of(&n.dedup_key, n.created_at, openings, &domain);
                self.send_email_in_thread(&n.subject, &n.body_text, n.body_html.as_deref(), &thread)
                    .await
            }
            "slack" => {
                let body = render::slack_message(&n.subject, &n.body_text);
                self.post(self.channels.slack.as_ref(), &body).await
            }
            "teams" => {
                let body = match self.channels.teams_format {
                    TeamsFormat::Adaptive => render::teams_adaptive_card(
                        &n.subject,
                        &n.body_text,
                        render::dashboard_url(&n.payload).as_deref(),
                    ),
                    TeamsFormat::MessageCard => {
                        render::teams_message_card(&n.subject, &n.body_text)
                    }
                };
                self.post(self.channels.teams.as_ref(), &body).await
            }
            "webhook" => {
                let mut body = n.payload.clone();
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("subject".into(), json!(n.subject));
                    obj.insert("text".into(), json!(n.body_text));
                }
                self.post(self.channels.webhook.as_ref(), &body).await
            }
            other => Err(format!("channel `{other}` is not configured")),
        }
    }

    /// Sends an email to every `ALERT_EMAIL_TO` address: multipart, plain
    /// text and HTML.
    pub async fn send_email(
        &self,
        subject: &str,
        text: &str,
        html: Option<&str>,
    ) -> Result<(), String> {
        self.send_email_in_thread(subject, text, html, &Thread::default())
            .await
    }

    /// [`Sender::send_email`] with the `Message-ID`, `In-Reply-To` and
    /// `References` of `thread`.
    pub async fn send_email_in_thread(
        &self,
        subject: &str,
        text: &str,
        html: Option<&str>,
        thread: &Thread,
    ) -> Result<(), String> {
        let Some((transport, cfg)) = &self.email else {
            return Err("email is not configured (set ALERT_EMAIL_TO and ALERT_EMAIL_FROM)".into());
        };
        let mut builder = lettre::Message::builder()
            .from(cfg.from.clone())
            .subject(subject)
            .message_id(thread.message_id.clone());
        if let Some(first) = thread.replies_to.first() {
            builder = builder
                .in_reply_to(first.clone())
                .references(thread.replies_to.join(" "));
        }
        for to in &cfg.to {
            builder = builder.to(to.clone());
        }
        let plain = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(text.to_string());
        let body = match html {
            Some(h) => MultiPart::alternative().singlepart(plain).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(h.to_string()),
            ),
            None => MultiPart::mixed().singlepart(plain),
        };
        let message = builder
            .multipart(body)
            .map_err(|e| format!("cannot build the message: {e}"))?;
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP {}:{}: {e}", cfg.host, cfg.port))
    }

    /// POSTs `body` as JSON. On a non-2xx answer the error holds the status
    /// and the start of the answer's body (read up to [`ERROR_BODY_MAX`]
    /// bytes, never the URL or its token).
    async fn post(&self, url: Option<&WebhookUrl>, body: &serde_json::Value) -> Result<(), String> {
        let Some(url) = url else {
            return Err("webhook is not configured".into());
        };
        let mut resp = self
            .http
            .post(url.0.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| format!("webhook {url:?}: {}", e.without_url()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let (head, cut) =
            tokio::time::timeout(ERROR_BODY_WAIT, read_prefix(&mut resp, ERROR_BODY_MAX))
                .await
                .unwrap_or_default();
        let text = error_excerpt(&head, cut, &url.0);
        if text.is_empty() {
            Err(format!("webhook {url:?} answered {status}"))
        } else {
            Err(format!("webhook {url:?} answered {status}: {text}"))
        }
    }
}

/// At most this much of a failed webhook's answer is read.
pub const ERROR_BODY_MAX: usize = 4096;
/// At most this many characters of it go into the error.
pub const ERROR_TEXT_MAX: usize = 200;
/// How long the start of a failed answer's body is waited for.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(3);

/// The first `max` bytes of `resp`'s body, read chunk by chunk, and whether
/// it went on (or broke off) after them.
async fn read_prefix(resp: &mut reqwest::Response, max: usize) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - buf.len();
                if chunk.len() >= room {
                    buf.extend_from_slice(&chunk[..room]);
                    return (buf, chunk.len() > room);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return (buf, false),
            Err(_) => return (buf, true),
        }
    }
}

/// A failed webhook's answer made fit for an error message: the secret
/// parts of `url` (which the answer may echo) replaced by `[redacted]`,
/// control and invisible characters as spaces, runs of spaces collapsed,
/// at most [`ERROR_TEXT_MAX`] characters. `cut` says the body went on, so
/// its last word may be part of a token and is dropped.
pub fn error_excerpt(body: &[u8], cut: bool, url: &url::Url) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if cut {
        let end = text.rfind(char::is_whitespace).unwrap_or(0);
        text.truncate(end);
    }
    for secret in url_secrets(url) {
        text = text.replace(&secret, "[redacted]");
    }
    let mut out = String::new();
    let mut chars = 0;
    for c in text.chars() {
        let c = if c.is_whitespace() || c.is_control() || is_invisible(c) {
            ' '
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if chars == ERROR_TEXT_MAX {
            out.push('…');
            return out;
        }
        out.push(c);
        chars += 1;
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if cut {
        out.push('…');
    }
    out
}

/// The parts of a webhook URL that may be a token, longest first: the
/// whole path and query, user and password, and each path segment and
/// query value (raw and decoded) of 8 characters or more.
fn url_secrets(url: &url::Url) -> Vec<String> {
    let mut whole: Vec<String> = vec![url.path().to_string(), url.username().to_string()];
    whole.extend(url.query().map(str::to_string));
    whole.extend(url.password().map(str::to_string));
    whole.retain(|s| s.chars().count() >= 3);
    let mut parts: Vec<String> = url
        .path_segments()
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect();
    if let Some(q) = url.query() {
        parts.extend(
            q.split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(_, x)| x.to_string()),
        );
        parts.extend(url.query_pairs().map(|(_, x)| x.into_owned()));
    }
    parts.retain(|s| s.chars().count() >= 8);
    let mut v: Vec<String> = whole.into_iter().chain(parts).collect();
    v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    v.dedup();
    v
}

/// Zero-width and direction-changing characters: they would hide or
/// reorder text in a log line.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

fn smtp_transport(cfg: &EmailConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let builder = match cfg.tls {
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host)?,
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host),
    };
    let mut builder = builder.port(cfg.port).timeout(Some(cfg.timeout));
    if let Some(p) = &cfg.password {
        builder = builder.credentials(Credentials::new(
            cfg.user.clone(),
            p.expose_secret().to_string(),
        ));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn an_error_excerpt_hides_the_url_token_wherever_the_answer_echoes_it() {
        let u = url("https://hooks.test/services/T01/B02/tok3nSecretValue?sig=s1gn%2Fature99&v=1");
        let body = b"no hook at /services/T01/B02/tok3nSecretValue?sig=s1gn%2Fature99&v=1; \
                     token tok3nSecretValue, sig s1gn/ature99 or s1gn%2Fature99";
        let e = error_excerpt(body, false, &u);
        for secret in ["tok3nSecretValue", "s1gn", "ature99", "/services/T01"] {
            assert!(!e.contains(secret), "{secret} in {e}");
        }
        assert!(e.starts_with("no hook at [redacted]"), "{e}");
    }

    #[test]
    fn an_error_excerpt_is_short_printable_and_on_one_line() {
        let u = url("https://hooks.test/x");
        let body = "oops\r\n\t\u{1b}[31mred\u{202E}txt\u{200B}  ".repeat(100);
        let e = error_excerpt(body.as_bytes(), false, &u);
        assert!(e.starts_with("oops [31mred txt oops"), "{e}");
        assert_eq!(e.chars().count(), ERROR_TEXT_MAX + 1);
        assert!(e.ends_with('…'));
        assert!(
            !e.chars().any(|c| c.is_control() || is_invisible(c)),
            "{e:?}"
        );
        assert_eq!(error_excerpt(b"  \n ", false, &u), "");
        assert_eq!(error_excerpt(b"bad request\n", false, &u), "bad request");
    }

    #[test]
    fn a_cut_answer_loses_its_last_word_which_may_be_half_a_token() {
        let u = url("https://hooks.test/abcdefghijkl");
        // The body was cut inside the echoed token.
        assert_eq!(error_excerpt(b"rejected: abcdefg", true, &u), "rejected:…");
        assert_eq!(error_excerpt("é".repeat(10).as_bytes(), true, &u), "…");
    }
}
