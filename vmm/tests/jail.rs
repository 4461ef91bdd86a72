//! `--jail`, checked from outside on a running VMM with a tiny guest: no
//! capabilities, no_new_privs, its own mount namespace whose root holds
//! only the kept paths, the open-files limit, and a working control API.
//! Needs /dev/kvm and CAP_SYS_ADMIN (root); skipped without them, except
//! in CI (`CI=true`), where a missing prerequisite fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{api_request, kvm_available, wait_for_guest_entry, Scratch, SPIN};

/// Kills the VMM if the test fails before it stops.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn can_jail() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    // CAP_SYS_ADMIN is capability 21.
    let ok = eff & (1 << 21) != 0;
    if !ok {
        assert!(!in_ci(), "CI: the jail test needs CAP_SYS_ADMIN");
        eprintln!("skipped: --jail needs CAP_SYS_ADMIN");
    }
    ok
}

fn field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn jailed_vmm_has_no_capabilities_and_a_private_root() {
    if !kvm_available() {
        assert!(!in_ci(), "CI: /dev/kvm is missing");
        return;
    }
    if !can_jail() {
        return;
    }
    let dir = Scratch::new("jail");
    std::fs::create_dir_all(dir.path("img")).unwrap();
    std::fs::create_dir_all(dir.path("run")).unwrap();
    let kernel = dir.guest("img/spin.elf", &SPIN, true);
    let api = dir.path("run/api.sock");
    let vsock = dir.path("run/vsock.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64", "--console", "none", "--jail"])
        .arg("--api")
        .arg(&api)
        .arg("--vsock")
        .arg(&vsock)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    // The API answering from inside the jail; the guest runs.
    let info = wait_for_guest_entry(&api);
    assert_eq!(info["state"], "running", "{info}");

    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(pid, set), "0000000000000000", "{set}");
    }
    assert_eq!(field(pid, "NoNewPrivs"), "1");
    assert_eq!(field(pid, "Seccomp"), "2");

    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(ns(&pid.to_string()), ns("self"), "same mount namespace");

    // The root holds the kept paths only, at their own absolute paths.
    let root = Path::new("/proc").join(pid.to_string()).join("root");
    let scratch = dir.path("");
    let mut walk = root.clone();
    let mut expected_top = None;
    for part in scratch.components().skip(1) {
        let name = part.as_os_str().to_str().unwrap().to_string();
        assert_eq!(entries(&walk), BTreeSet::from([name.clone()]), "{walk:?}");
        expected_top.get_or_insert(name.clone());
        walk.push(name);
    }
    assert_eq!(
        entries(&walk),
        BTreeSet::from(["img".to_string(), "run".to_string()])
    );
    assert_eq!(
        entries(&walk.join("img")),
        BTreeSet::from(["spin.elf".to_string()])
    );
    assert!(entries(&walk.join("run")).contains("api.sock"));
    // Kept read-only: the kernel image cannot be written from inside.
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let kernel_mount = mounts
        .lines()
        .find(|l| l.contains("/img/spin.elf"))
        .unwrap_or_else(|| panic!("no kernel mount in {mounts}"));
    assert!(kernel_mount.contains(" ro,"), "{kernel_mount}");
    assert!(!root.join("etc").exists() && !root.join("dev").exists());

    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile: Vec<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nofile.len(), 2, "{limits}");
    assert_eq!(nofile[0], nofile[1]);
    assert!((1024..4096).contains(&nofile[0]), "NOFILE {}", nofile[0]);

    let deadline = Instant::now() + Duration::from_secs(10);
    let stop = api_request(&api, r#"{"op":"stop"}"#, deadline);
    assert!(stop.get("error").is_none(), "{stop}");
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{status}");
    // It removed its sockets through the kept directory.
    assert!(!api.exists() && !vsock.exists());
}

#[test]
fn jail_refuses_relative_paths_and_jail_dir_needs_jail() {
    let out = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
        .args(["--kernel", "vmlinux", "--jail"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kernel vmlinux: the jail needs an absolute path"),
        "{err}"
    );
    // Jailed by default: the same without --jail.
    let out = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
        .args(["--kernel", "vmlinux"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let out = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
        .args(["--kernel", "/vmlinux", "--no-jail", "--jail-dir", "/tmp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--jail-dir") && err.contains("--no-jail"),
        "{err}"
    );
}

/// The pod's unprivileged user: uid and gid switched (no supplementary
/// groups), no capabilities, own mount and IPC namespaces, file sizes
/// bounded; the console and the VMM's log still written through their
/// descriptors, and the sockets removed at exit by that user.
#[test]
fn jailed_vmm_runs_as_the_pod_user() {
    if !kvm_available() {
        assert!(!in_ci(), "CI: /dev/kvm is missing");
        return;
    }
    if !can_jail() {
        return;
    }
    const ID: u32 = 4_000_123;
    let dir = Scratch::new("jail-user");
    let run = dir.path("run");
    std::fs::create_dir_all(&run).unwrap();
    // What vesseld does for a pod: the state dir belongs to the pod's user.
    std::os::unix::fs::chown(&run, Some(ID), Some(ID)).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let code = [common::serial_hi(), SPIN.to_vec()].concat();
    let kernel = dir.guest("hi.elf", &code, true);
    let api = run.join("api.sock");
    let vsock = run.join("vsock.sock");
    let console = run.join("console.log");
    let log = run.join("vmm.log");
    let id = ID.to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64", "--jail-uid", &id, "--jail-gid", &id])
        .args(["--console-max-bytes", "65536", "--log-max-bytes", "8388608"])
        .arg("--console")
        .arg(&console)
        .arg("--log")
        .arg(&log)
        .arg("--api")
        .arg(&api)
        .arg("--vsock")
        .arg(&vsock)
        .env("VESSEL_VMM_LOG", "info")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    let info = wait_for_guest_entry(&api);
    assert_eq!(info["state"], "running", "{info}");

    let ids = format!("{ID}\t{ID}\t{ID}\t{ID}");
    assert_eq!(field(pid, "Uid"), ids);
    assert_eq!(field(pid, "Gid"), ids);
    assert_eq!(field(pid, "Groups"), "");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(pid, set), "0000000000000000", "{set}");
    }
    assert_eq!(field(pid, "NoNewPrivs"), "1");
    for ns in ["mnt", "ipc"] {
        let link = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/{ns}")).unwrap();
        assert_ne!(link(&pid.to_string()), link("self"), "same {ns} namespace");
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let fsize = limits
        .lines()
        .find(|l| l.starts_with("Max file size"))
        .unwrap();
    assert!(
        fsize.split_whitespace().filter(|w| *w == "8388608").count() == 2,
        "{fsize}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let stop = api_request(&api, r#"{"op":"stop"}"#, deadline);
    assert!(stop.get("error").is_none(), "{stop}");
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{status}");
    assert_eq!(std::fs::read(&console).unwrap(), b"hi\n");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("jailed") && text.contains(&format!("uid={ID}")),
        "{text}"
    );
    // Written after the filters were on, from the main thread.
    assert!(text.contains("stopped through the control API"), "{text}");
    assert!(!api.exists() && !vsock.exists(), "sockets left behind");
}
