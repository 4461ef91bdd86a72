//! What a pod VM is made of, and the `vessel-vmm` launch configuration for
//! it: a typed [`LaunchConfig`] written as JSON into the VM's state dir and
//! passed with `--config`.

use std::path::{Path, PathBuf};

pub use vessel_vmm_api::JailConfig;
use vessel_vmm_api::{Console, LaunchConfig, LogFile, NetSpec, TapSource};

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
    /// Back guest memory with 2 MiB hugepages.
    pub hugepages: bool,
    /// Extra guest kernel command-line arguments.
    pub extra_cmdline: Option<String>,
    /// Whether the guest has a serial console, written to
    /// [`VmConfig::console_path`]; without one its kernel and agent log nowhere.
    pub serial_console: bool,
    /// Directory that holds the VM's sockets and logs; created if missing.
    /// A jailed VMM with its own uid needs it owned by that uid (it removes
    /// its sockets there on exit).
    pub state_dir: PathBuf,
    /// Whether the VMM serves its control API on [`VmConfig::api_path`].
    pub api_socket: bool,
    /// The guest's NICs, in order (eth0, eth1, ...).
    pub nets: Vec<NetDevice>,
    /// The guest's virtio-fs shares.
    pub shares: Vec<FsShare>,
    /// The VMM's jail (uid, gid, ...); None runs it unjailed.
    pub jail: Option<JailConfig>,
    /// Where the console and VMM logs go (a disk, not the tmpfs the
    /// sockets need); None: the state dir.
    pub log_dir: Option<PathBuf>,
    /// How long SIGTERM waits for a graceful guest shutdown (the VMM's
    /// default when None).
    pub shutdown_grace_ms: Option<u64>,
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
    /// A NIC's MAC address is not usable.
    #[error("NIC {tap}: bad MAC {mac:?}: {reason}")]
    Mac {
        /// The tap.
        tap: String,
        /// The MAC given.
        mac: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The launch configuration is invalid (the message names the field).
    #[error(transparent)]
    Launch(#[from] vessel_vmm_api::LaunchError),
    /// The launch configuration file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
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
        self.launch_config()?.validate()?;
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

    fn logs(&self) -> &Path {
        self.log_dir.as_deref().unwrap_or(&self.state_dir)
    }

    /// Where the guest's serial console is written (capped).
    pub fn console_path(&self) -> PathBuf {
        self.logs().join("console.log")
    }

    /// The VMM's own log (capped), which it writes itself.
    pub fn vmm_log_path(&self) -> PathBuf {
        self.logs().join("vmm.log")
    }

    /// Where the VMM's stdout/stderr go: errors before its log is open,
    /// and its one-line exit reason.
    pub fn vmm_stderr_path(&self) -> PathBuf {
        self.logs().join("vmm.stderr")
    }

    /// The launch configuration file passed with `--config`.
    pub fn launch_config_path(&self) -> PathBuf {
        self.state_dir.join("vmm.json")
    }

    /// The typed launch configuration of this VM.
    pub fn launch_config(&self) -> Result<LaunchConfig, VmConfigError> {
        let mut c = LaunchConfig::new(&self.kernel);
        c.initramfs = Some(self.initramfs.clone());
        c.cmdline = self.extra_cmdline.clone();
        c.cpus = self.cpus.into();
        c.memory_mib = self.memory_mib.into();
        c.hugepages = self.hugepages;
        c.vsock = Some(self.vsock_path());
        c.console = if self.serial_console {
            Console::File(LogFile::new(self.console_path()))
        } else {
            Console::None
        };
        c.log = Some(LogFile::new(self.vmm_log_path()));
        c.api = self.api_socket.then(|| self.api_path());
        c.nets = self
            .nets
            .iter()
            .map(|n| {
                let mac = n.mac.parse().map_err(|reason| VmConfigError::Mac {
                    tap: n.tap.clone(),
                    mac: n.mac.clone(),
                    reason,
                })?;
                Ok(NetSpec {
                    source: TapSource::Tap {
                        name: n.tap.clone(),
                        netns: n.netns.clone(),
                    },
                    mac: Some(mac),
                })
            })
            .collect::<Result<_, VmConfigError>>()?;
        c.shares = self
            .shares
            .iter()
            .map(|s| vessel_vmm_api::FsSpec {
                tag: s.tag.clone(),
                socket: s.socket.clone(),
                queue_size: vessel_vmm_api::fs::DEFAULT_QUEUE_SIZE,
            })
            .collect();
        c.jail = self.jail.clone();
        if let Some(ms) = self.shutdown_grace_ms {
            c.shutdown_grace_ms = ms;
        }
        Ok(c)
    }

    /// Writes the launch configuration into the state dir (which must
    /// exist) and returns the `vessel-vmm` arguments that use it.
    pub fn write_launch_config(&self) -> Result<Vec<String>, VmConfigError> {
        let config = self.launch_config()?;
        config.validate()?;
        let path = self.launch_config_path();
        std::fs::write(&path, config.to_json()).map_err(|source| VmConfigError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(vmm_args(&path))
    }
}

/// `vessel-vmm`'s arguments for a launch configuration file.
fn vmm_args(config: &Path) -> Vec<String> {
    vec!["--config".into(), config.display().to_string()]
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
            hugepages: false,
            extra_cmdline: Some("loglevel=4".into()),
            serial_console: true,
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
            jail: Some(JailConfig {
                uid: Some(100_000),
                gid: Some(100_000),
                ..JailConfig::default()
            }),
            shutdown_grace_ms: Some(1500),
            log_dir: None,
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
    fn launch_config_carries_every_setting() {
        let dir = tempfile::tempdir().unwrap();
        let vm = config(dir.path());
        let c = vm.launch_config().unwrap();
        assert_eq!((c.cpus, c.memory_mib), (2, 256));
        assert_eq!(c.cmdline.as_deref(), Some("loglevel=4"));
        assert_eq!(c.vsock, Some(vm.vsock_path()));
        assert_eq!(c.api, Some(vm.api_path()));
        assert_eq!(c.console, Console::File(LogFile::new(vm.console_path())));
        assert_eq!(c.log, Some(LogFile::new(vm.vmm_log_path())));
        assert_eq!(
            c.nets[0].to_string(),
            format!(
                "tap=tap0,netns={},mac=02:00:00:00:00:01",
                dir.path().join("netns").display()
            )
        );
        assert_eq!(c.shares[0].tag, "pod");
        assert_eq!(c.jail.as_ref().and_then(|j| j.uid), Some(100_000));
        assert_eq!(c.shutdown_grace_ms, 1500);
        c.validate().unwrap();
        let mut no_api = config(dir.path());
        no_api.api_socket = false;
        assert_eq!(no_api.launch_config().unwrap().api, None);
    }

    #[test]
    fn the_file_is_what_vessel_vmm_reads() {
        let dir = tempfile::tempdir().unwrap();
        let vm = config(dir.path());
        std::fs::create_dir_all(&vm.state_dir).unwrap();
        let args = vm.write_launch_config().unwrap();
        assert_eq!(
            args,
            [
                "--config".to_string(),
                vm.launch_config_path().display().to_string()
            ]
        );
        let text = std::fs::read_to_string(vm.launch_config_path()).unwrap();
        assert_eq!(
            LaunchConfig::from_json(&text).unwrap(),
            vm.launch_config().unwrap()
        );
    }

    #[test]
    fn bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut vm = config(dir.path());
        vm.nets[0].mac = "01:00:00:00:00:01".into();
        let err = vm.launch_config().unwrap_err().to_string();
        assert!(err.starts_with("NIC tap0: bad MAC"), "{err}");
        let mut vm = config(dir.path());
        vm.cpus = 0;
        let err = vm
            .launch_config()
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "cpus 0: must be between 1 and 32");
    }
}
