//! Command-line flags of `vessel-vmm` (clap derive; the doc comments are the
//! `--help` text). They build the same [`LaunchConfig`] that `--config`
//! reads from JSON.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use vessel_vmm_api::{Console, JailConfig, LaunchConfig, LogFile, SeccompMode, SpecError};

/// Boots one KVM microVM (one vessel pod) and exits when the guest stops.
///
/// Exit status: 0 when the guest resets itself (e.g. `reboot`, or a graceful
/// shutdown after the control API's `shutdown`, SIGTERM or SIGINT), 1 on a
/// VMM error (bad flags, setup or runtime failure), 2 when the guest crashes
/// (triple fault, KVM internal error, failed VM entry), 3 when stopped through
/// the control API's `stop`, 4 when SIGTERM or SIGINT had to stop it hard.
#[derive(Debug, Clone, Parser)]
#[command(name = "vessel-vmm", version, about, long_about)]
pub struct Cli {
    /// The whole configuration as a JSON LaunchConfig (docs/configuration.md);
    /// no other flag may be given with it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Guest kernel: an uncompressed ELF vmlinux. Booted through its PVH entry
    /// point when it has one, otherwise through the 64-bit Linux boot protocol.
    #[arg(long, value_name = "PATH", required_unless_present = "config")]
    pub kernel: Option<PathBuf>,

    /// Initramfs (cpio archive, optionally compressed) loaded high in guest RAM.
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,

    /// Extra kernel command-line arguments, appended after the defaults
    /// (`console=ttyS0 reboot=k panic=1 quiet`, the `i8042.*` flags and one
    /// `virtio_mmio.device=` per device). Use ` -- ` to pass arguments to init.
    #[arg(long, value_name = "STR", allow_hyphen_values = true)]
    pub cmdline: Option<String>,

    /// Number of vCPUs (1 to 32).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u64,

    /// Guest memory in MiB (64 to 65536, and no more than the host's MemTotal).
    #[arg(long, value_name = "MiB", default_value_t = 256)]
    pub memory: u64,

    /// Host Unix socket of the guest's vsock device (hybrid vsock, guest CID 3).
    /// Host programs connect to it and write `CONNECT <port>\n`.
    #[arg(long, value_name = "PATH")]
    pub vsock: Option<PathBuf>,

    /// Where the guest's serial console (ttyS0) goes: a file path (created or
    /// truncated), `-` for stdout, or `none` for no console (the guest
    /// gets `8250.nr_uarts=0` instead of `console=ttyS0`, so it writes nothing).
    #[arg(long, value_name = "PATH|-|none", default_value = "-")]
    pub console: String,

    /// Most bytes the console file holds; when full, its oldest half is
    /// dropped (64 KiB to 1 GiB).
    #[arg(long, value_name = "BYTES", default_value_t = vessel_vmm_api::DEFAULT_LOG_MAX_BYTES)]
    pub console_max_bytes: u64,

    /// The VMM's own log file (created or truncated); stderr without it.
    /// Its level comes from the VESSEL_VMM_LOG variable (default `warn`).
    #[arg(long, value_name = "PATH")]
    pub log: Option<PathBuf>,

    /// Most bytes the log file holds, as `--console-max-bytes`.
    #[arg(long, value_name = "BYTES", default_value_t = vessel_vmm_api::DEFAULT_LOG_MAX_BYTES)]
    pub log_max_bytes: u64,

    /// Unix socket (mode 0600) of the control API: line-delimited JSON
    /// requests `info`, `pause`, `resume`, `shutdown`, `stop`, `counters`
    /// (docs/vmm-api.md).
    #[arg(long, value_name = "PATH")]
    pub api: Option<PathBuf>,

