//! A one-shot, cloneable signal that the agent should stop serving.

use std::sync::Arc;

use tokio::sync::watch;

/// Set once (by the `Shutdown` RPC or a signal); every clone observes it.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for ShutdownSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// Creates a signal that has not fired yet.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(false);
        Self { tx: Arc::new(tx) }
    }

    /// Fires the signal; firing it again is a no-op.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once the signal has fired.
    pub async fn triggered(&self) {
        let mut rx = self.tx.subscribe();
        // Only fails if the sender is gone, and `self` holds it.
        let _ = rx.wait_for(|fired| *fired).await;
    }
}
