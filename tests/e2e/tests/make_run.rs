//! vessel's main job as `make run` runs it: the README's own script
//! (`tests/demo.sh`, from the point where it is inside the KVM host) starts
//! `vesseld serve`, fills a local registry with busybox and drives one pod
//! through the CRI with the `vessel` client (pull, runp, create, start, logs,
//! inspect, stopp, rmp). Checked: the output, the exit status (the
//! container's), and nothing left.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vessel_e2e::running_vmms;

/// Registry, daemon, one pod boot, one container and teardown.
const DEMO_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn make_run_drives_a_pod_through_the_cri_and_leaves_nothing() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../demo.sh");
    let mut child = Command::new("bash")
        .arg(demo)
        .arg("--in-kvm-host")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tests/demo.sh starts");
    let deadline = Instant::now() + DEMO_TIMEOUT;
    while child.try_wait().expect("wait for the demo").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("demo output");
            panic!(
                "tests/demo.sh did not finish in {DEMO_TIMEOUT:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("demo output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    if out.status.code() != Some(3) {
        let log = vessel_e2e::env_path("VESSEL_SCRATCH").join("cri-demo/vesseld.log");
        eprintln!(
            "vesseld:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    assert_eq!(
        out.status.code(),
        Some(3),
        "the demo's exit status (the container's)"
    );
    for expected in [
        "hello from a vessel pod",
        "1 packets transmitted, 1 packets received",
        "CONTAINER_EXITED 3 Error",
        "Stopped sandbox",
        "Removed sandbox",
        "nothing of pod demo is left",
    ] {
        assert!(
            stdout.contains(expected) || stderr.contains(expected),
            "missing {expected:?} in the demo's output"
        );
    }
    assert!(
        stdout.lines().any(|l| l.trim() == "demo"),
        "the container's hostname"
    );
    assert_eq!(running_vmms(), Vec::<u32>::new(), "stray vessel-vmm");
}
