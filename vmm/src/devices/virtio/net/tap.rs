//! Opening the tap behind a virtio-net device: by name (optionally inside a
//! network namespace) or from a descriptor inherited from the parent.
//!
//! The tap ioctls are written by hand: vmm-sys-util has only the ioctl
//! macros, and the rust-vmm VMMs keep their tap code in crates that are not
//! published; libc has every constant and `ifreq`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::{debug, info};

use super::backend::{read_fd, writev_fd, Backend, FrameIo};
use super::header::HDR_LEN;
use super::spec::{NetSpec, TapSource};

/// Offloads probed at open: checksum plus TSO for IPv4 and IPv6.
const PROBE_OFFLOADS: u32 = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

/// Error opening a tap; the message names the `--net` value.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The netns file does not exist.
    #[error("--net {arg}: no such network namespace {}", path.display())]
    NoNetns {
        /// The `--net` value.
        arg: String,
        /// The netns path.
        path: PathBuf,
    },
    /// The netns path is not a network namespace.
    #[error("--net {arg}: {} is not a network namespace", path.display())]
    NotNetns {
        /// The `--net` value.
        arg: String,
        /// The netns path.
        path: PathBuf,
    },
    /// The tap is attached to another process.
    #[error("--net {arg}: tap {name} is busy (another process has it open)")]
    Busy {
        /// The `--net` value.
        arg: String,
        /// The tap name.
        name: String,
    },
    /// Not allowed to enter the netns or to open/create the tap.
    #[error("--net {arg}: no permission to {what} (needs CAP_NET_ADMIN{extra})")]
    Permission {
        /// The `--net` value.
        arg: String,
        /// What was refused.
        what: &'static str,
        /// Extra capability needed.
        extra: &'static str,
    },
    /// The name belongs to something that is not a single-queue tap.
    #[error("--net {arg}: {name} exists but is not a single-queue tap")]
    NotATap {
        /// The `--net` value.
        arg: String,
        /// The name.
        name: String,
    },
    /// An inherited fd is not an open tap as needed.
    #[error("--net {arg}: fd {fd} {reason}")]
    BadFd {
        /// The `--net` value.
        arg: String,
        /// The fd.
        fd: RawFd,
        /// What is wrong.
        reason: String,
    },
    /// Any other system call failure.
    #[error("--net {arg}: {what}: {source}")]
    Io {
        /// The `--net` value.
        arg: String,
        /// What failed.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// An open tap in IFF_TAP | IFF_NO_PI | IFF_VNET_HDR mode, non-blocking,
/// with a 12-byte (virtio 1.x) vnet header.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    offloads: bool,
}

fn ifreq_with_name(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    ifr
}

fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An ioctl on `fd` whose argument is a pointer; errno as io::Error.
fn ioctl_ptr<T>(fd: RawFd, req: libc::Ioctl, arg: *mut T) -> io::Result<()> {
    // SAFETY: every caller passes a request whose argument type is `T`,
    // and `arg` points at a live `T`.
    let rc = unsafe { libc::ioctl(fd, req, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An ioctl on `fd` whose argument is an integer passed by value.
fn ioctl_val(fd: RawFd, req: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the request takes its argument by value; no memory is shared.
    let rc = unsafe { libc::ioctl(fd, req, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Tap {
    /// Opens the tap a `--net` value names.
    pub fn open(spec: &NetSpec) -> Result<Tap, TapError> {
        let arg = spec.to_string();
        let arg = arg.as_str();
        let tap = match &spec.source {
            TapSource::Tap { name, netns: None } => open_by_name(arg, name)?,
            TapSource::Tap {
                name,
                netns: Some(ns),
            } => open_in_netns(arg, name, ns)?,
            TapSource::Fd(fd) => from_inherited_fd(arg, *fd)?,
        };
        tap.setup(arg)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Header size, non-blocking mode, and the offload probe.
    fn setup(mut self, arg: &str) -> Result<Tap, TapError> {
        let fd = self.file.as_raw_fd();
        let io_err = |what| {
            move |source| TapError::Io {
                arg: arg.to_string(),
                what,
                source,
            }
        };
        let mut hdr_len = HDR_LEN as libc::c_int;
        ioctl_ptr(fd, libc::TUNSETVNETHDRSZ, &mut hdr_len).map_err(io_err("TUNSETVNETHDRSZ"))?;
        set_nonblocking(fd).map_err(io_err("setting O_NONBLOCK"))?;
        // Offer offloads only if the tap takes them; start with none until
        // the guest acks the features (a driver without them must not get
        // GSO frames).
        self.offloads = ioctl_val(fd, libc::TUNSETOFFLOAD, PROBE_OFFLOADS.into()).is_ok();
        ioctl_val(fd, libc::TUNSETOFFLOAD, 0).map_err(io_err("TUNSETOFFLOAD"))?;
        info!(tap = %self.name, offloads = self.offloads, "net: tap ready");
        Ok(self)
    }
}

impl FrameIo for Tap {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_fd(&self.file, buf)
    }

    unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller.
        unsafe { writev_fd(&self.file, iov) }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl Backend for Tap {
    fn supports_offloads(&self) -> bool {
        self.offloads
    }

    fn set_offload(&self, tun_flags: u32) -> io::Result<()> {
        ioctl_val(self.file.as_raw_fd(), libc::TUNSETOFFLOAD, tun_flags.into())
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens /dev/net/tun and attaches to (or creates) tap `name` in the
/// calling thread's network namespace.
fn open_by_name(arg: &str, name: &str) -> Result<Tap, TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|source| TapError::Io {
            arg: arg.to_string(),
            what: "opening /dev/net/tun",
            source,
        })?;
    let mut ifr = ifreq_with_name(name);
    // IFF_ONE_QUEUE is left out: the kernel ignores it since 3.8.
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    if let Err(e) = ioctl_ptr(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) {
        return Err(match e.raw_os_error() {
            Some(libc::EBUSY) => TapError::Busy {
                arg: arg.to_string(),
                name: name.to_string(),
            },
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission {
                arg: arg.to_string(),
                what: "open or create the tap",
                extra: ", or being the tap's owner",
            },
            Some(libc::EINVAL) => TapError::NotATap {
                arg: arg.to_string(),
                name: name.to_string(),
            },
            _ => TapError::Io {
                arg: arg.to_string(),
                what: "TUNSETIFF",
                source: e,
            },
        });
    }
    debug!(tap = name, "net: attached to tap");
    Ok(Tap {
        file,
        name: ifreq_name(&ifr),
        offloads: false,
    })
}

/// Opens the tap inside the network namespace at `netns`, from a
/// short-lived thread that enters it, so every other thread of the VMM
/// stays in the host's namespace. The tap stays bound to that namespace.
fn open_in_netns(arg: &str, name: &str, netns: &Path) -> Result<Tap, TapError> {
    let ns = File::open(netns).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TapError::NoNetns {
            arg: arg.to_string(),
            path: netns.to_path_buf(),
        },
        _ => TapError::Io {
            arg: arg.to_string(),
            what: "opening the netns file",
            source,
        },
    })?;
    let enter_and_open = || -> Result<Tap, TapError> {
        // SAFETY: setns on an fd we own; it changes only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => TapError::NotNetns {
                    arg: arg.to_string(),
                    path: netns.to_path_buf(),
                },
                Some(libc::EPERM) => TapError::Permission {
                    arg: arg.to_string(),
                    what: "enter the network namespace",
                    extra: " and CAP_SYS_ADMIN",
                },
                _ => TapError::Io {
                    arg: arg.to_string(),
                    what: "setns",
                    source: e,
                },
            });
        }
        open_by_name(arg, name)
    };
    std::thread::scope(|s| {
        let handle = crate::threads::builder("net-netns")
            .spawn_scoped(s, enter_and_open)
            .map_err(|source| TapError::Io {
                arg: arg.to_string(),
                what: "starting the netns thread",
                source,
            })?;
        handle.join().unwrap_or_else(|_| {
            Err(TapError::Io {
                arg: arg.to_string(),
                what: "netns thread",
                source: io::Error::other("panicked"),
            })
        })
    })
}

/// Takes an open tap descriptor inherited from the parent. It must be a
/// tap opened with IFF_NO_PI and IFF_VNET_HDR.
fn from_inherited_fd(arg: &str, fd: RawFd) -> Result<Tap, TapError> {
    let bad = |reason: &str| TapError::BadFd {
        arg: arg.to_string(),
        fd,
        reason: reason.to_string(),
    };
    // SAFETY: F_GETFD only checks the descriptor; no memory involved.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad("is not open"));
    }
    let mut ifr = ifreq_with_name("");
    if ioctl_ptr(fd, libc::TUNGETIFF, &mut ifr).is_err() {
        return Err(bad("is not an attached tun/tap descriptor"));
    }
    // SAFETY: TUNGETIFF filled the flags member of the union.
    let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags });
    if flags & libc::IFF_TAP == 0 {
        return Err(bad("is a tun (layer 3) device, not a tap"));
    }
    if flags & libc::IFF_NO_PI == 0 || flags & libc::IFF_VNET_HDR == 0 {
        return Err(bad("was opened without IFF_NO_PI and IFF_VNET_HDR"));
    }
    // SAFETY: the fd is open, the command line hands it to us, and config
    // parsing rejects the same fd given twice, so nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: as F_GETFD above; inherited fds must not leak to children.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(Tap {
        file,
        name: ifreq_name(&ifr),
        offloads: false,
    })
}
