//! The VM configuration, from a validated [`LaunchConfig`] plus what only
//! the host can answer (its RAM, its hugepage pool, the files themselves).
//!
//! Every check names the flag (or field) and, where there is one, the path
//! at fault. Files are opened here, once, so a bad path fails before any
//! KVM setup, and before the jail takes the paths away.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use vessel_vmm_api::launch::{
    MAX_CPUS, MAX_DISKS, MAX_MEMORY_MIB, MAX_SHARES, MIN_CPUS, MIN_MEMORY_MIB,
};
use vessel_vmm_api::LaunchConfig;

use crate::devices::virtio::block::disk::{DiskError, DiskImage};
use crate::devices::virtio::fs::spec::{self as fs_spec, FsSocketError, FsSpec};
use crate::devices::virtio::net::spec::{self as net_spec, NetConfig, NetConfigError};
use crate::logging::CappedFile;
use crate::memory::hugepages::{self, HugepageError};

/// Error in the configuration; the message names the flag or field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration itself is invalid.
    #[error(transparent)]
    Launch(#[from] vessel_vmm_api::LaunchError),
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
    /// A disk image is unusable.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A tap cannot be opened.
    #[error(transparent)]
    Net(#[from] NetConfigError),
    /// `--hugepages` cannot be honoured (size or host pool).
    #[error(transparent)]
    Hugepages(#[from] HugepageError),
    /// A share's virtiofsd socket is missing.
    #[error(transparent)]
    Fs(#[from] FsSocketError),
}

/// Where the serial console output goes.
#[derive(Debug)]
pub enum Console {
    /// The VMM's stdout.
    Stdout,
    /// A file, opened (created or truncated) at configuration time, capped.
    File(CappedFile),
    /// Nowhere; the guest gets no `console=ttyS0` and no serial port driver (`8250.nr_uarts=0`).
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
    /// Whether the guest gets a virtio-balloon with free page reporting.
    pub balloon: bool,
    /// Whether guest memory is on 2 MiB hugepages.
    pub hugepages: bool,
    /// virtio-fs shares, in flag order.
    pub fs: Vec<FsSpec>,
    /// virtio-net NICs with their open taps, in guest order (eth0, eth1, ...).
    pub nets: Vec<NetConfig>,
}

impl VmConfig {
    /// Validates `launch`, checks it against the host and opens the files
    /// it names.
    pub fn from_launch(launch: &LaunchConfig) -> Result<Self, ConfigError> {
        launch.validate()?;
        let memory_mib = check_host_memory(launch.memory_mib, host_memory_mib())?;
        let kernel = open_image("kernel", &launch.kernel)?;
        check_elf_magic(&kernel)?;
        let initramfs = launch
            .initramfs
            .as_deref()
            .map(|p| open_image("initramfs", p))
            .transpose()?;
        if let Some(sock) = &launch.vsock {
            validate_vsock_path(sock)?;
        }
        if launch.hugepages {
            hugepages::check(memory_mib << 20, hugepages::Pool::read())?;
        }
        fs_spec::check_sockets(&launch.shares)?;
        let disks = launch
            .disks
            .iter()
            .map(DiskImage::open)
            .collect::<Result<Vec<_>, _>>()?;
        let nets = net_spec::open_all(&launch.nets)?;
        let console = open_console(&launch.console)?;
        Ok(VmConfig {
            kernel,
            initramfs,
            cmdline_extra: launch.cmdline.clone(),
            // Validated against MAX_CPUS, which fits a u8.
            cpus: u8::try_from(launch.cpus).unwrap_or(1),
            memory_bytes: memory_mib << 20,
            vsock: launch.vsock.clone(),
            console,
            disks,
            rng: launch.rng,
            balloon: launch.balloon,
            hugepages: launch.hugepages,
            fs: launch.shares.clone(),
            nets,
        })
    }
}

/// Checks the memory size (MiB, already within the fixed bounds) against
/// the host's RAM, if known.
pub fn check_host_memory(mib: u64, host_mib: Option<u64>) -> Result<u64, ConfigError> {
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

/// Opens the console file, if any.
fn open_console(console: &vessel_vmm_api::Console) -> Result<Console, ConfigError> {
    use vessel_vmm_api::Console as C;
    match console {
        C::Stdout => Ok(Console::Stdout),
        C::None => Ok(Console::None),
        C::File(f) if f.path.as_os_str().is_empty() => Err(ConfigError::ConsoleEmpty),
        C::File(f) => CappedFile::create(&f.path, f.max_bytes)
            .map(Console::File)
            .map_err(|source| ConfigError::Open {
                flag: "console",
                path: f.path.clone(),
                source,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<VmConfig, ConfigError> {
        let argv = std::iter::once("vessel-vmm")
            .chain(["--no-jail"])
            .chain(args.iter().copied());
        let launch = crate::cli::Cli::launch_config(argv).unwrap();
        VmConfig::from_launch(&launch)
    }

    fn tmp_file(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("vessel-vmm-cfg-{}-{name}", std::process::id()));
        std::fs::write(&p, b"\x7fELF").unwrap();
        p
    }

    #[test]
    fn memory_against_the_host() {
        assert!(matches!(
            check_host_memory(4096, Some(2048)),
            Err(ConfigError::MemoryAboveHost {
                requested: 4096,
                host: 2048
            })
        ));
        assert_eq!(check_host_memory(256, Some(2048)).unwrap(), 256);
        assert_eq!(check_host_memory(65536, None).unwrap(), 65536);
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
        let err = cfg(&["--kernel", "/nonexistent/vmlinux"]).unwrap_err();
        assert!(matches!(err, ConfigError::Open { flag: "kernel", .. }));
        assert!(err
            .to_string()
            .starts_with("--kernel /nonexistent/vmlinux: cannot open"));

        let kernel = tmp_file("kernel");
        let k = kernel.to_str().unwrap();
        let err = cfg(&["--kernel", k, "--initramfs", "/nonexistent/i"]).unwrap_err();
        assert!(err.to_string().starts_with("--initramfs /nonexistent/i:"));

        let err = cfg(&["--kernel", "/tmp"]).unwrap_err();
        assert_eq!(err.to_string(), "--kernel /tmp: not a regular file");

        let not_elf =
            std::env::temp_dir().join(format!("vessel-vmm-cfg-{}-bz", std::process::id()));
        std::fs::write(&not_elf, b"MZ\x00\x00").unwrap();
        let err = cfg(&["--kernel", not_elf.to_str().unwrap()]).unwrap_err();
        assert!(matches!(err, ConfigError::KernelNotElf(_)));
        std::fs::write(&not_elf, b"").unwrap();
        let err = cfg(&["--kernel", not_elf.to_str().unwrap()]).unwrap_err();
        assert!(matches!(err, ConfigError::KernelNotElf(_)));
        std::fs::remove_file(not_elf).unwrap();

        let err = cfg(&["--kernel", k, "--cpus", "0"]).unwrap_err();
        assert_eq!(err.to_string(), "cpus 0: must be between 1 and 32");

        let err = cfg(&["--kernel", k, "--memory", "8"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "memory_mib 8: must be between 64 and 65536 MiB"
        );

        let err = cfg(&["--kernel", k, "--vsock", "/nonexistent/v.sock"]).unwrap_err();
        assert!(matches!(err, ConfigError::VsockDir(_)));

        let err = cfg(&["--kernel", k, "--console", "/nonexistent/c.log"]).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("--console /nonexistent/c.log: cannot open"));
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn defaults_and_console_forms() {
        let kernel = tmp_file("kernel2");
        let k = kernel.to_str().unwrap();
        let c = cfg(&["--kernel", k]).unwrap();
        assert_eq!(c.cpus, 1);
        assert_eq!(c.memory_bytes, 256 << 20);
        assert_eq!(c.kernel.size, 4);
        assert!(matches!(c.console, Console::Stdout));
        let c = cfg(&["--kernel", k, "--console", "none"]).unwrap();
        assert!(matches!(c.console, Console::None));
        let c = cfg(&["--kernel", k, "--cmdline", "-x foo"]).unwrap();
        assert_eq!(c.cmdline_extra.as_deref(), Some("-x foo"));
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn disks_and_rng() {
        let kernel = tmp_file("kernel3");
        let k = kernel.to_str().unwrap();
        let c = cfg(&["--kernel", k]).unwrap();
        assert!(c.rng, "rng is on by default");
        assert!(c.disks.is_empty());
        let c = cfg(&["--kernel", k, "--no-rng"]).unwrap();
        assert!(!c.rng);
        assert!(c.balloon, "the balloon is on by default");
        let c = cfg(&["--kernel", k, "--no-balloon"]).unwrap();
        assert!(!c.balloon && c.rng);

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
        let c = cfg(&["--kernel", k, "--disk", &a_arg, "--disk", &b_arg]).unwrap();
        assert_eq!(c.disks.len(), 2);
        assert_eq!((c.disks[0].sectors, c.disks[0].read_only), (8, false));
        assert_eq!((c.disks[1].sectors, c.disks[1].read_only), (1, true));
        assert_eq!(&c.disks[1].id[..5], b"data\0");
        drop(c);

        let err = cfg(&["--kernel", k, "--disk", "/nonexistent/d.img"]).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("--disk /nonexistent/d.img: cannot open read-write"));
        let odd = img("odd.img", 513);
        let err = cfg(&["--kernel", k, "--disk", odd.to_str().unwrap()]).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("size 513 bytes is not a multiple of 512"));
        let many: Vec<&str> = (0..=MAX_DISKS).flat_map(|_| ["--disk", "x"]).collect();
        let mut argv = vec!["--kernel", k];
        argv.extend(many);
        let err = cfg(&argv).unwrap_err();
        assert_eq!(err.to_string(), "disks: 9 given, at most 8 are supported");
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
        let c = cfg(&["--kernel", k, "--fs", &a, "--fs", &b]).unwrap();
        assert_eq!(c.fs.len(), 2);
        assert_eq!((c.fs[1].tag.as_str(), c.fs[1].queue_size), ("b", 128));
        let err = cfg(&["--kernel", k, "--fs", &a, "--fs", &a]).unwrap_err();
        assert!(err.to_string().ends_with("the tag is used twice"), "{err}");
        let err = cfg(&["--kernel", k, "--fs", "tag=x,socket=/nonexistent/s"]).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("--fs tag=x: socket /nonexistent/s:"));
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn hugepages_flag() {
        let kernel = tmp_file("kernel5");
        let k = kernel.to_str().unwrap();
        let c = cfg(&["--kernel", k]).unwrap();
        assert!(!c.hugepages);
        // An odd size is refused whatever the host's pool holds.
        let err = cfg(&["--kernel", k, "--hugepages", "--memory", "255"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "memory_mib 255: with hugepages it must be a multiple of 2 MiB"
        );
        // Whether 256 MiB fits depends on the host; either way the answer is clear.
        match cfg(&["--kernel", k, "--hugepages"]) {
            Ok(c) => assert!(c.hugepages),
            Err(e) => assert!(e.to_string().contains("hugepage"), "{e}"),
        }
        std::fs::remove_file(kernel).unwrap();
    }
}
