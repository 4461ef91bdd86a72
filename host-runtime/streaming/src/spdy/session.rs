//! The server side of a SPDY/3 session: one reader task, one writer task, and the streams
//! the client opens.
//!
//! Bounds: control frames and inflated header blocks are capped; DATA payloads are read in
//! small chunks into a per-stream queue of one window (64 KiB), and a full queue stops the
//! reader (TCP back-pressure) instead of buffering more; concurrent streams are capped
//! (the extra ones are refused with RST_STREAM); a socket write that makes no progress
//! for `write_stall_timeout` drops the session, so a client that never reads cannot pin
//! memory or block the runtime's writers forever.
//!
//! Flow control: we send WINDOW_UPDATE as the application consumes each stream, so a
//! strict SPDY/3 client never stalls. Kubernetes' peers (moby/spdystream in client-go and
//! the kubelet) neither send WINDOW_UPDATE nor honour it, so honouring the peer's window
//! on our sends is a setting, off by default; with it off we rely on TCP like they do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::frame::{self, Frame, FrameError, FrameHeader, RstStatus, HEADER_LEN, MAX_31BIT};
use super::header_block::{HeaderBlockError, HeaderDecoder, HeaderEncoder, Headers};
use crate::idle::{read_full, Activity, ReadError};

/// Inbound DATA is queued in chunks of at most this size.
const READ_CHUNK: usize = 16 * 1024;
/// Outbound DATA frames carry at most this much (client-go reads any size).
const WRITE_CHUNK: usize = 32 * 1024;
/// Commands queued for the writer task before senders wait.
const WRITE_QUEUE: usize = 32;

/// Limits and behaviour of one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest control frame payload accepted (header blocks are tiny in practice).
    pub max_control_payload: usize,
    /// Largest DATA payload accepted (read in chunks, never buffered whole).
    pub max_data_payload: usize,
    /// Largest inflated header block.
    pub max_header_block: usize,
    /// Concurrent streams; more are refused with RST_STREAM REFUSED_STREAM.
    pub max_streams: usize,
    /// Each stream's receive window and inbound queue, in bytes.
    pub initial_window: u32,
    /// Whether our sends wait for the peer's WINDOW_UPDATEs (see the module comment).
    pub honor_peer_window: bool,
    /// A socket write stalled this long drops the session.
    pub write_stall_timeout: Duration,
    /// A session moving no bytes either way this long is closed (the kubelet's
    /// `streamIdleTimeout`, 4 h by default).
    pub idle_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_control_payload: 64 * 1024,
            max_data_payload: frame::MAX_PAYLOAD_LEN,
            max_header_block: 64 * 1024,
            max_streams: 128,
            initial_window: 64 * 1024,
            honor_peer_window: false,
            write_stall_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(4 * 60 * 60),
        }
    }
}

