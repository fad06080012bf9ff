//! LISTEN with reconnect: how a service hears another's NOTIFY. A lost
//! connection is reconnected (after a pause, and every few seconds while
//! the database is away); the caller polls as well, so a notification sent
//! while no one listened only delays the work.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::time::Instant;

/// Pause after losing the connection before reconnecting.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// Without a connection, try again this often.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Why [`Listener::recv`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A notification arrived on one of the channels.
    Notified,
    /// The connection was lost, or could not be made, and a new one was
    /// tried ([`Listener::is_connected`] tells whether it worked).
    /// Notifications may have been missed: look for work.
    Reconnected,
}

/// A LISTEN connection on some channels that comes back after it breaks.
pub struct Listener {
    pool: PgPool,
    channels: Vec<&'static str>,
    /// `None` while the database is unreachable.
    inner: Option<PgListener>,
    /// Without a connection, when to try the next one (kept here rather
    /// than in a sleep so that a cancelled [`Listener::recv`] loses no
    /// time).
    retry_at: Instant,
}

impl Listener {
    /// Listens on `channels` through a connection made with `pool`'s
    /// settings. Never fails: without a database it keeps trying in
    /// [`Listener::recv`].
    pub async fn start(pool: &PgPool, channels: &[&'static str]) -> Listener {
        let mut l = Listener {
            pool: pool.clone(),
            channels: channels.to_vec(),
            inner: None,
            retry_at: Instant::now(),
        };
        l.connect().await;
        l
    }

    /// Whether the LISTEN connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.is_some()
    }

    /// Waits for the next notification, or reconnects after the
    /// connection was lost. Cancel-safe: it may be a branch of `select!`.
    pub async fn recv(&mut self) -> Wake {
        if let Some(l) = &mut self.inner {
            match l.try_recv().await {
                Ok(Some(_)) => return Wake::Notified,
                Ok(None) | Err(_) => {
                    tracing::warn!(channels = ?self.channels, "LISTEN connection lost; reconnecting");
                    self.inner = None;
                    self.retry_at = Instant::now() + RECONNECT_PAUSE;
                }
            }
        }
        tokio::time::sleep_until(self.retry_at).await;
        self.connect().await;
        Wake::Reconnected
    }

    async fn connect(&mut self) {
        let attempt = async {
            let mut l = PgListener::connect_with(&self.pool).await?;
            l.listen_all(self.channels.iter().copied()).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match attempt.await {
            Ok(l) => self.inner = Some(l),
            Err(e) => {
                self.retry_at = Instant::now() + RETRY_EVERY;
                tracing::debug!(error.message = %e, channels = ?self.channels, "cannot LISTEN; polling meanwhile")
            }
        }
    }
}
