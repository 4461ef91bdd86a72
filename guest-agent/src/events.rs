//! Container events (exits and OOM kills) for the `Events` stream.
//!
//! One broadcast ring of [`EVENT_BUFFER`] events is shared by every
//! subscriber: a subscriber that falls that far behind loses the oldest
//! events and is told how many (a `lost` event), then goes on from the
//! oldest one still kept. Publishing never blocks and never waits for a
//! slow subscriber.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::container::ExitInfo;

/// Events kept for subscribers that fall behind.
pub const EVENT_BUFFER: usize = 256;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A container's init process exited (its other processes are killed with it).
    Exit {
        /// The container.
        container_id: String,
        /// How it ended.
        exit: ExitInfo,
    },
    /// The OOM killer killed a process in a container's cgroup.
    Oom {
        /// The container.
        container_id: String,
        /// The cgroup's `oom_kill` counter now.
        oom_kills: u64,
    },
}

/// One event, stamped when it was published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unix nanoseconds.
    pub timestamp: i64,
    /// What happened.
    pub kind: EventKind,
}

/// What a subscriber receives next.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// The next event.
    Event(Arc<Event>),
    /// This many events were dropped because the subscriber fell behind.
    Lost(u64),
    /// The bus is gone (the agent is shutting down).
    Closed,
}

/// The agent's event bus; clones share it.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(EVENT_BUFFER)
    }
}

impl EventBus {
    /// A bus that keeps `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Publishes an event to every current subscriber.
    pub fn publish(&self, kind: EventKind) {
        let event = Arc::new(Event {
            timestamp: crate::container::unix_nanos(),
            kind,
        });
        // No subscribers is not an error: events are not kept for later ones.
        let _ = self.tx.send(event);
    }

    /// A subscription to events published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }
}

/// One subscriber's position in the bus.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl Subscription {
    /// The next event, a gap marker, or the end.
    pub async fn next(&mut self) -> Received {
        match self.rx.recv().await {
            Ok(event) => Received::Event(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Received::Lost(n),
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oom(n: u64) -> EventKind {
        EventKind::Oom {
            container_id: "c".into(),
            oom_kills: n,
        }
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order() {
        let bus = EventBus::new(8);
        let mut sub = bus.subscribe();
        bus.publish(oom(1));
        bus.publish(oom(2));
        for n in [1, 2] {
            match sub.next().await {
                Received::Event(e) => assert_eq!(e.kind, oom(n)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_the_oldest_with_a_marker() {
        let bus = EventBus::new(2);
        let mut sub = bus.subscribe();
        for n in 1..=5 {
            bus.publish(oom(n));
        }
        assert_eq!(sub.next().await, Received::Lost(3));
        for n in [4, 5] {
            match sub.next().await {
                Received::Event(e) => assert_eq!(e.kind, oom(n)),
                other => panic!("{other:?}"),
            }
        }
    }
}
