//! What a pod is made of, and the names and paths derived from its name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vessel_agent_api::proto::Dns;

use crate::cni::{Cni, PodNetwork};
use crate::net::{self, PodAddressing};
use crate::virtiofsd::VirtiofsdConfig;
use crate::vm::{FsShare, JailConfig, NetDevice, VmConfig, VmConfigError};

/// The tap's name inside the pod's namespace (each pod has its own namespace,
/// so every pod can use the same name).
pub const TAP_NAME: &str = "tap0";

/// The virtio-fs tag of the container rootfs share.
pub const ROOTFS_TAG: &str = "rootfs";

/// Where the agent mounts the rootfs share in the guest (the agent keeps
/// /run/vessel, /proc, /sys and /dev for itself).
pub const ROOTFS_GUEST_PATH: &str = "/mnt/rootfs";

/// The cgroup (under the host's cgroup root) that holds every pod's cgroup.
pub const CGROUP_PARENT: &str = crate::cgroup::DEFAULT_PARENT;

/// Host memory a pod may use beyond its guest RAM (VMM, virtiofsd, page
/// cache of the share), in MiB: part of the pod cgroup's memory limit.
pub const HOST_OVERHEAD_MIB: u64 = 128;

/// The record, in a pod's state dir, of the vesseld that owns the pod.
pub const OWNER_RECORD: &str = "owner.process.json";

/// The pod's cgroup parent (relative to the cgroup root), in its state dir.
pub const CGROUP_PARENT_RECORD: &str = "cgroup.parent";

/// The cgroup parent a pod recorded in its state dir `state_dir` (vesseld
/// wrote it; the dir is root's alone); `None` for pods made before the
/// record. Sweep and adoption find the cgroup there even after vesseld's
/// `cgroup.parent` changed.
pub fn recorded_cgroup_parent(state_dir: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(state_dir.join(CGROUP_PARENT_RECORD))
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .ok()
        .filter(|_| !text.is_empty())
        .map(|_| PathBuf::from(text))
}

/// The directory in a pod's state dir where its share is bind-mounted
/// nosuid,nodev (what virtiofsd serves).
pub const SHARE_DIR: &str = "share";

/// The directory in a CRI pod's state dir that its share bind-mounts:
/// vesseld makes each container's mount points there, out of the guest's
/// reach (the guest sees it only through the read-only share).
pub const SHARE_SOURCE_DIR: &str = "shared";

/// The directory in a pod's state dir that belongs to its VMM (owned by the
/// pod's uid): its sockets, console and logs.
pub const VM_DIR: &str = "vm";

/// virtiofsd's socket in a pod's state dir.
pub const VIRTIOFSD_SOCKET: &str = "virtiofsd.sock";

/// The guest's NIC name, set by `Sandbox.Setup`.
pub const GUEST_NIC: &str = "eth0";

/// Longest Unix socket path (`sun_path` holds 108 bytes with the NUL). The
/// hybrid vsock adds `_<port>` for guest-initiated connections: leave room.
const MAX_SOCKET_PATH: usize = 107 - "_4294967295".len();

/// Everything needed to run one pod.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// The pod's name: its hostname, sandbox id and the root of its host-side names.
    pub name: String,
    /// Host directory holding the container's root filesystem (shared with virtio-fs).
    pub rootfs: PathBuf,
    /// vesseld's runtime directory; the pod's state lives in `<run_dir>/pods/<name>`.
    pub run_dir: PathBuf,
    /// vesseld's state directory on disk; the pod's logs (console, VMM,
    /// virtiofsd) live in `<state_root>/pods/<name>`, not on the tmpfs.
    pub state_root: PathBuf,
    /// The `vessel-vmm` binary.
    pub vmm: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initramfs (vessel-agent as /init).
    pub initramfs: PathBuf,
    /// The virtiofsd binary.
    pub virtiofsd: PathBuf,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The pod's subnet and addresses.
    pub addressing: PodAddressing,
    /// How long the agent may take to answer after the VMM starts.
    pub boot_timeout: Duration,
    /// The pod's host ids: its VMM's uid and gid, and the host ids of its
    /// guest's files on the share (allocated when the pod is made; `None`
    /// before).
    pub ids: Option<super::ids::PodIds>,
    /// Appended to the guest kernel's command line (the handler's `kernel_args`).
    pub kernel_args: String,
    /// The block of host ids pods take their slot of ids from (`[pod_ids]`).
    pub pod_ids: crate::config::IdRange,
    /// Where the pod's cgroup goes, relative to the cgroup root
    /// (`cgroup.parent` through [`crate::cgroup::parent_path`]).
    pub cgroup_parent: PathBuf,
    /// A CRI pod sandbox: CNI networking and a share of per-container
    /// rootfs (`None`: run-pod's own subnet and one rootfs).
    pub cri: Option<CriPod>,
}