/// Why a session or stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session is gone (dropped, closed or broken).
    #[error("SPDY session closed")]
    Closed,
    /// The peer reset the stream, or we may not send on it.
    #[error("SPDY stream {0} is closed for sending")]
    StreamClosed(u32),
    /// A frame was malformed.
    #[error("malformed SPDY frame: {0}")]
    Frame(#[from] FrameError),
    /// A header block was malformed or too large.
    #[error("bad SPDY header block: {0}")]
    HeaderBlock(#[from] HeaderBlockError),
    /// The peer broke the protocol.
    #[error("SPDY protocol error: {0}")]
    Protocol(&'static str),
    /// The socket failed.
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing moved for the idle timeout.
    #[error("SPDY session idle for {0:?}")]
    Idle(Duration),
}

enum WriteCmd {
    Frame(Frame),
    Reply { stream_id: u32, headers: Headers },
    GoAway { status: u32 },
}

#[derive(Default)]
struct StreamState {
    inbound: Option<mpsc::Sender<Bytes>>,
    remote_closed: bool,
    local_closed: bool,
    send_window: i64,
}

struct Shared {
    config: SessionConfig,
    activity: Arc<Activity>,
    tx: mpsc::Sender<WriteCmd>,
    streams: Mutex<HashMap<u32, StreamState>>,
    window_changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, StreamState>> {
        // A panic while holding the lock cannot leave the map inconsistent (plain updates).
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget_if_done(map: &mut HashMap<u32, StreamState>, id: u32) {
        if map
            .get(&id)
            .is_some_and(|s| s.remote_closed && s.local_closed)
        {
            map.remove(&id);
        }
    }
}

/// A stream the client opened, with its headers.
pub struct Stream {
    /// The stream id.
    pub id: u32,
    /// The headers of its SYN_STREAM.
    pub headers: Headers,
    /// Its inbound half.
    pub reader: StreamReader,
    /// Its outbound half.
    pub writer: StreamWriter,
}

/// The inbound half of a stream.
pub struct StreamReader {
    id: u32,
    rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
    unacked: u32,
}

impl StreamReader {
    /// The next chunk of data, or `None` at FIN, reset or the end of the session.
    pub async fn read(&mut self) -> Option<Bytes> {
        let chunk = self.rx.recv().await?;
        self.unacked = self.unacked.saturating_add(chunk.len() as u32);
        if self.unacked >= self.shared.config.initial_window / 2 {
            let delta = std::mem::take(&mut self.unacked).min(MAX_31BIT);
            let update = Frame::WindowUpdate {
                stream_id: self.id,
                delta,
            };
            // Awaited, not tried: a strict peer whose update got lost would wait forever.
            // A dead session just loses it.
            let _ = self.shared.tx.send(WriteCmd::Frame(update)).await;
        }
        Some(chunk)
    }
}

/// The outbound half of a stream.
pub struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
    fin_sent: bool,
}

impl StreamWriter {
    /// Sends `data` as DATA frames; waits when the session's queue is full.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), SessionError> {
        while !data.is_empty() {
            let n = self.reserve(data.len().min(WRITE_CHUNK)).await?;
            let (now, rest) = data.split_at(n);
            let frame = Frame::Data {
                stream_id: self.id,
                fin: false,
                data: Bytes::copy_from_slice(now),
            };
            self.shared
                .tx
                .send(WriteCmd::Frame(frame))
                .await
                .map_err(|_| SessionError::Closed)?;
            data = rest;
        }
        Ok(())
    }

    /// Sends FIN: the client sees the end of the stream. Idempotent.
    pub async fn close(&mut self) -> Result<(), SessionError> {
        if self.fin_sent {
            return Ok(());
        }
        self.check_open()?;
        self.fin_sent = true;
        let frame = Frame::Data {
            stream_id: self.id,
            fin: true,
            data: Bytes::new(),
        };
        let sent = self.shared.tx.send(WriteCmd::Frame(frame)).await;
        let mut map = self.shared.lock();
        if let Some(state) = map.get_mut(&self.id) {
            state.local_closed = true;
        }
        Shared::forget_if_done(&mut map, self.id);
        sent.map_err(|_| SessionError::Closed)
    }

    fn check_open(&self) -> Result<(), SessionError> {
        if self.shared.tx.is_closed() {
            return Err(SessionError::Closed);
        }
        match self.shared.lock().get(&self.id) {
            Some(state) if !state.local_closed && !self.fin_sent => Ok(()),
            _ => Err(SessionError::StreamClosed(self.id)),
        }
    }

    /// Waits until `want` bytes (or part of them) may be sent; returns how many.
    async fn reserve(&self, want: usize) -> Result<usize, SessionError> {
        loop {
            let notified = self.shared.window_changed.notified();
            {
                if self.shared.tx.is_closed() {
                    return Err(SessionError::Closed);
                }
                let mut map = self.shared.lock();
                let state = match map.get_mut(&self.id) {
                    Some(state) if !state.local_closed && !self.fin_sent => state,
                    _ => return Err(SessionError::StreamClosed(self.id)),
                };
                if !self.shared.config.honor_peer_window {
                    return Ok(want);
                }
                if state.send_window > 0 {
                    let n = want.min(state.send_window as usize);
                    state.send_window -= n as i64;
                    return Ok(n);
                }
            }
            // Re-check now and then: a writer that died of a stall notifies nobody.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }
}

/// A running session. Dropping it aborts both tasks and closes the connection.
pub struct Session {
    shared: Arc<Shared>,
    ended: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl Session {
    /// Starts serving `io`; streams the client opens arrive on the returned receiver.
    pub fn start<T>(io: T, config: SessionConfig) -> (Session, mpsc::Receiver<Stream>)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (streams_tx, streams_rx) = mpsc::channel(config.max_streams.max(1));
        let shared = Arc::new(Shared {
            config,
            tx,
            streams: Mutex::new(HashMap::new()),
            window_changed: Notify::new(),
            activity: Arc::new(Activity::new()),
        });
        let (ended_tx, ended) = watch::channel(false);
        let (writer_done_tx, mut writer_done) = watch::channel(false);
        let ended_tx = Arc::new(ended_tx);
        let writer_ended = ended_tx.clone();
        let stall = shared.config.write_stall_timeout;
        let activity = shared.activity.clone();
        let writer = tokio::spawn(async move {
            write_loop(write_half, rx, stall, &activity).await;
            writer_done_tx.send_replace(true);
            writer_ended.send_replace(true);
        });
        let reader_shared = shared.clone();
        let reader = tokio::spawn(async move {
            let result = read_loop(read_half, &reader_shared, &streams_tx).await;
            // Every stream's inbound side ends with the session's reading side.
            for state in reader_shared.lock().values_mut() {
                state.inbound = None;
            }
            if let Err(error) = result {
                tracing::warn!(%error, "dropping SPDY session");
                reader_shared.lock().clear();
                reader_shared.window_changed.notify_waiters();
                if !matches!(error, SessionError::Io(_)) {
                    // Tell the client why, and wait until the writer has sent it before
                    // the handler (which owns the session) sees the end.
                    let status = if matches!(error, SessionError::Idle(_)) {
                        0
                    } else {
                        1
                    };
                    let goaway = reader_shared.tx.send(WriteCmd::GoAway { status });
                    if tokio::time::timeout(stall, goaway).await.is_ok() {
                        let done = writer_done.wait_for(|done| *done);
                        let _ = tokio::time::timeout(stall, done).await;
                    }
                }
            }
            drop(streams_tx);
            ended_tx.send_replace(true);
        });
        let session = Session {
            shared,
            ended,
            reader,
            writer: Some(writer),
        };
        (session, streams_rx)
    }

    /// Becomes `true` when the client's side ends or the session is dropped.
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.ended.clone()
    }

    /// Whether the session can still send.
    pub fn is_open(&self) -> bool {
        !self.shared.tx.is_closed() && self.writer.as_ref().is_some_and(|w| !w.is_finished())
    }

    /// Sends GOAWAY, flushes everything queued before it and closes the connection.
    pub async fn close(mut self) {
        let _ = self.shared.tx.send(WriteCmd::GoAway { status: 0 }).await;
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
        self.reader.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite>(
    write_half: W,
    mut rx: mpsc::Receiver<WriteCmd>,
    stall: Duration,
    activity: &Activity,
) {
    tokio::pin!(write_half);
    let mut encoder = match HeaderEncoder::new() {
        Ok(encoder) => encoder,
        Err(error) => {
            tracing::error!(%error, "cannot start the SPDY header compressor");
            return;
        }
    };
    let mut out = BytesMut::new();
    let mut last_stream = 0;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut goaway = false;
        // Batch what is already queued into one socket write.
        while let Some(cmd) = next.take() {
            match cmd {
                WriteCmd::Frame(frame) => frame.encode(&mut out),
                WriteCmd::Reply { stream_id, headers } => {
                    last_stream = last_stream.max(stream_id);
                    match encoder.encode(&headers) {
                        Ok(header_block) => Frame::SynReply {
                            stream_id,
                            fin: false,
                            header_block,
                        }
                        .encode(&mut out),
                        Err(error) => {
                            tracing::error!(%error, "cannot compress a SPDY header block");
                            return;
                        }
                    }
                }
                WriteCmd::GoAway { status } => {
                    Frame::GoAway {
                        last_good_stream_id: last_stream,
                        status,
                    }
                    .encode(&mut out);
                    goaway = true;
                    break;
                }
            }
            if out.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        match tokio::time::timeout(stall, write_half.write_all(&out)).await {
            Ok(Ok(())) => {
                out.clear();
                activity.touch();
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "SPDY session write failed");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    timeout_s = stall.as_secs(),
                    "SPDY client stopped reading; dropping the session"
                );
                return;
            }
        }
        if goaway {
            let _ = tokio::time::timeout(stall, write_half.shutdown()).await;
            return;
        }
    }
}

fn read_error(error: ReadError, idle: Duration) -> SessionError {
    match error {
        ReadError::Eof { .. } => SessionError::Io(std::io::ErrorKind::UnexpectedEof.into()),
        ReadError::Io(e) => SessionError::Io(e),
        ReadError::Idle => SessionError::Idle(idle),
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read_half: R,
    shared: &Arc<Shared>,
    new_streams: &mpsc::Sender<Stream>,
) -> Result<(), SessionError> {
    let config = &shared.config;
    let mut decoder = HeaderDecoder::new(config.max_header_block);
    let mut last_client_stream = 0u32;
    let mut initial_window = i64::from(config.initial_window);
    loop {
        let mut head = [0u8; HEADER_LEN];
        let idle = config.idle_timeout;
        match read_full(&mut read_half, &mut head, &shared.activity, idle).await {
            Ok(()) => {}
            Err(ReadError::Eof { filled: 0 }) => return Ok(()),
            Err(e) => return Err(read_error(e, idle)),
        }
        match FrameHeader::parse(head)? {
            FrameHeader::Data {
                stream_id,
                flags,
                len,
            } => {
                if stream_id == 0 {
                    return Err(FrameError::BadStreamId {
                        kind: "DATA",
                        id: 0,
                    }
                    .into());
                }
                if len > config.max_data_payload {
                    return Err(FrameError::TooLarge {
                        len,
                        max: config.max_data_payload,
                    }
                    .into());
                }
                let inbound = shared
                    .lock()
                    .get(&stream_id)
                    .and_then(|s| s.inbound.clone());
                let mut remaining = len;
                while remaining > 0 {
                    let mut chunk = BytesMut::zeroed(remaining.min(READ_CHUNK));
                    read_full(&mut read_half, &mut chunk, &shared.activity, idle)
                        .await
                        .map_err(|e| read_error(e, idle))?;
                    remaining -= chunk.len();
                    if let Some(tx) = &inbound {
                        // Waits while the stream's queue is full: TCP back-pressure. A reader
                        // that went away just discards.
                        let _ = tx.send(chunk.freeze()).await;
                    }
                }
                if flags & frame::FLAG_FIN != 0 {
                    let mut map = shared.lock();
                    if let Some(state) = map.get_mut(&stream_id) {
                        state.inbound = None;
                        state.remote_closed = true;
                    }
                    Shared::forget_if_done(&mut map, stream_id);
                }
            }
            FrameHeader::Control { kind, flags, len } => {
                if len > config.max_control_payload {
                    return Err(FrameError::TooLarge {
                        len,
                        max: config.max_control_payload,
                    }
                    .into());
                }
                let mut payload = BytesMut::zeroed(len);
                read_full(&mut read_half, &mut payload, &shared.activity, idle)
                    .await
                    .map_err(|e| read_error(e, idle))?;
                let frame = match frame::decode_control(kind, flags, payload.freeze()) {
                    Ok(frame) => frame,
                    // Draft 3: unknown control frames are ignored.
                    Err(FrameError::UnknownType(kind)) => {
                        tracing::debug!(kind, "ignoring unknown SPDY control frame");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                match frame {
                    Frame::SynStream {
                        stream_id,
                        fin,
                        unidirectional,
                        header_block,
                        ..
                    } => {
                        let headers = decoder.decode(&header_block)?;
                        if stream_id % 2 == 0 || stream_id <= last_client_stream {
                            return Err(SessionError::Protocol(
                                "client stream ids must be odd and increasing",
                            ));
                        }
                        last_client_stream = stream_id;
                        if shared.lock().len() >= config.max_streams {
                            tracing::warn!(
                                stream_id,
                                max = config.max_streams,
                                "refusing a SPDY stream over the cap"
                            );
                            let rst = Frame::RstStream {
                                stream_id,
                                status: RstStatus::RefusedStream,
                            };
                            shared
                                .tx
                                .send(WriteCmd::Frame(rst))
                                .await
                                .map_err(|_| SessionError::Closed)?;
                            continue;
                        }
                        let (tx, rx) =
                            mpsc::channel((config.initial_window as usize / READ_CHUNK).max(1));
                        shared.lock().insert(
                            stream_id,
                            StreamState {
                                inbound: (!fin).then_some(tx),
                                remote_closed: fin,
                                local_closed: unidirectional,
                                send_window: initial_window,
                            },
                        );
                        let reply = WriteCmd::Reply {
                            stream_id,
                            headers: Headers::new(),
                        };
                        shared
                            .tx
                            .send(reply)
                            .await
                            .map_err(|_| SessionError::Closed)?;
                        let stream = Stream {
                            id: stream_id,
                            headers,
                            reader: StreamReader {
                                id: stream_id,
                                rx,
                                shared: shared.clone(),
                                unacked: 0,
                            },
                            writer: StreamWriter {
                                id: stream_id,
                                shared: shared.clone(),
                                fin_sent: unidirectional,
                            },
                        };
                        if new_streams.send(stream).await.is_err() {
                            // Nobody takes new streams any more; keep serving the open ones.
                            tracing::debug!(
                                stream_id,
                                "SPDY stream opened after the handler stopped accepting"
                            );
                        }
                    }
                    Frame::SynReply { header_block, .. } | Frame::Headers { header_block, .. } => {
                        // Inflated only to keep the shared zlib context in step; we open no
                        // streams and use no trailing headers.
                        decoder.decode(&header_block)?;
                    }
                    Frame::RstStream { stream_id, status } => {
                        tracing::debug!(stream_id, ?status, "client reset a SPDY stream");
                        shared.lock().remove(&stream_id);
                        shared.window_changed.notify_waiters();
                    }
                    Frame::Settings { entries, .. } => {
                        for entry in entries {
                            if entry.id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                                if entry.value > MAX_31BIT {
                                    return Err(SessionError::Protocol(
                                        "initial window above 2^31-1",
                                    ));
                                }
                                let delta = i64::from(entry.value) - initial_window;
                                initial_window = i64::from(entry.value);
                                for state in shared.lock().values_mut() {
                                    state.send_window += delta;
                                }
                                shared.window_changed.notify_waiters();
                            }
                        }
                    }
                    Frame::Ping { id } => {
                        // Odd ids are the client's pings; even ones would answer ours.
                        if id % 2 == 1 {
                            shared
                                .tx
                                .send(WriteCmd::Frame(Frame::Ping { id }))
                                .await
                                .map_err(|_| SessionError::Closed)?;
                        }
                    }
                    Frame::GoAway { .. } => {
                        tracing::debug!("client sent GOAWAY");
                    }
                    Frame::WindowUpdate { stream_id, delta } => {
                        if let Some(state) = shared.lock().get_mut(&stream_id) {
                            state.send_window += i64::from(delta);
                            if state.send_window > i64::from(MAX_31BIT) {
                                return Err(SessionError::Protocol("window above 2^31-1"));
                            }
                        }
                        shared.window_changed.notify_waiters();
                    }
                    Frame::Data { .. } => {
                        return Err(SessionError::Protocol("DATA decoded as control"))
                    }
                }
            }
        }
    }
}
