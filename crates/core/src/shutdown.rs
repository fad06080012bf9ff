//! Graceful shutdown: every service stops on Ctrl-C or SIGTERM (what
//! `docker stop` sends).
//!
//! One listener per process: the first call of [`signal`] installs it, and
//! every caller (the service loop, the `/healthz` server) waits on the same
//! outcome, so the signal is logged once however many parts stop on it.

use std::sync::OnceLock;

use tokio::sync::watch;

/// Completes when the process receives Ctrl-C (SIGINT) or SIGTERM.
pub async fn signal() {
    let mut rx = listener().clone();
    if rx.wait_for(|received| *received).await.is_err() {
        // The listener's runtime is gone (another runtime of the same
        // process installed it): no signal will come through it.
        std::future::pending::<()>().await;
    }
}

/// The process-wide listener: turns `true` once a signal has arrived.
fn listener() -> &'static watch::Receiver<bool> {
    static RECEIVER: OnceLock<watch::Receiver<bool>> = OnceLock::new();
    RECEIVER.get_or_init(|| {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = tx.send(true);
            // Keep the sender alive: receivers cloned later still see `true`.
            std::future::pending::<()>().await;
        });
        rx
    })
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received Ctrl-C"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}
