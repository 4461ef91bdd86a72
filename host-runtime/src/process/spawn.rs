//! Starting a supervised process: clone3 with a pidfd, its own session,
//! optionally new pid and IPC namespaces, joined to the pod's cgroup before
//! it runs a single instruction of the program, then exec.
//!
//! std's `Command` cannot do this: a process placed in a new pid namespace
//! has to be cloned into it (unshare only moves its future children), and a
//! pidfd taken at creation is the only way never to signal a recycled pid.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::sys;
use super::{ProcessError, Supervised};

/// Where a child's standard output and error go.
#[derive(Debug)]
pub enum Output {
    /// Discarded (`/dev/null`).
    Null,
    /// Appended to this open file.
    File(File),
}

/// How to start one supervised process.
#[derive(Debug)]
pub struct SpawnSpec {
    /// What the process is, for logs and errors ("vessel-vmm", "virtiofsd").
    pub role: &'static str,
    /// The program (an absolute or relative path; no PATH search).
    pub program: PathBuf,
    /// Its arguments, without argv\[0\].
    pub args: Vec<OsString>,
    /// Its stdout and stderr (stdin is always `/dev/null`).
    pub output: Output,
    /// Descriptors handed to the child at the given numbers (3 and up).
    pub fds: Vec<(OwnedFd, RawFd)>,
    /// Extra clone flags: `CLONE_NEWPID`, `CLONE_NEWIPC`.
    pub namespaces: u64,
    /// `cgroup.procs` files, opened for writing, that the child joins first.
    pub cgroup_procs: Vec<File>,
}

/// Steps of the child's setup, reported through the error pipe.
const STEPS: [&str; 5] = [
    "setsid",
    "join the pod cgroup",
    "set up its descriptors",
    "exec",
    "reset the signal mask",
];

/// Everything the child needs, prepared before the fork so the child
/// neither allocates nor locks.
struct Prepared {
    program: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// (source, target) descriptor pairs, stdio first.
    moves: Vec<(RawFd, RawFd)>,
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, ProcessError> {
    CString::new(bytes).map_err(|_| ProcessError::Spawn {
        role: "process",
        step: "prepare",
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        ),
    })
}

impl SpawnSpec {
    /// Starts the process; returns once it has exec'd (or failed to).
    pub fn spawn(self) -> Result<Supervised, ProcessError> {
        let role = self.role;
        let err = |step: &'static str| move |source| ProcessError::Spawn { role, step, source };
        let null = File::open("/dev/null").map_err(err("open /dev/null"))?;
        let (out, errfd) = match &self.output {
            Output::Null => (null.as_raw_fd(), null.as_raw_fd()),
            Output::File(f) => (f.as_raw_fd(), f.as_raw_fd()),
        };
        let mut moves = vec![(null.as_raw_fd(), 0), (out, 1), (errfd, 2)];
        moves.extend(self.fds.iter().map(|(fd, to)| (fd.as_raw_fd(), *to)));
        let program = cstring(self.program.as_os_str().as_bytes(), "the program path")?;
        let mut argv = vec![program.clone()];
        for a in &self.args {
            argv.push(cstring(a.as_bytes(), "an argument")?);
        }
        let mut envp = Vec::new();
        for (k, v) in std::env::vars_os() {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstring(&kv, "the environment")?);
        }
        let mut p = Prepared {
            program,
            argv_ptrs: Vec::new(),
            argv,
            envp_ptrs: Vec::new(),
            envp,
            moves,
        };
        p.argv_ptrs = p.argv.iter().map(|a| a.as_ptr()).collect();
        p.argv_ptrs.push(std::ptr::null());
        p.envp_ptrs = p.envp.iter().map(|a| a.as_ptr()).collect();
        p.envp_ptrs.push(std::ptr::null());

        let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| err("make the report pipe")(e.into()))?;
        let procs: Vec<RawFd> = self.cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: the child runs only `child_main`, which makes raw syscalls
        // on memory prepared above and never returns.
        let cloned = unsafe { sys::clone3(self.namespaces) }.map_err(err("clone3"))?;
        let Some(cloned) = cloned else {
            // SAFETY: we are the child of a multi-threaded process: see child_main.
            unsafe { child_main(&p, &procs, report_w.as_raw_fd()) }
        };
        drop(report_w);
        // The child writes [step, errno] and exits if setup fails; EOF
        // (the CLOEXEC write end closing at exec) means it runs the program.
        let mut report = [0u8; 5];
        let mut got = 0;
        let mut reader = File::from(report_r);
        while got < report.len() {
            match reader.read(&mut report[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err("read the child's report")(e)),
            }
        }
        if got > 0 {
            // Reap it: it has exited with 127.
            let _ = sys::pidfd_send_signal(&cloned.pidfd, libc::SIGKILL);
            let mut status = 0;
            // SAFETY: waiting for our own child by pid.
            unsafe { libc::waitpid(cloned.pid, &mut status, 0) };
            let step = STEPS
                .get(usize::from(report[0]))
                .copied()
                .unwrap_or("setup");
            let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
            return Err(ProcessError::Spawn {
                role,
                step,
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        drop(null);
        Supervised::started(role, cloned.pid, cloned.pidfd)
    }
}

/// The child between clone3 and exec. Only async-signal-safe syscalls on
/// prepared memory: another thread of the parent may have held the
/// allocator's lock at the fork.
///
/// # Safety
/// Call only in the child of [`sys::clone3`].
unsafe fn child_main(p: &Prepared, cgroup_procs: &[RawFd], report: RawFd) -> ! {
    let fail = |step: u8| -> ! {
        // SAFETY: errno location and write/_exit are async-signal-safe.
        unsafe {
            let errno = *libc::__errno_location();
            let mut msg = [0u8; 5];
            msg[0] = step;
            msg[1..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: every call below is a raw, async-signal-safe syscall on
    // descriptors and buffers that outlive this function.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail(4);
        }
        // Rust ignores SIGPIPE; the program gets the default back.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if libc::setsid() < 0 {
            fail(0);
        }
        for &fd in cgroup_procs {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(1);
            }
        }
        // Move every source out of the way first, so a source numbered like
        // an earlier target is not clobbered.
        let mut high = [0 as RawFd; 16];
        if p.moves.len() > high.len() {
            *libc::__errno_location() = libc::EMFILE;
            fail(2);
        }
        for (i, &(src, _)) in p.moves.iter().enumerate() {
            let fd = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 100);
            if fd < 0 {
                fail(2);
            }
            high[i] = fd;
        }
        for (i, &(_, to)) in p.moves.iter().enumerate() {
            // dup2 leaves the new descriptor without CLOEXEC: it survives exec.
            if libc::dup2(high[i], to) < 0 {
                fail(2);
            }
        }
        libc::execve(
            p.program.as_ptr(),
            p.argv_ptrs.as_ptr(),
            p.envp_ptrs.as_ptr(),
        );
        fail(3)
    }
}
