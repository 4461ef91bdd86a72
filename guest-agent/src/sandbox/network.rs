//! The pod's network in the guest's root network namespace, over rtnetlink:
//! links found by MAC, renamed, MTU, addresses, up, routes, permanent neighbours.
//!
//! Every change is journalled so a failure part-way can be undone.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourMessage;
use rtnetlink::packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::error::SandboxError;
use super::spec::{LinkRef, Mac, SandboxSpec, Scope};

/// One link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Kernel index.
    pub index: u32,
    /// Name now.
    pub name: String,
    /// MTU now.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Hardware address, if it has a 6-byte one.
    pub mac: Option<Mac>,
}

fn link_from(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        mac: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(bytes) => {
                link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(Mac);
            }
            _ => {}
        }
    }
    link
}

fn netlink(what: impl std::fmt::Display, err: rtnetlink::Error) -> SandboxError {
    let detail = match &err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io().to_string(),
        other => other.to_string(),
    };
    SandboxError::Internal(format!("{what}: {detail}"))
}

/// Opens an rtnetlink connection on the current runtime.
pub fn connect() -> Result<Handle, SandboxError> {
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|e| SandboxError::internal("open an rtnetlink socket", e))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Every link of the namespace.
pub async fn links(handle: &Handle) -> Result<Vec<Link>, SandboxError> {
    let mut stream = handle.link().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| netlink("list links", e))?
    {
        out.push(link_from(&msg));
    }
    Ok(out)
}

/// The request's links, found in the guest: checked before anything changes.
#[derive(Debug)]
pub struct Resolved {
    /// The link of each `interfaces[i]`.
    pub interfaces: Vec<Link>,
    /// Loopback, if present.
    pub lo: Option<Link>,
    /// The link index of each route (None: the kernel picks).
    route_links: Vec<Option<u32>>,
    /// The link index of each neighbour.
    neighbour_links: Vec<u32>,
}

fn find_ref(
    field: &str,
    link: &LinkRef,
    interfaces: &[Link],
    all: &[Link],
) -> Result<u32, SandboxError> {
    match link {
        LinkRef::Listed(i) => interfaces
            .get(*i)
            .map(|l| l.index)
            .ok_or_else(|| SandboxError::Internal(format!("{field}: bad interface reference"))),
        LinkRef::Name(name) => all
            .iter()
            .find(|l| &l.name == name)
            .map(|l| l.index)
            .ok_or_else(|| SandboxError::invalid(format!("{field}: no link named {name:?}"))),
    }
}

/// Finds every link the request names, so a missing one fails before any change.
pub async fn resolve(handle: &Handle, spec: &SandboxSpec) -> Result<Resolved, SandboxError> {
    let all = links(handle).await?;
    let mut interfaces = Vec::with_capacity(spec.interfaces.len());
    for (i, iface) in spec.interfaces.iter().enumerate() {
        let link = all
            .iter()
            .find(|l| l.mac == Some(iface.mac))
            .ok_or_else(|| {
                SandboxError::invalid(format!(
                    "interfaces[{i}].mac: no interface with MAC {}",
                    iface.mac
                ))
            })?;
        if let Some(name) = &iface.name {
            if let Some(other) = all
                .iter()
                .find(|l| &l.name == name && l.index != link.index)
            {
                let renamed_away = spec.interfaces.iter().any(|s| {
                    Some(s.mac) == other.mac && s.name.as_ref().is_some_and(|n| n != name)
                });
                if !renamed_away {
                    return Err(SandboxError::invalid(format!(
                        "interfaces[{i}].name: another link is already named {name:?}"
                    )));
                }
            }
        }
        interfaces.push(link.clone());
    }
    let route_links = spec
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.interface
                .as_ref()
                .map(|l| find_ref(&format!("routes[{i}].interface"), l, &interfaces, &all))
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    let neighbour_links = spec
        .neighbours
        .iter()
        .enumerate()
        .map(|(i, n)| {
            find_ref(
                &format!("neighbours[{i}].interface"),
                &n.interface,
                &interfaces,
                &all,
            )
        })
        .collect::<Result<_, _>>()?;
    let lo = all.iter().find(|l| l.name == "lo").cloned();
    Ok(Resolved {
        interfaces,
        lo,
        route_links,
        neighbour_links,
    })
}

/// A change made, and what reverses it.
#[derive(Debug)]
enum Change {
    /// A link's name, MTU and up state before the change.
    Link(Link),
    /// An address added.
    Address(AddressMessage),
    /// A route added.
    Route(RouteMessage),
    /// A neighbour entry added.
    Neighbour(NeighbourMessage),
}

/// The changes applied so far, newest last.
#[derive(Debug, Default)]
pub struct Journal(Vec<Change>);

