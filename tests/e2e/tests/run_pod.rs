//! vessel's main job as `make run` runs it: the README's own script
//! (`tests/demo.sh`, from the point where it is inside the KVM host) lays out
//! a busybox rootfs and runs `vesseld run-pod`, which creates a pod (netns +
//! tap, virtiofsd, VM, sandbox, one container), streams the container's
//! output, tears everything down and exits with the container's status.
//! Checked from outside: the output, the status, and nothing left.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vessel_e2e::netns::netns_exists;
use vessel_e2e::{env_path, running_vmms};

/// Boot, setup, one short container and teardown; generous for the nested host.
const RUN_POD_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn run_pod_streams_the_container_and_leaves_nothing() {
    // Where demo.sh keeps the pod's runtime directory.
    let run_dir = env_path("VESSEL_SCRATCH").join("vessel");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../demo.sh");
    let mut child = Command::new("bash")
        .arg(demo)
        .args(["--in-kvm-host", "--run-pod"])
        .args([
            "sh",
            "-c",
            "echo hello from a vessel pod; hostname; ping -c 1 -W 5 10.88.0.1; exit 3",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tests/demo.sh starts");
    let deadline = Instant::now() + RUN_POD_TIMEOUT;
    while child.try_wait().expect("wait for vesseld").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("vesseld output");
            panic!(
                "tests/demo.sh (vesseld run-pod) did not finish in {RUN_POD_TIMEOUT:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("vesseld output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");

    // The container's exit status is vesseld's.
    assert_eq!(out.status.code(), Some(3), "vesseld's exit status");
    for expected in [
        "hello from a vessel pod",
        "1 packets transmitted, 1 packets received",
        "nothing of pod demo is left",
    ] {
        assert!(
            stdout.contains(expected) || stderr.contains(expected),
            "missing {expected:?} in vesseld's output"
        );
    }
    // The container saw the pod's hostname.
    assert!(
        stdout.lines().any(|l| l.trim() == "demo"),
        "the container's hostname"
    );

    // Checked again from outside vesseld.
    assert!(!netns_exists("vessel-demo"), "the pod's netns is left");
    assert_eq!(running_vmms(), Vec::<u32>::new(), "stray vessel-vmm");
    assert!(
        !run_dir.join("pods/demo").exists(),
        "the pod's state dir is left"
    );
}
