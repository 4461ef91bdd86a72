//! The result of ADD: what the chain made (spec 1.0 result format, which
//! 0.3.x and 0.4.0 share apart from fields we do not read).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// What a plugin chain attached the pod with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The spec version of the result.
    pub cni_version: String,
    /// Interfaces made or configured, host side and in the sandbox.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes in the sandbox.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS settings (the kubelet's `dns_config` usually wins).
    #[serde(default)]
    pub dns: Dns,
}

/// An interface of the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// The link's name.
    pub name: String,
    /// Its MAC address, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path for an interface in the sandbox; absent on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// The address with its prefix length (`10.213.0.5/24`).
    pub address: IpNetwork,
    /// The gateway, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface that has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination (`0.0.0.0/0` for the default route).
    pub dst: IpNetwork,
    /// Next hop; absent: the interface's gateway or on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings of the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl CniResult {
    /// The index and interface named `ifname` in the sandbox (the pod's NIC).
    pub fn sandbox_interface(&self, ifname: &str) -> Option<(usize, &Interface)> {
        self.interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    }

    /// The addresses on the sandbox interface `ifname` (the pod IPs), or, as
    /// with IPAM-only chains, addresses that name no interface.
    pub fn sandbox_ips(&self, ifname: &str) -> Vec<&IpConfig> {
        let index = self.sandbox_interface(ifname).map(|(i, _)| i);
        self.ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == index)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Debian's bridge + host-local + portmap return (abridged).
    const BRIDGE: &str = r#"{"cniVersion":"1.0.0",
        "interfaces":[{"name":"vbr0","mac":"aa:bb:cc:00:00:01"},
                      {"name":"veth1234","mac":"aa:bb:cc:00:00:02"},
                      {"name":"eth0","mac":"aa:bb:cc:00:00:03","sandbox":"/var/run/netns/p"}],
        "ips":[{"address":"10.213.0.2/24","gateway":"10.213.0.1","interface":2}],
        "routes":[{"dst":"0.0.0.0/0"}],
        "dns":{}}"#;

    #[test]
    fn a_bridge_result_parses_and_names_the_pod_nic() {
        let result: CniResult = serde_json::from_str(BRIDGE).unwrap();
        let (index, nic) = result.sandbox_interface("eth0").unwrap();
        assert_eq!(index, 2);
        assert_eq!(nic.mac.as_deref(), Some("aa:bb:cc:00:00:03"));
        let ips = result.sandbox_ips("eth0");
        assert_eq!(ips.len(), 1);
        assert_eq!(ips[0].address.to_string(), "10.213.0.2/24");
        assert_eq!(ips[0].gateway, Some("10.213.0.1".parse().unwrap()));
        assert_eq!(result.routes[0].gw, None);
        // It survives the cache round trip.
        let again: CniResult =
            serde_json::from_str(&serde_json::to_string(&result).unwrap()).unwrap();
        assert_eq!(again, result);
    }

    #[test]
    fn a_0_4_result_with_ip_versions_parses() {
        let text = r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.2/16"}]}"#;
        let result: CniResult = serde_json::from_str(text).unwrap();
        assert_eq!(result.sandbox_ips("eth0").len(), 1);
        assert!(result.sandbox_interface("eth0").is_none());
    }
}
