//! Hostile images: a rootfs whose paths are symlinks planted to redirect the
//! agent's container setup (mounts, `/dev`, masked and read-only paths), and a
//! container init that must not be ptrace-able before its exec. The
//! `vessel-agent` binary runs as root in its own namespaces (`tests/common`)
//! with a busybox rootfs. The device program's test is in `cgroups.rs`: it
//! needs a cgroup v2 hierarchy, which these agents do not get.
//!
//! Skipped (with a note; a failure in CI) when not root or when unshare,
//! nsenter, ip or busybox are missing.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    add_mount, build_busybox_rootfs, minimal_spec, namespaced_supported, NamespacedAgent,
};
use serde_json::{json, Value};
use tonic::Code;
use vessel_agent::proto::containers_client::ContainersClient;
use vessel_agent::proto::{
    CreateContainerRequest, DeleteContainerRequest, StartContainerRequest, WaitContainerRequest,
    WaitContainerResponse,
};

const APPLETS: &[&str] = &["sh", "echo", "cat", "ls", "sleep", "true"];

macro_rules! agent_or_skip {
    () => {{
        if !namespaced_supported() {
            return;
        }
        let agent = NamespacedAgent::start().await;
        build_busybox_rootfs(&rootfs(&agent), APPLETS);
        agent
    }};
}

fn rootfs(agent: &NamespacedAgent) -> PathBuf {
    agent.dir.path().join("rootfs")
}

/// The minimal spec with a writable /tmp.
fn spec(args: &[&str]) -> Value {
    let mut spec = minimal_spec(args);
    add_mount(
        &mut spec,
        json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" }),
    );
    spec
}

fn request(agent: &NamespacedAgent, id: &str, spec: &Value) -> CreateContainerRequest {
    CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: spec.to_string(),
        rootfs: rootfs(agent).display().to_string(),
        stdout_path: agent
            .dir
            .path()
            .join(format!("{id}.out"))
            .display()
            .to_string(),
        stderr_path: agent
            .dir
            .path()
            .join(format!("{id}.err"))
            .display()
            .to_string(),
        ..Default::default()
    }
}

/// Creates `id`; the error status if the agent refused it.
async fn create(agent: &NamespacedAgent, id: &str, spec: &Value) -> Result<u32, tonic::Status> {
    let mut client = ContainersClient::new(agent.channel.clone());
    client
        .create(request(agent, id, spec))
        .await
        .map(|r| r.into_inner().pid)
}

async fn delete(agent: &NamespacedAgent, id: &str) {
    let mut client = ContainersClient::new(agent.channel.clone());
    let req = DeleteContainerRequest {
        container_id: id.into(),
    };
    if let Err(status) = client.delete(req).await {
        panic!("delete {id}: {status:?}\n{}", agent.log());
    }
}

/// Runs a container to completion: its exit, stdout and stderr.
async fn run(
    agent: &NamespacedAgent,
    id: &str,
    spec: &Value,
) -> (WaitContainerResponse, String, String) {
    if let Err(status) = create(agent, id, spec).await {
        panic!("create {id}: {status:?}\n{}", agent.log());
    }
    let mut client = ContainersClient::new(agent.channel.clone());
    let start = StartContainerRequest {
        container_id: id.into(),
    };
    if let Err(status) = client.start(start).await {
        panic!("start {id}: {status:?}\n{}", agent.log());
    }
    let wait = client.wait(WaitContainerRequest {
        container_id: id.into(),
    });
    let exit = match tokio::time::timeout(Duration::from_secs(20), wait).await {
        Ok(Ok(exit)) => exit.into_inner(),
        other => panic!("wait {id}: {other:?}\n{}", agent.log()),
    };
    delete(agent, id).await;
    let read = |ext: &str| {
        fs::read_to_string(agent.dir.path().join(format!("{id}.{ext}"))).unwrap_or_default()
    };
    (exit, read("out"), read("err"))
}

/// Replaces the rootfs directory `name` with a symlink to `to`.
fn plant_link(root: &Path, name: &str, to: &str) {
    let path = root.join(name);
    if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(&path).expect("remove dir");
    }
    symlink(to, &path).expect("plant symlink");
}

