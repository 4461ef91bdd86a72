//! What every VMM thread needs once it runs, whatever its role: the Rust
//! runtime and glibc underneath it (locks, allocation, signal masks, the
//! alternate signal stack, thread exit), clocks, logging to stderr.
//!
//! Found by tracing the VMM (`strace -f -ff`, per thread) through its tests
//! and a real guest boot; see docs/configuration.md (`--seccomp`).

use seccompiler::SeccompCmpOp::{Eq, MaskedEq};

use super::rules::RuleSet;
use super::SeccompError;

/// madvise advices in use: glibc's malloc trimming and thread-stack
/// release (MADV_DONTNEED) and lazy freeing (MADV_FREE). Nothing else
/// (no MADV_REMOVE or MADV_HWPOISON on guest memory, no MADV_DONTFORK).
const MADVISE_ADVICES: [u64; 2] = [libc::MADV_DONTNEED as u64, libc::MADV_FREE as u64];

/// `tgkill(own pid, any tid, signal)` only: a thread may signal its own
/// process's threads, never another process.
pub fn allow_tgkill_own(r: &mut RuleSet, signal: libc::c_int) -> Result<(), SeccompError> {
    let pid = std::process::id() as u64;
    r.allow_if(libc::SYS_tgkill, &[(0, Eq, pid), (2, Eq, signal as u64)])?;
    Ok(())
}

/// fcntl commands std and the devices use: descriptor flags, status flags
/// (set_nonblocking), and `try_clone` (F_DUPFD_CLOEXEC).
const FCNTL_CMDS: [u64; 5] = [
    libc::F_GETFD as u64,
    libc::F_SETFD as u64,
    libc::F_GETFL as u64,
    libc::F_SETFL as u64,
    libc::F_DUPFD_CLOEXEC as u64,
];

/// The rules every role starts from.
pub fn rules() -> Result<RuleSet, SeccompError> {
    let mut r = RuleSet::default();
    r.allow(&[
        // Locks, condvars, channels, thread join.
        libc::SYS_futex,
        libc::SYS_sched_yield,
        // malloc: heap growth, arena trimming, freeing large blocks.
        libc::SYS_brk,
        libc::SYS_munmap,
        libc::SYS_mremap,
        // Signal plumbing: masks (glibc blocks all signals around some
        // calls), the kick handler's return, std's stack-overflow guard
        // stack, which every thread sets up and tears down.
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        // Thread and process exit.
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_gettid,
        libc::SYS_getpid,
        // The vDSO serves clocks without a syscall on most hosts, but falls
        // back to the real syscall when the clocksource cannot be read from
        // user space (common in nested VMs such as the test host).
        libc::SYS_clock_gettime,
        libc::SYS_gettimeofday,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        // std's HashMap keys; the rng device's entropy.
        libc::SYS_getrandom,
        // Logs (stderr), console, eventfd signalling; dropping descriptors.
        libc::SYS_write,
        libc::SYS_close,
        // glibc's malloc reads /proc/sys/vm/overcommit_memory once when it
        // first trims an arena; the errno filter (see `errno_rules`) turns
        // that open into EACCES, which glibc handles. It must pass this
        // filter so the errno one decides.
        libc::SYS_openat,
    ]);
    // Executable mappings would let an attacker who controls the VMM load
    // code; shared ones would map a host file (a disk, a memfd) anew.
    // Nothing in the VMM maps code or shared memory after start: guest
    // memory is mapped before the filters.
    r.allow_if(
        libc::SYS_mmap,
        &[
            (2, MaskedEq(libc::PROT_EXEC as u64), 0),
            (3, MaskedEq(libc::MAP_SHARED as u64), 0),
        ],
    )?;
    r.allow_arg_without(libc::SYS_mprotect, 2, libc::PROT_EXEC as u64)?;
    r.allow_arg_in(libc::SYS_madvise, 2, &MADVISE_ADVICES)?;
    r.allow_arg_in(libc::SYS_fcntl, 1, &FCNTL_CMDS)?;
    // abort() after a double panic raises SIGABRT on itself: let that
    // report as an abort rather than as a seccomp kill.
    allow_tgkill_own(&mut r, libc::SIGABRT)?;
    // The capped console and log files rotate through their descriptors
    // (pread, pwrite, ftruncate; see `logging::CappedFile`): on those
    // descriptors only, so no thread can truncate a disk image.
    let logs: Vec<u64> = super::log_fds().iter().map(|&fd| fd as u64).collect();
    for nr in [libc::SYS_pread64, libc::SYS_pwrite64, libc::SYS_ftruncate] {
        r.allow_arg_in(nr, 0, &logs)?;
    }
    Ok(r)
}

/// Syscalls answered with ENOSYS instead of running (a third filter whose
/// default is allow): clone3, whose flags sit in memory a filter cannot
/// read. glibc then falls back to clone, whose flags the roles check
/// (CLONE_THREAD only). clone3 must still pass the allow-list of roles that
/// start threads (`thread_creation`), so this filter decides.
pub fn enosys_rules() -> RuleSet {
    let mut r = RuleSet::default();
    r.allow(&[libc::SYS_clone3]);
    r
}

/// Syscalls answered with EACCES instead of running (a second filter whose
/// default is allow): opening files, which no thread needs after setup.
pub fn errno_rules() -> RuleSet {
    let mut r = RuleSet::default();
    r.allow(&[libc::SYS_openat, libc::SYS_open]);
    r
}

/// What a thread needs to start another thread (std::thread::spawn): the
/// clone itself and what the child runs before its closure, which it does
/// under its parent's filter.
pub fn thread_creation(r: &mut RuleSet) -> Result<(), SeccompError> {
    r.allow(&[
        // Answered ENOSYS by the filter of `enosys_rules`, never run.
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_sched_getaffinity,
    ]);
    // glibc falls back to clone, always with CLONE_THREAD for a thread (a
    // fork would lack it).
    r.allow_arg_with(libc::SYS_clone, 0, libc::CLONE_THREAD as u64)?;
    // std names the new thread with PR_SET_NAME.
    r.allow_arg_in(libc::SYS_prctl, 0, &[libc::PR_SET_NAME as u64])?;
    Ok(())
}
