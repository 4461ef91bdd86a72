//! One SPDY/3.1 client connection as moby/spdystream (client-go) behaves:
//! odd stream ids in order, a stream per channel named by its headers, waits
//! for each SYN_REPLY, echoes the server's PINGs, never sends WINDOW_UPDATE.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{ClientError, MAX_HEADER_BLOCK, REPLY_TIMEOUT, STREAM_QUEUE, WRITE_PIECE};
use crate::spdy::frame::{self, Frame, FrameHeader, HEADER_LEN};
use crate::spdy::header_block::{HeaderDecoder, HeaderEncoder, Headers};

/// The sending side shared by the connection's streams.
struct Sender {
    io: WriteHalf<TcpStream>,
    headers: HeaderEncoder,
    next_id: u32,
}

type SharedSender = Arc<tokio::sync::Mutex<Sender>>;

#[derive(Default)]
struct Demux {
    data: HashMap<u32, mpsc::Sender<Bytes>>,
    replies: HashMap<u32, oneshot::Sender<()>>,
}

/// A SPDY/3.1 connection to the streaming server.
pub struct SpdyConnection {
    sender: SharedSender,
    demux: Arc<Mutex<Demux>>,
    closed: watch::Receiver<bool>,
    reader: JoinHandle<()>,
}

/// What the server sends on one stream.
pub struct StreamReader {
    rx: mpsc::Receiver<Bytes>,
}

/// The sending half of one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    sender: SharedSender,
}

fn lock(demux: &Mutex<Demux>) -> std::sync::MutexGuard<'_, Demux> {
    // Inserts and removes only: a poisoned lock is still consistent.
    demux.lock().unwrap_or_else(|p| p.into_inner())
}

async fn send(sender: &SharedSender, frame: Frame) -> Result<(), ClientError> {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    sender.lock().await.io.write_all(&out).await?;
    Ok(())
}

impl SpdyConnection {
    /// Speaks SPDY over an upgraded connection.
    pub fn new(tcp: TcpStream) -> Result<Self, ClientError> {
        let (read, write) = tokio::io::split(tcp);
        let headers = HeaderEncoder::new().map_err(|e| ClientError::Protocol(e.to_string()))?;
        let sender = Arc::new(tokio::sync::Mutex::new(Sender {
            io: write,
            headers,
            next_id: 1,
        }));
        let demux = Arc::new(Mutex::new(Demux::default()));
        let (closed_tx, closed) = watch::channel(false);
        let reader = tokio::spawn(read_loop(
            read,
            Arc::clone(&demux),
            Arc::clone(&sender),
            closed_tx,
        ));
        Ok(Self {
            sender,
            demux,
            closed,
            reader,
        })
    }

    /// Opens a stream with `headers` and waits for the server to accept it.
    pub async fn open(
        &self,
        headers: &[(&str, &str)],
    ) -> Result<(StreamWriter, StreamReader), ClientError> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let (reply_tx, reply) = oneshot::channel();
        let mut block = Headers::new();
        for (name, value) in headers {
            block.insert(name, value);
        }
        let id = {
            // Ids are taken and sent under one lock, so they go out in order.
            let mut sender = self.sender.lock().await;
            let id = sender.next_id;
            sender.next_id += 2;
            {
                let mut demux = lock(&self.demux);
                demux.data.insert(id, tx);
                demux.replies.insert(id, reply_tx);
            }
            let header_block = sender
                .headers
                .encode(&block)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let mut out = BytesMut::new();
            Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                header_block,
            }
            .encode(&mut out);
            sender.io.write_all(&out).await?;
            id
        };
        match tokio::time::timeout(REPLY_TIMEOUT, reply).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(ClientError::Protocol(format!(
                    "the server refused stream {headers:?}"
                )))
            }
            Err(_) => return Err(ClientError::Timeout(REPLY_TIMEOUT)),
        }
        Ok((
            StreamWriter {
                id,
                sender: Arc::clone(&self.sender),
            },
            StreamReader { rx },
        ))
    }

    /// Waits until the server closes the connection.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await.map(|_| ());
    }
}

impl Drop for SpdyConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl StreamWriter {
    /// Sends `data` on the stream.
    pub async fn write(&self, data: &[u8]) -> Result<(), ClientError> {
        for piece in data.chunks(WRITE_PIECE) {
            let frame = Frame::Data {
                stream_id: self.id,
                fin: false,
                data: Bytes::copy_from_slice(piece),
            };
            send(&self.sender, frame).await?;
        }
        Ok(())
    }

