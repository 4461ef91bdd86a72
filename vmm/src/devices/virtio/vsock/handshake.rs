//! The hybrid-vsock handshake a host client sends first: `CONNECT <port>\n`.
//!
//! Firecracker defines this protocol but publishes no crate for it. The
//! parser is strict and bounded: exactly `CONNECT `, 1–10 decimal digits
//! fitting a u32, then `\n`, at most [`MAX_LINE`] bytes; bytes may arrive in
//! any number of pieces, and the first byte that cannot lead to a valid line
//! is an error.

/// Longest line we accept, newline included.
pub const MAX_LINE: usize = 32;
const PREFIX: &[u8] = b"CONNECT ";
const MAX_DIGITS: usize = 10;

/// Why a handshake line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A byte that does not fit `CONNECT <digits>\n`.
    #[error("malformed handshake (unexpected byte {0:#04x})")]
    Malformed(u8),
    /// The port does not fit a u32, or has no digits.
    #[error("port missing or out of range")]
    BadPort,
    /// No newline within the length cap.
    #[error("handshake line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// Accumulates a handshake line across partial reads.
#[derive(Debug, Default)]
pub struct HandshakeParser {
    len: usize,
    digits: usize,
    port: u64,
}

impl HandshakeParser {
    /// Starts a new line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds received bytes. Returns `Ok(Some((port, consumed)))` once the
    /// line is complete (`consumed` bytes of `data` belong to it; the rest
    /// is payload), `Ok(None)` if more bytes are needed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<(u32, usize)>, HandshakeError> {
        for (i, &b) in data.iter().enumerate() {
            if self.len >= MAX_LINE {
                return Err(HandshakeError::TooLong);
            }
            if self.len < PREFIX.len() {
                if b != PREFIX[self.len] {
                    return Err(HandshakeError::Malformed(b));
                }
            } else if b == b'\n' {
                if self.digits == 0 {
                    return Err(HandshakeError::BadPort);
                }
                let port = u32::try_from(self.port).map_err(|_| HandshakeError::BadPort)?;
                return Ok(Some((port, i + 1)));
            } else if b.is_ascii_digit() {
                self.digits += 1;
                if self.digits > MAX_DIGITS {
                    return Err(HandshakeError::BadPort);
                }
                // At most 10 digits: fits a u64 without overflow.
                self.port = self.port * 10 + u64::from(b - b'0');
            } else {
                return Err(HandshakeError::Malformed(b));
            }
            self.len += 1;
        }
        if self.len >= MAX_LINE {
            return Err(HandshakeError::TooLong);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> Result<Option<(u32, usize)>, HandshakeError> {
        HandshakeParser::new().feed(line)
    }

    #[test]
    fn good_lines() {
        assert_eq!(parse(b"CONNECT 1024\n"), Ok(Some((1024, 13))));
        assert_eq!(parse(b"CONNECT 0\n"), Ok(Some((0, 10))));
        assert_eq!(parse(b"CONNECT 4294967295\n"), Ok(Some((u32::MAX, 19))));
        // Payload right behind the line is not part of it.
        assert_eq!(parse(b"CONNECT 52\nhello"), Ok(Some((52, 11))));
    }

    #[test]
    fn partial_reads_accumulate() {
        let mut p = HandshakeParser::new();
        assert_eq!(p.feed(b"CON"), Ok(None));
        assert_eq!(p.feed(b"NECT "), Ok(None));
        assert_eq!(p.feed(b""), Ok(None));
        assert_eq!(p.feed(b"10"), Ok(None));
        assert_eq!(p.feed(b"24"), Ok(None));
        assert_eq!(p.feed(b"\n"), Ok(Some((1024, 1))));
        let mut p = HandshakeParser::new();
        for b in b"CONNECT 7" {
            assert_eq!(p.feed(&[*b]), Ok(None));
        }
        assert_eq!(p.feed(b"\n"), Ok(Some((7, 1))));
    }

    #[test]
    fn bad_lines() {
        assert_eq!(
            parse(b"connect 1024\n"),
            Err(HandshakeError::Malformed(b'c'))
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(HandshakeError::Malformed(b'G'))
        );
        assert_eq!(
            parse(b"CONNECT  1024\n"),
            Err(HandshakeError::Malformed(b' '))
        );
        assert_eq!(
            parse(b"CONNECT 1024\r\n"),
            Err(HandshakeError::Malformed(b'\r'))
        );
        assert_eq!(parse(b"CONNECT -1\n"), Err(HandshakeError::Malformed(b'-')));
        assert_eq!(parse(b"CONNECT +1\n"), Err(HandshakeError::Malformed(b'+')));
        assert_eq!(
            parse(b"CONNECT 0x10\n"),
            Err(HandshakeError::Malformed(b'x'))
        );
        assert_eq!(
            parse(b"CONNECT 12 \n"),
            Err(HandshakeError::Malformed(b' '))
        );
        assert_eq!(parse(b"CONNECT\n"), Err(HandshakeError::Malformed(b'\n')));
        assert_eq!(parse(b"CONNECT \n"), Err(HandshakeError::BadPort));
        assert_eq!(parse(b"\0\0\0"), Err(HandshakeError::Malformed(0)));
        assert_eq!(parse(&[0xff; 40]), Err(HandshakeError::Malformed(0xff)));
    }

    #[test]
    fn port_out_of_range() {
        assert_eq!(parse(b"CONNECT 4294967296\n"), Err(HandshakeError::BadPort));
        assert_eq!(
            parse(b"CONNECT 99999999999\n"),
            Err(HandshakeError::BadPort)
        );
        assert_eq!(parse(b"CONNECT 00000000001"), Err(HandshakeError::BadPort));
    }

    #[test]
    fn too_long_without_newline() {
        // Digits are capped first; a line can never reach MAX_LINE validly.
        let mut p = HandshakeParser::new();
        let mut line = b"CONNECT ".to_vec();
        line.extend_from_slice(&[b'1'; 40]);
        assert!(p.feed(&line).is_err());
        // The byte cap holds even when fed one byte at a time.
        let mut p = HandshakeParser::new();
        let mut res = Ok(None);
        for b in line.iter().take(MAX_LINE + 1) {
            res = p.feed(&[*b]);
            if res.is_err() {
                break;
            }
        }
        assert!(res.is_err());
    }
}
