//! A process's stdio: files in the guest (the first mode), or streams the host
//! reads and writes through the `Stdio` service, over pipes or a terminal.
//!
//! The agent holds the parent ends (pipes, or a pty master the process sends
//! back, see [`console`]); nothing is read until a host attaches.

pub mod console;
mod fd;
mod input;
mod output;

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

pub use fd::AsyncStdioFd;
pub use input::{InputSlot, InputWriter};
pub use output::{OutputReader, OutputSlot, CHUNK_SIZE};

use super::error::EngineError;
use crate::proto::StreamStdio;

/// Streamed stdio, as a `Create` or `Exec` request asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// Whether the process gets a stdin stream (else /dev/null).
    pub stdin: bool,
    /// Whether the process gets a terminal (`process.terminal`).
    pub terminal: bool,
    /// Window size (rows, cols) to set before the process runs.
    pub size: Option<(u16, u16)>,
}

impl StreamSpec {
    /// Validates the stdio fields of a request; `prefix` names the spec field
    /// (`oci_spec_json.process` or `process_json`) in errors.
    pub fn from_request(
        streams: Option<&StreamStdio>,
        terminal: bool,
        has_paths: bool,
        prefix: &str,
    ) -> Result<Option<Self>, EngineError> {
        let Some(streams) = streams else {
            if terminal {
                return Err(EngineError::InvalidArgument(format!(
                    "{prefix}.terminal needs streamed stdio (`streams`), not files"
                )));
            }
            return Ok(None);
        };
        if has_paths {
            return Err(EngineError::InvalidArgument(
                "stdout_path/stderr_path must be empty with `streams`".into(),
            ));
        }
        let size = match streams.terminal_size {
            None => None,
            Some(s) if s.rows == 0 && s.cols == 0 => None,
            Some(s) => Some(terminal_size(s.rows, s.cols, "streams.terminal_size")?),
        };
        if size.is_some() && !terminal {
            return Err(EngineError::InvalidArgument(format!(
                "streams.terminal_size needs {prefix}.terminal"
            )));
        }
        Ok(Some(Self {
            stdin: streams.stdin,
            terminal,
            size,
        }))
    }
}

/// Checks a window size from a request.
pub fn terminal_size(rows: u32, cols: u32, field: &str) -> Result<(u16, u16), EngineError> {
    match (u16::try_from(rows), u16::try_from(cols)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => Ok((r, c)),
        _ => Err(EngineError::InvalidArgument(format!(
            "{field} {rows}x{cols}: rows and cols must be 1 to 65535"
        ))),
    }
}

/// The child's side: what becomes its fds 0–2, and the console socket for a terminal.
#[derive(Debug)]
pub struct ChildStdio {
    /// fd 0.
    pub stdin: Stdio,
    /// fd 1.
    pub stdout: Stdio,
    /// fd 2.
    pub stderr: Stdio,
    /// The socket the process sends its pty master on.
    pub console: Option<OwnedFd>,
}

/// The agent's side until the process is set up.
#[derive(Debug)]
pub enum ParentStdio {
    /// Files in the guest: nothing for the agent to hold.
    Files,
    /// Pipes: the agent's ends.
    Pipes {
        /// Write end of stdin, if asked for.
        stdin: Option<OwnedFd>,
        /// Read end of stdout.
        stdout: OwnedFd,
        /// Read end of stderr.
        stderr: OwnedFd,
    },
    /// A terminal the process sends back.
    Terminal {
        /// The agent's end of the console socket.
        socket: OwnedFd,
        /// Whether input is accepted.
        stdin: bool,
        /// Window size to set before the process runs.
        size: Option<(u16, u16)>,
    },
}

fn internal(what: &str, err: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("{what}: {err}"))
}

fn output_file(field: &str, path: Option<&Path>) -> Result<Stdio, EngineError> {
    let Some(path) = path else {
        return Ok(Stdio::null());
    };
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map(Stdio::from)
        .map_err(|e| EngineError::InvalidArgument(format!("{field} {path:?}: {e}")))
}

/// Pipe buffer for streamed output: bigger than the 64 KiB default so a fast
/// writer fills fewer, larger chunks; still a fixed bound per output.
const PIPE_SIZE: i32 = 1 << 20;

fn pipe() -> Result<(OwnedFd, OwnedFd), EngineError> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| internal("create a pipe", e))
}

fn output_pipe() -> Result<(OwnedFd, OwnedFd), EngineError> {
    let (read, write) = pipe()?;
    // Best effort: a smaller pipe only costs throughput.
    let _ = nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((read, write))
}

