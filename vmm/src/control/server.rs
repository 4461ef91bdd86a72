//! The control API's Unix socket: binding it (mode 0600, stale sockets
//! replaced, live ones refused), an accept thread, and one thread per client
//! (at most [`MAX_CLIENTS`]). Nothing here holds a lock the vCPUs or the
//! devices need, so a slow or silent client only stalls its own thread.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::protocol::{self, Controller, MAX_LINE};
use crate::devices::virtio::vsock::uds;

/// Most clients connected at once; more are answered with an error and closed.
pub const MAX_CLIENTS: usize = 16;
/// A client that does not read its responses for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Error creating the API socket; the message names the flag and path.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A live listener already owns the path.
    #[error("--api {}: socket is in use by another process", .0.display())]
    InUse(PathBuf),
    /// The path exists and is something other than a socket.
    #[error("--api {}: exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    /// Binding, probing or removing the socket failed.
    #[error("--api {}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] io::Error),
    /// The accept thread could not be started.
    #[error("cannot start the control API thread: {0}")]
    Spawn(#[source] io::Error),
}

/// A bound, not yet serving, API socket; removes its file when dropped.
#[derive(Debug)]
pub struct ApiSocket {
    listener: UnixListener,
    path: PathBuf,
    id: (u64, u64),
}

impl ApiSocket {
    /// Binds `path` with mode 0600. A socket nobody listens on is stale and
    /// replaced; a live one or a non-socket is an error.
    pub fn bind(path: &Path) -> Result<ApiSocket, ApiError> {
        let io_err = |e| ApiError::Io(path.to_path_buf(), e);
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ApiError::NotASocket(path.to_path_buf()))
            }
            Ok(_) => match uds::connect_nonblocking(path) {
                // EAGAIN: a listener whose backlog is full is still a listener.
                Ok(_) => return Err(ApiError::InUse(path.to_path_buf())),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    return Err(ApiError::InUse(path.to_path_buf()))
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    tracing::info!(path = %path.display(), "removing stale API socket");
                    fs::remove_file(path).map_err(io_err)?;
                }
                Err(e) => return Err(io_err(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        // bind(2) honours the umask; set the mode outright (the state
        // directory is private too, which closes the window before this).
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        let meta = fs::symlink_metadata(path).map_err(io_err)?;
        Ok(ApiSocket {
            listener,
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Starts serving `ctl`; the returned handle removes the socket file when dropped.
    pub fn serve(self, ctl: Arc<dyn Controller>) -> Result<ApiServer, ApiError> {
        let listener = self
            .listener
            .try_clone()
            .map_err(|e| ApiError::Io(self.path.clone(), e))?;
        crate::threads::builder("api")
            .spawn(move || accept_loop(listener, ctl))
            .map_err(ApiError::Spawn)?;
        Ok(ApiServer { _socket: self })
    }
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        uds::unlink_if_ours(&self.path, self.id);
    }
}

/// The serving API; dropping it removes the socket file. The threads end
/// with the process (they hold no state that needs saving).
#[derive(Debug)]
pub struct ApiServer {
    _socket: ApiSocket,
}

fn accept_loop(listener: UnixListener, ctl: Arc<dyn Controller>) {
    // Client threads inherit it. On failure the VM is already stopping.
    if crate::seccomp::enter(crate::seccomp::Role::Api).is_err() {
        return;
    }
    let clients = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("control API: accept failed: {e}");
                // EMFILE and friends: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if let Err(e) = stream.set_write_timeout(Some(WRITE_TIMEOUT)) {
            tracing::warn!("control API: cannot set a write timeout: {e}");
            continue;
        }
        if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            clients.fetch_sub(1, Ordering::SeqCst);
            let line = protocol::error(&format!("too many clients (at most {MAX_CLIENTS})"));
            let _ = (&stream).write_all(format!("{line}\n").as_bytes());
            continue;
        }
        let (ctl, counter) = (ctl.clone(), clients.clone());
        let spawned = crate::threads::builder("api-client").spawn(move || {
            serve_client(&stream, &stream, ctl.as_ref());
            counter.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            tracing::warn!("control API: cannot start a client thread: {e}");
            clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Answers requests from `input` on `output` until EOF or an I/O error.
pub fn serve_client(input: impl Read, mut output: impl Write, ctl: &dyn Controller) {
    let mut reader = LineReader::new(input);
    loop {
        let (response, stop) = match reader.next_line() {
            Ok(Line::Eof) => return,
            Ok(Line::TooLong) => (
                protocol::error(&format!("request line longer than {MAX_LINE} bytes")),
                false,
            ),
            Ok(Line::Request(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Line::Request(line)) => protocol::handle(&line, ctl),
            Err(e) => {
                tracing::debug!("control API: client read failed: {e}");
                return;
            }
        };
        let sent = output
            .write_all(response.as_bytes())
            .and_then(|()| output.write_all(b"\n"))
            .and_then(|()| output.flush());
        if stop {
            // Answer first, then stop: the process may exit right after.
            ctl.stop();
        }
        if let Err(e) = sent {
            tracing::debug!("control API: client write failed: {e}");
            return;
        }
    }
}

/// One read from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, newline stripped (a last line without one counts).
    Request(Vec<u8>),
    /// A line over [`MAX_LINE`] bytes, skipped up to its newline.
    TooLong,
    /// The client closed its end.
    Eof,
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes without
/// ever buffering more than that.
pub struct LineReader<R> {
    inner: BufReader<R>,
}

impl<R: Read> LineReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        LineReader {
            inner: BufReader::new(inner),
        }
    }

    /// The next line.
    pub fn next_line(&mut self) -> io::Result<Line> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(match (too_long, line.is_empty()) {
                    (true, _) => Line::TooLong,
                    (false, true) => Line::Eof,
                    (false, false) => Line::Request(line),
                });
            }
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            if !too_long {
                if line.len() + chunk.len() > MAX_LINE {
                    // Drop what we have and skip the rest of the line.
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let used = done.unwrap_or(buf.len());
            self.inner.consume(used);
            if done.is_some() {
                return Ok(if too_long {
                    Line::TooLong
                } else {
                    Line::Request(line)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
