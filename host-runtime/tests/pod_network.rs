//! The host side of a pod's network on the real kernel (no VM): a named
//! netns with a persistent tap carrying the gateway address, visible to
//! iproute2, and nothing left after deleting them. Needs root and
//! /dev/net/tun; skips without them (fails in CI).

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use vessel_host_runtime::net::{netns_exists, tap, Netns};

fn ip_in(netns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", netns])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn netns_with_a_configured_tap_and_nothing_left_after() {
    if !common::root_and_tun("pod_network") {
        return;
    }
    let name = format!("vessel-test-net-{}", std::process::id());
    let netns = Netns::create(&name).expect("netns created");
    assert!(netns_exists(&name));
    // A second pod of the same name must not take over this one.
    assert!(Netns::create(&name).is_err());

    tap::create(netns.path(), "tap0", Ipv4Addr::new(10, 88, 0, 1), 24).expect("tap created");
    let link = ip_in(&name, &["-o", "link", "show", "tap0"]);
    assert!(link.contains("UP"), "{link}");
    let tun = ip_in(&name, &["-d", "link", "show", "tap0"]);
    assert!(
        tun.contains("tun type tap") && tun.contains("persist on"),
        "{tun}"
    );
    let addr = ip_in(&name, &["-o", "-4", "addr", "show", "tap0"]);
    assert!(addr.contains("10.88.0.1/24"), "{addr}");
    let lo = ip_in(&name, &["-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    let counters = tap::counters(netns.path(), "tap0").expect("counters");
    assert_eq!(counters.rx_packets, 0, "nobody sent on it");

    tap::delete(netns.path(), "tap0").expect("tap deleted");
    // Deleting twice is fine (rollback may retry).
    tap::delete(netns.path(), "tap0").expect("second delete is a no-op");
    assert!(!ip_in(&name, &["-o", "link"]).contains("tap0"));
    netns.delete().expect("netns deleted");
    assert!(!netns_exists(&name));
}
