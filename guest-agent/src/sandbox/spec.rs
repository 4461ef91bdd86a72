//! Checking a `Setup` request before anything is applied, so bad input gets a
//! status that names the field and leaves the guest untouched.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use ipnetwork::IpNetwork;

use super::error::SandboxError;
use crate::container::validate_id;
use crate::proto::{self, SetupSandboxRequest};

/// Most entries accepted per list; real pods have a handful.
const MAX_INTERFACES: usize = 16;
const MAX_ADDRESSES: usize = 64;
const MAX_ROUTES: usize = 512;
const MAX_NEIGHBOURS: usize = 512;
const MAX_HOSTS: usize = 1024;
const MAX_SYSCTLS: usize = 256;
const MAX_MOUNTS: usize = 32;
const MAX_DNS_ENTRIES: usize = 32;
/// Longest value of a sysctl, a DNS word or a host name.
const MAX_WORD: usize = 4096;
/// Longest interface name the kernel takes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
/// Longest hostname (HOST_NAME_MAX).
const MAX_HOSTNAME: usize = 64;

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `aa:bb:cc:dd:ee:ff` (or with '-'), any case.
    pub fn parse(value: &str) -> Option<Self> {
        let mut bytes = [0u8; 6];
        let mut parts = value.split([':', '-']);
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Self(bytes))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Which link a route or neighbour uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkRef {
    /// The interface at this index of the request.
    Listed(usize),
    /// A link that exists under this name and is not in the request.
    Name(String),
}

/// Which namespace a sysctl lives in, so it is written from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysctlScope {
    /// `net.*`: the guest's root network namespace, the pod's.
    Net,
    /// The IPC ones: written from inside the pod's IPC namespace.
    Ipc,
}

/// One validated sysctl.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// The key with '.' separators, as the request names it.
    pub key: String,
    /// Its file under /proc/sys.
    pub path: PathBuf,
    /// The value written.
    pub value: String,
    /// Where it is written from.
    pub scope: SysctlScope,
}

/// One validated interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// Selects the link.
    pub mac: Mac,
    /// New name, if any.
    pub name: Option<String>,
    /// Addresses to add.
    pub addresses: Vec<IpNetwork>,
    /// MTU to set, if any.
    pub mtu: Option<u32>,
}

/// Route scope, resolved from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Anywhere.
    Universe,
    /// On the link.
    Link,
    /// This host.
    Host,
}

/// One validated route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix (0/0 for default).
    pub destination: IpNetwork,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output link.
    pub interface: Option<LinkRef>,
    /// Metric, 0 for the kernel default.
    pub metric: u32,
    /// Scope.
    pub scope: Scope,
}

/// One validated neighbour entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourSpec {
    /// Its IP.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: Mac,
    /// The link.
    pub interface: LinkRef,
}

/// One validated virtio-fs mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// Device tag.
    pub tag: String,
    /// Where it goes.
    pub mount_point: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// A validated `Setup` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSpec {
    /// Sandbox id.
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// resolv.conf content.
    pub resolv_conf: String,
    /// hosts file content.
    pub hosts: String,
    /// Sysctls, sorted by key.
    pub sysctls: Vec<Sysctl>,
    /// Interfaces, in request order.
    pub interfaces: Vec<InterfaceSpec>,
    /// Routes, in request order.
    pub routes: Vec<RouteSpec>,
    /// Neighbour entries.
    pub neighbours: Vec<NeighbourSpec>,
    /// virtio-fs mounts.
    pub mounts: Vec<MountSpec>,
    /// One pid namespace for the pod.
    pub share_pid: bool,
}

fn invalid(message: impl Into<String>) -> SandboxError {
    SandboxError::invalid(message)
}

fn at_most<T>(field: &str, list: &[T], max: usize) -> Result<(), SandboxError> {
    if list.len() > max {
        return Err(invalid(format!("{field}: more than {max} entries")));
    }
    Ok(())
}

/// A resolver or hosts-file word: printable, no whitespace, bounded.
fn word(field: &str, value: &str) -> Result<(), SandboxError> {
    if value.is_empty() || value.len() > MAX_WORD {
        return Err(invalid(format!("{field}: must be 1 to {MAX_WORD} bytes")));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "{field} {value:?}: only printable ASCII without spaces"
        )));
    }
    Ok(())
}

