//! Idle tracking for sessions: the kubelet's `streamIdleTimeout`. Reads and writes both
//! count as activity, so a long quiet exec with steady output stays open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

/// When a session last moved bytes.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    /// Active now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records activity.
    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the session has been idle.
    pub(crate) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Resolves once the session has been idle for `limit`.
    pub(crate) async fn idle(&self, limit: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// Why a bounded read stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the connection before `buf` was full (`filled` bytes were read).
    Eof { filled: usize },
    /// The socket failed.
    Io(std::io::Error),
    /// Nothing moved for the idle limit.
    Idle,
}

/// Fills `buf`, giving up when the session stays idle for `limit`. Each single read is
/// cancel-safe, so no byte is lost when the idle check fires.
pub(crate) async fn read_full<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut [u8],
    activity: &Activity,
    limit: Duration,
) -> Result<(), ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        tokio::select! {
            n = read.read(&mut buf[filled..]) => match n {
                Ok(0) => return Err(ReadError::Eof { filled }),
                Ok(n) => {
                    filled += n;
                    activity.touch();
                }
                Err(e) => return Err(ReadError::Io(e)),
            },
            () = activity.idle(limit) => return Err(ReadError::Idle),
        }
    }
    Ok(())
}
