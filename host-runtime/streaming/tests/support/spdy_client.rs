//! A SPDY/3 client as client-go's (moby/spdystream) behaves: odd stream ids, one stream per
//! channel named by `streamType`, waits for SYN_REPLY, never sends WINDOW_UPDATE.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use vessel_streaming::spdy::frame::{self, Frame, FrameHeader, HEADER_LEN};
use vessel_streaming::spdy::header_block::{HeaderDecoder, HeaderEncoder, Headers};

use super::http;

/// Any byte stream the client can run over (TCP or TLS).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

type Writer = Arc<tokio::sync::Mutex<(WriteHalf<BoxIo>, HeaderEncoder)>>;

#[derive(Default)]
struct Demux {
    data: HashMap<u32, mpsc::UnboundedSender<Bytes>>,
    replies: HashMap<u32, oneshot::Sender<()>>,
    resets: Vec<(u32, u32)>,
    goaway: Option<u32>,
    window_updates: u64,
    pings: Vec<u32>,
}

/// One client connection.
pub struct SpdyClient {
    writer: Writer,
    next_id: u32,
    demux: Arc<Mutex<Demux>>,
    closed: Option<oneshot::Receiver<()>>,
    pub protocol: Option<String>,
}

/// One client stream.
pub struct ClientStream {
    pub id: u32,
    writer: Writer,
    rx: mpsc::UnboundedReceiver<Bytes>,
}

/// The sending half of a client stream, usable while the stream is read.
pub struct ClientWriter {
    pub id: u32,
    writer: Writer,
}

impl ClientWriter {
    pub async fn write(&self, data: &[u8]) {
        let frame = Frame::Data {
            stream_id: self.id,
            fin: false,
            data: Bytes::copy_from_slice(data),
        };
        send(&self.writer, frame).await;
    }

    pub async fn close(&self) {
        send(
            &self.writer,
            Frame::Data {
                stream_id: self.id,
                fin: true,
                data: Bytes::new(),
            },
        )
        .await;
    }
}

impl ClientStream {
    pub fn writer(&self) -> ClientWriter {
        ClientWriter {
            id: self.id,
            writer: self.writer.clone(),
        }
    }

    pub async fn write(&self, data: &[u8]) {
        let frame = Frame::Data {
            stream_id: self.id,
            fin: false,
            data: Bytes::copy_from_slice(data),
        };
        send(&self.writer, frame).await;
    }

    pub async fn close(&self) {
        send(
            &self.writer,
            Frame::Data {
                stream_id: self.id,
                fin: true,
                data: Bytes::new(),
            },
        )
        .await;
    }

    pub async fn read(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = self.rx.recv().await {
            out.extend_from_slice(&chunk);
        }
        out
    }
}

async fn send(writer: &Writer, frame: Frame) {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    let mut w = writer.lock().await;
    // The server may have dropped the session; tests check that separately.
    let _ = w.0.write_all(&out).await;
}

impl SpdyClient {
    /// Upgrades `url` offering `protocols`; panics unless the server switches protocols.
    pub async fn connect(url: &str, protocols: &[&str]) -> SpdyClient {
        let (tcp, reply) = upgrade(url, protocols).await;
        assert_eq!(reply.status, 101, "upgrade refused: {}", reply.body);
        assert_eq!(reply.header("upgrade"), Some("SPDY/3.1"));
        let protocol = reply.header("x-stream-protocol-version").map(str::to_owned);
        Self::over(tcp, protocol)
    }

