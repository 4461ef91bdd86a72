//! The addresses of a pod's one link: the tap (host side, the guest's gateway)
//! and the guest's NIC, both in one small IPv4 subnet. Each pod has its own
//! network namespace, so pods may use the same subnet without clashing.

use std::net::Ipv4Addr;
use std::str::FromStr;

/// The pod's subnet and the two addresses in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddressing {
    /// The subnet's network address.
    pub network: Ipv4Addr,
    /// Its prefix length (at most 30: it must hold two hosts).
    pub prefix: u8,
    /// The tap's address: the subnet's first host, the guest's default gateway.
    pub host_ip: Ipv4Addr,
    /// The guest's address: the subnet's second host.
    pub guest_ip: Ipv4Addr,
    /// The guest NIC's MAC address (locally administered).
    pub guest_mac: String,
}

/// The subnet a pod gets unless told otherwise.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/24";

/// The guest NIC's MAC: locally administered (0x02), "vs" for vessel.
const GUEST_MAC: &str = "02:76:73:00:00:02";

impl PodAddressing {
    /// Addresses in `network/prefix`: the tap gets the first host, the guest the second.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if !(1..=30).contains(&prefix) {
            return Err(format!(
                "prefix /{prefix} must be between /1 and /30 (two hosts)"
            ));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        let base = u32::from(network);
        if base & !mask != 0 {
            return Err(format!(
                "{network}/{prefix} has host bits set (network is {}/{prefix})",
                Ipv4Addr::from(base & mask)
            ));
        }
        Ok(Self {
            network,
            prefix,
            host_ip: Ipv4Addr::from(base + 1),
            guest_ip: Ipv4Addr::from(base + 2),
            guest_mac: GUEST_MAC.to_string(),
        })
    }

    /// The guest's address in CIDR notation, as `Sandbox.Setup` takes it.
    pub fn guest_cidr(&self) -> String {
        format!("{}/{}", self.guest_ip, self.prefix)
    }
}

impl FromStr for PodAddressing {
    type Err = String;

    /// Parses `A.B.C.D/N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (net, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not A.B.C.D/N"))?;
        let network = net
            .parse::<Ipv4Addr>()
            .map_err(|e| format!("{net:?}: {e}"))?;
        let prefix = prefix
            .parse::<u8>()
            .map_err(|e| format!("prefix {prefix:?}: {e}"))?;
        Self::new(network, prefix)
    }
}

impl Default for PodAddressing {
    fn default() -> Self {
        Self {
            network: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 24,
            host_ip: Ipv4Addr::new(10, 88, 0, 1),
            guest_ip: Ipv4Addr::new(10, 88, 0, 2),
            guest_mac: GUEST_MAC.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_default_subnet() {
        assert_eq!(
            DEFAULT_SUBNET.parse::<PodAddressing>().unwrap(),
            PodAddressing::default()
        );
    }

    #[test]
    fn hosts_are_the_first_two_of_the_subnet() {
        let a: PodAddressing = "192.168.4.8/30".parse().unwrap();
        assert_eq!(a.host_ip, Ipv4Addr::new(192, 168, 4, 9));
        assert_eq!(a.guest_ip, Ipv4Addr::new(192, 168, 4, 10));
        assert_eq!(a.guest_cidr(), "192.168.4.10/30");
    }

    #[test]
    fn bad_subnets_are_refused() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/31",
            "10.0.0.0/0",
            "10.0.0.1/24",
            "10.0.0/24",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<PodAddressing>().is_err(), "{bad} accepted");
        }
    }
}