/// Puts the real directory `name` back.
fn restore_dir(root: &Path, name: &str) {
    let path = root.join(name);
    fs::remove_file(&path).expect("remove symlink");
    fs::create_dir(&path).expect("mkdir");
}

fn assert_refused(status: &tonic::Status, what: &[&str]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    for part in what {
        assert!(
            status.message().contains(part),
            "{part:?} not in {status:?}"
        );
    }
}

#[tokio::test]
async fn a_symlinked_proc_or_dev_is_refused() {
    let agent = agent_or_skip!();
    let root = rootfs(&agent);
    // The image's /proc points at its /etc: a proc mount there would let the
    // container's writes to "/proc" files land in ordinary files (CVE-2019-19921).
    plant_link(&root, "proc", "/etc");
    let status = create(&agent, "proc", &spec(&["true"]))
        .await
        .expect_err("symlinked /proc");
    assert_refused(&status, &["mounts[0] (\"/proc\")", "symbolic link"]);
    restore_dir(&root, "proc");

    // /dev as a symlink, with the spec's own /dev tmpfs and with the agent's default one.
    plant_link(&root, "dev", "/tmp");
    let mut with_dev = spec(&["true"]);
    add_mount(
        &mut with_dev,
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
    );
    let status = create(&agent, "dev1", &with_dev)
        .await
        .expect_err("symlinked /dev");
    assert_refused(&status, &["mounts[2] (\"/dev\")", "symbolic link"]);
    let status = create(&agent, "dev2", &spec(&["true"]))
        .await
        .expect_err("symlinked /dev");
    assert_refused(&status, &["the default /dev", "symbolic link"]);
    restore_dir(&root, "dev");
    // The image's /dev/shm points elsewhere in the image; the spec's /dev/shm
    // goes on the agent's fresh /dev tmpfs, which hides the image's /dev.
    fs::create_dir(root.join("real-shm")).expect("mkdir");
    symlink("/real-shm", root.join("dev/shm")).expect("symlink");
    let mut shm = spec(&["sh", "-c", "ls -ld /dev/shm; ls -A /real-shm; echo done"]);
    add_mount(
        &mut shm,
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm" }),
    );
    let (exit, out, err) = run(&agent, "shm", &shm).await;
    assert_eq!(exit.exit_code, 0, "{err}");
    assert!(out.starts_with('d'), "/dev/shm is not a directory: {out}");
    assert!(out.ends_with("\ndone\n"), "/real-shm is not empty: {out}");
    // Nothing was created through the links, and no device node reached the
    // image's tree (the host's share, in a pod).
    for leftover in ["etc/null", "tmp/null", "dev/null", "dev/zero"] {
        assert!(!root.join(leftover).exists(), "{leftover} was created");
    }
}

#[tokio::test]
async fn symlinked_mount_destinations_resolve_inside_the_rootfs() {
    let agent = agent_or_skip!();
    let root = rootfs(&agent);
    let volume = agent.dir.path().join("volume");
    fs::create_dir(&volume).expect("mkdir");
    fs::write(volume.join("marker"), "from-volume\n").expect("marker");
    // Outside the rootfs, where the links below would lead if followed on the agent's side.
    let outside = agent.dir.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    symlink("/etc", root.join("abs")).expect("symlink");
    let climb = format!("../../../../../../../..{}", outside.display());
    symlink(&climb, root.join("up")).expect("symlink");
    fs::create_dir_all(root.join(outside.strip_prefix("/").expect("absolute")))
        .expect("mkdir inside");
    // No /tmp tmpfs here: it would hide the rootfs's /tmp, where the link leads.
    let mut s = minimal_spec(&[
        "sh",
        "-c",
        &format!("cat /etc/marker; cat {}/marker", outside.display()),
    ]);
    for dest in ["/abs", "/up"] {
        add_mount(
            &mut s,
            json!({ "destination": dest, "type": "bind", "source": volume, "options": ["rbind", "ro"] }),
        );
    }
    let (exit, out, err) = run(&agent, "binds", &s).await;
    assert_eq!(exit.exit_code, 0, "{err}");
    assert_eq!(out, "from-volume\nfrom-volume\n", "{err}");
    // The real directory the link names was never a target.
    assert!(fs::read_dir(&outside).expect("outside").next().is_none());

    // A file mount point through a dangling link is refused, not created through.
    symlink("/nowhere/resolv.conf", root.join("etc/resolv.conf")).expect("symlink");
    let mut s = spec(&["true"]);
    add_mount(
        &mut s,
        json!({ "destination": "/etc/resolv.conf", "type": "bind",
                "source": volume.join("marker"), "options": ["bind"] }),
    );
    let status = create(&agent, "dangling", &s).await.expect_err("dangling");
    assert_refused(&status, &["(\"/etc/resolv.conf\")", "dangling"]);
    assert!(!root.join("nowhere").exists());
}