impl Journal {
    /// Reverses every change, newest first; failures are logged, not returned.
    pub async fn undo(self, handle: &Handle) {
        for change in self.0.into_iter().rev() {
            let result = match change {
                Change::Neighbour(msg) => handle.neighbours().del(msg).execute().await,
                Change::Route(msg) => handle.route().del(msg).execute().await,
                Change::Address(msg) => handle.address().del(msg).execute().await,
                Change::Link(old) => restore_link(handle, &old).await,
            };
            if let Err(err) = result {
                tracing::warn!(error = %err, "undoing a network change failed");
            }
        }
    }
}

async fn restore_link(handle: &Handle, old: &Link) -> Result<(), rtnetlink::Error> {
    // Down first: a link can only be renamed while down.
    handle
        .link()
        .set(LinkUnspec::new_with_index(old.index).down().build())
        .execute()
        .await?;
    let mut restore = LinkUnspec::new_with_index(old.index)
        .name(old.name.clone())
        .mtu(old.mtu);
    if old.up {
        restore = restore.up();
    }
    handle.link().set(restore.build()).execute().await
}

/// Applies the network part of `spec`; on error the journal holds what was done.
pub async fn apply(
    handle: &Handle,
    spec: &SandboxSpec,
    resolved: &Resolved,
    journal: &mut Journal,
) -> Result<(), SandboxError> {
    if let Some(lo) = resolved.lo.as_ref().filter(|lo| !lo.up) {
        journal.0.push(Change::Link(lo.clone()));
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo.index).up().build())
            .execute()
            .await
            .map_err(|e| netlink("bring lo up", e))?;
    }
    for (i, (iface, link)) in spec.interfaces.iter().zip(&resolved.interfaces).enumerate() {
        journal.0.push(Change::Link(link.clone()));
        if iface.name.as_ref().is_some_and(|n| n != &link.name) && link.up {
            handle
                .link()
                .set(LinkUnspec::new_with_index(link.index).down().build())
                .execute()
                .await
                .map_err(|e| netlink(format!("interfaces[{i}]: set down for the rename"), e))?;
        }
        let mut change = LinkUnspec::new_with_index(link.index);
        if let Some(name) = &iface.name {
            change = change.name(name.clone());
        }
        if let Some(mtu) = iface.mtu {
            change = change.mtu(mtu);
        }
        handle
            .link()
            .set(change.build())
            .execute()
            .await
            .map_err(|e| netlink(format!("interfaces[{i}]: set name/mtu"), e))?;
        for (j, addr) in iface.addresses.iter().enumerate() {
            let mut request = handle.address().add(link.index, addr.ip(), addr.prefix());
            // The host side already owns these addresses; duplicate detection would
            // only delay them (IPv6 stays "tentative" for a second or more).
            if addr.is_ipv6() {
                request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            }
            let message = request.message_mut().clone();
            request
                .execute()
                .await
                .map_err(|e| netlink(format!("interfaces[{i}].addresses[{j}] {addr}"), e))?;
            journal.0.push(Change::Address(message));
        }
        handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).up().build())
            .execute()
            .await
            .map_err(|e| netlink(format!("interfaces[{i}]: set up"), e))?;
    }
    for (i, (route, link)) in spec.routes.iter().zip(&resolved.route_links).enumerate() {
        let message = route_message(route, *link)
            .map_err(|e| SandboxError::invalid(format!("routes[{i}]: {e}")))?;
        handle
            .route()
            .add(message.clone())
            .execute()
            .await
            .map_err(|e| netlink(format!("routes[{i}] {}", route.destination), e))?;
        journal.0.push(Change::Route(message));
    }
    for (i, (neigh, index)) in spec
        .neighbours
        .iter()
        .zip(&resolved.neighbour_links)
        .enumerate()
    {
        let mut request = handle
            .neighbours()
            .add(*index, neigh.ip)
            .link_layer_address(&neigh.mac.0);
        let message = request.message_mut().clone();
        request
            .execute()
            .await
            .map_err(|e| netlink(format!("neighbours[{i}] {}", neigh.ip), e))?;
        journal.0.push(Change::Neighbour(message));
    }
    Ok(())
}

fn route_message(
    route: &super::spec::RouteSpec,
    link: Option<u32>,
) -> Result<RouteMessage, String> {
    // The builder's error type is not exported, so it is carried as text.
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.destination.ip(), route.destination.prefix())
        .map_err(|e| e.to_string())?;
    if let Some(gw) = route.gateway {
        builder = builder.gateway(gw).map_err(|e| e.to_string())?;
    }
    if let Some(index) = link {
        builder = builder.output_interface(index);
    }
    if route.metric != 0 {
        builder = builder.priority(route.metric);
    }
    builder = builder.scope(match route.scope {
        Scope::Universe => RouteScope::Universe,
        Scope::Link => RouteScope::Link,
        Scope::Host => RouteScope::Host,
    });
    Ok(builder.build())
}
