//! A client for vessel-vmm's control API (line-delimited JSON, docs/vmm-api.md).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `{"op":OP}` over a fresh connection and returns the response line.
/// Pause/resume answer within their own 5 s bound; `timeout` covers a slow
/// nested host.
pub fn request(api: &Path, op: &str, timeout: Duration) -> io::Result<String> {
    let stream = UnixStream::connect(api)?;
    stream.set_read_timeout(Some(timeout))?;
    (&stream).write_all(format!("{{\"op\":\"{op}\"}}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    Ok(line)
}
