//! [`LaunchConfig`]: everything one `vessel-vmm` process is started with.
//!
//! vesseld writes it as JSON into the VM's state dir and passes
//! `--config PATH`; the human flags of `vessel-vmm` build the same struct.
//! [`LaunchConfig::validate`] checks all that needs no host access; the VMM
//! then checks the host (RAM, hugepages) and opens the files.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{DiskSpec, FsSpec, NetSpec};

/// Fewest vCPUs a VM can have.
pub const MIN_CPUS: u64 = 1;
/// Most vCPUs a VM can have (the MP table and APIC ID layout are sized for this).
pub const MAX_CPUS: u64 = 32;
/// Least guest memory in MiB: a kernel plus initramfs needs some room.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Most guest memory in MiB.
pub const MAX_MEMORY_MIB: u64 = 65536;
/// Most disks: leaves virtio-mmio slots for vsock, rng, net and fs.
pub const MAX_DISKS: usize = 8;
/// Most virtio-fs shares (one virtio-mmio slot each).
pub const MAX_SHARES: usize = 6;
/// Most NICs.
pub const MAX_NETS: usize = 4;
/// Most virtio devices of one VM in all (one virtio-mmio slot and IRQ each:
/// IO-APIC pins 5 to 23).
pub const MAX_VIRTIO_DEVICES: usize = 19;
/// Default and bounds of how long SIGTERM waits for a graceful shutdown.
pub const DEFAULT_GRACE_MS: u64 = 5000;
/// Longest graceful-shutdown wait.
pub const MAX_GRACE_MS: u64 = 600_000;
/// Size cap of the console and VMM log files unless given.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 4 << 20;
/// Smallest cap a log file may have (room for a few screens of output).
pub const MIN_LOG_MAX_BYTES: u64 = 64 << 10;
/// Largest cap a log file may have.
pub const MAX_LOG_MAX_BYTES: u64 = 1 << 30;
/// Where the jail's tmpfs root is mounted unless given (inside the VMM's
/// own mount namespace only).
pub const DEFAULT_JAIL_DIR: &str = "/tmp";

/// A configuration that cannot start a VM; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The JSON does not parse into a [`LaunchConfig`].
    #[error("not a valid launch configuration: {0}")]
    Json(#[from] serde_json::Error),
    /// A field has a value that cannot work.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (`cpus`, `nets[1]`, `jail.uid`, ...) and its value.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> LaunchError {
    LaunchError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Where the guest's serial console (ttyS0) goes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Console {
    /// Nowhere; the guest gets no `console=ttyS0` and no serial port driver (`8250.nr_uarts=0`).
    None,
    /// The VMM's stdout.
    #[default]
    Stdout,
    /// A file, created or truncated, capped in size.
    File(LogFile),
}

/// A log file kept under a size cap: when full, its oldest half is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// The file, created or truncated at start.
    pub path: PathBuf,
    /// Most bytes the file holds.
    #[serde(default = "default_log_max")]
    pub max_bytes: u64,
}

impl LogFile {
    /// A file at `path` with the default cap.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogFile {
            path: path.into(),
            max_bytes: DEFAULT_LOG_MAX_BYTES,
        }
    }

    fn check(&self, field: &str) -> Result<(), LaunchError> {
        if self.path.as_os_str().is_empty() {
            return Err(invalid(format!("{field}.path"), "empty path"));
        }
        if !(MIN_LOG_MAX_BYTES..=MAX_LOG_MAX_BYTES).contains(&self.max_bytes) {
            return Err(invalid(
                format!("{field}.max_bytes {}", self.max_bytes),
                format!("must be between {MIN_LOG_MAX_BYTES} and {MAX_LOG_MAX_BYTES}"),
            ));
        }
        Ok(())
    }
}

/// The per-thread seccomp filters' action on a syscall outside a role's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// Kill the process (SIGSYS).
    #[default]
    Kill,
    /// Allow it, but log it to the kernel log (to find a missing one).
    Log,
    /// Install no filters (debugging only).
    Off,
}

/// The jail the VMM enters once everything is open: its own mount and IPC
/// namespaces on a tmpfs root, the ids below, no capabilities,
/// no_new_privs, bounded open files and file sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// The user the VMM runs as after setup (the pod's unprivileged uid);
    /// none keeps the VMM's own (root then keeps uid 0, without capabilities).
    #[serde(default)]
    pub uid: Option<u32>,
    /// The group, likewise; given together with `uid`.
    #[serde(default)]
    pub gid: Option<u32>,
    /// Where the tmpfs root is mounted (in the VMM's own mount namespace).
    #[serde(default = "default_jail_dir")]
    pub dir: PathBuf,
}

