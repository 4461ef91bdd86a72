//! The resize stream: a sequence of JSON objects `{"Width":W,"Height":H}`.

use serde::Deserialize;

use crate::runtime::TerminalSize;

/// The most unparsed bytes kept; a client sending more without a complete object is cut off.
const MAX_PENDING: usize = 4096;

#[derive(Deserialize)]
struct WireSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Why the resize stream is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResizeError {
    /// Not JSON, or not a size.
    #[error("invalid terminal size: {0}")]
    Invalid(String),
    /// Too many bytes without a complete object.
    #[error("terminal size message longer than {MAX_PENDING} bytes")]
    TooLong,
}

/// Splits the resize stream's bytes into sizes, whatever the chunking.
#[derive(Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

impl ResizeDecoder {
    /// Feeds bytes; returns the complete sizes they finish.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<TerminalSize>, ResizeError> {
        self.pending.extend_from_slice(bytes);
        let mut sizes = Vec::new();
        let mut stream =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<WireSize>();
        let mut used = 0;
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    used = stream.byte_offset();
                    sizes.push(TerminalSize {
                        width: size.width,
                        height: size.height,
                    });
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(ResizeError::Invalid(e.to_string())),
                None => {
                    used = self.pending.len();
                    break;
                }
            }
        }
        self.pending.drain(..used);
        if self.pending.len() > MAX_PENDING {
            return Err(ResizeError::TooLong);
        }
        Ok(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_split_anywhere() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.push(b"{\"Width\":80,\"Hei").unwrap(), vec![]);
        let sizes = d
            .push(b"ght\":24}\n{\"Width\":100,\"Height\":50}\n")
            .unwrap();
        assert_eq!(
            sizes,
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
    }

    #[test]
    fn garbage_and_endless_objects_are_refused() {
        assert!(matches!(
            ResizeDecoder::default().push(b"{\"Width\":\"wide\"}"),
            Err(ResizeError::Invalid(_))
        ));
        assert!(matches!(
            ResizeDecoder::default().push(b"{\"Width\":-1,\"Height\":1}"),
            Err(ResizeError::Invalid(_))
        ));
        let mut d = ResizeDecoder::default();
        let long = format!("{{\"Width\":80,\"x\":\"{}", "a".repeat(5000));
        assert_eq!(d.push(long.as_bytes()), Err(ResizeError::TooLong));
    }
}
