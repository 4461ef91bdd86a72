//! PID 1 duties in the guest: a root mount containers can pivot from, pseudo filesystems, environment, power off.
//!
//! Only used when the agent runs as PID 1. The kernel panics if PID 1 exits,
//! so every path here ends in a reboot, never a return to the kernel.

pub mod boot_mark;
mod mounts;
mod power;
pub mod switch_root;

pub use mounts::{create_dev_links, mount_pseudo_filesystems, Mount, MountError, MOUNTS};
pub use power::{ctrl_alt_del_signals_init, install_panic_hook, reboot};

/// `PATH` for everything the agent starts (containers get their own from their spec).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether this process is PID 1 (the guest's init).
pub fn is_pid1() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// Mounts the pseudo filesystems and sets up the environment.
///
/// Must run before any thread is started: it changes the process environment.
/// Mount failures are logged and skipped so the agent still comes up and the
/// host can read what went wrong.
pub fn setup() {
    let failed = mount_pseudo_filesystems();
    for err in &failed {
        tracing::error!(error = %err, cause = %err.source, "mount failed");
    }
    create_dev_links();
    // The kernel hands init only HOME=/ and TERM=linux (plus unknown cmdline key=value).
    std::env::set_var("PATH", DEFAULT_PATH);
    std::env::set_var("HOME", "/root");
    tracing::debug!(failed = failed.len(), "guest init done");
}