/// What a CRI pod sandbox adds to a pod: its network comes from the node's
/// CNI chain, and its share starts empty (read-only to the guest) and gets
/// each container's rootfs and mounts as host-side submounts.
#[derive(Debug, Clone)]
pub struct CriPod {
    /// The node's CNI network.
    pub cni: Cni,
    /// Which pod to attach (sandbox id, netns, CNI_ARGS, port mappings).
    pub attach: PodNetwork,
    /// The pod's hostname.
    pub hostname: String,
    /// The pod's resolver configuration.
    pub dns: Option<Dns>,
    /// Namespaced sysctls of the pod.
    pub sysctls: std::collections::HashMap<String, String>,
    /// Whether the pod's containers share one pid namespace.
    pub share_pid_namespace: bool,
}

/// A pod configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum PodConfigError {
    /// The pod name is not a valid hostname label.
    #[error("pod name {name:?} {why} (it must be an RFC 1123 label: 1-63 of a-z, 0-9, '-', starting and ending with a letter or digit)")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The rootfs is not a directory.
    #[error("container rootfs {0} is not a directory")]
    RootfsNotADirectory(PathBuf),
    /// A binary is missing.
    #[error("{what} {path} does not exist")]
    Missing {
        /// Which one.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// A socket path would be too long for `bind`.
    #[error("socket path {0} is too long for a Unix socket; use a shorter --run-dir")]
    SocketPathTooLong(PathBuf),
    /// The VM part of the configuration is invalid.
    #[error(transparent)]
    Vm(#[from] VmConfigError),
}

impl PodConfig {
    /// Checks everything that can be checked before creating anything.
    pub fn validate(&self) -> Result<(), PodConfigError> {
        validate_name(&self.name)?;
        // A CRI pod's share is made with its state dir.
        if self.cri.is_none() && !self.rootfs.is_dir() {
            return Err(PodConfigError::RootfsNotADirectory(self.rootfs.clone()));
        }
        if !self.virtiofsd.is_file() {
            return Err(PodConfigError::Missing {
                what: "virtiofsd binary",
                path: self.virtiofsd.clone(),
            });
        }
        let vm = self.vm_config();
        vm.validate()?;
        for socket in [vm.vsock_path(), self.virtiofsd_config().socket] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(PodConfigError::SocketPathTooLong(socket));
            }
        }
        Ok(())
    }

    /// The pod's state directory: sockets, logs.
    pub fn state_dir(&self) -> PathBuf {
        self.run_dir.join("pods").join(&self.name)
    }

    /// The pod's logs (console, VMM, virtiofsd), on disk.
    pub fn log_dir(&self) -> PathBuf {
        self.state_root.join("pods").join(&self.name)
    }

    /// The VMM's own directory (sockets), owned by its uid.
    pub fn vm_dir(&self) -> PathBuf {
        self.state_dir().join(VM_DIR)
    }

    /// Where the pod's share is mounted nosuid,nodev for virtiofsd.
    pub fn share_dir(&self) -> PathBuf {
        self.state_dir().join(SHARE_DIR)
    }

    /// What the share bind-mounts: the rootfs given, or, for a CRI pod, a
    /// directory of its state dir that vesseld fills with mount points.
    pub fn share_source(&self) -> PathBuf {
        match self.cri {
            Some(_) => self.state_dir().join(SHARE_SOURCE_DIR),
            None => self.rootfs.clone(),
        }
    }

    /// The name of the pod's network namespace.
    pub fn netns_name(&self) -> String {
        netns_name(&self.name)
    }

    /// The path of the pod's network namespace.
    pub fn netns_path(&self) -> PathBuf {
        Path::new(net::NETNS_DIR).join(self.netns_name())
    }

    /// How the pod's virtiofsd runs.
    pub fn virtiofsd_config(&self) -> VirtiofsdConfig {
        let dir = self.state_dir();
        VirtiofsdConfig {
            binary: self.virtiofsd.clone(),
            shared_dir: self.share_dir(),
            socket: dir.join(VIRTIOFSD_SOCKET),
            log: self.log_dir().join("virtiofsd.log"),
            translation: self
                .ids
                .filter(|_| self.pod_ids.translate_share)
                .map(|i| i.translation()),
        }
    }

    /// The pod's VM: its NIC on the tap in the pod's namespace, the rootfs share.
    pub fn vm_config(&self) -> VmConfig {
        VmConfig {
            vmm: self.vmm.clone(),
            kernel: self.kernel.clone(),
            initramfs: self.initramfs.clone(),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            hugepages: false,
            extra_cmdline: (!self.kernel_args.is_empty()).then(|| self.kernel_args.clone()),
            serial_console: true,
            state_dir: self.vm_dir(),
            api_socket: false,
            nets: vec![NetDevice {
                tap: TAP_NAME.to_string(),
                netns: Some(self.netns_path()),
                mac: self.addressing.guest_mac.clone(),
            }],
            shares: vec![FsShare {
                tag: ROOTFS_TAG.to_string(),
                socket: self.virtiofsd_config().socket,
            }],
            // Jailed: own mount and IPC namespaces, no capabilities, the
            // pod's own unprivileged uid and gid.
            jail: Some(JailConfig {
                uid: self.ids.map(|i| i.vmm()),
                gid: self.ids.map(|i| i.vmm()),
                ..JailConfig::default()
            }),
            shutdown_grace_ms: None,
            log_dir: Some(self.log_dir()),
        }
    }
}

