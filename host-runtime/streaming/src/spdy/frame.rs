//! SPDY/3 frames: the 8-byte common header, control frame payloads, encoding and decoding.
//!
//! Written by hand because no maintained Rust crate speaks SPDY/3 (Kubernetes still uses it
//! through moby/spdystream). Header blocks stay compressed here; `header_block` inflates them
//! with the session's shared zlib context. Every length and count from the wire is checked
//! against the bytes actually present before it is used.

use bytes::{BufMut, Bytes, BytesMut};

/// The SPDY version this module speaks.
pub const VERSION: u16 = 3;
/// Size of the common frame header.
pub const HEADER_LEN: usize = 8;
/// The largest payload the 24-bit length field can carry.
pub const MAX_PAYLOAD_LEN: usize = 0x00ff_ffff;
/// FLAG_FIN on DATA, SYN_STREAM, SYN_REPLY and HEADERS frames.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS on SETTINGS.
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;
/// SETTINGS id of the initial per-stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// SETTINGS id of the peer's limit on concurrent streams.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u32 = 4;
/// The largest stream id or window delta (31 bits).
pub const MAX_31BIT: u32 = 0x7fff_ffff;

/// Control frame type codes.
mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes (draft 3, section 2.6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RstStatus {
    /// A generic protocol error.
    ProtocolError,
    /// A frame for a stream that is not active.
    InvalidStream,
    /// The stream was refused before any processing.
    RefusedStream,
    /// The SPDY version is not supported.
    UnsupportedVersion,
    /// The stream is no longer needed.
    Cancel,
    /// An internal error.
    InternalError,
    /// The peer violated flow control.
    FlowControlError,
    /// A SYN_STREAM for a stream already open.
    StreamInUse,
    /// Data or a SYN_REPLY on a half-closed stream.
    StreamAlreadyClosed,
    /// Unused credential (kept for completeness).
    InvalidCredentials,
    /// A frame too large to process.
    FrameTooLarge,
    /// A status this implementation does not know.
    Other(u32),
}

impl RstStatus {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            Self::ProtocolError => 1,
            Self::InvalidStream => 2,
            Self::RefusedStream => 3,
            Self::UnsupportedVersion => 4,
            Self::Cancel => 5,
            Self::InternalError => 6,
            Self::FlowControlError => 7,
            Self::StreamInUse => 8,
            Self::StreamAlreadyClosed => 9,
            Self::InvalidCredentials => 10,
            Self::FrameTooLarge => 11,
            Self::Other(code) => code,
        }
    }

    /// The status for a wire code.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::ProtocolError,
            2 => Self::InvalidStream,
            3 => Self::RefusedStream,
            4 => Self::UnsupportedVersion,
            5 => Self::Cancel,
            6 => Self::InternalError,
            7 => Self::FlowControlError,
            8 => Self::StreamInUse,
            9 => Self::StreamAlreadyClosed,
            10 => Self::InvalidCredentials,
            11 => Self::FrameTooLarge,
            other => Self::Other(other),
        }
    }
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Entry flags (PERSIST_VALUE, PERSISTED).
    pub flags: u8,
    /// The 24-bit setting id.
    pub id: u32,
    /// The value.
    pub value: u32,
}

/// A decoded frame. Header blocks are still compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA: payload of one stream.
    Data {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN: the sender's last frame on the stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
    /// SYN_STREAM: the peer opens a stream.
    SynStream {
        /// The new stream.
        stream_id: u32,
        /// The stream it is associated to (server push), 0 for none.
        associated_to: u32,
        /// Priority 0 (highest) to 7.
        priority: u8,
        /// Credential slot (unused).
        slot: u8,
        /// FLAG_FIN: the sender sends nothing more on it.
        fin: bool,
        /// FLAG_UNIDIRECTIONAL: the receiver may not send on it.
        unidirectional: bool,
        /// The compressed header block.
        header_block: Bytes,
    },
    /// SYN_REPLY: the peer accepts a stream we opened.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        fin: bool,
        /// The compressed header block.
        header_block: Bytes,
    },
    /// RST_STREAM: abnormal end of a stream.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why.
        status: RstStatus,
    },
    /// SETTINGS.
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        clear: bool,
        /// The entries.
        entries: Vec<Setting>,
    },
    /// PING, echoed by the receiver when the peer started it.
    Ping {
        /// The ping id: odd from clients, even from servers.
        id: u32,
    },
    /// GOAWAY: the sender accepts no more streams.
    GoAway {
        /// The last stream the sender processed.
        last_good_stream_id: u32,
        /// 0 OK, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR.
        status: u32,
    },
    /// HEADERS: more headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        fin: bool,
        /// The compressed header block.
        header_block: Bytes,
    },
    /// WINDOW_UPDATE: the receiver consumed `delta` bytes of a stream (0: the session, 3.1).
    WindowUpdate {
        /// The stream.
        stream_id: u32,
        /// Bytes added to the sender's window (1 to 2^31-1).
        delta: u32,
    },
}

