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

/// Console output made safe for a terminal: text, newlines, tabs and
/// UTF-8 pass, while C0 controls (ESC and the rest, which start escape
/// sequences that can rewrite the screen, set the title or answer back
/// into the terminal's input) and the C1 range U+0080..U+009F become
/// `\xNN`. For the console on a terminal only; the console file is raw.
#[derive(Debug)]
pub struct TerminalSafe<W: std::io::Write>(pub W);

impl<W: std::io::Write> std::io::Write for TerminalSafe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            let c1 = b == 0xc2 && buf.get(i + 1).is_some_and(|n| (0x80..0xa0).contains(n));
            if c1 {
                out.extend_from_slice(format!("\\xc2\\x{:02x}", buf[i + 1]).as_bytes());
                i += 2;
                continue;
            }
            match b {
                b'\n' | b'\r' | b'\t' | 0x20..=0x7e | 0x80.. => out.push(b),
                _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            }
            i += 1;
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
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

    #[test]
    fn terminal_output_keeps_text_and_drops_escape_sequences() {
        use std::io::Write;
        let mut t = TerminalSafe(Vec::new());
        t.write_all("ok\r\n\x1b]0;pwned\x07caf\u{e9} \u{9b}2J\tend".as_bytes())
            .unwrap();
        assert_eq!(
            String::from_utf8(t.0).unwrap(),
            "ok\r\n\\x1b]0;pwned\\x07caf\u{e9} \\xc2\\x9b2J\tend"
        );
    }
}
