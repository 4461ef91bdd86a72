//! One output (stdout or stderr) of a process, read by at most one host at a time.
//!
//! Nothing is read while no host is attached: the pipe or terminal buffer
//! fills and the process blocks, so output written before the host attaches
//! waits in the kernel rather than in agent memory.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::fd::AsyncStdioFd;
use crate::container::EngineError;

/// Largest chunk one read returns (and one `OutputChunk` carries).
pub const CHUNK_SIZE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Attached,
    Eof,
}

/// The agent's read end of one output, and who reads it.
#[derive(Debug)]
pub struct OutputSlot {
    name: &'static str,
    fd: AsyncStdioFd,
    state: Mutex<State>,
}

impl OutputSlot {
    /// An output named `name` ("stdout", "stderr") read from `fd`.
    pub fn new(name: &'static str, fd: AsyncStdioFd) -> Self {
        Self {
            name,
            fd,
            state: Mutex::new(State::Idle),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the output for one reader; `None` once EOF was read. A second
    /// reader while one is attached is refused: two readers would split the bytes.
    pub fn attach(self: &Arc<Self>) -> Result<Option<OutputReader>, EngineError> {
        let mut state = self.lock();
        match *state {
            State::Eof => Ok(None),
            State::Attached => Err(EngineError::FailedPrecondition(format!(
                "{} already has a reader",
                self.name
            ))),
            State::Idle => {
                *state = State::Attached;
                Ok(Some(OutputReader {
                    slot: Arc::clone(self),
                    eof: false,
                }))
            }
        }
    }
}

/// The attached reader; dropping it lets the next one attach where it stopped.
#[derive(Debug)]
pub struct OutputReader {
    slot: Arc<OutputSlot>,
    eof: bool,
}

impl OutputReader {
    /// The next bytes (at most [`CHUNK_SIZE`]); `None` at EOF.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.eof {
            return Ok(None);
        }
        let mut buf = vec![0u8; CHUNK_SIZE];
        let n = self.slot.fd.read(&mut buf).await?;
        if n == 0 {
            self.eof = true;
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(buf))
    }
}

impl Drop for OutputReader {
    fn drop(&mut self) {
        *self.slot.lock() = if self.eof { State::Eof } else { State::Idle };
    }
}

impl std::os::fd::AsFd for OutputSlot {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_with_writer() -> (Arc<OutputSlot>, std::fs::File) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let slot = OutputSlot::new("stdout", AsyncStdioFd::new(r).expect("async fd"));
        (Arc::new(slot), std::fs::File::from(w))
    }

    #[tokio::test]
    async fn one_reader_then_the_next_then_eof_for_everyone() {
        use std::io::Write;
        let (slot, mut writer) = slot_with_writer();
        writer.write_all(b"abc").expect("write");
        let mut first = slot.attach().expect("attach").expect("reader");
        assert!(matches!(
            slot.attach(),
            Err(EngineError::FailedPrecondition(_))
        ));
        assert_eq!(
            first.next_chunk().await.expect("read"),
            Some(b"abc".to_vec())
        );
        drop(first);
        writer.write_all(b"def").expect("write");
        drop(writer);
        let mut second = slot.attach().expect("attach").expect("reader");
        assert_eq!(
            second.next_chunk().await.expect("read"),
            Some(b"def".to_vec())
        );
        assert_eq!(second.next_chunk().await.expect("read"), None);
        drop(second);
        assert!(slot.attach().expect("attach after eof").is_none());
    }
}
