//! A shutdown signal shared by every task, in two steps.
//!
//! 1. `request` (SIGINT/SIGTERM, or every pipeline halted): observed at safe
//!    points (before reading the next batch), never in the middle of a
//!    delivery: the batches in flight finish and are checkpointed.
//! 2. `abandon` (`shutdown_timeout_s` after the request): deliveries still
//!    in flight stop where they are and are not checkpointed (they are
//!    delivered again after restart), so a failing output cannot hold the
//!    process forever.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
    abandon_tx: std::sync::Arc<watch::Sender<bool>>,
    abandon_rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        let (abandon_tx, abandon_rx) = watch::channel(false);
        Shutdown {
            tx: std::sync::Arc::new(tx),
            rx,
            abandon_tx: std::sync::Arc::new(abandon_tx),
            abandon_rx,
        }
    }

    pub fn request(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is requested.
    pub async fn requested(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|&stop| stop).await;
    }

    /// Stops the deliveries still in flight (after the drain took too long).
    pub fn abandon(&self) {
        self.request();
        self.abandon_tx.send_replace(true);
    }

    /// Resolves once in-flight deliveries must be abandoned.
    pub async fn abandoned(&self) {
        let mut rx = self.abandon_rx.clone();
        let _ = rx.wait_for(|&stop| stop).await;
    }
}
