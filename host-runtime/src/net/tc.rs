//! Joining two links of a pod's netns both ways with tc, as Kata's
//! `tcfilter` model does: an ingress qdisc on each, and on it a u32
//! match-all filter whose mirred action redirects every frame to the other
//! link's egress. So whatever the CNI veth receives goes out through the tap
//! to the guest, and whatever the guest sends on the tap leaves through the
//! veth, without a bridge or an address on either link.

use std::path::Path;

use rtnetlink::packet_route::tc::TcHandle;
use rtnetlink::Handle;

use super::tap::{index_of, no_link, with_netlink};
use super::NetError;

/// The filter's priority (`tc ... pref 49152`, what `tc` picks by default).
const FILTER_PRIORITY: u16 = 0xc000;

/// Redirects every frame arriving on `a` to `b` and every frame arriving on
/// `b` to `a`, both links in the namespace at `netns`. On error nothing of
/// it is left.
pub fn redirect_both_ways(netns: &Path, a: &str, b: &str) -> Result<(), NetError> {
    with_netlink(netns, |handle| async move {
        let a_index = index_of(&handle, a)
            .await?
            .ok_or_else(|| no_link(a, netns))?;
        let b_index = index_of(&handle, b)
            .await?
            .ok_or_else(|| no_link(b, netns))?;
        let mut made = Vec::new();
        let mut joined = Ok(());
        for (from, from_index, to_index) in [(a, a_index, b_index), (b, b_index, a_index)] {
            if let Err(e) = add_ingress_qdisc(&handle, from, from_index).await {
                joined = Err(e);
                break;
            }
            made.push((from, from_index));
            if let Err(e) = add_redirect(&handle, from, from_index, to_index).await {
                joined = Err(e);
                break;
            }
        }
        if joined.is_err() {
            for (name, index) in made {
                if let Err(undo) = del_ingress_qdisc(&handle, name, index).await {
                    tracing::warn!(link = name, error = %undo, "cannot remove a half-made tc redirect");
                }
            }
        }
        joined
    })?;
    tracing::info!(netns = %netns.display(), a, b, "joined links with tc redirects");
    Ok(())
}

/// Removes what [`redirect_both_ways`] made (the ingress qdiscs of `a` and
/// `b`, their filters with them). Links or qdiscs already gone are fine.
pub fn remove_redirects(netns: &Path, a: &str, b: &str) -> Result<(), NetError> {
    with_netlink(netns, |handle| async move {
        let mut first_error = None;
        for name in [a, b] {
            let removed = match index_of(&handle, name).await {
                Ok(Some(index)) => del_ingress_qdisc(&handle, name, index).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

/// `tc qdisc add dev NAME ingress`.
async fn add_ingress_qdisc(handle: &Handle, name: &str, index: u32) -> Result<(), NetError> {
    handle
        .clone()
        .qdisc()
        .add(link_index(index, name)?)
        .ingress()
        .execute()
        .await
        .map_err(|source| NetError::Netlink {
            what: format!("adding an ingress qdisc to {name}"),
            source,
        })
}

/// `tc filter add dev NAME parent ffff: protocol all u32 match u8 0 0
/// action mirred egress redirect dev TO`.
async fn add_redirect(handle: &Handle, name: &str, index: u32, to: u32) -> Result<(), NetError> {
    let what = || format!("adding a redirect filter to {name}");
    handle
        .clone()
        .traffic_filter(link_index(index, name)?)
        .add()
        .parent(u32::from(TcHandle::INGRESS))
        .priority(FILTER_PRIORITY)
        // The kernel reads the protocol in network byte order.
        .protocol((libc::ETH_P_ALL as u16).to_be())
        .redirect(to)
        .map_err(|source| NetError::Netlink {
            what: what(),
            source,
        })?
        .execute()
        .await
        .map_err(|source| NetError::Netlink {
            what: what(),
            source,
        })
}

/// `tc qdisc del dev NAME ingress`; no such qdisc is fine.
async fn del_ingress_qdisc(handle: &Handle, name: &str, index: u32) -> Result<(), NetError> {
    let mut request = handle.clone().qdisc().del(link_index(index, name)?);
    let header = &mut request.message_mut().header;
    header.parent = TcHandle::INGRESS;
    header.handle = TcHandle::from(0xffff_0000);
    match request.execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(msg))
            if matches!(
                msg.to_io().raw_os_error(),
                Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        Err(source) => Err(NetError::Netlink {
            what: format!("removing the ingress qdisc of {name}"),
            source,
        }),
    }
}

fn link_index(index: u32, name: &str) -> Result<i32, NetError> {
    i32::try_from(index).map_err(|_| {
        NetError::sys(
            format!("link {name}"),
            std::io::Error::other(format!("index {index} out of range")),
        )
    })
}
