//! `Events` service: the event bus as a server stream.

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::containers::wait_response;
use crate::events::{EventBus, EventKind, Received, Subscription};
use crate::proto::event::Kind;
use crate::proto::events_server::Events;
use crate::proto::{
    ContainerExited, ContainerOomKilled, Event, EventsLost, SubscribeEventsRequest,
};
use crate::shutdown::ShutdownSignal;

/// Serves `Events` from the engine's bus; streams end when the agent shuts down.
#[derive(Clone, Debug)]
pub struct EventsService {
    bus: EventBus,
    shutdown: ShutdownSignal,
}

impl EventsService {
    /// Streams the events of `bus` until `shutdown`.
    pub fn new(bus: EventBus, shutdown: ShutdownSignal) -> Self {
        Self { bus, shutdown }
    }
}

fn to_proto(received: Received) -> Option<Event> {
    match received {
        Received::Event(event) => {
            let kind = match &event.kind {
                EventKind::Exit { container_id, exit } => Kind::Exited(ContainerExited {
                    container_id: container_id.clone(),
                    exit: Some(wait_response(*exit)),
                }),
                EventKind::Oom {
                    container_id,
                    oom_kills,
                } => Kind::OomKilled(ContainerOomKilled {
                    container_id: container_id.clone(),
                    oom_kills: *oom_kills,
                }),
            };
            Some(Event {
                timestamp: event.timestamp,
                kind: Some(kind),
            })
        }
        Received::Lost(count) => Some(Event {
            timestamp: crate::container::unix_nanos(),
            kind: Some(Kind::Lost(EventsLost { count })),
        }),
        Received::Closed => None,
    }
}

/// The stream of one subscriber.
type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        _: Request<SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let state: (Subscription, ShutdownSignal) = (self.bus.subscribe(), self.shutdown.clone());
        let stream = futures_util::stream::unfold(state, |(mut sub, shutdown)| async move {
            let received = tokio::select! {
                received = sub.next() => received,
                () = shutdown.triggered() => return None,
            };
            to_proto(received).map(|event| (Ok(event), (sub, shutdown)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