/// RFC 1123 host name: dot-separated labels of [A-Za-z0-9-], not starting or ending with '-'.
fn host_name(field: &str, value: &str, max: usize) -> Result<(), SandboxError> {
    let labels_ok = value.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if value.is_empty() || value.len() > max || !labels_ok {
        return Err(invalid(format!(
            "{field} {value:?} is not a valid host name (RFC 1123, at most {max} bytes)"
        )));
    }
    Ok(())
}

fn ip(field: &str, value: &str) -> Result<IpAddr, SandboxError> {
    value
        .parse()
        .map_err(|_| invalid(format!("{field} {value:?} is not an IP address")))
}

fn mac(field: &str, value: &str) -> Result<Mac, SandboxError> {
    Mac::parse(value).ok_or_else(|| invalid(format!("{field} {value:?} is not a MAC address")))
}

fn cidr(field: &str, value: &str) -> Result<IpNetwork, SandboxError> {
    // ipnetwork accepts a bare address as a host prefix; the API asks for an explicit length.
    if !value.contains('/') {
        return Err(invalid(format!(
            "{field} {value:?} is not in CIDR notation (address/prefix)"
        )));
    }
    value
        .parse()
        .map_err(|_| invalid(format!("{field} {value:?} is not in CIDR notation")))
}

/// A link name as the kernel accepts it.
fn if_name(field: &str, value: &str) -> Result<(), SandboxError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_IFNAME
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !ok {
        return Err(invalid(format!(
            "{field} {value:?} is not a valid interface name (1 to {MAX_IFNAME} bytes, no '/', ':' or spaces)"
        )));
    }
    Ok(())
}