impl Default for JailConfig {
    fn default() -> Self {
        JailConfig {
            uid: None,
            gid: None,
            dir: PathBuf::from(DEFAULT_JAIL_DIR),
        }
    }
}

/// Everything one `vessel-vmm` process is started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchConfig {
    /// Guest kernel: an uncompressed ELF vmlinux.
    pub kernel: PathBuf,
    /// Initramfs (cpio archive, optionally compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<PathBuf>,
    /// Extra kernel command-line arguments, appended after the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Number of vCPUs.
    #[serde(default = "default_cpus")]
    pub cpus: u64,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Back guest memory with 2 MiB hugepages.
    #[serde(default)]
    pub hugepages: bool,
    /// Host socket of the hybrid vsock (guest CID 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<PathBuf>,
    /// Serial console destination.
    #[serde(default)]
    pub console: Console,
    /// The VMM's own log; none: stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogFile>,
    /// Control API socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<PathBuf>,
    /// virtio-blk disks, in order (vda, vdb, ...).
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// virtio-fs shares.
    #[serde(default)]
    pub shares: Vec<FsSpec>,
    /// virtio-net NICs, in order (eth0, eth1, ...).
    #[serde(default)]
    pub nets: Vec<NetSpec>,
    /// Whether the guest gets a virtio-rng device.
    #[serde(default = "yes")]
    pub rng: bool,
    /// Whether the guest gets a virtio-balloon device with free page
    /// reporting, which gives the memory the guest frees back to the host.
    #[serde(default = "yes")]
    pub balloon: bool,
    /// Per-thread seccomp filters.
    #[serde(default)]
    pub seccomp: SeccompMode,
    /// The jail; on unless `null`.
    #[serde(default = "default_jail")]
    pub jail: Option<JailConfig>,
    /// How long SIGTERM/SIGINT waits for the guest to shut down.
    #[serde(default = "default_grace")]
    pub shutdown_grace_ms: u64,
}

fn default_cpus() -> u64 {
    1
}
fn default_memory() -> u64 {
    256
}
fn default_grace() -> u64 {
    DEFAULT_GRACE_MS
}
fn default_log_max() -> u64 {
    DEFAULT_LOG_MAX_BYTES
}
fn default_jail_dir() -> PathBuf {
    PathBuf::from(DEFAULT_JAIL_DIR)
}
fn default_jail() -> Option<JailConfig> {
    Some(JailConfig::default())
}
fn yes() -> bool {
    true
}

