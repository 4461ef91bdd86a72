//! The last bytes the guest printed on its serial console, kept in memory
//! for the post-mortem: a fixed-size ring filled by a writer that wraps the
//! console's own, so the tail exists whatever the console goes to (a file,
//! stdout, or nowhere).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use super::timeline::{self, Phase};

/// How many console bytes the post-mortem keeps.
pub const TAIL_BYTES: usize = 4096;

/// A ring of the last `capacity` bytes written.
pub struct ConsoleTail {
    inner: Mutex<Ring>,
}

struct Ring {
    buf: Vec<u8>,
    capacity: usize,
    /// Where the next byte goes once the ring is full.
    next: usize,
    /// Bytes written in all (the ring holds the last `capacity` of them).
    total: u64,
}

impl Ring {
    fn push(&mut self, data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        // Only the last `capacity` bytes of a long write can survive.
        let data = &data[data.len().saturating_sub(self.capacity)..];
        for &b in data {
            if self.buf.len() < self.capacity {
                self.buf.push(b);
            } else {
                self.buf[self.next] = b;
                self.next = (self.next + 1) % self.capacity;
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len());
        out.extend_from_slice(&self.buf[self.next..]);
        out.extend_from_slice(&self.buf[..self.next]);
        out
    }
}

impl Default for ConsoleTail {
    fn default() -> Self {
        Self::with_capacity(TAIL_BYTES)
    }
}

impl ConsoleTail {
    /// A ring keeping the last `capacity` bytes (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ConsoleTail {
            inner: Mutex::new(Ring {
                buf: Vec::with_capacity(capacity),
                capacity,
                next: 0,
                total: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `data`.
    pub fn push(&self, data: &[u8]) {
        self.lock().push(data);
    }

    /// The kept bytes, oldest first, and how many bytes were written in all.
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        let ring = self.lock();
        (ring.bytes(), ring.total)
    }
}

/// Makes guest bytes safe to print on a terminal or in a log line: printable
/// ASCII, newline and tab stay; a backslash is doubled; every other byte
/// (escape sequences, other control bytes, non-ASCII) becomes `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' | b'\t' | 0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// A console writer that also feeds a [`ConsoleTail`] and marks the
/// timeline's first console byte.
pub struct TailWriter<W> {
    inner: W,
    tail: Arc<ConsoleTail>,
}

impl<W: Write> TailWriter<W> {
    /// Wraps `inner`, copying every byte into `tail`.
    pub fn new(inner: W, tail: Arc<ConsoleTail>) -> Self {
        TailWriter { inner, tail }
    }
}

impl<W: Write> Write for TailWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The tail records what the guest printed even if the console's own
        // writer fails (a full disk must not blind the post-mortem).
        let n = match self.inner.write(buf) {
            Ok(n) => n,
            Err(e) => {
                self.tail.push(buf);
                return Err(e);
            }
        };
        if n > 0 {
            timeline::mark(Phase::FirstConsoleByte);
        }
        self.tail.push(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_in_order() {
        let tail = ConsoleTail::with_capacity(8);
        tail.push(b"abc");
        assert_eq!(tail.snapshot(), (b"abc".to_vec(), 3));
        tail.push(b"defgh");
        assert_eq!(tail.snapshot(), (b"abcdefgh".to_vec(), 8));
        tail.push(b"ij");
        assert_eq!(tail.snapshot(), (b"cdefghij".to_vec(), 10));
        // A write longer than the ring keeps its own end.
        tail.push(b"0123456789XYZ");
        assert_eq!(tail.snapshot(), (b"56789XYZ".to_vec(), 23));
    }

    #[test]
    fn one_byte_writes_wrap_like_the_serial_port_makes_them() {
        let tail = ConsoleTail::with_capacity(4);
        for b in b"hello world" {
            tail.push(&[*b]);
        }
        assert_eq!(tail.snapshot(), (b"orld".to_vec(), 11));
    }

    #[test]
    fn escapes_what_a_terminal_would_interpret() {
        assert_eq!(escape(b"ok line\n\tx"), "ok line\n\tx");
        assert_eq!(escape(b"\x1b[31mred\x07"), "\\x1b[31mred\\x07");
        assert_eq!(escape(b"a\\b\r\0\xff"), "a\\\\b\\x0d\\x00\\xff");
    }

    #[test]
    fn the_writer_copies_into_the_tail_and_passes_bytes_on() {
        let tail = Arc::new(ConsoleTail::with_capacity(16));
        let mut out = Vec::new();
        {
            let mut w = TailWriter::new(&mut out, tail.clone());
            w.write_all(b"boot\n").unwrap();
            w.flush().unwrap();
        }
        assert_eq!(out, b"boot\n");
        assert_eq!(tail.snapshot().0, b"boot\n");
        assert!(timeline::global().at(Phase::FirstConsoleByte).is_some());
    }

    /// A writer that always fails, like a console file on a full disk.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_console_still_fills_the_tail() {
        let tail = Arc::new(ConsoleTail::with_capacity(16));
        let mut w = TailWriter::new(Broken, tail.clone());
        assert!(w.write(b"panic").is_err());
        assert_eq!(tail.snapshot().0, b"panic");
    }
}