    /// How long SIGTERM or SIGINT waits for the guest to shut down: the
    /// signal types ctrl-alt-del into the guest, and a guest that resets
    /// within this many milliseconds ends the VM cleanly (exit 0); otherwise,
    /// or at a second signal, the VM is stopped hard (exit 4). 0: stop hard
    /// at once. At most 600000.
    #[arg(long, value_name = "MS", default_value_t = vessel_vmm_api::launch::DEFAULT_GRACE_MS)]
    pub shutdown_grace_ms: u64,

    /// A virtio-blk disk on a raw image file or block device; repeat for more
    /// (the guest sees them as vda, vdb, ... in this order). `ro` makes it
    /// read-only; `serial=ID` (up to 20 characters) is what the guest reads
    /// as its serial, by default the file name. The size must be a multiple
    /// of 512 bytes.
    #[arg(long = "disk", value_name = "PATH[,ro][,serial=ID]")]
    pub disks: Vec<String>,

    /// Back guest memory with 2 MiB hugepages (hugetlbfs memfd). `--memory`
    /// must then be a multiple of 2, and the host's pool must have that many
    /// free pages (/proc/sys/vm/nr_hugepages); the VM refuses to start otherwise.
    #[arg(long)]
    pub hugepages: bool,

    /// A virtio-fs share served by a running virtiofsd on its vhost-user
    /// socket; repeat for more. The guest mounts it with
    /// `mount -t virtiofs TAG DIR`. TAG: 1 to 36 printable ASCII characters
    /// without spaces or commas, unique per VM. `queue-size` (power of two,
    /// 2 to 32768, default 1024) sizes both virtqueues.
    #[arg(long = "fs", value_name = "tag=TAG,socket=PATH[,queue-size=N]")]
    pub fs: Vec<String>,

    /// A virtio-net NIC on a tap device; repeat for more (the guest sees
    /// them as eth0, eth1, ... in this order; at most 4). `tap=NAME` opens
    /// (or creates) the tap, inside the network namespace file `netns=PATH`
    /// if given (e.g. /var/run/netns/X); `fd=N` takes an open tap descriptor
    /// inherited from the parent instead (opened with IFF_TAP, IFF_NO_PI and
    /// IFF_VNET_HDR). `mac=MAC` is the guest's address; without it the
    /// guest picks a random one.
    #[arg(long = "net", value_name = "tap=NAME[,netns=PATH]|fd=N[,mac=MAC]")]
    pub nets: Vec<String>,

    /// Leave out the virtio-rng device. By default the guest gets one, fed
    /// from the host's getrandom(2), so its CRNG is ready early in boot.
    #[arg(long)]
    pub no_rng: bool,

    /// Leave out the virtio-balloon device. By default the guest gets one
    /// with free page reporting: memory the guest frees (in 2 MiB blocks)
    /// goes back to the host within seconds.
    #[arg(long)]
    pub no_balloon: bool,

    /// Per-thread seccomp filters: `kill` ends the VMM (SIGSYS) on a
    /// syscall its thread's role does not need, `log` only logs it to the
    /// kernel log (to find a missing one), `off` installs no filters.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = crate::seccomp::Mode::Kill)]
    pub seccomp: crate::seccomp::Mode,

    /// Start jailed (the default; needs root): once set up, the VMM moves
    /// into its own mount and IPC namespaces whose root is a tmpfs holding
    /// only the kernel and initramfs (read-only) and the directories of its
    /// sockets, switches to `--jail-uid`/`--jail-gid`, drops every
    /// capability, sets no_new_privs and bounds its open files and file
    /// sizes. `--kernel`, `--initramfs`, `--vsock` and `--api` must be
    /// absolute.
    #[arg(long, conflicts_with = "no_jail")]
    pub jail: bool,

    /// Do not jail: the VMM keeps the host's namespaces, its user and its
    /// capabilities (for runs without root; seccomp still applies).
    #[arg(long)]
    pub no_jail: bool,

