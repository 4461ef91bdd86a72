//! Per-interface counters from sysfs (`/sys/class/net/<name>/statistics`):
//! the same counters rtnetlink's IFLA_STATS64 carries, without a netlink round trip.

use std::path::Path;

use crate::proto::InterfaceStats;

/// Most interfaces reported (a pod VM has a handful).
const MAX_INTERFACES: usize = 256;

fn counter(dir: &Path, name: &str) -> u64 {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Counters of every interface under `class_net` (normally `/sys/class/net`) but `lo`, sorted by name.
pub fn interfaces(class_net: &Path) -> Vec<InterfaceStats> {
    let Ok(entries) = std::fs::read_dir(class_net) else {
        return Vec::new();
    };
    let mut list: Vec<InterfaceStats> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name != "lo")
        .take(MAX_INTERFACES)
        .map(|name| {
            let dir = class_net.join(&name).join("statistics");
            InterfaceStats {
                rx_bytes: counter(&dir, "rx_bytes"),
                rx_packets: counter(&dir, "rx_packets"),
                rx_errors: counter(&dir, "rx_errors"),
                rx_dropped: counter(&dir, "rx_dropped"),
                tx_bytes: counter(&dir, "tx_bytes"),
                tx_packets: counter(&dir, "tx_packets"),
                tx_errors: counter(&dir, "tx_errors"),
                tx_dropped: counter(&dir, "tx_dropped"),
                name,
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_and_skips_loopback() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, rx) in [("lo", "5"), ("eth0", "1234\n"), ("eth1", "7")] {
            let stats = dir.path().join(name).join("statistics");
            std::fs::create_dir_all(&stats).expect("mkdir");
            std::fs::write(stats.join("rx_bytes"), rx).expect("write");
            std::fs::write(stats.join("tx_packets"), "3").expect("write");
        }
        let list = interfaces(dir.path());
        let names: Vec<_> = list.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert_eq!((list[0].rx_bytes, list[0].tx_packets), (1234, 3));
    }
}
