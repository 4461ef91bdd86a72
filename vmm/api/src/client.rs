//! A client for the VMM's control API: one JSON request line per
//! connection, one JSON response line (docs/vmm-api.md). Synchronous and
//! bounded by a timeout; async callers run it on a blocking thread.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest response line read: `info` and `counters` are a few KiB.
pub const MAX_RESPONSE: u64 = 1 << 20;

/// One request, as the VMM's `control::protocol` parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Configuration, devices, state and timings.
    Info,
    /// Park every vCPU.
    Pause,
    /// Unpark every vCPU.
    Resume,
    /// Graceful stop: ctrl-alt-del to the guest (the VMM exits 0 once it resets).
    Shutdown,
    /// Hard stop; the VMM exits 3.
    Stop,
    /// VM exits by reason and device byte counts.
    Counters,
    /// Every vCPU's state, the devices' queues and the console's tail.
    Postmortem,
}

impl Request {
    /// The request line, without its newline.
    pub fn line(&self) -> String {
        // A unit variant with a string tag always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Connecting, writing or reading failed (or timed out).
    #[error("control API {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The answer is not a JSON object line.
    #[error("control API {}: bad response {line:?}", path.display())]
    BadResponse {
        /// The socket.
        path: PathBuf,
        /// What came back (cut to 200 bytes).
        line: String,
    },
    /// The VMM refused the request: its `error` text.
    #[error("control API refused the request: {0}")]
    Refused(String),
}

/// A client for one VMM's API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    path: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// A client of the socket at `path`; each call waits at most `timeout`
    /// for each read and write.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> Self {
        ApiClient {
            path: path.into(),
            timeout,
        }
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `request`; the result object, or the VMM's refusal.
    pub fn call(&self, request: Request) -> Result<Value, ApiError> {
        let line = self.call_raw(&request.line())?;
        let bad = || ApiError::BadResponse {
            path: self.path.clone(),
            line: line.chars().take(200).collect(),
        };
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(mut obj)) => match obj.remove("error") {
                Some(Value::String(e)) => Err(ApiError::Refused(e)),
                Some(_) => Err(bad()),
                None => Ok(Value::Object(obj)),
            },
            _ => Err(bad()),
        }
    }

    /// Sends one raw request line (for tests of bad requests); the
    /// response line without its newline.
    pub fn call_raw(&self, request: &str) -> Result<String, ApiError> {
        let io = |source| ApiError::Io {
            path: self.path.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.path).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        (&stream)
            .write_all(format!("{request}\n").as_bytes())
            .map_err(io)?;
        let mut line = String::new();
        BufReader::new((&stream).take(MAX_RESPONSE))
            .read_line(&mut line)
            .map_err(io)?;
        if !line.ends_with('\n') {
            return Err(io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no complete response line",
            )));
        }
        line.pop();
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn request_lines_match_the_protocol() {
        assert_eq!(Request::Info.line(), r#"{"op":"info"}"#);
        assert_eq!(Request::Counters.line(), r#"{"op":"counters"}"#);
        let back: Request = serde_json::from_str(r#"{"op":"shutdown"}"#).unwrap();
        assert_eq!(back, Request::Shutdown);
    }

    fn serve_once(reply: &'static str) -> (tempdir::Dir, ApiClient) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut req = String::new();
            BufReader::new(&s).read_line(&mut req).unwrap();
            (&s).write_all(reply.as_bytes()).unwrap();
        });
        (dir, ApiClient::new(path, Duration::from_secs(5)))
    }

    #[test]
    fn results_and_refusals() {
        let (_d, c) = serve_once("{\"state\":\"paused\"}\n");
        assert_eq!(c.call(Request::Pause).unwrap()["state"], "paused");
        let (_d, c) = serve_once("{\"error\":\"the VM is stopping\"}\n");
        let e = c.call(Request::Resume).unwrap_err();
        assert_eq!(
            e.to_string(),
            "control API refused the request: the VM is stopping"
        );
        let (_d, c) = serve_once("[1]\n");
        assert!(matches!(
            c.call(Request::Info),
            Err(ApiError::BadResponse { .. })
        ));
        let (_d, c) = serve_once("{\"state\":");
        assert!(matches!(c.call(Request::Info), Err(ApiError::Io { .. })));
        let c = ApiClient::new("/nonexistent/api.sock", Duration::from_secs(1));
        assert!(c
            .call(Request::Info)
            .unwrap_err()
            .to_string()
            .starts_with("control API /nonexistent/api.sock:"));
    }

    /// A scratch directory removed on drop (no extra dependency for one test).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "vessel-vmm-api-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
