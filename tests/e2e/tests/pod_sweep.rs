//! A pod's host side as a daemon must keep it, checked on a real pod that
//! `vesseld run-pod` starts: the VMM runs as pid 1 of its own pid (and IPC)
//! namespace inside the pod's cgroup, as the pod's unprivileged uid without
//! capabilities, virtiofsd in that cgroup too, the
//! state dir is 0700 and the share is mounted nosuid,nodev while virtiofsd
//! has no CAP_MKNOD (the guest cannot make a device node there) and
//! translates the guest's ids into the pod's slot (what guest root makes
//! is owned by an unprivileged host id). Then
//! `kill -9` of vesseld leaves the pod running (VMM and virtiofsd in their
//! own sessions), and `vesseld sweep` finds it through the records in its
//! state dir and removes all of it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vessel_e2e::busybox::build_rootfs;
use vessel_e2e::netns::netns_exists;
use vessel_e2e::{env_path, running_vmms};
use vessel_host_runtime::process::ProcessRecord;

/// Boot and container start in the nested host, generously.
const STARTED_TIMEOUT: Duration = Duration::from_secs(240);

fn alive(pid: u32) -> bool {
    // /proc/PID without a zombie state: the process runs.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("ns link")
}

/// The mount options of the mount at `path` (from our mountinfo).
fn mount_options(path: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or_else(|| panic!("{} is not a mount point:\n{info}", path.display()))
        .to_string()
}