    /// The user the jailed VMM runs as (the pod's unprivileged uid);
    /// default: its own. Give `--jail-gid` with it.
    #[arg(
        long,
        value_name = "UID",
        requires = "jail_gid",
        conflicts_with = "no_jail"
    )]
    pub jail_uid: Option<u32>,

    /// The group the jailed VMM runs as.
    #[arg(
        long,
        value_name = "GID",
        requires = "jail_uid",
        conflicts_with = "no_jail"
    )]
    pub jail_gid: Option<u32>,

    /// Where the jail's tmpfs root is mounted (in the VMM's own mount
    /// namespace only; the host sees nothing there). Default `/tmp`.
    #[arg(long, value_name = "PATH", conflicts_with = "no_jail")]
    pub jail_dir: Option<PathBuf>,
}

/// Why the command line cannot become a [`LaunchConfig`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// clap refused the flags (or `--help`/`--version` was asked for).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// `--config` came with other flags.
    #[error(
        "--config {0}: no other flag may be given with it (the file holds the whole configuration)"
    )]
    ConfigWithFlags(String),
    /// The `--config` file cannot be read.
    #[error("--config {0}: {1}")]
    ConfigRead(String, #[source] std::io::Error),
    /// The `--config` file is not a valid LaunchConfig.
    #[error("--config {0}: {1}")]
    ConfigInvalid(String, #[source] vessel_vmm_api::LaunchError),
    /// A `--disk`, `--fs` or `--net` value is malformed.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Longest `--config` file read (a LaunchConfig is a few KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Cli {
    /// Parses `args` (program name first) into a launch configuration,
    /// not yet validated.
    pub fn launch_config<I, T>(args: I) -> Result<LaunchConfig, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        match &cli.config {
            Some(path) => {
                if let Some(other) = other_flag(&matches) {
                    return Err(CliError::ConfigWithFlags(format!(
                        "{} with --{other}",
                        path.display()
                    )));
                }
                read_config(path)
            }
            None => cli.into_launch(),
        }
    }

    /// The configuration the human flags describe.
    fn into_launch(self) -> Result<LaunchConfig, CliError> {
        let mut c = LaunchConfig::new(self.kernel.unwrap_or_default());
        c.initramfs = self.initramfs;
        c.cmdline = self.cmdline;
        c.cpus = self.cpus;
        c.memory_mib = self.memory;
        c.hugepages = self.hugepages;
        c.vsock = self.vsock;
        c.console = match self.console.as_str() {
            "-" => Console::Stdout,
            "none" => Console::None,
            path => Console::File(LogFile {
                path: path.into(),
                max_bytes: self.console_max_bytes,
            }),
        };
        c.log = self.log.map(|path| LogFile {
            path,
            max_bytes: self.log_max_bytes,
        });
        c.api = self.api;
        c.disks = self
            .disks
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        c.shares = self
            .fs
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        c.nets = self
            .nets
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        c.rng = !self.no_rng;
        c.balloon = !self.no_balloon;
        c.seccomp = match self.seccomp {
            crate::seccomp::Mode::Kill => SeccompMode::Kill,
            crate::seccomp::Mode::Log => SeccompMode::Log,
            crate::seccomp::Mode::Off => SeccompMode::Off,
        };
        c.jail = (!self.no_jail).then(|| JailConfig {
            uid: self.jail_uid,
            gid: self.jail_gid,
            dir: self.jail_dir.unwrap_or_else(|| JailConfig::default().dir),
        });
        c.shutdown_grace_ms = self.shutdown_grace_ms;
        Ok(c)
    }
}

/// A flag given on the command line besides `--config`, if any.
fn other_flag(matches: &ArgMatches) -> Option<String> {
    let command = Cli::command();
    // ids() also lists the derive's group named after the struct: only args count.
    let is_arg = |id: &str| command.get_arguments().any(|a| a.get_id() == id);
    matches
        .ids()
        .map(|id| id.as_str())
        .find(|&id| {
            id != "config"
                && is_arg(id)
                && matches.value_source(id) == Some(ValueSource::CommandLine)
        })
        .map(|id| id.replace('_', "-"))
}

