//! One WebSocket connection split into channels: a reader task demultiplexing client
//! messages into small per-channel queues (a full queue stops the reader), and a writer
//! task whose stalled sends drop the connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channel::{decode, encode, ChannelMessage};
use crate::idle::Activity;
use crate::remotecommand::pump::{Inbound, Outbound};

/// Messages queued per inbound channel before the reader waits.
const INBOUND_QUEUE: usize = 4;
/// Outbound messages carry at most this much data.
const WRITE_CHUNK: usize = 32 * 1024;

enum WriteCmd {
    Message(Message),
    Close,
}

/// How the channels are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    /// `base64.` protocols.
    pub base64: bool,
    /// v5: the client may close channels.
    pub v5: bool,
}

/// A running WebSocket channel session.
pub(crate) struct WsSession {
    tx: mpsc::Sender<WriteCmd>,
    framing: Framing,
    ended: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

/// Bytes from the client on one channel.
pub(crate) struct WsInbound(mpsc::Receiver<Bytes>);

#[async_trait]
impl Inbound for WsInbound {
    async fn read(&mut self) -> Option<Bytes> {
        self.0.recv().await
    }
}

/// Bytes to the client on one channel.
pub(crate) struct WsOutbound {
    channel: u8,
    framing: Framing,
    tx: mpsc::Sender<WriteCmd>,
    prefix: Option<[u8; 2]>,
}

#[async_trait]
impl Outbound for WsOutbound {
    async fn write(&mut self, data: &[u8]) -> Result<(), ()> {
        for chunk in data.chunks(WRITE_CHUNK) {
            let message = encode(self.channel, chunk, self.framing.base64);
            self.tx
                .send(WriteCmd::Message(message))
                .await
                .map_err(drop)?;
        }
        Ok(())
    }

    async fn close(&mut self) {
        // Channels end with the connection; the protocol has no per-channel close from
        // the server.
    }
}

impl WsOutbound {
    /// Sends the port prefix of a portforward channel once.
    pub(crate) async fn send_prefix(&mut self) -> Result<(), ()> {
        match self.prefix.take() {
            Some(prefix) => self.write(&prefix).await,
            None => Ok(()),
        }
    }
}

impl WsSession {
    /// Starts the tasks; `inbound` names the channels the client may send on.
    pub(crate) fn start<T>(
        ws: WebSocketStream<T>,
        framing: Framing,
        inbound: &[u8],
        stall: Duration,
        idle: Duration,
    ) -> (WsSession, HashMap<u8, WsInbound>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::channel::<WriteCmd>(32);
        let (ended_tx, ended) = watch::channel(false);
        let writer_ended = ended_tx.clone();
        let activity = Arc::new(Activity::new());
        let writer_activity = activity.clone();
        let writer = tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                let (message, last) = match cmd {
                    WriteCmd::Message(message) => (message, false),
                    WriteCmd::Close => {
                        let frame = CloseFrame {
                            code: CloseCode::Normal,
                            reason: "".into(),
                        };
                        (Message::Close(Some(frame)), true)
                    }
                };
                match tokio::time::timeout(stall, sink.send(message)).await {
                    Ok(Ok(())) if !last => writer_activity.touch(),
                    Ok(Ok(())) => break,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "websocket write failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(
                            timeout_s = stall.as_secs(),
                            "websocket client stopped reading; dropping it"
                        );
                        break;
                    }
                }
            }
            writer_ended.send_replace(true);
        });
        let mut senders = HashMap::new();
        let mut receivers = HashMap::new();
        for &channel in inbound {
            let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
            senders.insert(channel, tx);
            receivers.insert(channel, WsInbound(rx));
        }
        let reader = tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    () = activity.idle(idle) => {
                        tracing::info!(idle_s = idle.as_secs(), "closing an idle websocket session");
                        break;
                    }
                };
                let Some(message) = next else { break };
                activity.touch();
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::info!(%error, "dropping websocket session");
                        break;
                    }
                };
                match message {
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    _ => {}
                }
                match decode(&message, framing.base64, framing.v5) {
                    Ok(ChannelMessage::Data(channel, data)) => {
                        if let Some(tx) = senders.get(&channel) {
                            if !data.is_empty() {
                                // A full queue stops the reader: TCP back-pressure.
                                let _ = tx.send(data).await;
                            }
                        } else {
                            tracing::debug!(
                                channel,
                                "ignoring data on a channel the client may not write"
                            );
                        }
                    }
                    Ok(ChannelMessage::Close(channel)) => {
                        senders.remove(&channel);
                    }
                    Err(error) => {
                        tracing::info!(%error, "dropping websocket session");
                        break;
                    }
                }
            }
            drop(senders);
            ended_tx.send_replace(true);
        });
        let session = WsSession {
            tx,
            framing,
            ended,
            reader,
            writer: Some(writer),
        };
        (session, receivers)
    }

    /// An outbound channel.
    pub(crate) fn outbound(&self, channel: u8) -> WsOutbound {
        WsOutbound {
            channel,
            framing: self.framing,
            tx: self.tx.clone(),
            prefix: None,
        }
    }

    /// An outbound portforward channel whose first message is the port (little endian).
    pub(crate) fn outbound_with_port(&self, channel: u8, port: u16) -> WsOutbound {
        WsOutbound {
            prefix: Some(port.to_le_bytes()),
            ..self.outbound(channel)
        }
    }

    /// Becomes `true` when either side of the connection ends.
    pub(crate) fn ended(&self) -> watch::Receiver<bool> {
        self.ended.clone()
    }

    /// Sends a normal close after everything queued and waits for it to go out.
    pub(crate) async fn close(mut self) {
        let _ = self.tx.send(WriteCmd::Close).await;
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
        // Give the client a moment to answer the close before the socket goes.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.reader).await;
    }
}

impl Drop for WsSession {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}