    /// A client over an already upgraded connection.
    pub fn over<T: Io + 'static>(io: T, protocol: Option<String>) -> SpdyClient {
        let io: BoxIo = Box::new(io);
        let (read, write) = tokio::io::split(io);
        let writer = Arc::new(tokio::sync::Mutex::new((
            write,
            HeaderEncoder::new().unwrap(),
        )));
        let demux = Arc::new(Mutex::new(Demux::default()));
        let (closed_tx, closed) = oneshot::channel();
        tokio::spawn(read_loop(read, demux.clone(), writer.clone(), closed_tx));
        SpdyClient {
            writer,
            next_id: 1,
            demux,
            closed: Some(closed),
            protocol,
        }
    }

    /// Opens a stream with these headers and waits for the server's SYN_REPLY.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> ClientStream {
        let (stream, reply) = self.open_inner(headers).await;
        tokio::time::timeout(Duration::from_secs(10), reply)
            .await
            .expect("SYN_REPLY in time")
            .expect("SYN_REPLY");
        stream
    }

    /// Opens a stream without waiting for the reply.
    pub async fn open_no_wait(&mut self, headers: &[(&str, &str)]) -> ClientStream {
        self.open_inner(headers).await.0
    }

    async fn open_inner(
        &mut self,
        headers: &[(&str, &str)],
    ) -> (ClientStream, oneshot::Receiver<()>) {
        let id = self.next_id;
        self.next_id += 2;
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut demux = self.demux.lock().unwrap();
            demux.data.insert(id, tx);
            demux.replies.insert(id, reply_tx);
        }
        let mut h = Headers::new();
        for (name, value) in headers {
            h.insert(name, value);
        }
        {
            let mut w = self.writer.lock().await;
            let header_block = w.1.encode(&h).unwrap();
            let frame = Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                header_block,
            };
            let mut out = BytesMut::new();
            frame.encode(&mut out);
            let _ = w.0.write_all(&out).await;
        }
        (
            ClientStream {
                id,
                writer: self.writer.clone(),
                rx,
            },
            reply_rx,
        )
    }

    /// Writes raw bytes (for malformed-frame tests).
    pub async fn send_raw(&self, bytes: &[u8]) {
        let mut w = self.writer.lock().await;
        let _ = w.0.write_all(bytes).await;
    }

    /// Sends a frame.
    pub async fn send_frame(&self, frame: Frame) {
        send(&self.writer, frame).await;
    }

    /// Waits until the server closes the connection; returns the GOAWAY status seen.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<u32> {
        let closed = self.closed.take().expect("wait once");
        tokio::time::timeout(within, closed)
            .await
            .expect("server closed the connection in time")
            .ok();
        self.demux.lock().unwrap().goaway
    }

    /// RST_STREAMs received: (stream, status).
    pub fn resets(&self) -> Vec<(u32, u32)> {
        self.demux.lock().unwrap().resets.clone()
    }

    /// Echoes of our PINGs received.
    pub fn pings(&self) -> Vec<u32> {
        self.demux.lock().unwrap().pings.clone()
    }

    /// WINDOW_UPDATEs received.
    pub fn window_updates(&self) -> u64 {
        self.demux.lock().unwrap().window_updates
    }
}

async fn read_loop(
    mut read: ReadHalf<BoxIo>,
    demux: Arc<Mutex<Demux>>,
    writer: Writer,
    closed: oneshot::Sender<()>,
) {
    let mut decoder = HeaderDecoder::new(1 << 20);
    loop {
        let mut head = [0u8; HEADER_LEN];
        if read.read_exact(&mut head).await.is_err() {
            break;
        }
        let Ok(header) = FrameHeader::parse(head) else {
            break;
        };
        let mut payload = vec![0u8; header.payload_len()];
        if read.read_exact(&mut payload).await.is_err() {
            break;
        }
        let mut whole = head.to_vec();
        whole.extend_from_slice(&payload);
        let Ok(Some((frame, _))) = frame::decode(&whole, frame::MAX_PAYLOAD_LEN) else {
            break;
        };
        let mut d = demux.lock().unwrap();
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if let Some(tx) = d.data.get(&stream_id) {
                    if !data.is_empty() {
                        let _ = tx.send(data);
                    }
                }
                if fin {
                    d.data.remove(&stream_id);
                }
            }
            Frame::SynReply {
                stream_id,
                header_block,
                ..
            } => {
                decoder.decode(&header_block).expect("reply headers");
                if let Some(tx) = d.replies.remove(&stream_id) {
                    let _ = tx.send(());
                }
            }
            Frame::RstStream { stream_id, status } => {
                d.resets.push((stream_id, status.code()));
                d.data.remove(&stream_id);
                d.replies.remove(&stream_id);
            }
            Frame::GoAway { status, .. } => d.goaway = Some(status),
            Frame::WindowUpdate { .. } => d.window_updates += 1,
            Frame::Ping { id } if id % 2 == 1 => d.pings.push(id),
            Frame::Ping { id } if id % 2 == 0 => {
                drop(d);
                send(&writer, Frame::Ping { id }).await;
            }
            _ => {}
        }
    }
    demux.lock().unwrap().data.clear();
    let _ = closed.send(());
}

/// Sends the upgrade request client-go sends.
pub async fn upgrade(url: &str, protocols: &[&str]) -> (TcpStream, http::UpgradeReply) {
    let joined = protocols.join(", ");
    let mut headers = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
    if !protocols.is_empty() {
        headers.push(("X-Stream-Protocol-Version", joined.as_str()));
    }
    http::request(url, "POST", &headers).await
}
