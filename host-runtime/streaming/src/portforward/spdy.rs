//! portforward over SPDY (`portforward.k8s.io`): per forwarded connection the client opens
//! an error stream and a data stream carrying the same `port` and `requestID` headers.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;

use super::{forward, port_allowed};
use crate::runtime::StreamingRuntime;
use crate::spdy::session::{Session, SessionConfig, Stream};

/// The only SPDY portforward subprotocol.
pub const PROTOCOL: &str = "portforward.k8s.io";

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves one portforward session until the client goes away.
pub async fn serve<T>(
    io: T,
    runtime: Arc<dyn StreamingRuntime>,
    pod_sandbox_id: String,
    allowed_ports: Vec<u16>,
    config: SessionConfig,
) where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let max_pending = config.max_streams;
    let (session, mut incoming) = Session::start(io, config);
    let mut pairs: HashMap<String, (u16, Pair)> = HashMap::new();
    let mut forwards = JoinSet::new();
    while let Some(mut stream) = incoming.recv().await {
        let kind = stream.headers.get("streamtype").unwrap_or("").to_owned();
        let port = stream
            .headers
            .get("port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0);
        // Old clients send no requestID: the data stream then follows its error stream.
        let request_id = match stream.headers.get("requestid") {
            Some(id) => id.to_owned(),
            None if kind == "data" => stream.id.saturating_sub(2).to_string(),
            None => stream.id.to_string(),
        };
        let Some(port) = port else {
            tracing::info!(
                pod_sandbox_id,
                stream_id = stream.id,
                "portforward stream without a valid port"
            );
            if kind == "error" {
                let _ = stream.writer.write(b"invalid or missing port header").await;
            }
            let _ = stream.writer.close().await;
            continue;
        };
        if pairs.len() >= max_pending && !pairs.contains_key(&request_id) {
            tracing::warn!(
                pod_sandbox_id,
                "too many half-open portforward requests; refusing one"
            );
            let _ = stream.writer.close().await;
            continue;
        }
        let (pair_port, pair) = pairs
            .entry(request_id.clone())
            .or_insert_with(|| (port, Pair::default()));
        let slot = match kind.as_str() {
            "error" => &mut pair.error,
            "data" => &mut pair.data,
            _ => {
                tracing::info!(pod_sandbox_id, kind, "unknown portforward stream type");
                let _ = stream.writer.close().await;
                continue;
            }
        };
        if slot.is_some() || *pair_port != port {
            tracing::info!(
                pod_sandbox_id,
                request_id,
                "duplicate or mismatched portforward stream"
            );
            let _ = stream.writer.close().await;
            continue;
        }
        *slot = Some(stream);
        if pair.error.is_none() || pair.data.is_none() {
            continue;
        }
        let Some((
            port,
            Pair {
                error: Some(mut error),
                data: Some(data),
            },
        )) = pairs.remove(&request_id)
        else {
            continue;
        };
        if !port_allowed(&allowed_ports, port) {
            let _ = error
                .writer
                .write(format!("port {port} is not allowed for this request").as_bytes())
                .await;
            let _ = error.writer.close().await;
            let mut data_writer = data.writer;
            let _ = data_writer.close().await;
            continue;
        }
        tracing::debug!(pod_sandbox_id, port, request_id, "forwarding");
        forwards.spawn(forward(
            runtime.clone(),
            pod_sandbox_id.clone(),
            port,
            Box::new(data.reader),
            Box::new(data.writer),
            Box::new(error.writer),
        ));
        // Reap finished forwards so the set stays small on long sessions.
        while forwards.try_join_next().is_some() {}
    }
    while forwards.join_next().await.is_some() {}
    session.close().await;
}