impl LaunchConfig {
    /// A configuration with every default for the kernel at `kernel`.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        LaunchConfig {
            kernel: kernel.into(),
            initramfs: None,
            cmdline: None,
            cpus: default_cpus(),
            memory_mib: default_memory(),
            hugepages: false,
            vsock: None,
            console: Console::default(),
            log: None,
            api: None,
            disks: Vec::new(),
            shares: Vec::new(),
            nets: Vec::new(),
            rng: true,
            balloon: true,
            seccomp: SeccompMode::default(),
            jail: default_jail(),
            shutdown_grace_ms: DEFAULT_GRACE_MS,
        }
    }

    /// Parses and validates a JSON configuration.
    pub fn from_json(text: &str) -> Result<Self, LaunchError> {
        let config: LaunchConfig = serde_json::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks everything that needs no host access.
    pub fn validate(&self) -> Result<(), LaunchError> {
        if self.kernel.as_os_str().is_empty() {
            return Err(invalid("kernel", "empty path"));
        }
        if !(MIN_CPUS..=MAX_CPUS).contains(&self.cpus) {
            return Err(invalid(
                format!("cpus {}", self.cpus),
                format!("must be between {MIN_CPUS} and {MAX_CPUS}"),
            ));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(invalid(
                format!("memory_mib {}", self.memory_mib),
                format!("must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB"),
            ));
        }
        if self.hugepages && !self.memory_mib.is_multiple_of(2) {
            return Err(invalid(
                format!("memory_mib {}", self.memory_mib),
                "with hugepages it must be a multiple of 2 MiB",
            ));
        }
        if self.cmdline.as_deref().is_some_and(|c| c.contains('\0')) {
            return Err(invalid("cmdline", "holds a NUL byte"));
        }
        if self.shutdown_grace_ms > MAX_GRACE_MS {
            return Err(invalid(
                format!("shutdown_grace_ms {}", self.shutdown_grace_ms),
                format!("at most {MAX_GRACE_MS}"),
            ));
        }
        if let Console::File(f) = &self.console {
            f.check("console")?;
        }
        if let Some(log) = &self.log {
            log.check("log")?;
        }
        self.validate_devices()?;
        if let Some(jail) = &self.jail {
            self.validate_jail(jail)?;
        }
        Ok(())
    }

    fn validate_devices(&self) -> Result<(), LaunchError> {
        for (what, n, max) in [
            ("disks", self.disks.len(), MAX_DISKS),
            ("shares", self.shares.len(), MAX_SHARES),
            ("nets", self.nets.len(), MAX_NETS),
        ] {
            if n > max {
                return Err(invalid(
                    what,
                    format!("{n} given, at most {max} are supported"),
                ));
            }
        }
        // The balloon is left out on hugetlb pages (the VMM says why).
        let balloon = self.balloon && !self.hugepages;
        let devices = usize::from(self.vsock.is_some())
            + self.disks.len()
            + usize::from(self.rng)
            + self.nets.len()
            + self.shares.len()
            + usize::from(balloon);
        if devices > MAX_VIRTIO_DEVICES {
            return Err(invalid(
                format!(
                    "disks, nets, shares, rng, balloon, vsock ({} + {} + {} + {} + {} + {})",
                    self.disks.len(),
                    self.nets.len(),
                    self.shares.len(),
                    usize::from(self.rng),
                    usize::from(balloon),
                    usize::from(self.vsock.is_some())
                ),
                format!("{devices} virtio devices, at most {MAX_VIRTIO_DEVICES} fit"),
            ));
        }
        for (i, d) in self.disks.iter().enumerate() {
            d.check()
                .map_err(|r| invalid(format!("disks[{i}] {d}"), r))?;
        }
        let mut tags = HashSet::new();
        for (i, s) in self.shares.iter().enumerate() {
            s.check()
                .map_err(|r| invalid(format!("shares[{i}] {s}"), r))?;
            if !tags.insert(&s.tag) {
                return Err(invalid(
                    format!("shares[{i}] tag={}", s.tag),
                    "the tag is used twice",
                ));
            }
        }
        for (i, n) in self.nets.iter().enumerate() {
            n.check()
                .map_err(|r| invalid(format!("nets[{i}] {n}"), r))?;
            if self.nets[..i].iter().any(|p| p.source == n.source) {
                return Err(invalid(
                    format!("nets[{i}] {n}"),
                    "the same tap is given twice",
                ));
            }
        }
        Ok(())
    }

    /// The jailed VMM uses these paths as given inside its new root.
    fn validate_jail(&self, jail: &JailConfig) -> Result<(), LaunchError> {
        let kept = [
            ("kernel", Some(&self.kernel)),
            ("initramfs", self.initramfs.as_ref()),
            ("vsock", self.vsock.as_ref()),
            ("api", self.api.as_ref()),
            ("jail.dir", Some(&jail.dir)),
        ];
        for (field, path) in kept {
            if let Some(p) = path {
                if !plain_absolute(p) {
                    return Err(invalid(
                        format!("{field} {}", p.display()),
                        "the jail needs an absolute path without `..`",
                    ));
                }
            }
        }
        if jail.uid.is_some() != jail.gid.is_some() {
            return Err(invalid("jail", "give uid and gid together"));
        }
        Ok(())
    }
}

