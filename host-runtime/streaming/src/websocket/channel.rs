//! The Kubernetes WebSocket channel framing: each message starts with its channel number
//! (binary protocols) or the channel digit followed by base64 (`base64.` protocols). v5
//! adds a close signal: a binary message `[255, channel]`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

/// Channel numbers of remotecommand.
pub mod channels {
    /// stdin (client to server).
    pub const STDIN: u8 = 0;
    /// stdout.
    pub const STDOUT: u8 = 1;
    /// stderr.
    pub const STDERR: u8 = 2;
    /// The error/status channel.
    pub const ERROR: u8 = 3;
    /// Terminal sizes (client to server).
    pub const RESIZE: u8 = 4;
    /// v5's close signal: `[CLOSE, channel]` ends that channel.
    pub const CLOSE: u8 = 255;
}

/// A decoded client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    /// Data on a channel.
    Data(u8, Bytes),
    /// v5: the client closed this channel.
    Close(u8),
}

/// Why a message is not valid channel framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    /// An empty message (no channel byte).
    #[error("empty websocket message")]
    Empty,
    /// A control message where data was expected.
    #[error("websocket control message where data was expected")]
    NotData,
    /// A base64 message whose channel is not a digit or whose payload is not base64.
    #[error("invalid base64 channel message")]
    BadBase64,
    /// A close signal without its channel.
    #[error("close signal without a channel")]
    BadClose,
}

/// Encodes `data` for `channel`.
pub fn encode(channel: u8, data: &[u8], base64: bool) -> Message {
    if base64 {
        let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        text.push(char::from(b'0' + channel.min(9)));
        STANDARD.encode_string(data, &mut text);
        Message::text(text)
    } else {
        let mut bytes = Vec::with_capacity(1 + data.len());
        bytes.push(channel);
        bytes.extend_from_slice(data);
        Message::binary(bytes)
    }
}

/// Decodes a client data message (not ping/pong/close).
///
/// The negotiated codec decides, not the frame type: like the kubelet (whose reader takes
/// any message's payload as bytes), text frames are accepted on binary protocols, where
/// the Python client sends stdin as text, and binary frames on base64 protocols.
pub fn decode(message: &Message, base64: bool, v5: bool) -> Result<ChannelMessage, ChannelError> {
    let bytes: Bytes = match message {
        Message::Binary(bytes) => bytes.clone(),
        Message::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
        _ => return Err(ChannelError::NotData),
    };
    let (&first, rest) = bytes.split_first().ok_or(ChannelError::Empty)?;
    if base64 {
        if !first.is_ascii_digit() {
            return Err(ChannelError::BadBase64);
        }
        let data = STANDARD.decode(rest).map_err(|_| ChannelError::BadBase64)?;
        return Ok(ChannelMessage::Data(first - b'0', Bytes::from(data)));
    }
    if v5 && first == channels::CLOSE {
        let &closed = rest.first().ok_or(ChannelError::BadClose)?;
        return Ok(ChannelMessage::Close(closed));
    }
    Ok(ChannelMessage::Data(first, bytes.slice(1..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_frames_carry_the_channel_first() {
        let m = encode(channels::STDOUT, b"hi", false);
        assert_eq!(m, Message::binary(vec![1, b'h', b'i']));
        assert_eq!(
            decode(&Message::binary(vec![0, b'x']), false, false),
            Ok(ChannelMessage::Data(0, Bytes::from_static(b"x")))
        );
    }

    #[test]
    fn base64_frames_carry_the_channel_digit() {
        let m = encode(channels::STDERR, b"hello", true);
        assert_eq!(m, Message::text("2aGVsbG8="));
        assert_eq!(
            decode(&Message::text("0aGVsbG8="), true, false),
            Ok(ChannelMessage::Data(0, Bytes::from_static(b"hello")))
        );
        assert_eq!(
            decode(&Message::text("xaGVsbG8="), true, false),
            Err(ChannelError::BadBase64)
        );
        assert_eq!(
            decode(&Message::text("0!!"), true, false),
            Err(ChannelError::BadBase64)
        );
    }

    #[test]
    fn v5_close_signal() {
        assert_eq!(
            decode(&Message::binary(vec![255, 0]), false, true),
            Ok(ChannelMessage::Close(0))
        );
        assert_eq!(
            decode(&Message::binary(vec![255]), false, true),
            Err(ChannelError::BadClose)
        );
        // Before v5, 255 is just a channel number.
        assert_eq!(
            decode(&Message::binary(vec![255, 0]), false, false),
            Ok(ChannelMessage::Data(255, Bytes::from_static(&[0])))
        );
    }

    #[test]
    fn malformed_messages() {
        assert_eq!(
            decode(&Message::binary(Vec::new()), false, true),
            Err(ChannelError::Empty)
        );
        assert_eq!(
            decode(&Message::Ping(Bytes::new()), false, true),
            Err(ChannelError::NotData)
        );
        assert_eq!(
            decode(&Message::binary(b"1abc".to_vec()), true, false),
            Err(ChannelError::BadBase64)
        );
    }

    #[test]
    fn the_codec_decides_not_the_frame_type() {
        // The Python client sends stdin as text on v4/v5 binary protocols.
        assert_eq!(
            decode(&Message::text("\u{0}hello"), false, true),
            Ok(ChannelMessage::Data(0, Bytes::from_static(b"hello")))
        );
        assert_eq!(
            decode(&Message::binary(b"0aGk=".to_vec()), true, false),
            Ok(ChannelMessage::Data(0, Bytes::from_static(b"hi")))
        );
    }
}
