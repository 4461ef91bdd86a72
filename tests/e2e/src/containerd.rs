//! The peer runtime of the CRI benchmark: Debian's containerd 1.6 with runc
//! (the `io.containerd.runc.v2` shim), on a scratch configuration of its
//! own inside the test host: root, state and sockets under one directory,
//! the CRI plugin with the test network's CNI conflist (its own bridge and
//! subnet, so it does not meet vesseld's), the local registry as a
//! plain-HTTP mirror and a sandbox image pushed there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cri::bridge_conflist;

/// containerd's pod subnet (vesseld's is [`crate::cri::POD_SUBNET`]).
pub const POD_SUBNET: &str = "10.98.0.0/24";

/// The gateway of [`POD_SUBNET`] on the test host.
pub const POD_GATEWAY: &str = "10.98.0.1";

/// containerd's CNI bridge on the test host.
pub const BRIDGE: &str = "vsl1";

/// The CNI network's name (the conflist's `name`, host-local's dir name).
pub const NETWORK: &str = "vessel-bench-containerd";

/// Where Debian's CNI plugins are.
const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// A running containerd, killed (SIGKILL) on drop.
pub struct Containerd {
    child: Child,
    /// Its scratch root.
    pub dir: PathBuf,
    /// The gRPC (CRI) socket.
    pub socket: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `config.toml` (version 2, containerd 1.6's schema) of a containerd
/// rooted at `dir`, pulling from `registry_host` over plain HTTP and using
/// `sandbox_image` for its pods' pause containers.
pub fn config_toml(dir: &Path, registry_host: &str, sandbox_image: &str) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
# Snapshotters this test host has no backing for; they would only log errors.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  sandbox_image = "{sandbox_image}"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "/usr/bin/runc"
  # The cgroupfs driver, as vesseld reports for itself.
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry_host}"]
  endpoint = ["http://{registry_host}"]
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = dir.join("containerd.sock").display(),
        cni_bin = CNI_BIN_DIR,
        cni_conf = dir.join("cni").display(),
    )
}

impl Containerd {
    /// Writes the configuration and the CNI conflist under `dir` and starts
    /// containerd; waits for its socket (the CRI may answer a moment later:
    /// [`crate::cri_bench::connect_when_ready`] waits for that).
    pub fn start(dir: &Path, registry_host: &str, sandbox_image: &str) -> Containerd {
        let conf_dir = dir.join("cni");
        std::fs::create_dir_all(&conf_dir).expect("cni conf dir");
        std::fs::write(
            conf_dir.join("10-vessel-bench.conflist"),
            bridge_conflist(NETWORK, BRIDGE, POD_SUBNET, POD_GATEWAY, &dir.join("ipam"))
                .to_string(),
        )
        .expect("conflist");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(dir, registry_host, sandbox_image))
            .expect("config.toml");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start containerd (tests/deps.sh installs it)");
        let socket = dir.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "containerd exited with {status}:\n{}",
                    std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not serve in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd {
            child,
            dir: dir.to_path_buf(),
            socket,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_config_names_the_registry_sandbox_image_and_cni_dirs() {
        let c = super::config_toml(
            std::path::Path::new("/s/ctrd"),
            "127.0.0.1:5000",
            "127.0.0.1:5000/pause:latest",
        );
        for want in [
            r#"root = "/s/ctrd/root""#,
            r#"address = "/s/ctrd/containerd.sock""#,
            r#"sandbox_image = "127.0.0.1:5000/pause:latest""#,
            r#"conf_dir = "/s/ctrd/cni""#,
            r#"registry.mirrors."127.0.0.1:5000"]"#,
            r#"endpoint = ["http://127.0.0.1:5000"]"#,
            "SystemdCgroup = false",
        ] {
            assert!(c.contains(want), "{want} missing from:\n{c}");
        }
    }
}
