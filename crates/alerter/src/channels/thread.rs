//! Email threading: every email carries a `Message-ID` derived from its
//! notification (its dedup key and creation time, on the domain of
//! `ALERT_EMAIL_FROM`), so a retried delivery keeps its id and a later
//! email can point at it. An incident's reminders and resolution answer
//! its opening (`In-Reply-To`, `References`), and mail clients show them as
//! one conversation.

use chrono::{DateTime, Utc};

/// Where an email sits in its conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Thread {
    /// Its own `Message-ID` (`<…@domain>`); `None` lets lettre make one.
    pub message_id: Option<String>,
    /// The `Message-ID`s of the openings it answers, oldest first: the
    /// first goes in `In-Reply-To`, all of them in `References`.
    pub replies_to: Vec<String>,
}

impl Thread {
    /// The thread of a notification created at `created_at` with
    /// `dedup_key`, answering the openings given as (dedup key, creation
    /// time).
    pub fn of(
        dedup_key: &str,
        created_at: DateTime<Utc>,
        openings: &[(String, DateTime<Utc>)],
        domain: &str,
    ) -> Thread {
        let mut replies_to: Vec<String> = openings
            .iter()
            .map(|(key, at)| message_id(key, *at, domain))
            .collect();
        let own = message_id(dedup_key, created_at, domain);
        replies_to.retain(|id| *id != own);
        replies_to.dedup();
        Thread {
            message_id: Some(own),
            replies_to,
        }
    }
}

/// The `Message-ID` of the notification `dedup_key` created at
/// `created_at`: `<apimon.{key}.{microseconds}@{domain}>`, with every
/// character of the key other than a letter, digit or `-` as `.`. The
/// creation time keeps ids unique when a fresh database reuses a key.
pub fn message_id(dedup_key: &str, created_at: DateTime<Utc>, domain: &str) -> String {
    let key: String = dedup_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '.'
            }
        })
        .collect();
    let domain: String = domain
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    let domain = if domain.is_empty() {
        "apimon.invalid".to_string()
    } else {
        domain
    };
    format!("<apimon.{key}.{}@{domain}>", created_at.timestamp_micros())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_message_id_is_derived_from_the_notification_and_is_well_formed() {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 1, 0, 0).unwrap();
        let id = message_id("open:17", at, "example.test");
        assert_eq!(
            id,
            format!("<apimon.open.17.{}@example.test>", at.timestamp_micros())
        );
        assert_eq!(id, message_id("open:17", at, "example.test"));
        assert_ne!(id, message_id("open:18", at, "example.test"));
        let odd = message_id("x <y>@z", at, "ex ample>.test");
        assert_eq!(odd.matches('<').count(), 1, "{odd}");
        assert_eq!(odd.matches('@').count(), 1, "{odd}");
        assert!(!odd.contains(' '), "{odd}");
    }

    #[test]
    fn a_resolution_answers_its_openings_oldest_first() {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 1, 0, 0).unwrap();
        let later = at + chrono::Duration::minutes(5);
        let t = Thread::of(
            "resolve:9",
            later,
            &[("open:3".to_string(), at), ("open:5".to_string(), at)],
            "example.test",
        );
        assert_eq!(
            t.message_id.as_deref(),
            Some(message_id("resolve:9", later, "example.test").as_str())
        );
        assert_eq!(
            t.replies_to,
            vec![
                message_id("open:3", at, "example.test"),
                message_id("open:5", at, "example.test")
            ]
        );
    }
}