fn read_config(path: &std::path::Path) -> Result<LaunchConfig, CliError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| CliError::ConfigRead(shown.clone(), e))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(CliError::ConfigRead(
            shown,
            std::io::Error::other(format!("larger than {MAX_CONFIG_BYTES} bytes")),
        ));
    }
    serde_json::from_str(&text)
        .map_err(|e| CliError::ConfigInvalid(shown, vessel_vmm_api::LaunchError::Json(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(args: &[&str]) -> Result<LaunchConfig, CliError> {
        Cli::launch_config(std::iter::once("vessel-vmm").chain(args.iter().copied()))
    }

    #[test]
    fn flags_build_the_launch_config() {
        let c = launch(&[
            "--kernel",
            "/k",
            "--cpus",
            "2",
            "--memory",
            "512",
            "--console",
            "/c.log",
            "--console-max-bytes",
            "65536",
            "--log",
            "/v.log",
            "--net",
            "tap=t0,mac=02:00:00:00:00:01",
            "--disk",
            "/d.img,ro",
            "--fs",
            "tag=a,socket=/s",
            "--jail-uid",
            "1000",
            "--jail-gid",
            "1001",
            "--seccomp",
            "log",
            "--no-rng",
            "--no-balloon",
        ])
        .unwrap();
        assert_eq!((c.cpus, c.memory_mib, c.rng), (2, 512, false));
        assert!(!c.balloon);
        assert_eq!(
            c.console,
            Console::File(LogFile {
                path: "/c.log".into(),
                max_bytes: 65536
            })
        );
        assert_eq!(c.log, Some(LogFile::new("/v.log")));
        assert_eq!(c.nets[0].to_string(), "tap=t0,mac=02:00:00:00:00:01");
        assert_eq!(c.disks[0].to_string(), "/d.img,ro");
        assert_eq!(c.shares[0].tag, "a");
        assert_eq!(c.seccomp, SeccompMode::Log);
        let jail = c.jail.as_ref().unwrap();
        assert_eq!((jail.uid, jail.gid), (Some(1000), Some(1001)));
        c.validate().unwrap();
    }

    #[test]
    fn jail_is_on_unless_refused() {
        assert_eq!(
            launch(&["--kernel", "/k"]).unwrap().jail,
            Some(JailConfig::default())
        );
        assert_eq!(
            launch(&["--kernel", "/k", "--jail"]).unwrap().jail,
            Some(JailConfig::default())
        );
        assert_eq!(launch(&["--kernel", "k", "--no-jail"]).unwrap().jail, None);
        assert!(launch(&["--kernel", "/k", "--no-jail", "--jail"]).is_err());
        assert!(
            launch(&["--kernel", "/k", "--jail-uid", "5"]).is_err(),
            "uid needs gid"
        );
    }

    #[test]
    fn config_file_stands_alone() {
        let path = std::env::temp_dir().join(format!("vessel-cli-{}.json", std::process::id()));
        let mut want = LaunchConfig::new("/boot/vmlinux");
        want.cpus = 3;
        std::fs::write(&path, want.to_json()).unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(launch(&["--config", p]).unwrap(), want);
        let err = launch(&["--config", p, "--cpus", "2"])
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("with --cpus: no other flag may be given with it (the file holds the whole configuration)"), "{err}");
        std::fs::write(&path, r#"{"kernel":"/k","cpus":"two"}"#).unwrap();
        let err = launch(&["--config", p]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--config {p}: not a valid launch configuration")),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
        let err = launch(&["--config", p]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--config {p}: No such file")),
            "{err}"
        );
        let err = launch(&["--kernel", "/k", "--disk", "x,rx"])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--disk x,rx: unknown option"), "{err}");
    }
}