#[tokio::test]
async fn symlinked_masked_and_readonly_paths_apply_inside_the_rootfs() {
    let agent = agent_or_skip!();
    let root = rootfs(&agent);
    fs::write(root.join("secret"), "s3cret\n").expect("secret");
    symlink("/secret", root.join("secret-link")).expect("symlink");
    fs::create_dir(root.join("data")).expect("mkdir");
    symlink("../../../../data", root.join("data-link")).expect("symlink");
    let mut s = spec(&[
        "sh",
        "-c",
        "cat /secret; echo masked; echo x > /data/x || echo read-only",
    ]);
    s["linux"]["maskedPaths"] = json!(["/secret-link", "/missing"]);
    s["linux"]["readonlyPaths"] = json!(["/data-link"]);
    let (exit, out, err) = run(&agent, "masks", &s).await;
    assert_eq!(exit.exit_code, 0, "{err}");
    assert_eq!(out, "masked\nread-only\n", "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        fs::read_to_string(root.join("secret")).ok().as_deref(),
        Some("s3cret\n")
    );
}

/// The parent pid of `pid`, as this process's pid namespace sees it.
fn ppid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
}

/// Host pids of the processes three generations below `ancestor`
/// (unshare → sh → agent → container process).
fn great_grandchildren(ancestor: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| {
            let chain = ppid(pid).and_then(ppid).and_then(ppid);
            chain == Some(ancestor)
        })
        .collect()
}

/// Whether a root process without CAP_SYS_PTRACE may read `/proc/<pid>/exe`
/// (a ptrace access check: it fails for a non-dumpable target, and for one
/// with capabilities the reader lacks, which the targets here have none of).
fn readable_without_ptrace(pid: u32) -> bool {
    std::process::Command::new("setpriv")
        .args(["--bounding-set=-sys_ptrace", "--inh-caps=-all", "--"])
        .args(["readlink", &format!("/proc/{pid}/exe")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run setpriv (util-linux)")
        .success()
}

#[tokio::test]
async fn the_container_init_is_not_dumpable_until_its_exec() {
    let agent = agent_or_skip!();
    // No capabilities and uid 0: dumpable is then the only thing that keeps
    // another root process without CAP_SYS_PTRACE out of the init's memory.
    let s = spec(&["sleep", "987101"]);
    create(&agent, "dump", &s).await.expect("create");
    let init = great_grandchildren(agent.child.id());
    assert_eq!(init.len(), 1, "expected one container process: {init:?}");
    assert!(
        !readable_without_ptrace(init[0]),
        "the created container's init is dumpable"
    );
    let mut client = ContainersClient::new(agent.channel.clone());
    client
        .start(StartContainerRequest {
            container_id: "dump".into(),
        })
        .await
        .expect("start");
    // After the exec the kernel makes the process dumpable again, as for any program.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let cmdline = fs::read(format!("/proc/{}/cmdline", init[0])).unwrap_or_default();
        if cmdline.starts_with(b"sleep") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never exec'd");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        readable_without_ptrace(init[0]),
        "control: the exec'd process is readable"
    );
    delete(&agent, "dump").await;
}
