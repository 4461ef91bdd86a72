//! Starting the streaming server from the `[streaming]` config section.

use std::sync::Arc;
use std::time::Duration;

use vessel_streaming::{ServerConfig, ServerError, StreamingServer, TlsFiles};

use super::VesselStreaming;
use crate::config::StreamingConfig;
use crate::daemon::runtime::Runtime;

/// "Never" for an idle timeout of 0: a century.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The server settings `[streaming]` gives (the rest are the crate's defaults).
pub fn server_config(c: &StreamingConfig) -> ServerConfig {
    let mut config = ServerConfig {
        address: c.address,
        advertise_host: c.advertise_host.clone(),
        tls: c.tls.as_ref().map(|tls| TlsFiles {
            cert: tls.cert_file.clone(),
            key: tls.key_file.clone(),
        }),
        token_ttl: Duration::from_secs(c.token_ttl_secs),
        stream_creation_timeout: Duration::from_secs(c.stream_creation_timeout_secs),
        max_connections: c.max_connections as usize,
        ..ServerConfig::default()
    };
    config.session.idle_timeout = match c.idle_timeout_secs {
        0 => NEVER,
        secs => Duration::from_secs(secs),
    };
    config.session.write_stall_timeout = Duration::from_secs(c.write_stall_timeout_secs);
    config
}

/// Starts the streaming server for `rt` and keeps it in `rt.streaming`;
/// returns the address it listens on.
pub async fn start(rt: &Arc<Runtime>) -> Result<std::net::SocketAddr, ServerError> {
    let server = StreamingServer::start(
        server_config(&rt.config.streaming),
        Arc::new(VesselStreaming::new(rt)),
    )
    .await?;
    let addr = server.local_addr();
    if rt.streaming.set(server).is_err() {
        tracing::warn!("the streaming server was already started");
    }
    Ok(addr)
}
