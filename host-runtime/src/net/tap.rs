//! A persistent tap device inside a pod's network namespace, with the pod's
//! gateway address on it. The VMM later attaches to it by name.
//!
//! The tap is made with the tun driver's ioctls: the kernel does not create
//! tun/tap links over rtnetlink. Addresses and link state use rtnetlink.

use std::fs::OpenOptions;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use super::netns::run_in;
use super::NetError;

/// Longest link name the kernel takes (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
nix::ioctl_write_int_bad!(tun_set_persist, libc::TUNSETPERSIST);

/// Packets through a tap, as the host sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapCounters {
    /// Packets the host received from the guest.
    pub rx_packets: u64,
    /// Packets the host sent to the guest.
    pub tx_packets: u64,
}

/// Checks that `name` can name a link.
pub fn validate_name(name: &str) -> Result<(), NetError> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Some("contains '/', ':', a space or a control character")
    } else {
        None
    };
    NetError::check_name("tap", name, why)
}

/// Creates the persistent tap `name` in the namespace at `netns`, gives it
/// `addr/prefix` and brings it and the namespace's loopback up.
pub fn create(netns: &Path, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
    create_with(netns, name, Some((addr, prefix)))
}

/// Creates the persistent tap `name` in the namespace at `netns` without an
/// address (for a tap joined to a CNI interface with [`super::tc`]) and
/// brings it and the namespace's loopback up.
pub fn create_unaddressed(netns: &Path, name: &str) -> Result<(), NetError> {
    create_with(netns, name, None)
}

fn create_with(netns: &Path, name: &str, addr: Option<(Ipv4Addr, u8)>) -> Result<(), NetError> {
    validate_name(name)?;
    run_in(netns, || make_persistent_tap(name))?;
    let configured = with_netlink(netns, |handle| async move {
        let lo = index_of(&handle, "lo")
            .await?
            .ok_or_else(|| no_link("lo", netns))?;
        set_up(&handle, lo, "lo").await?;
        let tap = index_of(&handle, name)
            .await?
            .ok_or_else(|| no_link(name, netns))?;
        if let Some((addr, prefix)) = addr {
            handle
                .address()
                .add(tap, IpAddr::V4(addr), prefix)
                .execute()
                .await
                .map_err(|source| NetError::Netlink {
                    what: format!("adding {addr}/{prefix} to {name}"),
                    source,
                })?;
        }
        set_up(&handle, tap, name).await
    });
    if let Err(e) = configured {
        // The tap is persistent: without this it would outlive the error.
        if let Err(undo) = delete(netns, name) {
            tracing::warn!(tap = name, error = %undo, "cannot remove the half-made tap");
        }
        return Err(e);
    }
    match addr {
        Some((addr, prefix)) => {
            tracing::info!(tap = name, netns = %netns.display(), %addr, prefix, "created tap")
        }
        None => tracing::info!(tap = name, netns = %netns.display(), "created tap"),
    }
    Ok(())
}

/// Removes tap `name` from `netns`; a tap that is already gone is fine.
pub fn delete(netns: &Path, name: &str) -> Result<(), NetError> {
    with_netlink(netns, |handle| async move {
        let Some(index) = index_of(&handle, name).await? else {
            return Ok(());
        };
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|source| NetError::Netlink {
                what: format!("deleting {name}"),
                source,
            })
    })
}

/// The tap's packet counters.
pub fn counters(netns: &Path, name: &str) -> Result<TapCounters, NetError> {
    with_netlink(netns, |handle| async move {
        let link = get_link(&handle, name)
            .await?
            .ok_or_else(|| no_link(name, netns))?;
        let mut counters = TapCounters::default();
        for attr in link.attributes {
            if let LinkAttribute::Stats64(stats) = attr {
                counters.rx_packets = stats.rx_packets;
                counters.tx_packets = stats.tx_packets;
            }
        }
        Ok(counters)
    })
}

/// Creates the tap with the tun driver and makes it outlive our descriptor.
/// Runs inside the namespace: a tap is created in its caller's.
fn make_persistent_tap(name: &str) -> Result<(), NetError> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| NetError::sys("opening /dev/net/tun (is the tun module loaded?)", e))?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // The flags vessel-vmm attaches with.
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq; ifr lives across the call and its name is NUL-terminated
    // (validate_name keeps it under IFNAMSIZ).
    unsafe { tun_set_iff(tun.as_raw_fd(), &ifr) }
        .map_err(|e| NetError::sys(format!("creating tap {name} (TUNSETIFF)"), e))?;
    // SAFETY: TUNSETPERSIST takes an integer argument.
    unsafe { tun_set_persist(tun.as_raw_fd(), 1) }
        .map_err(|e| NetError::sys(format!("making tap {name} persistent"), e))?;
    Ok(())
}

/// Runs `f` with an rtnetlink handle whose socket lives in `netns` (a socket
/// stays in the namespace it was made in), on a small runtime of its own.
pub(super) fn with_netlink<T, F, Fut>(netns: &Path, f: F) -> Result<T, NetError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, NetError>>,
{
    run_in(netns, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| NetError::sys("starting a runtime for rtnetlink", e))?;
        runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()
                .map_err(|e| NetError::sys("opening an rtnetlink socket", e))?;
            tokio::spawn(connection);
            f(handle).await
        })
    })
}

async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(msg))
            if msg.to_io().raw_os_error() == Some(libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(source) => Err(NetError::Netlink {
            what: format!("looking up link {name}"),
            source,
        }),
    }
}

pub(super) async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    Ok(get_link(handle, name).await?.map(|link| link.header.index))
}

async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), NetError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|source| NetError::Netlink {
            what: format!("setting {name} up"),
            source,
        })
}

pub(super) fn no_link(name: &str, netns: &Path) -> NetError {
    NetError::NoLink {
        name: name.to_string(),
        netns: netns.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_follow_the_kernel_rules() {
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["tap0", "fifteen-chars-x"] {
            assert!(validate_name(good).is_ok(), "{good:?} refused");
        }
    }
}
