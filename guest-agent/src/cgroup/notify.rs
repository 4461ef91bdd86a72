//! Waiting for changes of a cgroup event file (`memory.events`, `cgroup.events`)
//! with inotify: the kernel raises IN_MODIFY on them when a counter or state
//! changes, so nothing polls.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

use super::error::CgroupError;

/// `Inotify` with the `AsRawFd` that `AsyncFd` wants.
struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// An inotify watch on one file.
pub struct FileWatch {
    fd: AsyncFd<Fd>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch").finish_non_exhaustive()
    }
}

impl FileWatch {
    /// Watches `path` for modifications; needs a Tokio runtime.
    pub fn new(path: &Path) -> Result<Self, CgroupError> {
        let io = |e: Errno| CgroupError::io("inotify", path, e.into());
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(io)?;
        inotify
            .add_watch(path, AddWatchFlags::IN_MODIFY)
            .map_err(io)?;
        // Safe: `Fd` owns the inotify fd and neither replaces nor closes it while registered.
        let fd = unsafe { AsyncFd::register(Fd(inotify)) }
            .map_err(|e| CgroupError::io("inotify", path, std::io::Error::from(e)))?;
        Ok(Self { fd })
    }

    /// Waits for the next change; `false` once the file is gone (its cgroup was
    /// removed, which drops the watch) or the watch failed.
    pub async fn changed(&mut self) -> bool {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return false;
            };
            match guard.get_inner().0.read_events() {
                Ok(events) => {
                    if events
                        .iter()
                        .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                    {
                        return false;
                    }
                    if !events.is_empty() {
                        return true;
                    }
                }
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }
}
