//! Attach sessions' share of a running container's output. The log copier
//! of each stream publishes every chunk here as well as to the CRI log; each
//! attach session gets a bounded queue per stream. A session whose queue is
//! full is dropped rather than waited for, so a slow attacher never holds
//! back the log or the container.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::cri_log::Stream;

/// Largest piece queued for a session (a chunk from the guest may be larger).
pub const PIECE: usize = 32 * 1024;

/// Pieces queued per session and stream: at most `PIECE × BACKLOG` (1 MiB)
/// waits for a slow attacher before it is dropped.
pub const BACKLOG: usize = 32;

/// The attach sessions of one container.
#[derive(Debug, Default)]
pub struct OutputFanout {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    stdout: Subscribers,
    stderr: Subscribers,
}

#[derive(Debug, Default)]
struct Subscribers {
    /// The copier reached the end of this stream (the container exited).
    ended: bool,
    sessions: Vec<Subscriber>,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    dropped: Arc<Dropped>,
}

/// Whether a session was dropped, and a wake-up for the one who waits on it.
#[derive(Debug, Default)]
struct Dropped {
    flag: AtomicBool,
    notify: Notify,
}

impl Dropped {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        // Stores a permit when nobody waits yet: the wake-up is not lost.
        self.notify.notify_one();
    }
}

/// One attach session's queues.
#[derive(Debug)]
pub struct Subscription {
    /// Identifies the session in the fan-out.
    pub id: u64,
    /// stdout pieces, if asked for; ends with the stream or when dropped.
    pub stdout: Option<mpsc::Receiver<Bytes>>,
    /// stderr pieces, if asked for.
    pub stderr: Option<mpsc::Receiver<Bytes>>,
    dropped: Arc<Dropped>,
}

impl Subscription {
    /// Whether the session was dropped for not keeping up.
    pub fn was_dropped(&self) -> bool {
        self.dropped.flag.load(Ordering::Acquire)
    }

    /// Returns once the session is dropped for not keeping up, so that it
    /// ends then rather than when its client goes away.
    pub async fn dropped(&self) {
        while !self.was_dropped() {
            self.dropped.notify.notified().await;
        }
    }
}

impl OutputFanout {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Pushes and retains only: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session's queues for the streams asked for (a stream that
    /// already ended yields a queue that is already closed).
    pub fn subscribe(&self, stdout: bool, stderr: bool) -> Subscription {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let dropped = Arc::new(Dropped::default());
        let join = |subs: &mut Subscribers| {
            let (tx, rx) = mpsc::channel(BACKLOG);
            if !subs.ended {
                subs.sessions.push(Subscriber {
                    id,
                    tx,
                    dropped: Arc::clone(&dropped),
                });
            }
            rx
        };
        let stdout = stdout.then(|| join(&mut inner.stdout));
        let stderr = stderr.then(|| join(&mut inner.stderr));
        Subscription {
            id,
            stdout,
            stderr,
            dropped,
        }
    }

    /// Forgets a session (it detached).
    pub fn unsubscribe(&self, id: u64) {
        let mut inner = self.lock();
        inner.stdout.sessions.retain(|s| s.id != id);
        inner.stderr.sessions.retain(|s| s.id != id);
    }

    /// Hands `data` to every session of `stream`, without waiting: a session
    /// whose queue is full is dropped from both streams.
    pub fn publish(&self, stream: Stream, data: &[u8]) {
        let mut inner = self.lock();
        if inner.stdout.sessions.is_empty() && inner.stderr.sessions.is_empty() {
            return;
        }
        let data = Bytes::copy_from_slice(data);
        let mut slow = Vec::new();
        let subs = match stream {
            Stream::Stdout => &mut inner.stdout,
            Stream::Stderr => &mut inner.stderr,
        };
        subs.sessions.retain(|s| {
            for piece in data.chunks(PIECE) {
                match s.tx.try_send(data.slice_ref(piece)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.dropped.set();
                        slow.push(s.id);
                        return false;
                    }
                    // The session went away.
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        for id in slow {
            tracing::info!(
                session = id,
                stream = stream.as_str(),
                "attach session dropped: it does not keep up with the output"
            );
            inner.stdout.sessions.retain(|s| s.id != id);
            inner.stderr.sessions.retain(|s| s.id != id);
        }
    }

    /// The copier reached the end of `stream`: every session's queue of it
    /// ends once drained.
    pub fn close(&self, stream: Stream) {
        let mut inner = self.lock();
        let subs = match stream {
            Stream::Stdout => &mut inner.stdout,
            Stream::Stderr => &mut inner.stderr,
        };
        subs.ended = true;
        subs.sessions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_session_gets_every_chunk_in_order() {
        let fanout = OutputFanout::default();
        let mut a = fanout.subscribe(true, true);
        let mut b = fanout.subscribe(true, false);
        fanout.publish(Stream::Stdout, b"one");
        fanout.publish(Stream::Stderr, b"two");
        fanout.close(Stream::Stdout);
        fanout.close(Stream::Stderr);
        let out_a = a.stdout.as_mut().map(|rx| rx.try_recv().ok());
        assert_eq!(out_a, Some(Some(Bytes::from_static(b"one"))));
        let err_a = a.stderr.as_mut().map(|rx| rx.try_recv().ok());
        assert_eq!(err_a, Some(Some(Bytes::from_static(b"two"))));
        let out_b = b.stdout.as_mut().map(|rx| rx.try_recv().ok());
        assert_eq!(out_b, Some(Some(Bytes::from_static(b"one"))));
        assert!(b.stderr.is_none());
        // Both streams ended: the queues are closed.
        assert!(a.stdout.as_mut().is_some_and(|rx| rx.try_recv().is_err()));
    }

    #[tokio::test]
    async fn a_slow_session_is_dropped_and_the_others_go_on() {
        let fanout = OutputFanout::default();
        let slow = fanout.subscribe(true, true);
        let mut fast = fanout.subscribe(true, false);
        for _ in 0..BACKLOG + 1 {
            fanout.publish(Stream::Stdout, b"x");
            let got = fast.stdout.as_mut().map(|rx| rx.try_recv().is_ok());
            assert_eq!(got, Some(true));
        }
        assert!(slow.was_dropped());
        assert!(!fast.was_dropped());
        // Whoever waits for the drop learns of it, even after the fact.
        tokio::time::timeout(std::time::Duration::from_secs(5), slow.dropped())
            .await
            .expect("the drop is signalled");
        fanout.publish(Stream::Stdout, b"y");
        let got = fast.stdout.as_mut().map(|rx| rx.try_recv().ok());
        assert_eq!(got, Some(Some(Bytes::from_static(b"y"))));
    }

    #[tokio::test]
    async fn a_big_chunk_is_queued_in_pieces() {
        let fanout = OutputFanout::default();
        let mut s = fanout.subscribe(true, false);
        fanout.publish(Stream::Stdout, &vec![7u8; PIECE * 2 + 1]);
        let rx = s.stdout.as_mut().map(|rx| {
            std::iter::from_fn(|| rx.try_recv().ok().map(|b| b.len())).collect::<Vec<_>>()
        });
        assert_eq!(rx, Some(vec![PIECE, PIECE, 1]));
    }

    #[test]
    fn a_session_after_the_end_sees_the_end() {
        let fanout = OutputFanout::default();
        fanout.close(Stream::Stdout);
        let mut s = fanout.subscribe(true, false);
        assert!(matches!(
            s.stdout.as_mut().map(|rx| rx.try_recv()),
            Some(Err(mpsc::error::TryRecvError::Disconnected))
        ));
    }
}