/// Why bytes from the wire are not a valid frame. Each one drops the session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// The frame is longer than the configured cap.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared payload length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A control frame whose length does not fit its type.
    #[error("{kind} frame has an invalid length {len}")]
    BadLength {
        /// Frame type name.
        kind: &'static str,
        /// Declared payload length.
        len: usize,
    },
    /// A stream id that is not allowed here (0 where a stream is required).
    #[error("{kind} frame with invalid stream id {id}")]
    BadStreamId {
        /// Frame type name.
        kind: &'static str,
        /// The id.
        id: u32,
    },
    /// A WINDOW_UPDATE delta of 0.
    #[error("WINDOW_UPDATE with a zero delta")]
    ZeroWindowDelta,
    /// A control frame type this implementation does not know (draft 3 says: ignore it).
    #[error("unknown control frame type {0}")]
    UnknownType(u16),
}

/// The common 8-byte header of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHeader {
    /// A control frame header.
    Control {
        /// Control frame type.
        kind: u16,
        /// Flags.
        flags: u8,
        /// Payload length.
        len: usize,
    },
    /// A DATA frame header.
    Data {
        /// The stream (never 0 on the wire of a valid frame).
        stream_id: u32,
        /// Flags.
        flags: u8,
        /// Payload length.
        len: usize,
    },
}

impl FrameHeader {
    /// Parses the common header; checks the version of control frames.
    pub fn parse(bytes: [u8; HEADER_LEN]) -> Result<Self, FrameError> {
        let first = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let flags = bytes[4];
        let len =
            (usize::from(bytes[5]) << 16) | (usize::from(bytes[6]) << 8) | usize::from(bytes[7]);
        if first & 0x8000_0000 != 0 {
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
            Ok(Self::Control {
                kind: (first & 0xffff) as u16,
                flags,
                len,
            })
        } else {
            Ok(Self::Data {
                stream_id: first,
                flags,
                len,
            })
        }
    }

