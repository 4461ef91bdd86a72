//! Guest-supplied bytes made safe for a log line or a terminal: printable
//! ASCII stays, everything else (control characters, escape sequences,
//! non-ASCII) becomes `\n`, `\xNN`..., and the result is bounded.

use std::fmt;

/// Most input bytes shown; the rest is summarised as `...(N more bytes)`.
pub const MAX_SHOWN: usize = 256;

/// `bytes` escaped (see the module docs), at most [`MAX_SHOWN`] of them.
pub fn escape(bytes: &[u8]) -> String {
    Escaped(bytes).to_string()
}

/// Displays guest bytes escaped and bounded, without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(MAX_SHOWN)];
        for &b in shown {
            for c in std::ascii::escape_default(b) {
                fmt::Write::write_char(f, char::from(c))?;
            }
        }
        if self.0.len() > shown.len() {
            write!(f, "...({} more bytes)", self.0.len() - shown.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_escapes_cannot_reach_a_terminal() {
        assert_eq!(escape(b"tag-1"), "tag-1");
        assert_eq!(escape(b"\x1b[2J\r\nx\\"), "\\x1b[2J\\r\\nx\\\\");
        assert_eq!(escape("é".as_bytes()), "\\xc3\\xa9");
        let long = vec![b'a'; MAX_SHOWN + 10];
        let e = escape(&long);
        assert!(e.ends_with("...(10 more bytes)"));
        assert!(e.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    }
}
