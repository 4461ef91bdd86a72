//! remotecommand (`v4.channel.k8s.io`) as client-go's SPDY executor runs it:
//! the error stream first, then stdin, stdout, stderr and (with a terminal)
//! resize; the session is over when stdout, stderr and the error stream have
//! ended; the error stream's v4 status gives the exit code.

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::connection::{SpdyConnection, StreamReader};
use super::upgrade::upgrade;
use super::ClientError;
use crate::remotecommand::Protocol;
use crate::TerminalSize;

/// Largest status accepted on the error stream.
const MAX_STATUS: usize = 64 * 1024;

/// The local ends of a session's streams; a stream is asked for when its end is set.
#[derive(Default)]
pub struct SessionIo {
    /// Sent as the process's stdin; its EOF closes the process's stdin.
    pub stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
    /// Receives the process's stdout.
    pub stdout: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    /// Receives the process's stderr (not with `tty`).
    pub stderr: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    /// The process runs on a terminal.
    pub tty: bool,
    /// Terminal sizes to send (with `tty`).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// How the remote process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Its exit code (0 for success).
    pub code: i32,
}

/// Runs the exec registered at `url` (from CRI `Exec`) with `io`.
pub async fn exec(url: &str, io: SessionIo) -> Result<ExitStatus, ClientError> {
    run(url, io).await
}

/// Attaches to the container registered at `url` (from CRI `Attach`) with `io`;
/// returns when the container exits (its status) or the server ends the session.
pub async fn attach(url: &str, io: SessionIo) -> Result<ExitStatus, ClientError> {
    run(url, io).await
}

async fn run(url: &str, io: SessionIo) -> Result<ExitStatus, ClientError> {
    let v4 = Protocol::V4.name();
    let upgraded = upgrade(url, &[v4]).await?;
    if upgraded.protocol.as_deref() != Some(v4) {
        return Err(ClientError::Protocol(format!(
            "the server chose {:?}, not {v4}",
            upgraded.protocol
        )));
    }
    let conn = SpdyConnection::new(upgraded.tcp)?;
    let (_, mut error) = conn.open(&[("streamType", "error")]).await?;
    let stdin = match io.stdin {
        Some(from) => Some((conn.open(&[("streamType", "stdin")]).await?.0, from)),
        None => None,
    };
    let stdout = match io.stdout {
        Some(to) => Some((conn.open(&[("streamType", "stdout")]).await?.1, to)),
        None => None,
    };
    let stderr = match io.stderr {
        Some(to) if !io.tty => Some((conn.open(&[("streamType", "stderr")]).await?.1, to)),
        _ => None,
    };
    let resize = match io.resize {
        Some(sizes) if io.tty => Some((conn.open(&[("streamType", "resize")]).await?.0, sizes)),
        _ => None,
    };

    // stdin and resize are not waited for: the session ends with the process.
    let stdin_task = stdin.map(|(writer, from)| {
        tokio::spawn(async move {
            if let Err(e) = writer.copy_from(from).await {
                tracing::debug!(error = %e, "stdin stream ended");
            }
        })
    });
    let resize_task = resize.map(|(writer, mut sizes)| {
        tokio::spawn(async move {
            while let Some(size) = sizes.recv().await {
                let json = serde_json::json!({"Width": size.width, "Height": size.height});
                if writer.write(json.to_string().as_bytes()).await.is_err() {
                    return;
                }
            }
        })
    });
    let (out, err, status) =
        tokio::join!(drain(stdout), drain(stderr), error.read_to_end(MAX_STATUS));
    for task in stdin_task.into_iter().chain(resize_task) {
        task.abort();
    }
    out?;
    err?;
    parse_status(&status?)
}

async fn drain(
    stream: Option<(StreamReader, Box<dyn AsyncWrite + Unpin + Send>)>,
) -> Result<(), ClientError> {
    if let Some((mut reader, to)) = stream {
        reader.copy_to(to).await?;
    }
    Ok(())
}

/// The exit status a v4 `metav1.Status` carries (empty: success, as client-go reads it).
pub fn parse_status(body: &[u8]) -> Result<ExitStatus, ClientError> {
    if body.is_empty() {
        return Ok(ExitStatus { code: 0 });
    }
    let status: Value = serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("bad status on the error stream: {e}")))?;
    if status["status"] == "Success" {
        return Ok(ExitStatus { code: 0 });
    }
    if status["reason"] == "NonZeroExitCode" {
        let code = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse::<i32>().ok());
        if let Some(code) = code {
            return Ok(ExitStatus { code });
        }
    }
    Err(ClientError::Failure(
        status["message"]
            .as_str()
            .unwrap_or("the command failed")
            .to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_statuses_give_exit_codes() {
        let ok = br#"{"metadata":{},"status":"Success"}"#;
        assert_eq!(parse_status(ok).map(|s| s.code).ok(), Some(0));
        let three = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(parse_status(three).map(|s| s.code).ok(), Some(3));
        let internal =
            br#"{"metadata":{},"status":"Failure","message":"boom","reason":"InternalError"}"#;
        assert!(matches!(parse_status(internal), Err(ClientError::Failure(m)) if m == "boom"));
        assert_eq!(parse_status(b"").map(|s| s.code).ok(), Some(0));
        assert!(parse_status(b"{").is_err());
    }
}