    /// The payload length this header announces.
    pub fn payload_len(&self) -> usize {
        match *self {
            Self::Control { len, .. } | Self::Data { len, .. } => len,
        }
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    // Callers check lengths first; a short slice yields 0 rather than a panic.
    match bytes.get(at..at + 4) {
        Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

/// Decodes a control frame's payload (the bytes after the common header).
pub fn decode_control(kind: u16, flags: u8, payload: Bytes) -> Result<Frame, FrameError> {
    let len = payload.len();
    let need = |name: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(FrameError::BadLength { kind: name, len })
        }
    };
    let stream = |name: &'static str, id: u32| {
        if id == 0 {
            Err(FrameError::BadStreamId { kind: name, id })
        } else {
            Ok(id)
        }
    };
    match kind {
        kind::SYN_STREAM => {
            need("SYN_STREAM", len >= 10)?;
            let stream_id = stream("SYN_STREAM", be32(&payload, 0) & MAX_31BIT)?;
            Ok(Frame::SynStream {
                stream_id,
                associated_to: be32(&payload, 4) & MAX_31BIT,
                priority: payload[8] >> 5,
                slot: payload[9],
                fin: flags & FLAG_FIN != 0,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                header_block: payload.slice(10..),
            })
        }
        kind::SYN_REPLY => {
            need("SYN_REPLY", len >= 4)?;
            Ok(Frame::SynReply {
                stream_id: stream("SYN_REPLY", be32(&payload, 0) & MAX_31BIT)?,
                fin: flags & FLAG_FIN != 0,
                header_block: payload.slice(4..),
            })
        }
        kind::HEADERS => {
            need("HEADERS", len >= 4)?;
            Ok(Frame::Headers {
                stream_id: stream("HEADERS", be32(&payload, 0) & MAX_31BIT)?,
                fin: flags & FLAG_FIN != 0,
                header_block: payload.slice(4..),
            })
        }
        kind::RST_STREAM => {
            need("RST_STREAM", len == 8)?;
            Ok(Frame::RstStream {
                stream_id: stream("RST_STREAM", be32(&payload, 0) & MAX_31BIT)?,
                status: RstStatus::from_code(be32(&payload, 4)),
            })
        }
        kind::SETTINGS => {
            need("SETTINGS", len >= 4)?;
            let count = be32(&payload, 0) as usize;
            // The count must match the bytes present exactly: no allocation from a bare count.
            need(
                "SETTINGS",
                count.checked_mul(8).and_then(|n| n.checked_add(4)) == Some(len),
            )?;
            let entries = (0..count)
                .map(|i| {
                    let at = 4 + i * 8;
                    let head = be32(&payload, at);
                    Setting {
                        flags: (head >> 24) as u8,
                        id: head & 0x00ff_ffff,
                        value: be32(&payload, at + 4),
                    }
                })
                .collect();
            Ok(Frame::Settings {
                clear: flags & FLAG_CLEAR_SETTINGS != 0,
                entries,
            })
        }
        kind::PING => {
            need("PING", len == 4)?;
            Ok(Frame::Ping {
                id: be32(&payload, 0),
            })
        }
        kind::GOAWAY => {
            // Draft 2 GOAWAY frames had no status; draft 3 requires it.
            need("GOAWAY", len == 8)?;
            Ok(Frame::GoAway {
                last_good_stream_id: be32(&payload, 0) & MAX_31BIT,
                status: be32(&payload, 4),
            })
        }
        kind::WINDOW_UPDATE => {
            need("WINDOW_UPDATE", len == 8)?;
            let delta = be32(&payload, 4) & MAX_31BIT;
            if delta == 0 {
                return Err(FrameError::ZeroWindowDelta);
            }
            Ok(Frame::WindowUpdate {
                stream_id: be32(&payload, 0) & MAX_31BIT,
                delta,
            })
        }
        other => Err(FrameError::UnknownType(other)),
    }
}

/// Decodes one whole frame from the start of `buf`, if it is complete.
///
/// Returns the frame and the bytes it used, or `None` if more bytes are needed. Payloads
/// longer than `max_payload` are refused before anything is buffered.
pub fn decode(buf: &[u8], max_payload: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut bytes = [0u8; HEADER_LEN];
    bytes.copy_from_slice(head);
    let header = FrameHeader::parse(bytes)?;
    let len = header.payload_len();
    if len > max_payload {
        return Err(FrameError::TooLarge {
            len,
            max: max_payload,
        });
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let payload = Bytes::copy_from_slice(payload);
    let frame = match header {
        FrameHeader::Data {
            stream_id, flags, ..
        } => {
            if stream_id == 0 {
                return Err(FrameError::BadStreamId {
                    kind: "DATA",
                    id: 0,
                });
            }
            Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }
        }
        FrameHeader::Control { kind, flags, .. } => decode_control(kind, flags, payload)?,
    };
    Ok(Some((frame, HEADER_LEN + len)))
}

fn control_header(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u8(flags);
    // Callers never build payloads near 16 MiB; the mask keeps a bad length from corrupting
    // the flags byte.
    let len = len.min(MAX_PAYLOAD_LEN) as u32;
    out.put_uint(u64::from(len), 3);
}