    /// Ends our side of the stream (FIN).
    pub async fn close(&self) -> Result<(), ClientError> {
        let frame = Frame::Data {
            stream_id: self.id,
            fin: true,
            data: Bytes::new(),
        };
        send(&self.sender, frame).await
    }

    /// Sends everything `from` reads, then closes the stream.
    pub async fn copy_from(&self, mut from: impl AsyncRead + Unpin) -> Result<u64, ClientError> {
        let mut buf = vec![0u8; WRITE_PIECE];
        let mut total = 0u64;
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            self.write(&buf[..n]).await?;
            total += n as u64;
        }
        self.close().await?;
        Ok(total)
    }
}

impl StreamReader {
    /// The next piece; `None` once the server closed the stream.
    pub async fn read(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// Everything until the server closes the stream; more than `limit` bytes is an error.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        while let Some(piece) = self.rx.recv().await {
            if out.len() + piece.len() > limit {
                return Err(ClientError::Protocol(format!(
                    "stream carries more than {limit} bytes"
                )));
            }
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    /// Writes everything the stream carries to `to` (flushing each piece).
    pub async fn copy_to(&mut self, mut to: impl AsyncWrite + Unpin) -> std::io::Result<u64> {
        let mut total = 0u64;
        while let Some(piece) = self.rx.recv().await {
            to.write_all(&piece).await?;
            to.flush().await?;
            total += piece.len() as u64;
        }
        Ok(total)
    }
}

async fn read_loop(
    mut read: ReadHalf<TcpStream>,
    demux: Arc<Mutex<Demux>>,
    sender: SharedSender,
    closed: watch::Sender<bool>,
) {
    let mut headers = HeaderDecoder::new(MAX_HEADER_BLOCK);
    if let Err(e) = read_frames(&mut read, &demux, &sender, &mut headers).await {
        tracing::debug!(error = %e, "streaming connection ended");
    }
    {
        let mut d = lock(&demux);
        d.data.clear();
        d.replies.clear();
    }
    closed.send_replace(true);
}

async fn read_frames(
    read: &mut ReadHalf<TcpStream>,
    demux: &Mutex<Demux>,
    sender: &SharedSender,
    headers: &mut HeaderDecoder,
) -> Result<(), ClientError> {
    let protocol = |e: &dyn std::fmt::Display| ClientError::Protocol(e.to_string());
    loop {
        let mut head = [0u8; HEADER_LEN];
        match read.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let header = FrameHeader::parse(head).map_err(|e| protocol(&e))?;
        // At most 16 MiB - 1: the length field has 24 bits.
        let mut whole = vec![0u8; HEADER_LEN + header.payload_len()];
        whole[..HEADER_LEN].copy_from_slice(&head);
        read.read_exact(&mut whole[HEADER_LEN..]).await?;
        let frame = match frame::decode(&whole, frame::MAX_PAYLOAD_LEN) {
            Ok(Some((frame, _))) => frame,
            Ok(None) => return Err(ClientError::Protocol("truncated frame".into())),
            Err(e) => return Err(protocol(&e)),
        };
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let tx = {
                    let mut d = lock(demux);
                    if fin {
                        d.data.remove(&stream_id)
                    } else {
                        d.data.get(&stream_id).cloned()
                    }
                };
                if let (Some(tx), false) = (tx, data.is_empty()) {
                    // Waits while the stream's consumer is behind.
                    let _ = tx.send(data).await;
                }
            }
            Frame::SynReply {
                stream_id,
                header_block,
                ..
            } => {
                // Decoded even if unused: the zlib context runs across blocks.
                headers.decode(&header_block).map_err(|e| protocol(&e))?;
                if let Some(tx) = lock(demux).replies.remove(&stream_id) {
                    let _ = tx.send(());
                }
            }
            Frame::SynStream { header_block, .. } | Frame::Headers { header_block, .. } => {
                headers.decode(&header_block).map_err(|e| protocol(&e))?;
            }
            Frame::RstStream { stream_id, .. } => {
                let mut d = lock(demux);
                d.data.remove(&stream_id);
                d.replies.remove(&stream_id);
            }
            Frame::Ping { id } if id % 2 == 0 => send(sender, Frame::Ping { id }).await?,
            Frame::GoAway { .. } => {}
            _ => {}
        }
    }
}
