//! Seccomp profiles and users by name, end to end: the `vessel-agent` binary as
//! root in its own namespaces (`tests/common`), containers from a busybox rootfs.
//!
//! Skipped (with a note) when not root or when unshare, nsenter, ip or busybox are missing.

mod common;

use std::fs;
use std::time::Duration;

use common::{
    add_mount, add_namespace, build_busybox_rootfs, minimal_spec, namespaced_supported,
    NamespacedAgent,
};
use serde_json::{json, Value};
use tonic::Code;
use vessel_agent::proto::containers_client::ContainersClient;
use vessel_agent::proto::{
    CreateContainerRequest, DeleteContainerRequest, RunAsUser, StartContainerRequest,
    WaitContainerRequest, WaitContainerResponse,
};

const APPLETS: &[&str] = &["sh", "echo", "mkdir", "id", "grep", "cat", "true", "uname"];

macro_rules! agent_or_skip {
    () => {{
        if !namespaced_supported() {
            return;
        }
        let agent = NamespacedAgent::start().await;
        let root = agent.dir.path().join("rootfs");
        build_busybox_rootfs(&root, APPLETS);
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n\
             # not a user\n\
             web:x:1000:1000:Web:/home/web:/bin/sh\n\
             garbage line\n\
             db:x:1001:1001::/var/db:/bin/sh\n",
        )
        .expect("passwd");
        fs::write(
            root.join("etc/group"),
            "root:x:0:\nweb:x:1000:\naudio:x:29:db,web\nvideo:x:44:web\nstaff:x:50:\n",
        )
        .expect("group");
        agent
    }};
}

/// A spec for `args` with a writable /tmp, noNewPrivileges and no capabilities.
fn spec(args: &[&str]) -> Value {
    let mut spec = minimal_spec(args);
    spec["process"]["noNewPrivileges"] = json!(true);
    add_mount(
        &mut spec,
        json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" }),
    );
    add_namespace(&mut spec, "network");
    spec
}

fn request(agent: &NamespacedAgent, id: &str, spec: &Value) -> CreateContainerRequest {
    let out = agent.dir.path().join(format!("{id}.out"));
    let err = agent.dir.path().join(format!("{id}.err"));
    CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: spec.to_string(),
        rootfs: agent.dir.path().join("rootfs").display().to_string(),
        stdout_path: out.display().to_string(),
        stderr_path: err.display().to_string(),
        ..Default::default()
    }
}

/// Runs a container to completion: its exit, stdout and stderr.
async fn run(
    agent: &NamespacedAgent,
    req: CreateContainerRequest,
) -> (WaitContainerResponse, String, String) {
    let id = req.container_id.clone();
    let mut client = ContainersClient::new(agent.channel.clone());
    if let Err(status) = client.create(req).await {
        panic!("create {id}: {status:?}\n{}", agent.log());
    }
    let start = StartContainerRequest {
        container_id: id.clone(),
    };
    if let Err(status) = client.start(start).await {
        panic!("start {id}: {status:?}\n{}", agent.log());
    }
    let wait = client.wait(WaitContainerRequest {
        container_id: id.clone(),
    });
    let exit = match tokio::time::timeout(Duration::from_secs(20), wait).await {
        Ok(Ok(exit)) => exit.into_inner(),
        other => panic!("wait {id}: {other:?}\n{}", agent.log()),
    };
    client
        .delete(DeleteContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("delete");
    let read = |ext: &str| {
        fs::read_to_string(agent.dir.path().join(format!("{id}.{ext}"))).unwrap_or_default()
    };
    (exit, read("out"), read("err"))
}

fn with_seccomp(mut spec: Value, seccomp: Value) -> Value {
    spec["linux"]["seccomp"] = seccomp;
    spec
}

#[tokio::test]
async fn seccomp_errno_rule_denies_mkdir() {
    let agent = agent_or_skip!();
    let deny_mkdir = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }]
    });
    let script = "grep '^Seccomp:' /proc/self/status; mkdir /tmp/x || echo denied";
    let s = with_seccomp(spec(&["sh", "-c", script]), deny_mkdir.clone());
    let (exit, out, err) = run(&agent, request(&agent, "deny", &s)).await;
    assert_eq!(exit.exit_code, 0, "{err}");
    assert_eq!(out, "Seccomp:\t2\ndenied\n");
    assert!(err.contains("Operation not permitted"), "stderr: {err}");

    // Without no_new_privs (and without CAP_SYS_ADMIN) the filter goes on before
    // the switch to the container's user, and holds all the same.
    let mut s = with_seccomp(spec(&["sh", "-c", script]), deny_mkdir);
    s["process"]["noNewPrivileges"] = json!(false);
    s["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    let (exit, out, err) = run(&agent, request(&agent, "early", &s)).await;
    assert_eq!(exit.exit_code, 0, "{err}");
    assert_eq!(out, "Seccomp:\t2\ndenied\n");
    assert!(err.contains("Operation not permitted"), "stderr: {err}");
}

