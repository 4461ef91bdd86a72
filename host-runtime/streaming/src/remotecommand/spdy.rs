//! remotecommand over SPDY/3.1: the client opens one stream per channel, named by its
//! `streamType` header, and the server waits until all the expected ones are there.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::pump::{run_process, Channels, Inbound, Outbound};
use super::Protocol;
use crate::runtime::{ProcessIo, RuntimeError};
use crate::spdy::session::{Session, SessionConfig, StreamReader, StreamWriter};

/// Which channels the request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// stdin.
    pub stdin: bool,
    /// stdout.
    pub stdout: bool,
    /// stderr.
    pub stderr: bool,
    /// A terminal (a resize stream on v3+).
    pub tty: bool,
}

#[async_trait]
impl Inbound for StreamReader {
    async fn read(&mut self) -> Option<Bytes> {
        StreamReader::read(self).await
    }
}

#[async_trait]
impl Outbound for StreamWriter {
    async fn write(&mut self, data: &[u8]) -> Result<(), ()> {
        StreamWriter::write(self, data).await.map_err(drop)
    }

    async fn close(&mut self) {
        let _ = StreamWriter::close(self).await;
    }
}

/// Serves one remotecommand session on an upgraded connection.
pub async fn serve<T, F, Fut>(
    io: T,
    protocol: Protocol,
    opts: StreamOptions,
    config: SessionConfig,
    stream_creation_timeout: Duration,
    run: F,
) where
    T: AsyncRead + AsyncWrite + Send + 'static,
    F: FnOnce(ProcessIo) -> Fut,
    Fut: Future<Output = Result<i32, RuntimeError>>,
{
    let (session, mut incoming) = Session::start(io, config);
    let want_resize = opts.tty && protocol.supports_resize();
    let mut channels = Channels::default();
    let complete = |c: &Channels| {
        c.error.is_some()
            && (!opts.stdin || c.stdin.is_some())
            && (!opts.stdout || c.stdout.is_some())
            && (!opts.stderr || c.stderr.is_some())
            && (!want_resize || c.resize.is_some())
    };
    let gathered = tokio::time::timeout(stream_creation_timeout, async {
        while !complete(&channels) {
            let Some(stream) = incoming.recv().await else {
                return false;
            };
            let kind = stream.headers.get("streamtype").unwrap_or("").to_owned();
            tracing::debug!(stream_id = stream.id, kind, "remotecommand stream");
            match kind.as_str() {
                "error" => channels.error = Some(Box::new(stream.writer)),
                "stdin" if opts.stdin => channels.stdin = Some(Box::new(stream.reader)),
                "stdout" if opts.stdout => channels.stdout = Some(Box::new(stream.writer)),
                "stderr" if opts.stderr => channels.stderr = Some(Box::new(stream.writer)),
                "resize" if want_resize => channels.resize = Some(Box::new(stream.reader)),
                // Streams the request did not ask for (v1 clients open stderr with a tty)
                // are accepted and ignored.
                _ => tracing::debug!(kind, "ignoring an unexpected remotecommand stream"),
            }
        }
        true
    })
    .await;
    if gathered != Ok(true) {
        tracing::warn!(
            protocol = protocol.name(),
            "client did not open the expected streams; dropping the session"
        );
        return;
    }
    let outcome = run_process(channels, protocol.status_is_json(), session.ended(), run).await;
    tracing::debug!(?outcome, "remotecommand session done");
    session.close().await;
}