fn render_resolv_conf(dns: Option<&proto::Dns>) -> Result<String, SandboxError> {
    let mut out = String::new();
    let Some(dns) = dns else {
        return Ok(out);
    };
    at_most("dns.nameservers", &dns.nameservers, MAX_DNS_ENTRIES)?;
    at_most("dns.searches", &dns.searches, MAX_DNS_ENTRIES)?;
    at_most("dns.options", &dns.options, MAX_DNS_ENTRIES)?;
    for (i, server) in dns.nameservers.iter().enumerate() {
        let addr = ip(&format!("dns.nameservers[{i}]"), server)?;
        out.push_str(&format!("nameserver {addr}\n"));
    }
    for (i, search) in dns.searches.iter().enumerate() {
        word(&format!("dns.searches[{i}]"), search)?;
    }
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for (i, option) in dns.options.iter().enumerate() {
        word(&format!("dns.options[{i}]"), option)?;
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(out)
}

/// The localhost lines every hosts file starts with.
const HOSTS_HEADER: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

fn render_hosts(entries: &[proto::HostEntry]) -> Result<String, SandboxError> {
    at_most("hosts", entries, MAX_HOSTS)?;
    let mut out = String::from(HOSTS_HEADER);
    for (i, entry) in entries.iter().enumerate() {
        let addr = ip(&format!("hosts[{i}].ip"), &entry.ip)?;
        if entry.names.is_empty() {
            return Err(invalid(format!("hosts[{i}].names is empty")));
        }
        at_most(&format!("hosts[{i}].names"), &entry.names, MAX_DNS_ENTRIES)?;
        for (j, name) in entry.names.iter().enumerate() {
            host_name(&format!("hosts[{i}].names[{j}]"), name, 253)?;
        }
        out.push_str(&format!("{addr}\t{}\n", entry.names.join(" ")));
    }
    Ok(out)
}

/// Whether a dotted key is an IPC sysctl (namespaced by the IPC namespace).
fn is_ipc_sysctl(key: &str) -> bool {
    matches!(
        key,
        "kernel.shmmax"
            | "kernel.shmall"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
            | "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
    ) || key.starts_with("fs.mqueue.")
}

fn sysctl(key: &str, value: &str) -> Result<Sysctl, SandboxError> {
    // Kubernetes allows '/' as the separator too.
    let dotted = key.replace('/', ".");
    let parts_ok = dotted.split('.').all(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !parts_ok || dotted.len() > 256 {
        return Err(invalid(format!("sysctls[{key:?}]: malformed key")));
    }
    let scope = if dotted.starts_with("net.") {
        SysctlScope::Net
    } else if is_ipc_sysctl(&dotted) {
        SysctlScope::Ipc
    } else {
        return Err(invalid(format!(
            "sysctls[{key:?}]: not a namespaced sysctl (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)"
        )));
    };
    if value.is_empty() || value.len() > MAX_WORD || value.contains(['\n', '\0']) {
        return Err(invalid(format!(
            "sysctls[{key:?}]: value must be 1 to {MAX_WORD} bytes on one line"
        )));
    }
    let path = Path::new("/proc/sys").join(dotted.replace('.', "/"));
    Ok(Sysctl {
        key: dotted,
        path,
        value: value.to_owned(),
        scope,
    })
}

fn sysctls(map: &std::collections::HashMap<String, String>) -> Result<Vec<Sysctl>, SandboxError> {
    if map.len() > MAX_SYSCTLS {
        return Err(invalid(format!("sysctls: more than {MAX_SYSCTLS} entries")));
    }
    // Sorted, so the order (and the first error reported) does not depend on the map.
    let sorted: BTreeMap<&String, &String> = map.iter().collect();
    sorted.into_iter().map(|(k, v)| sysctl(k, v)).collect()
}

fn interfaces(list: &[proto::Interface]) -> Result<Vec<InterfaceSpec>, SandboxError> {
    at_most("interfaces", list, MAX_INTERFACES)?;
    let mut out: Vec<InterfaceSpec> = Vec::with_capacity(list.len());
    for (i, iface) in list.iter().enumerate() {
        let mac = mac(&format!("interfaces[{i}].mac"), &iface.mac)?;
        if out.iter().any(|o| o.mac == mac) {
            return Err(invalid(format!(
                "interfaces[{i}].mac {mac} is listed twice"
            )));
        }
        let name = if iface.name.is_empty() {
            None
        } else {
            if_name(&format!("interfaces[{i}].name"), &iface.name)?;
            if out.iter().any(|o| o.name.as_deref() == Some(&iface.name)) {
                return Err(invalid(format!(
                    "interfaces[{i}].name {:?} is used twice",
                    iface.name
                )));
            }
            Some(iface.name.clone())
        };
        at_most(
            &format!("interfaces[{i}].addresses"),
            &iface.addresses,
            MAX_ADDRESSES,
        )?;
        let addresses = iface
            .addresses
            .iter()
            .enumerate()
            .map(|(j, a)| cidr(&format!("interfaces[{i}].addresses[{j}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let mtu = match iface.mtu {
            0 => None,
            mtu @ 68..=65535 => Some(mtu),
            mtu => {
                return Err(invalid(format!(
                    "interfaces[{i}].mtu {mtu} is outside 68..=65535"
                )))
            }
        };
        out.push(InterfaceSpec {
            mac,
            name,
            addresses,
            mtu,
        });
    }
    Ok(out)
}

/// Resolves a route's or neighbour's `interface` field against the request.
fn link_ref(
    field: &str,
    value: &str,
    interfaces: &[InterfaceSpec],
) -> Result<LinkRef, SandboxError> {
    if let Some(mac) = Mac::parse(value) {
        return interfaces
            .iter()
            .position(|i| i.mac == mac)
            .map(LinkRef::Listed)
            .ok_or_else(|| invalid(format!("{field}: MAC {mac} is not in interfaces")));
    }
    if_name(field, value)?;
    Ok(interfaces
        .iter()
        .position(|i| i.name.as_deref() == Some(value))
        .map_or_else(|| LinkRef::Name(value.to_owned()), LinkRef::Listed))
}

fn default_route(gateway: Option<IpAddr>) -> IpNetwork {
    let unspecified = match gateway {
        Some(IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    // A zero-length prefix is always valid.
    IpNetwork::new(unspecified, 0).unwrap_or(IpNetwork::V4(ipnetwork::Ipv4Network::from(
        std::net::Ipv4Addr::UNSPECIFIED,
    )))
}

fn is_ipv6_link_local(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

fn routes(
    list: &[proto::Route],
    interfaces: &[InterfaceSpec],
) -> Result<Vec<RouteSpec>, SandboxError> {
    at_most("routes", list, MAX_ROUTES)?;
    let mut out: Vec<RouteSpec> = Vec::with_capacity(list.len());
    for (i, route) in list.iter().enumerate() {
        let gateway = if route.gateway.is_empty() {
            None
        } else {
            Some(ip(&format!("routes[{i}].gateway"), &route.gateway)?)
        };
        let destination = if route.destination == "default" {
            default_route(gateway)
        } else {
            cidr(&format!("routes[{i}].destination"), &route.destination)?
        };
        if let Some(gw) = gateway {
            if gw.is_ipv4() != destination.is_ipv4() {
                return Err(invalid(format!(
                    "routes[{i}].gateway {gw} is not of the destination's family"
                )));
            }
        }
        let interface = if route.interface.is_empty() {
            None
        } else {
            Some(link_ref(
                &format!("routes[{i}].interface"),
                &route.interface,
                interfaces,
            )?)
        };
        if gateway.is_none() && interface.is_none() {
            return Err(invalid(format!(
                "routes[{i}]: needs a gateway or an interface"
            )));
        }
        let scope = match proto::RouteScope::try_from(route.scope) {
            Ok(proto::RouteScope::Unspecified) if gateway.is_some() => Scope::Universe,
            Ok(proto::RouteScope::Unspecified | proto::RouteScope::Link) => Scope::Link,
            Ok(proto::RouteScope::Universe) => Scope::Universe,
            Ok(proto::RouteScope::Host) => Scope::Host,
            Err(_) => {
                return Err(invalid(format!(
                    "routes[{i}].scope {} is not a RouteScope",
                    route.scope
                )))
            }
        };
        if let Some(gw) = gateway {
            check_reachable(i, gw, interface.as_ref(), interfaces, &out)?;
        }
        out.push(RouteSpec {
            destination,
            gateway,
            interface,
            metric: route.metric,
            scope,
        });
    }
    Ok(out)
}

/// A gateway must be on a link: in a prefix of the request's addresses (on the
/// route's interface when it names one), in an earlier gateway-less route, or
/// IPv6 link-local. Catches typos that the kernel would report as a bare ENETUNREACH.
fn check_reachable(
    i: usize,
    gw: IpAddr,
    interface: Option<&LinkRef>,
    interfaces: &[InterfaceSpec],
    earlier: &[RouteSpec],
) -> Result<(), SandboxError> {
    if is_ipv6_link_local(gw) {
        return Ok(());
    }
    let on_interface = interfaces.iter().enumerate().any(|(n, iface)| {
        let same_link = match interface {
            Some(LinkRef::Listed(k)) => *k == n,
            Some(LinkRef::Name(_)) => false,
            None => true,
        };
        same_link && iface.addresses.iter().any(|a| a.contains(gw))
    });
    let via_link_route = earlier
        .iter()
        .any(|r| r.gateway.is_none() && r.destination.contains(gw));
    if on_interface || via_link_route || matches!(interface, Some(LinkRef::Name(_))) {
        return Ok(());
    }
    Err(invalid(format!(
        "routes[{i}].gateway {gw} is not reachable: no address prefix or earlier link route contains it"
    )))
}

fn neighbours(
    list: &[proto::Neighbour],
    interfaces: &[InterfaceSpec],
) -> Result<Vec<NeighbourSpec>, SandboxError> {
    at_most("neighbours", list, MAX_NEIGHBOURS)?;
    list.iter()
        .enumerate()
        .map(|(i, n)| {
            Ok(NeighbourSpec {
                ip: ip(&format!("neighbours[{i}].ip"), &n.ip)?,
                mac: mac(&format!("neighbours[{i}].mac"), &n.mac)?,
                interface: link_ref(
                    &format!("neighbours[{i}].interface"),
                    &n.interface,
                    interfaces,
                )?,
            })
        })
        .collect()
}

fn mounts(list: &[proto::SharedMount]) -> Result<Vec<MountSpec>, SandboxError> {
    at_most("mounts", list, MAX_MOUNTS)?;
    let mut out: Vec<MountSpec> = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        // The kernel's virtio-fs tag is at most 36 bytes.
        if m.tag.is_empty() || m.tag.len() > 36 || !m.tag.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(format!(
                "mounts[{i}].tag {:?} must be 1 to 36 printable bytes",
                m.tag
            )));
        }
        let path = PathBuf::from(&m.mount_point);
        let clean = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let reserved = ["/proc", "/sys", "/dev", "/run/vessel"]
            .iter()
            .any(|r| path.starts_with(r));
        if !clean || path == Path::new("/") || reserved {
            return Err(invalid(format!(
                "mounts[{i}].mount_point {:?} must be an absolute path without '..', not / or under /proc, /sys, /dev, /run/vessel",
                m.mount_point
            )));
        }
        if out.iter().any(|o| o.mount_point == path) {
            return Err(invalid(format!(
                "mounts[{i}].mount_point {:?} is used twice",
                m.mount_point
            )));
        }
        out.push(MountSpec {
            tag: m.tag.clone(),
            mount_point: path,
            read_only: m.read_only,
        });
    }
    Ok(out)
}

impl SandboxSpec {
    /// Validates every field of `req` that can be checked without looking at the guest.
    pub fn from_request(req: &SetupSandboxRequest) -> Result<Self, SandboxError> {
        validate_id(&req.sandbox_id)
            .map_err(|e| invalid(e.to_string().replace("container_id", "sandbox_id")))?;
        host_name("hostname", &req.hostname, MAX_HOSTNAME)?;
        let interfaces = interfaces(&req.interfaces)?;
        Ok(Self {
            id: req.sandbox_id.clone(),
            hostname: req.hostname.clone(),
            resolv_conf: render_resolv_conf(req.dns.as_ref())?,
            hosts: render_hosts(&req.hosts)?,
            sysctls: sysctls(&req.sysctls)?,
            routes: routes(&req.routes, &interfaces)?,
            neighbours: neighbours(&req.neighbours, &interfaces)?,
            interfaces,
            mounts: mounts(&req.mounts)?,
            share_pid: req.share_pid_namespace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SetupSandboxRequest {
        SetupSandboxRequest {
            sandbox_id: "pod-1".into(),
            hostname: "web-0".into(),
            dns: Some(proto::Dns {
                nameservers: vec!["10.96.0.10".into()],
                searches: vec!["default.svc.cluster.local".into(), "cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            hosts: vec![proto::HostEntry {
                ip: "10.0.0.2".into(),
                names: vec!["web-0".into(), "web-0.web".into()],
            }],
            sysctls: [("net.ipv4.ip_forward".into(), "1".into())].into(),
            interfaces: vec![proto::Interface {
                mac: "02:00:00:00:00:01".into(),
                name: "eth0".into(),
                addresses: vec!["10.0.0.2/24".into(), "fd00::2/64".into()],
                mtu: 1450,
            }],
            routes: vec![
                proto::Route {
                    destination: "default".into(),
                    gateway: "10.0.0.1".into(),
                    ..Default::default()
                },
                proto::Route {
                    destination: "default".into(),
                    gateway: "fd00::1".into(),
                    interface: "eth0".into(),
                    ..Default::default()
                },
            ],
            neighbours: vec![proto::Neighbour {
                ip: "10.0.0.1".into(),
                mac: "02:00:00:00:00:fe".into(),
                interface: "02:00:00:00:00:01".into(),
            }],
            mounts: vec![proto::SharedMount {
                tag: "pod".into(),
                mount_point: "/run/pod".into(),
                read_only: false,
            }],
            share_pid_namespace: false,
        }
    }

    fn rejected(req: &SetupSandboxRequest, field: &str) {
        match SandboxSpec::from_request(req) {
            Err(SandboxError::InvalidArgument(m)) => assert!(m.contains(field), "{m}"),
            other => panic!("expected InvalidArgument naming {field}, got {other:?}"),
        }
    }

    #[test]
    fn a_full_request_is_accepted_and_rendered() {
        let spec = SandboxSpec::from_request(&request()).expect("valid");
        assert_eq!(
            spec.resolv_conf,
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        assert!(spec.hosts.starts_with(HOSTS_HEADER));
        assert!(spec.hosts.ends_with("10.0.0.2\tweb-0 web-0.web\n"));
        assert_eq!(
            spec.sysctls[0].path,
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(spec.routes[0].destination.to_string(), "0.0.0.0/0");
        assert_eq!(spec.routes[0].scope, Scope::Universe);
        assert_eq!(spec.routes[1].destination.to_string(), "::/0");
        assert_eq!(spec.routes[1].interface, Some(LinkRef::Listed(0)));
        assert_eq!(spec.neighbours[0].interface, LinkRef::Listed(0));
        assert_eq!(spec.interfaces[0].mtu, Some(1450));
    }

    #[test]
    fn macs() {
        assert_eq!(
            Mac::parse("02:AB:00:00:00:01"),
            Some(Mac([2, 0xab, 0, 0, 0, 1]))
        );
        assert_eq!(Mac([2, 0xab, 0, 0, 0, 1]).to_string(), "02:ab:00:00:00:01");
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "2:0:0:0:0:1",
            "zz:00:00:00:00:01",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut r = request();
        r.interfaces[0].mac = "nope".into();
        rejected(&r, "interfaces[0].mac");
        let mut r = request();
        r.interfaces[0].addresses[1] = "10.0.0.300/24".into();
        rejected(&r, "interfaces[0].addresses[1]");
        let mut r = request();
        r.interfaces[0].addresses[0] = "10.0.0.2".into();
        rejected(&r, "interfaces[0].addresses[0]");
        let mut r = request();
        r.interfaces[0].mtu = 20;
        rejected(&r, "interfaces[0].mtu");
        let mut r = request();
        r.interfaces[0].name = "a/b".into();
        rejected(&r, "interfaces[0].name");
        let mut r = request();
        r.hostname = "-bad".into();
        rejected(&r, "hostname");
        let mut r = request();
        r.sandbox_id = "../x".into();
        rejected(&r, "sandbox_id");
        let mut r = request();
        r.sysctls = [("kernel.panic".into(), "1".into())].into();
        rejected(&r, "kernel.panic");
        let mut r = request();
        r.sysctls = [("net.ipv4.ip_forward".into(), "1\n2".into())].into();
        rejected(&r, "net.ipv4.ip_forward");
        let mut r = request();
        r.routes[0].gateway = "192.168.9.1".into();
        rejected(&r, "routes[0].gateway");
        let mut r = request();
        r.routes[0].gateway = "fd00::1".into();
        r.routes[0].destination = "10.1.0.0/16".into();
        rejected(&r, "routes[0].gateway");
        let mut r = request();
        r.routes[1].interface = "02:00:00:00:00:99".into();
        rejected(&r, "routes[1].interface");
        let mut r = request();
        r.neighbours[0].mac = "x".into();
        rejected(&r, "neighbours[0].mac");
        let mut r = request();
        r.dns = Some(proto::Dns {
            nameservers: vec!["dns.example".into()],
            ..Default::default()
        });
        rejected(&r, "dns.nameservers[0]");
        let mut r = request();
        r.hosts[0].names.clear();
        rejected(&r, "hosts[0].names");
        let mut r = request();
        r.mounts[0].mount_point = "/proc/x".into();
        rejected(&r, "mounts[0].mount_point");
        let mut r = request();
        r.mounts[0].mount_point = "/a/../b".into();
        rejected(&r, "mounts[0].mount_point");
        let mut r = request();
        r.mounts[0].tag = String::new();
        rejected(&r, "mounts[0].tag");
    }

    #[test]
    fn gateways_behind_link_routes_are_reachable() {
        // Calico style: a /32 address and a gateway reached through a link route.
        let mut r = request();
        r.interfaces[0].addresses = vec!["10.1.2.3/32".into()];
        r.routes = vec![
            proto::Route {
                destination: "169.254.1.1/32".into(),
                interface: "eth0".into(),
                ..Default::default()
            },
            proto::Route {
                destination: "default".into(),
                gateway: "169.254.1.1".into(),
                interface: "eth0".into(),
                ..Default::default()
            },
        ];
        r.neighbours.clear();
        let spec = SandboxSpec::from_request(&r).expect("valid");
        assert_eq!(spec.routes[0].scope, Scope::Link);
    }

    #[test]
    fn ipc_sysctls_and_slash_keys() {
        let mut r = request();
        r.sysctls = [
            ("kernel/shmmax".into(), "1000000".into()),
            ("fs.mqueue.msg_max".into(), "20".into()),
        ]
        .into();
        let spec = SandboxSpec::from_request(&r).expect("valid");
        assert_eq!(spec.sysctls[0].key, "fs.mqueue.msg_max");
        assert_eq!(spec.sysctls[1].key, "kernel.shmmax");
        assert!(spec.sysctls.iter().all(|s| s.scope == SysctlScope::Ipc));
    }
}
