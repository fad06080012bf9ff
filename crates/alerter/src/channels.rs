//! Delivery: email over SMTP (lettre's async transport) and the Slack,
//! Teams and generic JSON webhooks.

use std::time::Duration;

use apimon_core::db::notifications::Notification;
use lettre::message::{header::ContentType, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::{Channels, EmailConfig, SmtpTls, WebhookUrl};

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
            .user_agent(concat!("apimon-alerter/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            email,
            http,
            channels: channels.clone(),
        })
    }

    /// Sends one queued notification on its channel.
    #[tracing::instrument(skip_all, fields(id = n.id, channel = %n.channel, kind = %n.kind))]
    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        match n.channel.as_str() {
            "email" => {
                self.send_email(&n.subject, &n.body_text, n.body_html.as_deref())
                    .await
            }
            "slack" => {
                let body = json!({ "text": format!("*{}*\n{}", slack_escape(&n.subject), slack_escape(&n.body_text)) });
                self.post(self.channels.slack.as_ref(), &body).await
            }
            "teams" => {
                let body = json!({
                    "@type": "MessageCard",
                    "@context": "http://schema.org/extensions",
                    "summary": n.subject,
                    "title": n.subject,
                    "text": n.body_text.replace('\n', "  \n"),
                });
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
        let Some((transport, cfg)) = &self.email else {
            return Err("email is not configured (set ALERT_EMAIL_TO and ALERT_EMAIL_FROM)".into());
        };
        let mut builder = lettre::Message::builder()
            .from(cfg.from.clone())
            .subject(subject);
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

    async fn post(&self, url: Option<&WebhookUrl>, body: &serde_json::Value) -> Result<(), String> {
        let Some(url) = url else {
            return Err("webhook is not configured".into());
        };
        let resp = self
            .http
            .post(url.0.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| format!("webhook {url:?}: {}", e.without_url()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = resp.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            Err(format!("webhook {url:?} answered {status}: {text}"))
        }
    }
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

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
