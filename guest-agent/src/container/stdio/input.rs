//! A process's stdin: written by at most one host call at a time, closed once.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::fd::AsyncStdioFd;
use crate::container::EngineError;

#[derive(Debug)]
enum State {
    /// The process has no stdin stream (it reads /dev/null).
    Absent,
    Idle(AsyncStdioFd),
    Attached {
        close_requested: bool,
    },
    Closed,
}

/// The agent's write end of a process's stdin.
#[derive(Debug)]
pub struct InputSlot {
    state: Mutex<State>,
}

impl InputSlot {
    /// A stdin fed through `fd`, or none.
    pub fn new(fd: Option<AsyncStdioFd>) -> Self {
        let state = match fd {
            Some(fd) => State::Idle(fd),
            None => State::Absent,
        };
        Self {
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes stdin for one writer.
    pub fn attach(self: &Arc<Self>) -> Result<InputWriter, EngineError> {
        let mut state = self.lock();
        match std::mem::replace(
            &mut *state,
            State::Attached {
                close_requested: false,
            },
        ) {
            State::Idle(fd) => Ok(InputWriter {
                slot: Arc::clone(self),
                fd: Some(fd),
            }),
            other => {
                let why = match &other {
                    State::Absent => "the process was created without a stdin stream",
                    State::Closed => "stdin is closed",
                    _ => "stdin already has a writer",
                };
                *state = other;
                Err(EngineError::FailedPrecondition(why.into()))
            }
        }
    }

    /// Closes stdin (the process reads EOF); with a writer attached, as soon as it
    /// is done. Closing twice is fine.
    pub fn close(&self) -> Result<(), EngineError> {
        let mut state = self.lock();
        match &mut *state {
            State::Absent => Err(EngineError::FailedPrecondition(
                "the process was created without a stdin stream".into(),
            )),
            State::Attached { close_requested } => {
                *close_requested = true;
                Ok(())
            }
            State::Idle(_) | State::Closed => {
                *state = State::Closed;
                Ok(())
            }
        }
    }
}

/// The attached writer; dropping it hands stdin back (or closes it, if asked).
#[derive(Debug)]
pub struct InputWriter {
    slot: Arc<InputSlot>,
    fd: Option<AsyncStdioFd>,
}

impl InputWriter {
    /// Writes all of `data`, waiting while the process does not read.
    pub async fn write_all(&self, data: &[u8]) -> Result<(), EngineError> {
        let Some(fd) = &self.fd else {
            return Err(EngineError::FailedPrecondition("stdin is closed".into()));
        };
        fd.write_all(data)
            .await
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EPIPE) => {
                    EngineError::FailedPrecondition("the process closed its stdin".into())
                }
                _ => EngineError::Internal(format!("write to stdin: {e}")),
            })
    }

    /// Closes stdin now.
    pub fn close(mut self) {
        self.fd = None;
        *self.slot.lock() = State::Closed;
    }
}

impl Drop for InputWriter {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        let close = matches!(
            *state,
            State::Attached {
                close_requested: true
            }
        );
        *state = match self.fd.take() {
            Some(fd) if !close => State::Idle(fd),
            _ => State::Closed,
        };
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn slot_with_reader() -> (Arc<InputSlot>, std::fs::File) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let slot = InputSlot::new(Some(AsyncStdioFd::new(w).expect("async fd")));
        (Arc::new(slot), std::fs::File::from(r))
    }

    #[tokio::test]
    async fn writers_take_turns_and_close_reaches_the_reader() {
        let (slot, mut reader) = slot_with_reader();
        let first = slot.attach().expect("attach");
        assert!(matches!(
            slot.attach(),
            Err(EngineError::FailedPrecondition(_))
        ));
        first.write_all(b"one").await.expect("write");
        drop(first);
        let second = slot.attach().expect("attach again");
        second.write_all(b"two").await.expect("write");
        // A close while a writer is attached happens when it lets go.
        slot.close().expect("close");
        drop(second);
        let mut all = String::new();
        reader.read_to_string(&mut all).expect("read to EOF");
        assert_eq!(all, "onetwo");
        assert!(slot.attach().is_err());
        slot.close().expect("closing twice is fine");
    }

    #[test]
    fn no_stdin_refuses_everything() {
        let slot = Arc::new(InputSlot::new(None));
        assert!(slot.attach().is_err());
        assert!(slot.close().is_err());
    }
}
