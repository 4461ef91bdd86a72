//! A log file that never grows past its cap: when a write would pass it,
//! the newest half is moved to the start of the file (pread/pwrite on the
//! open descriptor, then ftruncate) and the oldest half is dropped.
//!
//! Everything goes through the descriptor opened at start: the jailed VMM
//! cannot look the path up again, and a rename-based rotation would need
//! the directory. Copying half the cap every half cap written costs one
//! extra copy of the output, which is small for console and log text.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Bytes moved per pread/pwrite while compacting.
const COPY_CHUNK: usize = 64 * 1024;

/// A size-capped log file (see the module docs).
#[derive(Debug)]
pub struct CappedFile {
    file: File,
    len: u64,
    max: u64,
}

impl CappedFile {
    /// Creates (or truncates) `path`, mode 0600, capped at `max` bytes
    /// (at least 2).
    pub fn create(path: &Path, max: u64) -> io::Result<CappedFile> {
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(CappedFile {
            file,
            len: 0,
            max: max.max(2),
        })
    }

    /// Bytes in the file now.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written (or kept) yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the last `keep` bytes, moved to the start of the file.
    fn compact(&mut self, keep: u64) -> io::Result<()> {
        let keep = keep.min(self.len);
        let mut src = self.len - keep;
        let mut dst = 0u64;
        let mut buf = vec![0u8; COPY_CHUNK];
        // Forward copy: the destination is always before the source.
        while src < self.len {
            let n = ((self.len - src) as usize).min(COPY_CHUNK);
            self.file.read_exact_at(&mut buf[..n], src)?;
            self.file.write_all_at(&buf[..n], dst)?;
            src += n as u64;
            dst += n as u64;
        }
        self.file.set_len(keep)?;
        self.len = keep;
        Ok(())
    }
}

impl Write for CappedFile {
    /// Writes all of `buf`, or its newest part when it alone passes half the
    /// cap; always reports `buf.len()` so callers never retry dropped bytes.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let half = self.max / 2;
        let data = if buf.len() as u64 > half {
            &buf[buf.len() - half as usize..]
        } else {
            buf
        };
        if self.len + data.len() as u64 > self.max {
            self.compact((self.max - data.len() as u64).min(half))?;
        }
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for CappedFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A [`CappedFile`] shared by threads: the VMM's log writer (each log line
/// is one locked write).
#[derive(Debug, Clone)]
pub struct SharedCappedFile(pub Arc<Mutex<CappedFile>>);

impl Write for SharedCappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock() {
            Ok(mut f) => f.write(buf),
            // A thread panicked mid-write: the file is still consistent.
            Err(poisoned) => poisoned.into_inner().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SharedCappedFile {
    type Writer = SharedCappedFile;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vessel-capped-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_flood_stays_under_the_cap_and_keeps_the_newest_bytes() {
        let path = scratch("flood");
        let max = 64 * 1024;
        let mut f = CappedFile::create(&path, max).unwrap();
        let mut last = String::new();
        for i in 0..200_000u32 {
            last = format!("line {i:08}\n");
            f.write_all(last.as_bytes()).unwrap();
            assert!(f.len() <= max);
        }
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(on_disk.len() as u64 <= max, "{} bytes", on_disk.len());
        assert!(on_disk.len() as u64 >= max / 2, "kept too little");
        assert!(on_disk.ends_with(&last), "the newest line is kept");
        // What is kept is the unbroken tail of the output.
        let tail_lines: Vec<&str> = on_disk.lines().skip(1).collect();
        for pair in tail_lines.windows(2) {
            let n = |l: &str| l[5..].parse::<u32>().unwrap();
            assert_eq!(n(pair[0]) + 1, n(pair[1]));
        }
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn one_huge_write_keeps_its_end() {
        let path = scratch("huge");
        let mut f = CappedFile::create(&path, 1000).unwrap();
        f.write_all(b"old").unwrap();
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(f.write(&big).unwrap(), big.len());
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk.len() <= 1000);
        assert!(big.ends_with(&on_disk[on_disk.len() - 500..]));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn shared_writer_serves_tracing() {
        let path = scratch("tracing");
        let file = SharedCappedFile(Arc::new(Mutex::new(
            CappedFile::create(&path, 4096).unwrap(),
        )));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(file.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1000 {
                tracing::warn!(i, "a flood of log lines");
            }
        });
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(on_disk.len() <= 4096);
        assert!(on_disk.contains("i=999"), "{on_disk}");
        std::fs::remove_file(path).unwrap();
    }
}