#[tokio::test]
async fn seccomp_kill_rule_kills_with_sigsys() {
    let agent = agent_or_skip!();
    let s = with_seccomp(
        spec(&["mkdir", "/tmp/x"]),
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS" }]
        }),
    );
    let (exit, _, _) = run(&agent, request(&agent, "kill", &s)).await;
    assert_eq!((exit.exit_code, exit.signal), (128 + 31, 31), "not SIGSYS");
    // An argument condition: uname is killed only when its pointer argument is 0.
    let s = with_seccomp(
        spec(&["uname"]),
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS",
                           "args": [{ "index": 0, "value": 0, "op": "SCMP_CMP_EQ" }] }]
        }),
    );
    let (exit, out, _) = run(&agent, request(&agent, "uname", &s)).await;
    assert_eq!((exit.exit_code, out.as_str()), (0, "Linux\n"));
}

/// A trimmed version of Docker's default profile: ERRNO unless listed.
fn docker_like() -> Value {
    let allowed = [
        "access",
        "arch_prctl",
        "brk",
        "capget",
        "capset",
        "chdir",
        "close",
        "dup",
        "dup2",
        "dup3",
        "execve",
        "exit",
        "exit_group",
        "fcntl",
        "fstat",
        "newfstatat",
        "statx",
        "futex",
        "getcwd",
        "getdents64",
        "getegid",
        "geteuid",
        "getgid",
        "getgroups",
        "getpgrp",
        "getpid",
        "getppid",
        "getrandom",
        "getrlimit",
        "getuid",
        "ioctl",
        "lseek",
        "mmap",
        "mprotect",
        "munmap",
        "nanosleep",
        "clock_nanosleep",
        "open",
        "openat",
        "pipe",
        "pipe2",
        "prctl",
        "pread64",
        "prlimit64",
        "read",
        "readlink",
        "readlinkat",
        "rseq",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "set_robust_list",
        "set_tid_address",
        "setpgid",
        "stat",
        "lstat",
        "sysinfo",
        "uname",
        "umask",
        "vfork",
        "wait4",
        "waitid",
        "write",
        "writev",
        "fork",
        "clone3_is_not_a_name_here",
    ];
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            { "names": allowed.as_slice(), "action": "SCMP_ACT_ALLOW" },
            // Docker's clone rule: no namespace flags.
            { "names": ["clone"], "action": "SCMP_ACT_ALLOW",
              "args": [{ "index": 0, "value": 2114060288u64, "valueTwo": 0,
                         "op": "SCMP_CMP_MASKED_EQ" }] },
            { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 },
            { "names": ["personality"], "action": "SCMP_ACT_ALLOW",
              "args": [{ "index": 0, "value": 0, "op": "SCMP_CMP_EQ" }] },
            { "names": ["personality"], "action": "SCMP_ACT_ALLOW",
              "args": [{ "index": 0, "value": 8, "op": "SCMP_CMP_EQ" }] }
        ]
    })
}

