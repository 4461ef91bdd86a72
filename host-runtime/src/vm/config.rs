//! What a pod VM is made of, and the `vessel-vmm` command line for it.

use std::path::{Path, PathBuf};

/// Everything needed to start one pod VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The `vessel-vmm` binary.
    pub vmm: PathBuf,
    /// Uncompressed guest kernel (`vmlinux`).
    pub kernel: PathBuf,
    /// Guest initramfs whose `/init` is `vessel-agent`.
    pub initramfs: PathBuf,
    /// Number of vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Extra guest kernel command-line arguments.
    pub extra_cmdline: Option<String>,
    /// Directory that holds the VM's sockets and logs; created if missing.
    pub state_dir: PathBuf,
    /// Whether the VMM serves its control API on [`VmConfig::api_path`].
    pub api_socket: bool,
    /// The guest's NICs, in order (eth0, eth1, ...).
    pub nets: Vec<NetDevice>,
    /// The guest's virtio-fs shares.
    pub shares: Vec<FsShare>,
    /// Extra `vessel-vmm` flags, appended last (e.g. `--jail`).
    pub extra_vmm_args: Vec<String>,
}

/// A guest NIC backed by a tap device.
#[derive(Debug, Clone)]
pub struct NetDevice {
    /// Name of the tap device.
    pub tap: String,
    /// Network namespace the tap lives in (e.g. `/var/run/netns/X`), if not the VMM's.
    pub netns: Option<PathBuf>,
    /// The guest's MAC address (`02:00:00:00:00:01` form).
    pub mac: String,
}

/// A virtio-fs share served by a virtiofsd.
#[derive(Debug, Clone)]
pub struct FsShare {
    /// The tag the guest mounts it by.
    pub tag: String,
    /// virtiofsd's vhost-user socket.
    pub socket: PathBuf,
}

/// A configuration that cannot start a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmConfigError {
    /// A file the VM needs is missing.
    #[error("{what} {path} does not exist")]
    Missing {
        /// Which input (e.g. "kernel").
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// A numeric setting is out of range.
    #[error("{0}")]
    OutOfRange(String),
}

impl VmConfig {
    /// Checks what can be checked before starting the VMM.
    pub fn validate(&self) -> Result<(), VmConfigError> {
        for (what, path) in [
            ("vessel-vmm binary", &self.vmm),
            ("kernel", &self.kernel),
            ("initramfs", &self.initramfs),
        ] {
            if !path.is_file() {
                return Err(VmConfigError::Missing {
                    what,
                    path: path.clone(),
                });
            }
        }
        if self.cpus == 0 {
            return Err(VmConfigError::OutOfRange("cpus must be at least 1".into()));
        }
        if self.memory_mib == 0 {
            return Err(VmConfigError::OutOfRange(
                "memory_mib must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Host end of the VM's hybrid vsock.
    pub fn vsock_path(&self) -> PathBuf {
        self.state_dir.join("vsock.sock")
    }

    /// The VMM's control API socket (when `api_socket` is set).
    pub fn api_path(&self) -> PathBuf {
        self.state_dir.join("api.sock")
    }

    /// Where the guest's serial console is written.
    pub fn console_path(&self) -> PathBuf {
        self.state_dir.join("console.log")
    }

    /// Where the VMM's own stdout/stderr go.
    pub fn vmm_log_path(&self) -> PathBuf {
        self.state_dir.join("vmm.log")
    }

    /// The `vessel-vmm` arguments for this VM.
    pub fn vmm_args(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        let mut args = vec![
            "--kernel".into(),
            p(&self.kernel),
            "--initramfs".into(),
            p(&self.initramfs),
            "--cpus".into(),
            self.cpus.to_string(),
            "--memory".into(),
            self.memory_mib.to_string(),
            "--vsock".into(),
            p(&self.vsock_path()),
            "--console".into(),
            p(&self.console_path()),
        ];
        if self.api_socket {
            args.push("--api".into());
            args.push(p(&self.api_path()));
        }
        if let Some(extra) = &self.extra_cmdline {
            args.push("--cmdline".into());
            args.push(extra.clone());
        }
        for net in &self.nets {
            let mut spec = format!("tap={},mac={}", net.tap, net.mac);
            if let Some(netns) = &net.netns {
                spec.push_str(&format!(",netns={}", p(netns)));
            }
            args.push("--net".into());
            args.push(spec);
        }
        for share in &self.shares {
            args.push("--fs".into());
            args.push(format!("tag={},socket={}", share.tag, p(&share.socket)));
        }
        args.extend(self.extra_vmm_args.iter().cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> VmConfig {
        VmConfig {
            vmm: dir.join("vmm"),
            kernel: dir.join("vmlinux"),
            initramfs: dir.join("initramfs"),
            cpus: 2,
            memory_mib: 256,
            extra_cmdline: Some("loglevel=4".into()),
            state_dir: dir.join("state"),
            api_socket: true,
            nets: vec![NetDevice {
                tap: "tap0".into(),
                netns: Some(dir.join("netns")),
                mac: "02:00:00:00:00:01".into(),
            }],
            shares: vec![FsShare {
                tag: "pod".into(),
                socket: dir.join("fs.sock"),
            }],
            extra_vmm_args: vec!["--jail".into()],
        }
    }

    #[test]
    fn missing_kernel_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmm"), b"").unwrap();
        let err = config(dir.path()).validate().unwrap_err().to_string();
        assert!(err.contains("kernel"), "{err}");
    }

    #[test]
    fn args_carry_every_setting() {
        let dir = tempfile::tempdir().unwrap();
        let args = config(dir.path()).vmm_args().join(" ");
        for want in [
            "--cpus 2",
            "--memory 256",
            "--cmdline loglevel=4",
            "vsock.sock",
            "--api",
            "api.sock",
            "--net tap=tap0,mac=02:00:00:00:00:01,netns=",
            "--fs tag=pod,socket=",
            "fs.sock --jail",
        ] {
            assert!(args.contains(want), "{args} lacks {want}");
        }
        let mut no_api = config(dir.path());
        no_api.api_socket = false;
        assert!(!no_api.vmm_args().contains(&"--api".to_string()));
    }
}
