//! One stdin writer per container for all its attach sessions: the agent
//! takes one `Stdio.Input` call at a time, so the sessions' input goes
//! through one call that vesseld holds while any session with stdin is
//! attached (interleaved by pieces, as a shared terminal would).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::sync::mpsc;
use vessel_agent_api::proto::stdio_client::StdioClient;
use vessel_agent_api::proto::InputChunk;

use super::pipe::{AtEof, Target};

/// Largest piece of a session's stdin sent per message.
const PIECE: usize = 64 * 1024;

/// Messages queued for the call (at most `QUEUE × PIECE` waits here).
const QUEUE: usize = 4;

/// The stdin writers of the containers that have attach sessions.
#[derive(Default)]
pub struct StdinMuxes {
    by_container: Mutex<HashMap<String, Weak<StdinMux>>>,
}

impl StdinMuxes {
    /// The writer of `target`'s container, shared with its other sessions.
    pub fn get(&self, target: &Target) -> Arc<StdinMux> {
        let mut map = self.by_container.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, mux| mux.strong_count() > 0);
        if let Some(mux) = map.get(&target.container_id).and_then(Weak::upgrade) {
            return mux;
        }
        let mux = Arc::new(StdinMux {
            target: target.clone(),
            call: tokio::sync::Mutex::new(None),
        });
        map.insert(target.container_id.clone(), Arc::downgrade(&mux));
        mux
    }
}

/// One container's stdin, fed by its attach sessions.
pub struct StdinMux {
    target: Target,
    /// The open `Stdio.Input` call's queue; reopened when it ended.
    call: tokio::sync::Mutex<Option<mpsc::Sender<InputChunk>>>,
}

impl StdinMux {
    /// Feeds `from` (a session's stdin) to the container until its EOF;
    /// then closes the container's stdin if `at_eof` says so.
    pub async fn feed(&self, mut from: DuplexStream, at_eof: AtEof) {
        let mut buf = vec![0u8; PIECE];
        loop {
            match from.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    let piece = InputChunk {
                        data: buf[..n].to_vec(),
                        ..InputChunk::default()
                    };
                    if !self.send(piece).await {
                        return;
                    }
                }
                _ => break,
            }
        }
        if at_eof == AtEof::Close {
            let close = InputChunk {
                close: true,
                ..InputChunk::default()
            };
            self.send(close).await;
        }
    }

    /// Queues `chunk` on the open call (opening one if needed); false when
    /// the container's stdin cannot take it.
    async fn send(&self, chunk: InputChunk) -> bool {
        // Held across the send: the sessions' pieces go in whole, in order.
        let mut call = self.call.lock().await;
        let open = match call.as_ref() {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let tx = self.open();
                *call = Some(tx.clone());
                tx
            }
        };
        let sent = open.send(chunk).await.is_ok();
        if !sent {
            tracing::info!(container = %self.target.container_id, "the container's stdin takes no more input");
        }
        sent
    }

    fn open(&self) -> mpsc::Sender<InputChunk> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let first = InputChunk {
            container_id: self.target.container_id.clone(),
            exec_id: self.target.exec_id.clone(),
            // The sessions come and go; stdin stays open for the next one.
            keep_open: true,
            ..InputChunk::default()
        };
        let messages = futures_util::StreamExt::chain(
            futures_util::stream::once(async move { first }),
            tokio_stream::wrappers::ReceiverStream::new(rx),
        );
        let (channel, container) = (
            self.target.channel.clone(),
            self.target.container_id.clone(),
        );
        tokio::spawn(async move {
            if let Err(status) = StdioClient::new(channel).input(messages).await {
                tracing::info!(container = %container, error = %status.message(), "the container's stdin call ended");
            }
        });
        tx
    }
}
