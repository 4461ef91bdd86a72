//! The exec stage: entering a running container instead of creating one.
//!
//! The agent passes a pidfd of the container's process; `setns` on it joins
//! all of that process's namespaces at once (Linux 5.8+), and cannot reach a
//! process that reused the pid. The container's cgroup is joined first, while
//! this process still sees the agent's `/proc` and `/sys/fs/cgroup`.

use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sched::{setns, CloneFlags};

use super::{sys, SetupError};

/// Takes ownership of the inherited fd `raw`, close-on-exec again.
pub(super) fn take_fd(raw: i32, what: &str) -> Result<OwnedFd, SetupError> {
    // Safe: only checks whether the number is an open fd.
    if raw < 3 || fcntl(unsafe { BorrowedFd::borrow_raw(raw) }, FcntlArg::F_GETFD).is_err() {
        return Err(SetupError::internal(format!("{what} fd {raw} is not open")));
    }
    // Safe: the agent passed this fd to this process alone, and it is open (checked above).
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| sys("cloexec", e))?;
    Ok(fd)
}

/// Joins the cgroup and every namespace of the process behind the pidfd `raw`.
pub(super) fn enter(raw: i32) -> Result<(), SetupError> {
    let pidfd = take_fd(raw, "container pidfd")?;
    join_cgroup(&pidfd)?;
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    setns(&pidfd, flags).map_err(|e| match e {
        nix::errno::Errno::ESRCH => SetupError::invalid("the container's process has exited"),
        _ => sys("join the container's namespaces", e),
    })
}

/// Moves this process into the container process's cgroup (v2) when it differs from ours.
fn join_cgroup(pidfd: &OwnedFd) -> Result<(), SetupError> {
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
        .map_err(|e| SetupError::internal(format!("read the pidfd's fdinfo: {e}")))?;
    let Some(pid) = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
    else {
        return Err(SetupError::invalid("the container's process has exited"));
    };
    let theirs = unified_cgroup(&format!("/proc/{pid}/cgroup"))?;
    let ours = unified_cgroup("/proc/self/cgroup")?;
    match (theirs, ours) {
        (Some(theirs), Some(ours)) if theirs != ours => {
            let procs = format!("/sys/fs/cgroup{theirs}/cgroup.procs");
            fs::write(&procs, std::process::id().to_string())
                .map_err(|e| SetupError::internal(format!("join cgroup {theirs}: {e}")))
        }
        _ => Ok(()),
    }
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` file, if the process has one.
fn unified_cgroup(path: &str) -> Result<Option<String>, SetupError> {
    let text =
        fs::read_to_string(path).map_err(|e| SetupError::internal(format!("read {path}: {e}")))?;
    Ok(parse_unified(&text))
}

fn parse_unified(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| p.starts_with('/') && !p.contains(".."))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::parse_unified;

    #[test]
    fn finds_the_unified_hierarchy() {
        assert_eq!(
            parse_unified("12:pids:/x\n0::/pod/c1\n").as_deref(),
            Some("/pod/c1")
        );
        assert_eq!(parse_unified("1:name=systemd:/\n"), None);
        assert_eq!(parse_unified("0::/../escape\n"), None);
    }
}
