//! After a pod is stopped: is anything of it still there?

use std::path::Path;

use super::PodConfig;
use crate::cgroup::{PodCgroup, CGROUP_ROOT};
use crate::net;

/// Something of a pod that outlived its stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A process the pod started still runs.
    Process {
        /// Its pid.
        pid: u32,
        /// Its command name.
        comm: String,
    },
    /// The pod's network namespace still exists.
    Netns(String),
    /// A path in the pod's state directory, or the directory itself.
    Path(std::path::PathBuf),
    /// The pod's cgroup.
    Cgroup(std::path::PathBuf),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Process { pid, comm } => write!(f, "process {pid} ({comm}) still runs"),
            Leftover::Netns(name) => write!(f, "network namespace {name} still exists"),
            Leftover::Path(p) => write!(f, "{} still exists", p.display()),
            Leftover::Cgroup(p) => write!(f, "cgroup {} still exists", p.display()),
        }
    }
}

/// What is left of the pod: the processes it started (`pids`) or any
/// process naming its state directory, its network namespace, its sockets
/// and state directory. Empty when the pod is completely gone.
pub fn leftovers(config: &PodConfig, pids: &[u32]) -> Vec<Leftover> {
    let mut left = Vec::new();
    let state_dir = config.state_dir();
    let needle = state_dir.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    for pid in running_pids() {
        if pid == me {
            continue;
        }
        let named_us = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| contains(&cmdline, needle))
            .unwrap_or(false);
        if pids.contains(&pid) || named_us {
            left.push(Leftover::Process {
                pid,
                comm: comm(pid),
            });
        }
    }
    if let Ok(Some(cg)) =
        PodCgroup::find(Path::new(CGROUP_ROOT), &config.cgroup_parent, &config.name)
    {
        left.extend(cg.dirs().iter().cloned().map(Leftover::Cgroup));
    }
    if net::netns_exists(&config.netns_name()) {
        left.push(Leftover::Netns(config.netns_name()));
    }
    let vm = config.vm_config();
    for path in [
        vm.vsock_path(),
        config.virtiofsd_config().socket,
        state_dir.clone(),
        config.log_dir(),
    ] {
        if path.exists() {
            left.push(Leftover::Path(path));
        }
    }
    left
}

/// Pids of live (not zombie) processes.
fn running_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !is_zombie(*pid))
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    // /proc/PID/stat: "pid (comm) S ..."; comm may hold ')' so split at the last one.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        // Gone between the listing and now: not running either.
        .unwrap_or(true)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::config::test_config;

    fn config(dir: &Path) -> PodConfig {
        test_config(dir, &format!("leftover-test-{}", std::process::id()))
    }

    #[test]
    fn a_gone_pod_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(leftovers(&config(dir.path()), &[]), []);
    }

    #[test]
    fn sockets_state_dir_and_processes_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        std::fs::create_dir_all(c.state_dir()).unwrap();
        std::fs::write(c.virtiofsd_config().socket, b"").unwrap();
        // A process that names the state dir on its command line, as the VMM does.
        let log = c.state_dir().join("some.log");
        std::fs::write(&log, b"").unwrap();
        let mut sleeper = std::process::Command::new("tail")
            .arg("-f")
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .spawn();
        if let Ok(child) = sleeper.as_ref() {
            wait_for_args(child.id());
        }
        let left = leftovers(&c, &[]);
        assert!(left.contains(&Leftover::Path(c.virtiofsd_config().socket)));
        assert!(left.contains(&Leftover::Path(c.state_dir())));
        if let Ok(child) = sleeper.as_mut() {
            let pid = child.id();
            assert!(
                left.iter()
                    .any(|l| matches!(l, Leftover::Process { pid: p, .. } if *p == pid)),
                "{left:?}"
            );
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(!leftovers(&c, &[pid])
                .iter()
                .any(|l| matches!(l, Leftover::Process { .. })));
        }
    }

    /// Spawn returns once exec has begun, but the kernel sets the new
    /// image's argument area a moment later: until then its cmdline reads
    /// empty, and the sweep would rightly not see it.
    fn wait_for_args(pid: u32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"--vsock /run/p/demo/vsock.sock", b"/run/p/demo"));
        assert!(!contains(b"abc", b""));
        assert!(!contains(b"ab", b"abc"));
    }
}
