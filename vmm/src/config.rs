//! Validated VM configuration built from the command line.
//!
//! Every check names the flag and, where there is one, the path at fault.
//! Files are opened here, once, so a bad path fails before any KVM setup.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::cli::Cli;
use crate::devices::virtio::block::disk::{DiskError, DiskImage, DiskSpec};
use crate::devices::virtio::fs::spec::{FsSpec, FsSpecError};
use crate::devices::virtio::net::spec::{self as net_spec, NetConfig, NetConfigError};
use crate::memory::hugepages::{self, HugepageError};

/// Fewest vCPUs a VM can have.
pub const MIN_CPUS: u64 = 1;
/// Most vCPUs a VM can have (the MP table and APIC ID layout are sized for this).
pub const MAX_CPUS: u64 = 32;
/// Least guest memory in MiB: a kernel plus initramfs needs some room.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Most guest memory in MiB.
pub const MAX_MEMORY_MIB: u64 = 65536;
/// Most `--disk` flags: leaves virtio-mmio slots for vsock, rng, net and fs.
pub const MAX_DISKS: usize = 8;
/// Most `--fs` flags (one virtio-mmio slot each).
pub const MAX_SHARES: usize = 6;

/// Error in the configuration; the message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file flag names a path that cannot be opened.
    #[error("--{flag} {}: cannot open: {source}", path.display())]
    Open {
        /// The flag, without dashes.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A file flag names something that is not a regular file.
    #[error("--{flag} {}: not a regular file", path.display())]
    NotAFile {
        /// The flag, without dashes.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// `--kernel` does not start with the ELF magic.
    #[error("--kernel {}: not an ELF vmlinux (use the uncompressed vmlinux, not a bzImage)", .0.display())]
    KernelNotElf(PathBuf),
    /// `--cpus` is out of range.
    #[error("--cpus {0}: must be between {MIN_CPUS} and {MAX_CPUS}")]
    Cpus(u64),
    /// `--memory` is out of range.
    #[error("--memory {0}: must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB")]
    Memory(u64),
    /// `--memory` is more than the host has.
    #[error("--memory {requested}: more than the host's {host} MiB of RAM")]
    MemoryAboveHost {
        /// MiB asked for.
        requested: u64,
        /// MemTotal of the host in MiB.
        host: u64,
    },
    /// `--vsock` names a socket in a directory that does not exist.
    #[error("--vsock {}: directory does not exist", .0.display())]
    VsockDir(PathBuf),
    /// `--console` is an empty string.
    #[error("--console: empty path (use a file path, `-` or `none`)")]
    ConsoleEmpty,
    /// A `--disk` flag is malformed or its image unusable.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A `--net` flag is malformed or its tap cannot be opened.
    #[error(transparent)]
    Net(#[from] NetConfigError),
    /// More `--disk` flags than virtio-mmio slots allow.
    #[error("--disk: {0} disks given, at most {MAX_DISKS} are supported")]
    TooManyDisks(usize),
    /// `--hugepages` cannot be honoured (size or host pool).
    #[error(transparent)]
    Hugepages(#[from] HugepageError),
    /// A `--fs` flag is malformed or its socket missing.
    #[error(transparent)]
    Fs(#[from] FsSpecError),
    /// More `--fs` flags than virtio-mmio slots allow.
    #[error("--fs: {0} shares given, at most {MAX_SHARES} are supported")]
    TooManyShares(usize),
}

/// Where the serial console output goes.
#[derive(Debug)]
pub enum Console {
    /// The VMM's stdout.
    Stdout,
    /// A file, opened (created or truncated) at configuration time.
    File(File),
    /// Nowhere; the guest gets no `console=ttyS0`.
    None,
}

/// A guest image file, opened, with its size.
#[derive(Debug)]
pub struct ImageFile {
    /// Path as given on the command line (for error messages).
    pub path: PathBuf,
    /// The open file.
    pub file: File,
    /// Size in bytes.
    pub size: u64,
}

/// The validated configuration of one VM.
#[derive(Debug)]
pub struct VmConfig {
    /// Guest kernel (ELF vmlinux).
    pub kernel: ImageFile,
    /// Optional initramfs.
    pub initramfs: Option<ImageFile>,
    /// Extra kernel command-line arguments.
    pub cmdline_extra: Option<String>,
    /// Number of vCPUs, within `MIN_CPUS..=MAX_CPUS`.
    pub cpus: u8,
    /// Guest memory in bytes.
    pub memory_bytes: u64,
    /// Host socket path of the hybrid vsock, if any.
    pub vsock: Option<PathBuf>,
    /// Serial console destination.
    pub console: Console,
    /// virtio-blk disks, opened and checked, in guest order (vda, vdb, ...).
    pub disks: Vec<DiskImage>,
    /// Whether the guest gets a virtio-rng device.
    pub rng: bool,
    /// Whether guest memory is on 2 MiB hugepages.
    pub hugepages: bool,
    /// virtio-fs shares, in flag order.
    pub fs: Vec<FsSpec>,
    /// virtio-net NICs with their open taps, in guest order (eth0, eth1, ...).
    pub nets: Vec<NetConfig>,
}

impl VmConfig {
    /// Validates the flags and opens the files they name.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let cpus = validate_cpus(cli.cpus)?;
        let memory_mib = validate_memory(cli.memory, host_memory_mib())?;
        let kernel = open_image("kernel", &cli.kernel)?;
        check_elf_magic(&kernel)?;
        let initramfs = cli
            .initramfs
            .as_deref()
            .map(|p| open_image("initramfs", p))
            .transpose()?;
        if let Some(sock) = &cli.vsock {
            validate_vsock_path(sock)?;
        }
        if cli.hugepages {
            hugepages::check(memory_mib << 20, hugepages::Pool::read())?;
        }
        if cli.fs.len() > MAX_SHARES {
            return Err(ConfigError::TooManyShares(cli.fs.len()));
        }
        let fs = FsSpec::parse_all(&cli.fs)?;
        let disks = open_disks(&cli.disks)?;
        let nets = net_spec::open_all(&cli.nets)?;
        let console = open_console(&cli.console)?;
        Ok(VmConfig {
            kernel,
            initramfs,
            cmdline_extra: cli.cmdline,
            cpus,
            memory_bytes: memory_mib << 20,
            vsock: cli.vsock,
            console,
            disks,
            rng: !cli.no_rng,
            hugepages: cli.hugepages,
            fs,
            nets,
        })
    }
}

/// Checks `--cpus`.
pub fn validate_cpus(cpus: u64) -> Result<u8, ConfigError> {
    if !(MIN_CPUS..=MAX_CPUS).contains(&cpus) {
        return Err(ConfigError::Cpus(cpus));
    }
    u8::try_from(cpus).map_err(|_| ConfigError::Cpus(cpus))
}

/// Checks `--memory` (MiB) against the fixed bounds and the host's RAM, if known.
pub fn validate_memory(mib: u64, host_mib: Option<u64>) -> Result<u64, ConfigError> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&mib) {
        return Err(ConfigError::Memory(mib));
    }
    match host_mib {
        Some(host) if mib > host => Err(ConfigError::MemoryAboveHost {
            requested: mib,
            host,
        }),
        _ => Ok(mib),
    }
}

/// MemTotal of the host in MiB, or None if /proc/meminfo cannot be read.
fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total_mib(&meminfo)
}