/// Absolute, and no `..` that could climb out of a kept directory.
fn plain_absolute(p: &Path) -> bool {
    p.is_absolute() && !p.components().any(|c| c == Component::ParentDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: &LaunchConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_from_minimal_json() {
        let c = LaunchConfig::from_json(r#"{"kernel":"/k"}"#).unwrap();
        assert_eq!(c, LaunchConfig::new("/k"));
        assert_eq!((c.cpus, c.memory_mib, c.rng), (1, 256, true));
        assert!(c.balloon, "the balloon is on by default");
        assert_eq!(c.jail, Some(JailConfig::default()), "jailed by default");
        assert_eq!(c.console, Console::Stdout);
        let c = LaunchConfig::from_json(r#"{"kernel":"k","jail":null}"#).unwrap();
        assert_eq!(c.jail, None);
    }

    #[test]
    fn round_trips_through_json() {
        let mut c = LaunchConfig::new("/boot/vmlinux");
        c.initramfs = Some("/boot/initramfs".into());
        c.console = Console::File(LogFile::new("/run/p/console.log"));
        c.log = Some(LogFile {
            path: "/run/p/vmm.log".into(),
            max_bytes: 1 << 20,
        });
        c.nets.push(
            "tap=t0,netns=/run/netns/p,mac=02:00:00:00:00:01"
                .parse()
                .unwrap(),
        );
        c.shares
            .push("tag=a,socket=/run/p/fs.sock".parse().unwrap());
        c.disks.push("/d.img,ro".parse().unwrap());
        c.jail = Some(JailConfig {
            uid: Some(100_000),
            gid: Some(100_000),
            ..JailConfig::default()
        });
        let back = LaunchConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = LaunchConfig::from_json(r#"{"kernel":"/k","cpu":2}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `cpu`"), "{e}");
        let e = LaunchConfig::from_json(r#"{"kernel":"/k","jail":{"user":1}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `user`"), "{e}");
    }

    #[test]
    fn every_bad_field_is_named() {
        let base = || LaunchConfig::new("/k");
        let mut c = base();
        c.cpus = 0;
        assert_eq!(err(&c), "cpus 0: must be between 1 and 32");
        let mut c = base();
        c.memory_mib = 8;
        assert_eq!(err(&c), "memory_mib 8: must be between 64 and 65536 MiB");
        let mut c = base();
        c.hugepages = true;
        c.memory_mib = 255;
        assert!(err(&c).contains("multiple of 2 MiB"));
        let mut c = base();
        c.vsock = Some("/v.sock".into());
        c.disks = (0..MAX_DISKS)
            .map(|i| format!("/d{i}.img").parse().unwrap())
            .collect();
        c.shares = (0..MAX_SHARES)
            .map(|i| format!("tag=t{i},socket=/s{i}").parse().unwrap())
            .collect();
        c.nets = (0..MAX_NETS - 1)
            .map(|i| format!("tap=t{i}").parse().unwrap())
            .collect();
        assert_eq!(
            err(&c),
            "disks, nets, shares, rng, balloon, vsock (8 + 3 + 6 + 1 + 1 + 1): \
             20 virtio devices, at most 19 fit"
        );
        c.balloon = false;
        c.validate().unwrap();
        c.balloon = true;
        c.hugepages = true;
        c.validate().unwrap();
        let mut c = base();
        c.shutdown_grace_ms = 600_001;
        assert!(err(&c).starts_with("shutdown_grace_ms"));
        let mut c = base();
        c.console = Console::File(LogFile {
            path: "/c".into(),
            max_bytes: 10,
        });
        assert!(err(&c).starts_with("console.max_bytes 10"));
        let mut c = base();
        c.log = Some(LogFile::new(""));
        assert_eq!(err(&c), "log.path: empty path");
        let mut c = base();
        c.disks = vec!["/d".parse().unwrap(); MAX_DISKS + 1];
        assert_eq!(err(&c), "disks: 9 given, at most 8 are supported");
        let mut c = base();
        c.shares = vec!["tag=a,socket=/s".parse().unwrap(); 2];
        assert_eq!(err(&c), "shares[1] tag=a: the tag is used twice");
        let mut c = base();
        c.nets = vec!["tap=t0".parse().unwrap(); 2];
        assert_eq!(err(&c), "nets[1] tap=t0: the same tap is given twice");
        let mut c = base();
        c.nets = vec![NetSpec {
            source: crate::TapSource::Fd(1),
            mac: None,
        }];
        assert!(err(&c).starts_with("nets[0] fd=1: bad fd"));
        let mut c = base();
        c.kernel = "vmlinux".into();
        assert_eq!(
            err(&c),
            "kernel vmlinux: the jail needs an absolute path without `..`"
        );
        c.jail = None;
        c.validate().unwrap();
        let mut c = base();
        c.vsock = Some("/run/../etc/v.sock".into());
        assert!(err(&c).starts_with("vsock /run/../etc/v.sock"));
        let mut c = base();
        c.jail = Some(JailConfig {
            uid: Some(1),
            ..JailConfig::default()
        });
        assert_eq!(err(&c), "jail: give uid and gid together");
    }
}
