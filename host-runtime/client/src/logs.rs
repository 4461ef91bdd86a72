//! Reading container logs in the CRI format the kubelet defines:
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F>[:tags] <content>\n`, where a
//! `P` (partial) record continues in the stream's next record and `F` ends the
//! line.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::ClientError;

/// The longest record (one file line) kept; vesseld writes at most 16 KiB of
/// content per record, so anything longer is a damaged file and is cut.
pub const MAX_RECORD: usize = 1024 * 1024;

/// The longest joined line kept in memory; a longer run of `P` records is
/// printed in pieces rather than buffered without bound.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

/// One complete log line (joined from its `P` records, without the newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The timestamp of the line's first record, as written.
    pub timestamp: String,
    /// The stream it came from.
    pub stream: Stream,
    /// The line's bytes.
    pub text: Vec<u8>,
}

/// Joins records into lines, one pending partial line per stream.
#[derive(Debug, Default)]
pub struct LineJoiner {
    pending: [Option<LogLine>; 2],
    /// Records that did not parse (kubelet skips them too).
    pub malformed: u64,
}

impl LineJoiner {
    /// Feeds one record (a file line without its `\n`); returns a line when one completes.
    pub fn push(&mut self, record: &[u8]) -> Option<LogLine> {
        let Some((timestamp, stream, full, content)) = parse_record(record) else {
            self.malformed += 1;
            return None;
        };
        let slot = &mut self.pending[stream as usize];
        let line = slot.get_or_insert_with(|| LogLine {
            timestamp: timestamp.to_string(),
            stream,
            text: Vec::new(),
        });
        line.text.extend_from_slice(content);
        if full || line.text.len() >= MAX_LINE {
            slot.take()
        } else {
            None
        }
    }

    /// Hands out partial lines still pending (at the end of a non-follow read).
    pub fn flush(&mut self) -> Vec<LogLine> {
        self.pending.iter_mut().filter_map(Option::take).collect()
    }
}

/// Splits a record into (timestamp, stream, is-full, content).
fn parse_record(record: &[u8]) -> Option<(&str, Stream, bool, &[u8])> {
    let mut fields = record.splitn(4, |&b| b == b' ');
    let timestamp = std::str::from_utf8(fields.next()?).ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tags = fields.next()?;
    let full = match tags.split(|&b| b == b':').next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    if timestamp.is_empty() {
        return None;
    }
    // `ts stream F` with nothing after the tag is an empty line.
    Some((timestamp, stream, full, fields.next().unwrap_or(b"")))
}

/// What `logs` prints.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Print only the last N lines (None: all).
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
}

/// Writes one line to the writer of its stream.
pub fn write_line(
    line: &LogLine,
    timestamps: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<()> {
    let out: &mut dyn Write = match line.stream {
        Stream::Stdout => &mut *stdout,
        Stream::Stderr => &mut *stderr,
    };
    if timestamps {
        out.write_all(line.timestamp.as_bytes())?;
        out.write_all(b" ")?;
    }
    out.write_all(&line.text)?;
    out.write_all(b"\n")
}

/// A log file being read, possibly followed as it grows (and is rotated).
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    inode: u64,
    offset: u64,
    partial_record: Vec<u8>,
    skipping_overlong: bool,
    joiner: LineJoiner,
}

impl LogFile {
    /// Opens the log file at `path`.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let io = |source| ClientError::Io {
            path: path.to_path_buf(),
            error: source,
        };
        let file = File::open(path).map_err(io)?;
        let inode = file.metadata().map_err(io)?.ino();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            inode,
            offset: 0,
            partial_record: Vec::new(),
            skipping_overlong: false,
            joiner: LineJoiner::default(),
        })
    }

    /// Records skipped because they did not parse.
    pub fn malformed(&self) -> u64 {
        self.joiner.malformed
    }

    /// Reads what was appended since the last call, passing each completed line to `sink`.
    pub fn read_new(
        &mut self,
        sink: &mut dyn FnMut(LogLine) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        self.read_to_eof(sink)?;
        if self.reopen_if_rotated()? {
            self.read_to_eof(sink)?;
        }
        Ok(())
    }

    fn read_to_eof(
        &mut self,
        sink: &mut dyn FnMut(LogLine) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = self
                .file
                .read(&mut chunk)
                .map_err(|source| ClientError::Io {
                    path: self.path.clone(),
                    error: source,
                })?;
            if n == 0 {
                return Ok(());
            }
            self.offset += n as u64;
            for piece in chunk[..n].split_inclusive(|&b| b == b'\n') {
                let ends = piece.last() == Some(&b'\n');
                let body = if ends {
                    &piece[..piece.len() - 1]
                } else {
                    piece
                };
                if !self.skipping_overlong {
                    let room = MAX_RECORD.saturating_sub(self.partial_record.len());
                    self.partial_record
                        .extend_from_slice(&body[..body.len().min(room)]);
                    if body.len() > room {
                        // A damaged file: keep the record's first MAX_RECORD bytes.
                        self.skipping_overlong = true;
                    }
                }
                if ends {
                    self.skipping_overlong = false;
                    let record = std::mem::take(&mut self.partial_record);
                    if let Some(line) = self.joiner.push(&record) {
                        sink(line).map_err(|source| ClientError::Io {
                            path: PathBuf::from("<output>"),
                            error: source,
                        })?;
                    }
                }
            }
        }
    }

    /// Hands out lines whose last record was partial (used at the end of a read).
    pub fn flush(&mut self) -> Vec<LogLine> {
        self.joiner.flush()
    }

    /// Reopens the file if it was rotated (replaced) or truncated; true if so.
    fn reopen_if_rotated(&mut self) -> Result<bool, ClientError> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            // Removed: keep the open file; it may still grow.
            return Ok(false);
        };
        if meta.ino() != self.inode {
            // The old file was read to its end just before this.
            let mut fresh = LogFile::open(&self.path)?;
            std::mem::swap(&mut self.file, &mut fresh.file);
            self.inode = fresh.inode;
            self.offset = 0;
            self.partial_record.clear();
        } else if meta.len() < self.offset {
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(|source| ClientError::Io {
                    path: self.path.clone(),
                    error: source,
                })?;
            self.offset = 0;
            self.partial_record.clear();
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// Reads the whole file once and prints it (or its last `tail` lines).
pub fn print_log(
    log: &mut LogFile,
    options: &LogOptions,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut lines: VecDeque<LogLine> = VecDeque::new();
    let out_err = |source| ClientError::Io {
        path: PathBuf::from("<output>"),
        error: source,
    };
    match options.tail {
        Some(n) => {
            log.read_new(&mut |line| {
                if n > 0 {
                    if lines.len() == n {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
                Ok(())
            })?;
            for line in &lines {
                write_line(line, options.timestamps, stdout, stderr).map_err(out_err)?;
            }
        }
        None => log.read_new(&mut |line| write_line(&line, options.timestamps, stdout, stderr))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
2026-12-02T10:00:00.000000001Z stdout F hello
2026-12-02T10:00:00.000000002Z stderr P err-
2026-12-02T10:00:00.000000003Z stdout P wor
2026-12-02T10:00:00.000000004Z stdout P l
2026-12-02T10:00:00.000000005Z stderr F or
2026-12-02T10:00:00.000000006Z stdout F:x d with  two spaces
garbage line
2026-12-02T10:00:00.000000007Z stdout F
2026-12-02T10:00:00.000000008Z stdout F last
";

    fn read(text: &str, options: LogOptions) -> (String, String, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, text).unwrap();
        let mut log = LogFile::open(&path).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        print_log(&mut log, &options, &mut out, &mut err).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            log.malformed(),
        )
    }

    #[test]
    fn partial_records_join_per_stream_and_streams_split() {
        let (out, err, malformed) = read(SAMPLE, LogOptions::default());
        assert_eq!(out, "hello\nworld with  two spaces\n\nlast\n");
        assert_eq!(err, "err-or\n");
        assert_eq!(malformed, 1);
    }

    #[test]
    fn tail_keeps_the_last_lines_across_streams() {
        let (out, err, _) = read(
            SAMPLE,
            LogOptions {
                tail: Some(2),
                timestamps: false,
            },
        );
        assert_eq!(out, "\nlast\n");
        assert_eq!(err, "");
        let (out, err, _) = read(
            SAMPLE,
            LogOptions {
                tail: Some(0),
                timestamps: false,
            },
        );
        assert_eq!((out.as_str(), err.as_str()), ("", ""));
    }

    #[test]
    fn timestamps_are_those_of_the_first_record() {
        let (out, err, _) = read(
            SAMPLE,
            LogOptions {
                tail: Some(3),
                timestamps: true,
            },
        );
        assert_eq!(
            out,
            "2026-12-02T10:00:00.000000003Z world with  two spaces\n\
             2026-12-02T10:00:00.000000007Z \n\
             2026-12-02T10:00:00.000000008Z last\n"
        );
        assert_eq!(err, "");
    }

    #[test]
    fn following_picks_up_appended_and_split_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "t1 stdout F one\nt2 stdout P tw").unwrap();
        let mut log = LogFile::open(&path).unwrap();
        let mut got = Vec::new();
        log.read_new(&mut |l| {
            got.push(l.text);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [b"one".to_vec()]);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"o\nt3 stdout F !\n").unwrap();
        log.read_new(&mut |l| {
            got.push(l.text);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [b"one".to_vec(), b"two!".to_vec()]);
        // Rotation: a new file under the same name is read from its start.
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, "t4 stderr F rotated\n").unwrap();
        log.read_new(&mut |l| {
            got.push(l.text);
            Ok(())
        })
        .unwrap();
        assert_eq!(got.last().unwrap(), b"rotated");
    }

    #[test]
    fn overlong_records_are_cut_not_buffered() {
        let mut text = b"t1 stdout F ".to_vec();
        text.extend(std::iter::repeat_n(b'a', MAX_RECORD + 10));
        text.extend_from_slice(b"\nt2 stdout F next\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, &text).unwrap();
        let mut log = LogFile::open(&path).unwrap();
        let mut got = Vec::new();
        log.read_new(&mut |l| {
            got.push(l.text.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [MAX_RECORD - "t1 stdout F ".len(), 4]);
    }
}