/// The network namespace of the pod `name`.
pub fn netns_name(name: &str) -> String {
    format!("vessel-{name}")
}

/// A pod name is an RFC 1123 label: it becomes the guest's hostname.
pub fn validate_name(name: &str) -> Result<(), PodConfigError> {
    let bad = |why| {
        Err(PodConfigError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 63 {
        return bad("is longer than 63 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("has a character other than a-z, 0-9 and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("starts or ends with '-'");
    }
    Ok(())
}

/// A pod config for unit tests: every path under `dir`, nothing created.
#[cfg(test)]
pub(crate) fn test_config(dir: &Path, name: &str) -> PodConfig {
    PodConfig {
        name: name.into(),
        rootfs: dir.join("rootfs"),
        run_dir: dir.join("run"),
        state_root: dir.join("state"),
        vmm: dir.join("vmm"),
        kernel: dir.join("vmlinux"),
        initramfs: dir.join("initramfs"),
        virtiofsd: dir.join("virtiofsd"),
        cpus: 1,
        memory_mib: 256,
        addressing: PodAddressing::default(),
        boot_timeout: Duration::from_secs(60),
        ids: None,
        kernel_args: String::new(),
        pod_ids: crate::config::IdRange::default(),
        cgroup_parent: CGROUP_PARENT.into(),
        cri: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_cgroup_parent_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_cgroup_parent(dir.path()), None);
        std::fs::write(dir.path().join(CGROUP_PARENT_RECORD), "a.slice/a-b.slice").unwrap();
        assert_eq!(
            recorded_cgroup_parent(dir.path()),
            Some(PathBuf::from("a.slice/a-b.slice"))
        );
    }

    fn config(dir: &Path) -> PodConfig {
        for f in ["vmm", "vmlinux", "initramfs", "virtiofsd"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        test_config(dir, "demo")
    }

    #[test]
    fn names_and_paths_derive_from_the_pod_name() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        assert_eq!(c.state_dir(), dir.path().join("run/pods/demo"));
        assert_eq!(c.netns_name(), "vessel-demo");
        assert_eq!(c.netns_path(), Path::new("/var/run/netns/vessel-demo"));
        let fs = c.virtiofsd_config();
        assert_eq!(fs.socket, c.state_dir().join("virtiofsd.sock"));
        assert_eq!(fs.shared_dir, c.state_dir().join("share"));
        let vm = c.vm_config();
        assert_eq!(vm.state_dir, c.state_dir().join("vm"));
        let launch = vm.launch_config().unwrap();
        assert_eq!(
            launch.nets[0].to_string(),
            "tap=tap0,netns=/var/run/netns/vessel-demo,mac=02:76:73:00:00:02"
        );
        assert_eq!(launch.shares[0].tag, "rootfs");
        assert!(launch.jail.is_some(), "the pod's VMM is jailed");
        assert_eq!(launch.cmdline, None);
        c.validate().unwrap();
    }

    #[test]
    fn the_handlers_kernel_args_reach_the_guest_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.kernel_args = "quiet vessel.diag=1".into();
        let launch = c.vm_config().launch_config().unwrap();
        assert_eq!(launch.cmdline.as_deref(), Some("quiet vessel.diag=1"));
    }

    #[test]
    fn pod_names_are_hostname_labels() {
        for good in ["demo", "a", "web-1", &"x".repeat(63)] {
            validate_name(good).unwrap();
        }
        for bad in ["", "Demo", "-a", "a-", "a_b", "a.b", "a/b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn what_is_missing_is_named_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.rootfs = dir.path().join("nope");
        assert!(matches!(
            c.validate(),
            Err(PodConfigError::RootfsNotADirectory(_))
        ));
        let mut c = config(dir.path());
        c.virtiofsd = dir.path().join("nope");
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("virtiofsd"), "{err}");
        let mut c = config(dir.path());
        c.kernel = dir.path().join("nope");
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("kernel"), "{err}");
        let mut c = config(dir.path());
        c.run_dir = dir.path().join("r".repeat(100));
        assert!(matches!(
            c.validate(),
            Err(PodConfigError::SocketPathTooLong(_))
        ));
        assert!(!c.state_dir().exists());
    }
}
