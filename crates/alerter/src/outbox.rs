//! Queuing a rendered message on every configured channel.

use apimon_core::db::notifications::{self, NewNotification};
use sqlx::{Postgres, Transaction};

use crate::compose::Message;
use crate::config::Channels;

/// Queues `msg` once per enabled channel, or records it as `skipped` on
/// channel `none` when no channel is configured. Returns how many rows
/// were new (0 when the event was queued already).
pub async fn queue(
    tx: &mut Transaction<'_, Postgres>,
    msg: &Message,
    channels: &Channels,
) -> Result<usize, sqlx::Error> {
    let names = channels.names();
    let targets: Vec<(&str, &str)> = if names.is_empty() {
        vec![("none", "skipped")]
    } else {
        names.into_iter().map(|c| (c, "pending")).collect()
    };
    let mut new = 0;
    for (channel, state) in targets {
        let row = NewNotification {
            kind: msg.kind.to_string(),
            api_name: msg.api_name.clone(),
            channel: channel.to_string(),
            dedup_key: msg.dedup_key.clone(),
            subject: msg.subject.clone(),
            body_text: msg.text.clone(),
            body_html: Some(msg.html.clone()),
            payload: msg.payload.clone(),
            state: state.to_string(),
        };
        if notifications::enqueue(tx, &row).await? {
            new += 1;
        }
    }
    Ok(new)
}
