//! Command-line flags of `vessel-vmm` (clap derive; the doc comments are the `--help` text).

use std::path::PathBuf;

use clap::Parser;

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
    /// Guest kernel: an uncompressed ELF vmlinux. Booted through its PVH entry
    /// point when it has one, otherwise through the 64-bit Linux boot protocol.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,

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
    /// truncated), `-` for stdout, or `none` to drop it (and `console=ttyS0`).
    #[arg(long, value_name = "PATH|-|none", default_value = "-")]
    pub console: String,

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
    #[arg(long, value_name = "MS", default_value_t = crate::control::signals::DEFAULT_GRACE_MS,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
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

    /// Per-thread seccomp filters: `kill` ends the VMM (SIGSYS) on a
    /// syscall its thread's role does not need, `log` only logs it to the
    /// kernel log (to find a missing one), `off` installs no filters.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = crate::seccomp::Mode::Kill)]
    pub seccomp: crate::seccomp::Mode,

    /// Start jailed (needs root): once set up, the VMM moves into its own
    /// mount namespace whose root is a tmpfs holding only the kernel and
    /// initramfs (read-only) and the directories of its sockets, drops
    /// every capability, sets no_new_privs and bounds its open files.
    /// `--kernel`, `--initramfs`, `--vsock` and `--api` must be absolute.
    #[arg(long)]
    pub jail: bool,

    /// Where the jail's tmpfs root is mounted (in the VMM's own mount
    /// namespace only; the host sees nothing there). Default `/tmp`.
    #[arg(long, value_name = "PATH", requires = "jail")]
    pub jail_dir: Option<PathBuf>,
}