/// Extracts MemTotal (in MiB) from the text of /proc/meminfo.
fn parse_mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Opens a guest image and checks that it is a regular file.
fn open_image(flag: &'static str, path: &Path) -> Result<ImageFile, ConfigError> {
    let open_err = |source| ConfigError::Open {
        flag,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            flag,
            path: path.to_path_buf(),
        });
    }
    Ok(ImageFile {
        path: path.to_path_buf(),
        file,
        size: meta.len(),
    })
}

/// Fails early, before any KVM setup, on a kernel that is not ELF (e.g. a bzImage).
fn check_elf_magic(kernel: &ImageFile) -> Result<(), ConfigError> {
    let mut magic = [0u8; 4];
    // pread: leaves the file offset alone for the loader.
    match kernel.file.read_exact_at(&mut magic, 0) {
        Ok(()) if magic == *b"\x7fELF" => Ok(()),
        Ok(()) => Err(ConfigError::KernelNotElf(kernel.path.clone())),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(ConfigError::KernelNotElf(kernel.path.clone()))
        }
        Err(source) => Err(ConfigError::Open {
            flag: "kernel",
            path: kernel.path.clone(),
            source,
        }),
    }
}

/// Checks that the vsock socket can be created where asked (its directory exists).
fn validate_vsock_path(path: &Path) -> Result<(), ConfigError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(ConfigError::VsockDir(path.to_path_buf()))
    }
}