#[tokio::test]
async fn seccomp_allow_list_runs_a_shell() {
    let agent = agent_or_skip!();
    // A pipe makes the shell fork (clone with SIGCHLD only, allowed by the mask).
    let script = "echo ok; echo piped | cat; mkdir /tmp/x || echo no-mkdir";
    let s = with_seccomp(spec(&["sh", "-c", script]), docker_like());
    let (exit, out, err) = run(&agent, request(&agent, "docker", &s)).await;
    assert_eq!(exit.exit_code, 0, "stderr: {err}");
    assert_eq!(out, "ok\npiped\nno-mkdir\n");
    assert!(err.contains("Operation not permitted"), "stderr: {err}");
    assert!(
        agent.log().contains("clone3_is_not_a_name_here"),
        "unknown names are logged"
    );
}

#[tokio::test]
async fn bad_seccomp_profiles_name_the_field() {
    let agent = agent_or_skip!();
    let mut client = ContainersClient::new(agent.channel.clone());
    let cases = [
        (
            json!({ "defaultAction": "SCMP_ACT_BOGUS" }),
            "linux.seccomp.defaultAction",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" }] }),
            "linux.seccomp.syscalls[0].action",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                   "args": [{ "index": 0, "value": 1, "op": "SCMP_CMP_NOPE" }] }] }),
            "linux.seccomp.syscalls[0].args[0].op",
        ),
    ];
    for (i, (seccomp, field)) in cases.into_iter().enumerate() {
        let s = with_seccomp(spec(&["true"]), seccomp);
        let status = client
            .create(request(&agent, &format!("bad{i}"), &s))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
}

fn run_as(user: &str, group: &str) -> Option<RunAsUser> {
    Some(RunAsUser {
        user: user.into(),
        group: group.into(),
    })
}

const ID_SCRIPT: &str = "id -u; id -g; id -G; echo $HOME";

#[tokio::test]
async fn users_and_groups_by_name() {
    let agent = agent_or_skip!();
    let mut req = request(&agent, "web", &spec(&["sh", "-c", ID_SCRIPT]));
    req.run_as = run_as("web", "");
    let (exit, out, err) = run(&agent, req).await;
    assert_eq!(exit.exit_code, 0, "{err}");
    assert_eq!(out, "1000\n1000\n1000 29 44\n/home/web\n");

    // A group by name, and the spec's own additional gids are kept.
    let mut s = spec(&["sh", "-c", ID_SCRIPT]);
    s["process"]["user"]["additionalGids"] = json!([7]);
    let mut req = request(&agent, "db", &s);
    req.run_as = run_as("db", "staff");
    let (_, out, _) = run(&agent, req).await;
    assert_eq!(out, "1001\n50\n50 7 29\n/var/db\n");

    // Numeric ids: a uid with an entry gets its groups and home; one without gets gid 0.
    let mut req = request(&agent, "num", &spec(&["sh", "-c", ID_SCRIPT]));
    req.run_as = run_as("1000", "");
    let (_, out, _) = run(&agent, req).await;
    assert_eq!(out, "1000\n1000\n1000 29 44\n/home/web\n");
    let mut req = request(&agent, "nobody", &spec(&["sh", "-c", ID_SCRIPT]));
    req.run_as = run_as("4242", "4343");
    let (_, out, _) = run(&agent, req).await;
    assert_eq!(out, "4242\n4343\n4343\n/\n");

    // No run_as: the spec's uid, and HOME from its passwd entry.
    let (_, out, _) = run(
        &agent,
        request(&agent, "spec", &spec(&["sh", "-c", ID_SCRIPT])),
    )
    .await;
    assert_eq!(out, "0\n0\n0\n/root\n");
}

#[tokio::test]
async fn unknown_users_and_groups_are_invalid() {
    let agent = agent_or_skip!();
    let mut client = ContainersClient::new(agent.channel.clone());
    for (user, group, field) in [
        ("ghost", "", "run_as.user"),
        ("web", "wheel", "run_as.group"),
    ] {
        let mut req = request(&agent, "bad", &spec(&["true"]));
        req.run_as = run_as(user, group);
        let status = client.create(req).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{field}: {status:?}");
    }
    fs::remove_file(agent.dir.path().join("rootfs/etc/passwd")).expect("rm passwd");
    let mut req = request(&agent, "bad", &spec(&["true"]));
    req.run_as = run_as("web", "");
    let status = client.create(req).await.expect_err("no passwd");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("no /etc/passwd"), "{status:?}");
}
