//! Shared helpers of the end-to-end tests: where the artifacts are, booting a
//! VM, and checking that nothing of it is left behind.
//!
//! These tests boot real VMs, so they run through `tests/kvm-host/run`
//! (`tests/e2e/run.sh` does that). Outside it they fail with a message that
//! says how to run them; they never skip.

use std::path::PathBuf;
use std::time::Duration;

use vessel_host_runtime::vm::{VmConfig, VmProcess};

/// How long a guest may take to answer: the nested test host is slow.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a guest may take to reset after `Shutdown`.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The path in environment variable `name`, which tests/e2e/run.sh sets.
pub fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => panic!(
            "{name} is not set: run the end-to-end suite with tests/e2e/run.sh \
             (after eval \"$(tests/artifacts.sh)\"), which boots the VMs through tests/kvm-host"
        ),
    }
}

/// A fresh directory for one VM's sockets and logs, under `$VESSEL_SCRATCH`
/// (a filesystem that can hold Unix sockets, set by tests/kvm-host).
pub fn fresh_state_dir(name: &str) -> PathBuf {
    let dir = env_path("VESSEL_SCRATCH").join(format!("{name}-{}", std::process::id()));
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            panic!("cannot clear {}: {e}", dir.display());
        }
    }
    dir
}

/// A VM configuration from the artifacts named in the environment.
pub fn vm_config(name: &str, cpus: u32, memory_mib: u32) -> VmConfig {
    VmConfig {
        vmm: env_path("VESSEL_VMM"),
        kernel: env_path("VESSEL_KERNEL"),
        initramfs: env_path("VESSEL_INITRAMFS"),
        cpus,
        memory_mib,
        hugepages: false,
        extra_cmdline: None,
        serial_console: true,
        state_dir: fresh_state_dir(name),
        // So a failing test can ask for the VMM's post-mortem.
        api_socket: true,
        nets: Vec::new(),
        shares: Vec::new(),
        // Unjailed, as these tests always ran; least_privilege jails it.
        jail: None,
        shutdown_grace_ms: None,
        log_dir: None,
    }
}

/// Pids of live processes running the `vessel-vmm` binary.
pub fn running_vmms() -> Vec<u32> {
    running("VESSEL_VMM")
}

/// The pids of running processes of the binary `$VESSEL_VIRTIOFSD` names.
pub fn running_virtiofsds() -> Vec<u32> {
    running("VESSEL_VIRTIOFSD")
}

/// The pids of running processes of the binary the variable `var` names.
fn running(var: &str) -> Vec<u32> {
    let bin = env_path(var);
    let bin = std::fs::canonicalize(&bin).unwrap_or(bin);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == bin))
        .collect()
}

/// The console log of a VM, for failure messages. A VM that still runs is
/// also asked for its post-mortem, which is saved beside the test's logs
/// (the message names the file).
pub fn console_tail(vm: &VmProcess) -> String {
    let postmortem = match postmortem::save(vm) {
        Ok(path) => format!("post-mortem saved: {}", path.display()),
        Err(why) => format!("no post-mortem: {why}"),
    };
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let console = read(vm.config().console_path());
    let vmm_log = read(vm.config().vmm_log_path()) + &read(vm.config().vmm_stderr_path());
    let tail: String = console
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    format!("--- vmm log ---\n{vmm_log}\n--- console (last 40 lines) ---\n{tail}\n--- {postmortem}")
}

pub mod busybox;
pub mod containerd;
pub mod cri;
pub mod cri_bench;
pub mod diag;
pub mod netns;
pub mod pause;
pub mod pod;
pub mod postmortem;
pub mod pss;
pub mod qemu;
pub mod registry;
pub mod rss;
pub mod stats;
pub mod virtiofsd;

/// How long one agent call may take before the test gives up on it.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test with `what` if it takes longer than
/// [`RPC_TIMEOUT`]: a guest that stops answering must fail a test, not hang it.
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer within {RPC_TIMEOUT:?}"),
    }
}
