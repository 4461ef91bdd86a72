//! WebSocket upgrades (filled in below).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

use crate::runtime::StreamingRuntime;
use crate::token::PendingRequest;

pub(crate) fn upgrade(
    _req: Request<Incoming>,
    _pending: PendingRequest,
    _runtime: Arc<dyn StreamingRuntime>,
    _permit: Arc<OwnedSemaphorePermit>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(
        b"websocket not supported yet",
    )));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}