#[test]
fn a_pod_is_isolated_on_the_host_survives_kill_9_of_vesseld_and_is_swept() {
    let scratch = env_path("VESSEL_SCRATCH");
    let run_dir = scratch.join("vessel");
    let rootfs = scratch.join("sweep-rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    build_rootfs(&rootfs);
    // A directory of host uid 1000, where guest uid 1000 may write.
    let user_dir = rootfs.join("u1000");
    std::fs::create_dir(&user_dir).expect("u1000");
    std::os::unix::fs::chown(&user_dir, Some(1000), Some(1000)).expect("chown u1000");
    let mut passwd = std::fs::OpenOptions::new()
        .append(true)
        .open(rootfs.join("etc/passwd"))
        .expect("passwd");
    std::io::Write::write_all(&mut passwd, b"u:x:1000:1000::/:/bin/sh\n").expect("user u");
    let state_dir = run_dir.join("pods/sweep");
    let state_root = scratch.join("state");
    let log_dir = state_root.join("pods/sweep");
    let vesseld = env_path("VESSEL_VESSELD");
    // Guest root tries a set-uid-root copy of busybox and a serial device
    // node on the share, gives a file to uid 1000 and tries an id past the
    // pod's slot, then stays up.
    let script = "cp /bin/busybox /suid && chmod 4755 /suid && echo SUID-MADE; \
                  mknod /ttyS9 c 4 73 && echo MKNOD-WORKED || echo MKNOD-REFUSED; \
                  echo x > /by-user && busybox chown 1000:1000 /by-user && echo CHOWNED; \
                  echo y > /big-id && busybox chown 70000 /big-id && echo BIG-ID-TAKEN || echo BIG-ID-REFUSED; \
                  busybox su -s /bin/sh -c 'busybox touch /u1000/mine' u && echo USER-CREATED; \
                  echo GUEST-SEES $(busybox stat -c %u:%g /suid /by-user /bin/busybox); \
                  echo started; sleep 600";
    let mut child = Command::new(&vesseld)
        .args(["run-pod", "--name", "sweep", "--rootfs"])
        .arg(&rootfs)
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--state-dir")
        .arg(&state_root)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("vesseld run-pod starts");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("vesseld: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + STARTED_TIMEOUT;
    while !seen.iter().any(|l: &String| l.trim() == "started") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the container did not start within {STARTED_TIMEOUT:?}: {seen:#?}");
            }
        }
    }
    for line in ["SUID-MADE", "CHOWNED", "BIG-ID-REFUSED", "USER-CREATED"] {
        assert!(
            seen.iter().any(|l| l.trim() == line),
            "no {line}: {seen:#?}"
        );
    }
    // The guest sees its own ids, and the host's root as root.
    assert!(
        seen.iter()
            .any(|l| l.trim() == "GUEST-SEES 0:0 1000:1000 0:0"),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.trim() == "MKNOD-REFUSED"),
        "guest root made a device node on the share: {seen:#?}"
    );

    // The pod's host side while it runs.
    let vmm = ProcessRecord::load(&state_dir.join("vm.process.json"))
        .expect("VMM record")
        .expect("VMM record exists");
    let fs = ProcessRecord::load(&state_dir.join("virtiofsd.process.json"))
        .expect("virtiofsd record")
        .expect("virtiofsd record exists");
    assert_eq!(running_vmms(), vec![vmm.pid]);
    let vmm_pid = vmm.pid.to_string();
    assert_ne!(ns(&vmm_pid, "pid"), ns("self", "pid"), "own pid namespace");
    assert_ne!(ns(&vmm_pid, "ipc"), ns("self", "ipc"), "own IPC namespace");
    let status = std::fs::read_to_string(format!("/proc/{vmm_pid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    let uid: u32 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        uid >= 0x7000_0000 + 65_535,
        "the VMM runs as uid {uid}, not the top of a [pod_ids] slot"
    );
    assert!(
        status.lines().any(|l| l == "CapEff:\t0000000000000000"),
        "{status}"
    );
    for pid in [vmm.pid, fs.pid] {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        assert!(cgroup.contains("/vessel/sweep"), "pid {pid} in {cgroup}");
        let sid = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let sid: u32 = sid
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(sid, pid, "pid {pid} leads its own session");
    }
    // virtiofsd's worker (the sandbox's child) holds neither CAP_MKNOD (27)
    // nor CAP_SETFCAP (31).
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", fs.pid)).expect("children");
    let worker = children
        .split_whitespace()
        .next()
        .expect("virtiofsd's worker");
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).expect("status");
    let permitted = status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).expect("CapPrm"))
        .expect("CapPrm");
    assert_ne!(permitted, 0, "the worker has its capabilities: {status}");
    assert_eq!(permitted & (1 << 27 | 1 << 31), 0, "{status}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&state_dir)
            .expect("state dir")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "state dir mode {mode:o}");
    // Logs on the state dir (disk), not the run dir (tmpfs), and capped.
    for log in ["console.log", "vmm.log", "virtiofsd.log"] {
        assert!(
            log_dir.join(log).exists(),
            "{log} is not in {}",
            log_dir.display()
        );
    }
    let share = state_dir.join("share");
    let options = mount_options(&share);
    for flag in ["nosuid", "nodev"] {
        assert!(
            options.split(',').any(|o| o == flag),
            "share mounted {options}"
        );
    }
    assert!(
        !rootfs.join("ttyS9").exists(),
        "a device node reached the host"
    );
    let suid = std::fs::metadata(share.join("suid")).expect("the guest's file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&suid.permissions()) & 0o4000,
        0o4000,
        "the guest set the set-uid bit (the nosuid mount makes it inert)"
    );
    // ...on a file the pod's slot owns, not root: guest id g is host
    // B + g, the VMM's id is B + 65535, and the slot is in [pod_ids].
    use std::os::unix::fs::MetadataExt;
    let base = uid - 65_535;
    assert!(base >= 0x7000_0000, "guest root is host id {base}");
    assert_eq!(
        (suid.uid(), suid.gid()),
        (base, base),
        "owner of the set-uid file"
    );
    let by_user = std::fs::metadata(share.join("by-user")).expect("the chowned file");
    assert_eq!((by_user.uid(), by_user.gid()), (base + 1000, base + 1000));
    // The refused chown left the file guest root made.
    let big = std::fs::metadata(share.join("big-id")).expect("the big-id file");
    assert_eq!((big.uid(), big.gid()), (base, base));
    // Guest uid 1000 made a file in host uid 1000's directory.
    let mine = std::fs::metadata(share.join("u1000/mine")).expect("guest user's file");
    assert_eq!((mine.uid(), mine.gid()), (base + 1000, base + 1000));
    // The host's files keep their ids.
    assert_eq!(
        std::fs::metadata(share.join("bin/busybox")).unwrap().uid(),
        0
    );

    // kill -9 of vesseld: the pod's processes live on.
    child.kill().expect("kill -9 vesseld");
    child.wait().expect("reap vesseld");
    std::thread::sleep(Duration::from_secs(1));
    assert!(alive(vmm.pid), "the VMM died with vesseld");
    assert!(alive(fs.pid), "virtiofsd died with vesseld");
    assert!(netns_exists("vessel-sweep"));

    let out = Command::new(&vesseld)
        .arg("sweep")
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--state-dir")
        .arg(&state_root)
        .output()
        .expect("vesseld sweep runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sweep failed");
    assert!(text.contains("pod sweep: removed vessel-vmm"), "{text}");
    assert!(!alive(vmm.pid) && !alive(fs.pid), "a process is left");
    assert_eq!(running_vmms(), Vec::<u32>::new());
    assert!(!netns_exists("vessel-sweep"), "netns left");
    assert!(!state_dir.exists(), "state dir left");
    assert!(!log_dir.exists(), "log dir left");
    for cg in [
        "/sys/fs/cgroup/vessel/sweep",
        "/sys/fs/cgroup/memory/vessel/sweep",
    ] {
        assert!(!Path::new(cg).exists(), "{cg} left");
    }
    let _ = std::fs::remove_dir_all(&rootfs);
}