impl Frame {
    /// Appends the wire form of this frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let fin = |f: bool| if f { FLAG_FIN } else { 0 };
        match self {
            Frame::Data {
                stream_id,
                fin: f,
                data,
            } => {
                out.put_u32(stream_id & MAX_31BIT);
                out.put_u8(fin(*f));
                out.put_uint(data.len().min(MAX_PAYLOAD_LEN) as u64, 3);
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                fin: f,
                unidirectional,
                header_block,
            } => {
                let flags = fin(*f)
                    | if *unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                control_header(out, kind::SYN_STREAM, flags, 10 + header_block.len());
                out.put_u32(stream_id & MAX_31BIT);
                out.put_u32(associated_to & MAX_31BIT);
                out.put_u8((priority & 0x7) << 5);
                out.put_u8(*slot);
                out.put_slice(header_block);
            }
            Frame::SynReply {
                stream_id,
                fin: f,
                header_block,
            } => {
                control_header(out, kind::SYN_REPLY, fin(*f), 4 + header_block.len());
                out.put_u32(stream_id & MAX_31BIT);
                out.put_slice(header_block);
            }
            Frame::Headers {
                stream_id,
                fin: f,
                header_block,
            } => {
                control_header(out, kind::HEADERS, fin(*f), 4 + header_block.len());
                out.put_u32(stream_id & MAX_31BIT);
                out.put_slice(header_block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(out, kind::RST_STREAM, 0, 8);
                out.put_u32(stream_id & MAX_31BIT);
                out.put_u32(status.code());
            }
            Frame::Settings { clear, entries } => {
                control_header(
                    out,
                    kind::SETTINGS,
                    if *clear { FLAG_CLEAR_SETTINGS } else { 0 },
                    4 + 8 * entries.len(),
                );
                out.put_u32(entries.len() as u32);
                for entry in entries {
                    out.put_u32((u32::from(entry.flags) << 24) | (entry.id & 0x00ff_ffff));
                    out.put_u32(entry.value);
                }
            }
            Frame::Ping { id } => {
                control_header(out, kind::PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, kind::GOAWAY, 0, 8);
                out.put_u32(last_good_stream_id & MAX_31BIT);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, kind::WINDOW_UPDATE, 0, 8);
                out.put_u32(stream_id & MAX_31BIT);
                out.put_u32(delta & MAX_31BIT);
            }
        }
    }

    /// The wire form of this frame.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn round_trip(frame: Frame) {
        let bytes = frame.to_bytes();
        let (decoded, used) = decode(&bytes, MAX).expect("valid").expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, frame);
        // Every strict prefix is incomplete, never an error or a panic.
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut], MAX),
                Ok(None),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn every_frame_type_round_trips() {
        let block = Bytes::from_static(b"\x78\x9c compressed");
        round_trip(Frame::Data {
            stream_id: 7,
            fin: true,
            data: Bytes::from_static(b"hello"),
        });
        round_trip(Frame::Data {
            stream_id: MAX_31BIT,
            fin: false,
            data: Bytes::new(),
        });
        round_trip(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 7,
            slot: 0,
            fin: false,
            unidirectional: true,
            header_block: block.clone(),
        });
        round_trip(Frame::SynReply {
            stream_id: 3,
            fin: true,
            header_block: block.clone(),
        });
        round_trip(Frame::Headers {
            stream_id: 5,
            fin: false,
            header_block: block,
        });
        round_trip(Frame::RstStream {
            stream_id: 9,
            status: RstStatus::Cancel,
        });
        round_trip(Frame::RstStream {
            stream_id: 9,
            status: RstStatus::Other(77),
        });
        round_trip(Frame::Settings {
            clear: true,
            entries: vec![
                Setting {
                    flags: 1,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 65536,
                },
                Setting {
                    flags: 0,
                    id: SETTINGS_MAX_CONCURRENT_STREAMS,
                    value: 100,
                },
            ],
        });
        round_trip(Frame::Settings {
            clear: false,
            entries: vec![],
        });
        round_trip(Frame::Ping { id: 0xdead_beef });
        round_trip(Frame::GoAway {
            last_good_stream_id: 11,
            status: 1,
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 0,
            delta: MAX_31BIT,
        });
    }

    #[test]
    fn rst_status_codes_are_those_of_the_draft() {
        for code in 1..=11 {
            assert_eq!(RstStatus::from_code(code).code(), code);
        }
        assert_eq!(RstStatus::RefusedStream.code(), 3);
        assert_eq!(RstStatus::FlowControlError.code(), 7);
    }

    // Hand-built vectors following the layouts of draft 3, section 2.

    #[test]
    fn decodes_a_hand_built_data_frame() {
        let wire = [0x00, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x02, b'h', b'i'];
        let (frame, used) = decode(&wire, MAX).unwrap().unwrap();
        assert_eq!(used, 10);
        assert_eq!(
            frame,
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::from_static(b"hi")
            }
        );
    }

    #[test]
    fn decodes_a_hand_built_syn_stream() {
        let wire = [
            0x80, 0x03, 0x00, 0x01, // control, version 3, SYN_STREAM
            0x02, 0x00, 0x00, 0x0c, // UNIDIRECTIONAL, length 12
            0x00, 0x00, 0x00, 0x05, // stream 5
            0x00, 0x00, 0x00, 0x00, // associated-to 0
            0x60, 0x00, // priority 3, slot 0
            0xab, 0xcd, // header block
        ];
        let (frame, _) = decode(&wire, MAX).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::SynStream {
                stream_id: 5,
                associated_to: 0,
                priority: 3,
                slot: 0,
                fin: false,
                unidirectional: true,
                header_block: Bytes::from_static(&[0xab, 0xcd]),
            }
        );
    }

    #[test]
    fn encodes_control_frames_as_the_draft_lays_them_out() {
        let rst = Frame::RstStream {
            stream_id: 1,
            status: RstStatus::RefusedStream,
        }
        .to_bytes();
        assert_eq!(
            &rst[..],
            &[0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 0, 0, 0, 3]
        );
        let ping = Frame::Ping { id: 2 }.to_bytes();
        assert_eq!(
            &ping[..],
            &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 2]
        );
        let goaway = Frame::GoAway {
            last_good_stream_id: 7,
            status: 0,
        }
        .to_bytes();
        assert_eq!(
            &goaway[..],
            &[0x80, 0x03, 0x00, 0x07, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 7, 0, 0, 0, 0]
        );
        let window = Frame::WindowUpdate {
            stream_id: 3,
            delta: 0x1_0000,
        }
        .to_bytes();
        assert_eq!(
            &window[..],
            &[0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 3, 0, 1, 0, 0]
        );
        let settings = Frame::Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0x01,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 0x1_0000,
            }],
        }
        .to_bytes();
        assert_eq!(
            &settings[..],
            &[
                0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0c, 0, 0, 0, 1, 0x01, 0, 0, 7, 0, 1, 0,
                0
            ]
        );
        let reply = Frame::SynReply {
            stream_id: 1,
            fin: false,
            header_block: Bytes::from_static(b"z"),
        }
        .to_bytes();
        assert_eq!(
            &reply[..],
            &[0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x05, 0, 0, 0, 1, b'z']
        );
    }

    #[test]
    fn refuses_malformed_frames() {
        // Version 2 control frame.
        let v2 = [0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1];
        assert_eq!(decode(&v2, MAX), Err(FrameError::UnsupportedVersion(2)));
        // PING of 3 bytes.
        let ping = [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x03, 0, 0, 1];
        assert!(matches!(
            decode(&ping, MAX),
            Err(FrameError::BadLength { kind: "PING", .. })
        ));
        // SYN_STREAM shorter than its fixed fields.
        let syn = [0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1];
        assert!(matches!(
            decode(&syn, MAX),
            Err(FrameError::BadLength {
                kind: "SYN_STREAM",
                ..
            })
        ));
        // SYN_STREAM for stream 0.
        let syn0 = [
            0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(matches!(
            decode(&syn0, MAX),
            Err(FrameError::BadStreamId { .. })
        ));
        // SETTINGS whose count claims more entries than the frame holds.
        let settings = [
            0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(matches!(
            decode(&settings, MAX),
            Err(FrameError::BadLength {
                kind: "SETTINGS",
                ..
            })
        ));
        // WINDOW_UPDATE with delta 0.
        let window = [
            0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 0, 0, 0, 0,
        ];
        assert_eq!(decode(&window, MAX), Err(FrameError::ZeroWindowDelta));
        // DATA on stream 0.
        let data0 = [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
        assert!(matches!(
            decode(&data0, MAX),
            Err(FrameError::BadStreamId { kind: "DATA", .. })
        ));
        // Unknown control type (NOOP was removed in draft 3).
        let noop = [0x80, 0x03, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(decode(&noop, MAX), Err(FrameError::UnknownType(5)));
    }

    #[test]
    fn refuses_a_frame_above_the_cap_before_buffering_it() {
        // Only the header is present: the announced 16 MiB payload is refused at once.
        let huge = [0x00, 0x00, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff];
        assert_eq!(
            decode(&huge, 1024),
            Err(FrameError::TooLarge {
                len: MAX_PAYLOAD_LEN,
                max: 1024
            })
        );
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            header_block: Bytes::from_static(b"abcdefgh"),
        }
        .to_bytes();
        for _ in 0..20_000 {
            let mut bytes = valid.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let _ = decode(&bytes, MAX);
            let len = (next() % 40) as usize;
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode(&random, MAX);
        }
    }
}
