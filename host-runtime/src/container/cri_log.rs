//! A container's stdout and stderr in the kubelet's CRI log format, one
//! record per line:
//!
//! ```text
//! 2026-12-02T11:30:00.123456789Z stdout F hello
//! ```
//!
//! It behaves as containerd's CRI logger (`pkg/cri/io/logger.go`): each
//! newline ends a record tagged `F` (a trailing `\r\n` counts as the newline;
//! an empty line is an empty `F` record); a line longer than the cap is cut
//! into `P` records of exactly the cap and ends with an `F` record of the
//! rest; a last line without a newline when its stream ends is written as
//! `P` and no `F` follows. Timestamps are RFC 3339 with nanoseconds, trailing
//! zeros trimmed, in UTC (Go's `time.RFC3339Nano`, which the kubelet parses).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// containerd's default `max_container_log_line_size`.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// Log files are created as containerd creates them.
const LOG_FILE_MODE: u32 = 0o640;

/// Which output of the container a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

impl Stream {
    /// The stream's name in a record.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Writing a container log failed.
#[derive(Debug, thiserror::Error)]
pub enum CriLogError {
    /// The CRI `log_directory` / `log_path` cannot be used.
    #[error("invalid {field} {value:?}: {why}")]
    InvalidPath {
        /// `log_directory` or `log_path`.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The line cap is zero.
    #[error("the log line cap must be at least 1 byte")]
    ZeroMaxLine,
    /// Opening or writing the file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The log file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Where a container's log goes: the sandbox's `log_directory` joined with
/// the container's `log_path`, or `None` when the container has no log path
/// (the kubelet always sets one; crictl may not). `log_path` must stay
/// inside the directory: relative, without `..`.
pub fn resolve_log_path(
    log_directory: &str,
    log_path: &str,
) -> Result<Option<PathBuf>, CriLogError> {
    if log_path.is_empty() {
        return Ok(None);
    }
    let bad_dir = |why| CriLogError::InvalidPath {
        field: "log_directory",
        value: log_directory.to_string(),
        why,
    };
    let bad_path = |why| CriLogError::InvalidPath {
        field: "log_path",
        value: log_path.to_string(),
        why,
    };
    if log_directory.is_empty() {
        return Err(bad_dir("empty while the container has a log_path"));
    }
    if log_directory.contains('\0') {
        return Err(bad_dir("contains NUL"));
    }
    let dir = Path::new(log_directory);
    if !dir.is_absolute() {
        return Err(bad_dir("not an absolute path"));
    }
    if log_path.contains('\0') {
        return Err(bad_path("contains NUL"));
    }
    let relative = Path::new(log_path);
    let mut joined = dir.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(part) => joined.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(bad_path(
                    "contains '..': it would leave the pod's log directory",
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad_path(
                    "absolute: it must be relative to the pod's log directory",
                ))
            }
        }
    }
    if joined == dir {
        return Err(bad_path("names the log directory itself, not a file"));
    }
    Ok(Some(joined))
}

/// A container's log file and the unfinished line of each stream.
#[derive(Debug)]
pub struct CriLogWriter {
    path: PathBuf,
    file: File,
    max_line: usize,
    /// The bytes of each stream's current line not yet written (after each
    /// write at most `max_line`, plus a `\r` that may start a `\r\n`).
    pending: [Vec<u8>; 2],
    /// Reused for formatting records.
    record: Vec<u8>,
}

impl CriLogWriter {
    /// Opens (creating or appending to) the log at `path`, with lines cut at
    /// `max_line` bytes ([`DEFAULT_MAX_LINE`] is containerd's default).
    pub fn open(path: &Path, max_line: usize) -> Result<Self, CriLogError> {
        if max_line == 0 {
            return Err(CriLogError::ZeroMaxLine);
        }
        Ok(Self {
            file: open_log(path)?,
            path: path.to_path_buf(),
            max_line,
            pending: [Vec::new(), Vec::new()],
            record: Vec::new(),
        })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a chunk of `stream`'s output: each line it completes is written
    /// at once, as are cap-sized pieces of a line that grew too long; the
    /// rest waits for more output (or [`CriLogWriter::close_stream`]).
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> Result<(), CriLogError> {
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.pending[stream.index()]);
            line.extend_from_slice(&data[..newline]);
            data = &data[newline + 1..];
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let written = self.emit_line(stream, &line);
            // Keep the allocation for the next line.
            line.clear();
            self.pending[stream.index()] = line;
            written?;
        }
        self.pending[stream.index()].extend_from_slice(data);
        self.flush_long(stream)
    }

    /// `stream` ended (EOF): its unfinished line, if any, is written as a
    /// `P` record, as containerd does; no `F` follows.
    pub fn close_stream(&mut self, stream: Stream) -> Result<(), CriLogError> {
        let rest = std::mem::take(&mut self.pending[stream.index()]);
        if rest.is_empty() {
            return Ok(());
        }
        self.emit(stream, b'P', &rest)
    }

    /// Closes the file and opens `path` again, creating it: the kubelet's
    /// `ReopenContainerLog` after it renamed the file to rotate it. Pending
    /// partial lines stay pending and go to the new file.
    pub fn reopen(&mut self) -> Result<(), CriLogError> {
        let file = open_log(&self.path)?;
        // The old file is closed when it is replaced.
        self.file = file;
        tracing::debug!(path = %self.path.display(), "reopened container log");
        Ok(())
    }

    /// Writes pieces of `max_line` bytes while the pending line is longer. A
    /// trailing `\r` does not count yet: it may begin the `\r\n` that ends
    /// the line (containerd's reader holds it back the same way).
    fn flush_long(&mut self, stream: Stream) -> Result<(), CriLogError> {
        loop {
            let pending = &self.pending[stream.index()];
            let undecided = usize::from(pending.last() == Some(&b'\r'));
            if pending.len() - undecided <= self.max_line {
                return Ok(());
            }
            let rest = self.pending[stream.index()].split_off(self.max_line);
            let piece = std::mem::replace(&mut self.pending[stream.index()], rest);
            self.emit(stream, b'P', &piece)?;
        }
    }

    /// A whole line (after any pending P pieces): P pieces of the cap, then F.
    fn emit_line(&mut self, stream: Stream, line: &[u8]) -> Result<(), CriLogError> {
        let mut rest = line;
        while rest.len() > self.max_line {
            let (piece, tail) = rest.split_at(self.max_line);
            self.emit(stream, b'P', piece)?;
            rest = tail;
        }
        self.emit(stream, b'F', rest)
    }

    /// Writes one record with a single write, so records never mix.
    fn emit(&mut self, stream: Stream, tag: u8, content: &[u8]) -> Result<(), CriLogError> {
        let now = OffsetDateTime::now_utc();
        self.record.clear();
        // Formatting a UTC time as RFC 3339 cannot fail for years 0-9999.
        if now.format_into(&mut self.record, &Rfc3339).is_err() {
            self.record.extend_from_slice(b"1970-01-01T00:00:00Z");
        }
        self.record.push(b' ');
        self.record.extend_from_slice(stream.as_str().as_bytes());
        self.record.push(b' ');
        self.record.push(tag);
        self.record.push(b' ');
        self.record.extend_from_slice(content);
        self.record.push(b'\n');
        self.file
            .write_all(&self.record)
            .map_err(|source| CriLogError::Io {
                what: "writing",
                path: self.path.clone(),
                source,
            })
    }
}

fn open_log(path: &Path) -> Result<File, CriLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| CriLogError::Io {
            what: "opening",
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests;