/// Opens the files or creates the pipes / console socket for a new process.
pub fn prepare(
    stdout: Option<&Path>,
    stderr: Option<&Path>,
    streams: Option<&StreamSpec>,
) -> Result<(ChildStdio, ParentStdio), EngineError> {
    match streams {
        None => Ok((
            ChildStdio {
                stdin: Stdio::null(),
                stdout: output_file("stdout_path", stdout)?,
                stderr: output_file("stderr_path", stderr)?,
                console: None,
            },
            ParentStdio::Files,
        )),
        Some(s) if s.terminal => {
            let (agent, process) =
                console::socket_pair().map_err(|e| internal("console socket", e))?;
            Ok((
                // The init stage replaces these with the pty slave.
                ChildStdio {
                    stdin: Stdio::null(),
                    stdout: Stdio::null(),
                    stderr: Stdio::null(),
                    console: Some(process),
                },
                ParentStdio::Terminal {
                    socket: agent,
                    stdin: s.stdin,
                    size: s.size,
                },
            ))
        }
        Some(s) => {
            let (stdin_child, stdin_parent) = if s.stdin {
                let (r, w) = pipe()?;
                (Stdio::from(r), Some(w))
            } else {
                (Stdio::null(), None)
            };
            let (out_r, out_w) = output_pipe()?;
            let (err_r, err_w) = output_pipe()?;
            Ok((
                ChildStdio {
                    stdin: stdin_child,
                    stdout: Stdio::from(out_w),
                    stderr: Stdio::from(err_w),
                    console: None,
                },
                ParentStdio::Pipes {
                    stdin: stdin_parent,
                    stdout: out_r,
                    stderr: err_r,
                },
            ))
        }
    }
}

fn async_fd(fd: OwnedFd) -> Result<AsyncStdioFd, EngineError> {
    AsyncStdioFd::new(fd).map_err(|e| internal("watch a stdio fd", e))
}

impl ParentStdio {
    /// Once the process reported `Ready`: the streams (`None` for files).
    pub fn connect(self) -> Result<Option<Arc<ProcessStdio>>, EngineError> {
        match self {
            Self::Files => Ok(None),
            Self::Pipes {
                stdin,
                stdout,
                stderr,
            } => Ok(Some(Arc::new(ProcessStdio {
                stdin: Arc::new(InputSlot::new(stdin.map(async_fd).transpose()?)),
                stdout: Arc::new(OutputSlot::new("stdout", async_fd(stdout)?)),
                stderr: Some(Arc::new(OutputSlot::new("stderr", async_fd(stderr)?))),
            }))),
            Self::Terminal {
                socket,
                stdin,
                size,
            } => {
                let master = console::receive_master(&socket)
                    .map_err(|e| internal("get the process's terminal", e))?;
                if let Some((rows, cols)) = size {
                    console::resize(master.as_fd(), rows, cols)
                        .map_err(|e| internal("set the terminal size", e))?;
                }
                let writer = if stdin {
                    let dup = master
                        .try_clone()
                        .map_err(|e| internal("dup the terminal", e))?;
                    Some(async_fd(dup)?)
                } else {
                    None
                };
                Ok(Some(Arc::new(ProcessStdio {
                    stdin: Arc::new(InputSlot::new(writer)),
                    stdout: Arc::new(OutputSlot::new("terminal output", async_fd(master)?)),
                    stderr: None,
                })))
            }
        }
    }
}

/// Which output of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// stdout (or the terminal).
    Stdout,
    /// stderr.
    Stderr,
}

/// The streams of one process.
#[derive(Debug)]
pub struct ProcessStdio {
    stdin: Arc<InputSlot>,
    stdout: Arc<OutputSlot>,
    /// `None` with a terminal, which carries both.
    stderr: Option<Arc<OutputSlot>>,
}

impl ProcessStdio {
    /// Attaches to an output; `None` once its EOF was read.
    pub fn output(&self, kind: OutputKind) -> Result<Option<OutputReader>, EngineError> {
        match kind {
            OutputKind::Stdout => self.stdout.attach(),
            OutputKind::Stderr => match &self.stderr {
                Some(slot) => slot.attach(),
                None => Err(EngineError::FailedPrecondition(
                    "the process has a terminal: stderr is part of stdout".into(),
                )),
            },
        }
    }

    /// Attaches to stdin.
    pub fn input(&self) -> Result<InputWriter, EngineError> {
        self.stdin.attach()
    }

    /// Closes stdin.
    pub fn close_stdin(&self) -> Result<(), EngineError> {
        self.stdin.close()
    }

    /// Resizes the terminal.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), EngineError> {
        if self.stderr.is_some() {
            return Err(EngineError::FailedPrecondition(
                "the process has no terminal".into(),
            ));
        }
        console::resize(self.stdout.as_fd(), rows, cols)
            .map_err(|e| internal("resize the terminal", e))
    }
}