/// Parses every `--disk` first, then opens them, so a typo in a later
/// flag is reported before any image is touched.
fn open_disks(args: &[String]) -> Result<Vec<DiskImage>, ConfigError> {
    if args.len() > MAX_DISKS {
        return Err(ConfigError::TooManyDisks(args.len()));
    }
    let specs = args
        .iter()
        .map(|a| DiskSpec::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(specs
        .iter()
        .map(DiskSpec::open)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Parses `--console` and opens the file it names.
fn open_console(arg: &str) -> Result<Console, ConfigError> {
    match arg {
        "" => Err(ConfigError::ConsoleEmpty),
        "-" => Ok(Console::Stdout),
        "none" => Ok(Console::None),
        path => File::create(path)
            .map(Console::File)
            .map_err(|source| ConfigError::Open {
                flag: "console",
                path: PathBuf::from(path),
                source,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["vessel-vmm"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    fn tmp_file(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("vessel-vmm-cfg-{}-{name}", std::process::id()));
        std::fs::write(&p, b"\x7fELF").unwrap();
        p
    }

    #[test]
    fn cpus_bounds() {
        assert!(matches!(validate_cpus(0), Err(ConfigError::Cpus(0))));
        assert!(matches!(validate_cpus(33), Err(ConfigError::Cpus(33))));
        assert!(matches!(validate_cpus(u64::MAX), Err(ConfigError::Cpus(_))));
        assert_eq!(validate_cpus(1).unwrap(), 1);
        assert_eq!(validate_cpus(32).unwrap(), 32);
    }

    #[test]
    fn memory_bounds() {
        assert!(matches!(
            validate_memory(63, None),
            Err(ConfigError::Memory(63))
        ));
        assert!(matches!(
            validate_memory(65537, None),
            Err(ConfigError::Memory(65537))
        ));
        assert!(matches!(
            validate_memory(4096, Some(2048)),
            Err(ConfigError::MemoryAboveHost {
                requested: 4096,
                host: 2048
            })
        ));
        assert_eq!(validate_memory(256, Some(2048)).unwrap(), 256);
        assert_eq!(validate_memory(65536, None).unwrap(), 65536);
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       24508640 kB\nMemFree:        22000000 kB\n";
        assert_eq!(parse_mem_total_mib(text), Some(23934));
        assert_eq!(parse_mem_total_mib("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total_mib("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn errors_name_flag_and_path() {
        let err = VmConfig::from_cli(cli(&["--kernel", "/nonexistent/vmlinux"])).unwrap_err();
        assert!(matches!(err, ConfigError::Open { flag: "kernel", .. }));
        assert!(err
            .to_string()
            .starts_with("--kernel /nonexistent/vmlinux: cannot open"));

        let kernel = tmp_file("kernel");
        let k = kernel.to_str().unwrap();
        let err =
            VmConfig::from_cli(cli(&["--kernel", k, "--initramfs", "/nonexistent/i"])).unwrap_err();
        assert!(err.to_string().starts_with("--initramfs /nonexistent/i:"));

        let err = VmConfig::from_cli(cli(&["--kernel", "/tmp"])).unwrap_err();
        assert_eq!(err.to_string(), "--kernel /tmp: not a regular file");

        let not_elf =
            std::env::temp_dir().join(format!("vessel-vmm-cfg-{}-bz", std::process::id()));
        std::fs::write(&not_elf, b"MZ\x00\x00").unwrap();
        let err = VmConfig::from_cli(cli(&["--kernel", not_elf.to_str().unwrap()])).unwrap_err();
        assert!(matches!(err, ConfigError::KernelNotElf(_)));
        std::fs::write(&not_elf, b"").unwrap();
        let err = VmConfig::from_cli(cli(&["--kernel", not_elf.to_str().unwrap()])).unwrap_err();
        assert!(matches!(err, ConfigError::KernelNotElf(_)));
        std::fs::remove_file(not_elf).unwrap();

        let err = VmConfig::from_cli(cli(&["--kernel", k, "--cpus", "0"])).unwrap_err();
        assert_eq!(err.to_string(), "--cpus 0: must be between 1 and 32");

        let err = VmConfig::from_cli(cli(&["--kernel", k, "--memory", "8"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--memory 8: must be between 64 and 65536 MiB"
        );

        let err = VmConfig::from_cli(cli(&["--kernel", k, "--vsock", "/nonexistent/v.sock"]))
            .unwrap_err();
        assert!(matches!(err, ConfigError::VsockDir(_)));

        let err = VmConfig::from_cli(cli(&["--kernel", k, "--console", "/nonexistent/c.log"]))
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("--console /nonexistent/c.log: cannot open"));
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn defaults_and_console_forms() {
        let kernel = tmp_file("kernel2");
        let k = kernel.to_str().unwrap();
        let cfg = VmConfig::from_cli(cli(&["--kernel", k])).unwrap();
        assert_eq!(cfg.cpus, 1);
        assert_eq!(cfg.memory_bytes, 256 << 20);
        assert_eq!(cfg.kernel.size, 4);
        assert!(matches!(cfg.console, Console::Stdout));
        let cfg = VmConfig::from_cli(cli(&["--kernel", k, "--console", "none"])).unwrap();
        assert!(matches!(cfg.console, Console::None));
        let cfg = VmConfig::from_cli(cli(&["--kernel", k, "--cmdline", "-x foo"])).unwrap();
        assert_eq!(cfg.cmdline_extra.as_deref(), Some("-x foo"));
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn disks_and_rng() {
        let kernel = tmp_file("kernel3");
        let k = kernel.to_str().unwrap();
        let cfg = VmConfig::from_cli(cli(&["--kernel", k])).unwrap();
        assert!(cfg.rng, "rng is on by default");
        assert!(cfg.disks.is_empty());
        let cfg = VmConfig::from_cli(cli(&["--kernel", k, "--no-rng"])).unwrap();
        assert!(!cfg.rng);

        let img = |name: &str, len: usize| {
            let p =
                std::env::temp_dir().join(format!("vessel-vmm-cfg-{}-{name}", std::process::id()));
            std::fs::write(&p, vec![0u8; len]).unwrap();
            p
        };
        let a = img("a.img", 4096);
        let b = img("b.img", 512);
        let a_arg = a.to_str().unwrap().to_string();
        let b_arg = format!("{},ro,serial=data", b.display());
        let cfg =
            VmConfig::from_cli(cli(&["--kernel", k, "--disk", &a_arg, "--disk", &b_arg])).unwrap();
        assert_eq!(cfg.disks.len(), 2);
        assert_eq!((cfg.disks[0].sectors, cfg.disks[0].read_only), (8, false));
        assert_eq!((cfg.disks[1].sectors, cfg.disks[1].read_only), (1, true));
        assert_eq!(&cfg.disks[1].id[..5], b"data\0");
        drop(cfg);

        let err =
            VmConfig::from_cli(cli(&["--kernel", k, "--disk", "/nonexistent/d.img"])).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("--disk /nonexistent/d.img: cannot open read-write"));
        // A bad option is reported even when an earlier image is fine.
        let err = VmConfig::from_cli(cli(&["--kernel", k, "--disk", &a_arg, "--disk", "x,rx"]))
            .unwrap_err();
        assert!(err.to_string().starts_with("--disk x: unknown option"));
        let odd = img("odd.img", 513);
        let err =
            VmConfig::from_cli(cli(&["--kernel", k, "--disk", odd.to_str().unwrap()])).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("size 513 bytes is not a multiple of 512"));
        let many: Vec<&str> = (0..=MAX_DISKS).flat_map(|_| ["--disk", "x"]).collect();
        let mut argv = vec!["--kernel", k];
        argv.extend(many);
        let err = VmConfig::from_cli(cli(&argv)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--disk: 9 disks given, at most 8 are supported"
        );
        for p in [a, b, odd, kernel] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn fs_shares() {
        let kernel = tmp_file("kernel4");
        let k = kernel.to_str().unwrap();
        let dir = std::env::temp_dir().join(format!("vessel-vmm-cfg-{}-fs", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("v.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let a = format!("tag=a,socket={}", sock.display());
        let b = format!("tag=b,socket={},queue-size=128", sock.display());
        let cfg = VmConfig::from_cli(cli(&["--kernel", k, "--fs", &a, "--fs", &b])).unwrap();
        assert_eq!(cfg.fs.len(), 2);
        assert_eq!((cfg.fs[1].tag.as_str(), cfg.fs[1].queue_size), ("b", 128));
        let err = VmConfig::from_cli(cli(&["--kernel", k, "--fs", &a, "--fs", &a])).unwrap_err();
        assert_eq!(err.to_string(), "--fs tag=a: the tag is used twice");
        let err = VmConfig::from_cli(cli(&["--kernel", k, "--fs", "tag=x,socket=/nonexistent/s"]))
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("--fs tag=x: socket /nonexistent/s:"));
        let many: Vec<String> = (0..=MAX_SHARES)
            .map(|i| format!("tag=t{i},socket={}", sock.display()))
            .collect();
        let mut argv = vec!["--kernel", k];
        for m in &many {
            argv.extend(["--fs", m.as_str()]);
        }
        let err = VmConfig::from_cli(cli(&argv)).unwrap_err();
        assert!(matches!(err, ConfigError::TooManyShares(7)));
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn hugepages_flag() {
        let kernel = tmp_file("kernel5");
        let k = kernel.to_str().unwrap();
        let cfg = VmConfig::from_cli(cli(&["--kernel", k])).unwrap();
        assert!(!cfg.hugepages);
        // An odd size is refused whatever the host's pool holds.
        let err = VmConfig::from_cli(cli(&["--kernel", k, "--hugepages", "--memory", "255"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--memory 255 MiB: with --hugepages it must be a multiple of 2 MiB"
        );
        // Whether 256 MiB fits depends on the host; either way the answer is clear.
        match VmConfig::from_cli(cli(&["--kernel", k, "--hugepages"])) {
            Ok(cfg) => assert!(cfg.hugepages),
            Err(e) => assert!(e.to_string().contains("hugepage"), "{e}"),
        }
        std::fs::remove_file(kernel).unwrap();
    }
}
