//! A pod VM for the tests that run containers: booting it, the share that
//! holds the containers' busybox rootfs, and a busybox container spec.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use vessel_agent::client::Channel;
use vessel_agent::proto::SharedMount;
use vessel_host_runtime::vm::{FsShare, VmConfig, VmProcess};

use crate::busybox::build_rootfs;
use crate::virtiofsd::Virtiofsd;
use crate::{console_tail, BOOT_TIMEOUT};

/// Where the agent mounts the share in the guest.
pub const SHARED: &str = "/mnt/pod";

/// Boots the VM and connects to its agent (or panics with the console);
/// returns it, the VMM's pid and the agent channel.
pub async fn boot(config: VmConfig) -> (VmProcess, u32, Channel) {
    let mut vm = VmProcess::spawn(config).expect("vessel-vmm starts");
    let pid = vm.pid().expect("pid");
    match vm.connect_agent(BOOT_TIMEOUT).await {
        Ok(channel) => (vm, pid, channel),
        Err(e) => panic!("agent not reachable: {e}\n{}", console_tail(&vm)),
    }
}

/// Lays out a busybox rootfs in `<state dir>/shared/rootfs`, starts a real
/// virtiofsd on `<state dir>/shared` and adds it to `config` as the share
/// tagged `pod`; returns the shared directory and virtiofsd.
pub async fn share_busybox_rootfs(config: &mut VmConfig) -> (PathBuf, Virtiofsd) {
    let shared = config.state_dir.join("shared");
    build_rootfs(&shared.join("rootfs"));
    let virtiofsd = crate::virtiofsd::start(&shared, &config.state_dir.join("virtiofsd")).await;
    config.shares.push(FsShare {
        tag: "pod".into(),
        socket: virtiofsd.socket().clone(),
    });
    (shared, virtiofsd)
}

/// The share tagged `pod`, mounted read-write at [`SHARED`].
pub fn pod_share() -> SharedMount {
    SharedMount {
        tag: "pod".into(),
        mount_point: SHARED.into(),
        read_only: false,
    }
}

/// A container spec: busybox `sh -c script` as root, allowed to ping, with
/// its own devpts (for terminals) and /tmp.
pub fn spec(script: &str) -> Value {
    let caps = json!(["CAP_NET_RAW", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": { "uid": 0, "gid": 0 },
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": [], "ambient": []
            }
        },
        "root": { "path": "rootfs", "readonly": false },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
            ]
        }
    })
}

/// A file's text, or "" if it cannot be read (for failure messages).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
