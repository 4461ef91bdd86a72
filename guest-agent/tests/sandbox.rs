//! The `Sandbox` service end to end: the `vessel-agent` binary on a Unix socket in
//! its own mount, pid, network, UTS and IPC namespaces, configuring a veth
//! created there, and containers joining the pod's namespaces.
//!
//! Skipped (with a note) when not root or when unshare, nsenter, ip or busybox are missing.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{
    add_namespace, build_busybox_rootfs, minimal_spec, namespaced_supported, NamespacedAgent,
};
use serde_json::{json, Value};
use tonic::Code;
use vessel_agent::proto::containers_client::ContainersClient;
use vessel_agent::proto::sandbox_client::SandboxClient;
use vessel_agent::proto::{
    CreateContainerRequest, DeleteContainerRequest, Dns, GetSandboxRequest, HostEntry, Interface,
    Neighbour, Route, SandboxInfo, SetupSandboxRequest, SharedMount, StartContainerRequest,
    WaitContainerRequest,
};

const MAC: &str = "02:00:00:00:00:01";

macro_rules! agent_or_skip {
    () => {{
        if !namespaced_supported() {
            return;
        }
        NamespacedAgent::start().await
    }};
}

/// A veth pair in the agent's netns; the end named `vtest0` has [`MAC`].
fn add_veth(agent: &NamespacedAgent) {
    agent.in_netns(&[
        "ip", "link", "add", "vtest0", "address", MAC, "type", "veth", "peer", "name", "vpeer0",
    ]);
    agent.in_netns(&["ip", "link", "set", "vpeer0", "up"]);
}

fn full_request() -> SetupSandboxRequest {
    SetupSandboxRequest {
        sandbox_id: "pod-a".into(),
        hostname: "pod-a-host".into(),
        dns: Some(Dns {
            nameservers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        hosts: vec![HostEntry {
            ip: "10.10.0.2".into(),
            names: vec!["pod-a-host".into()],
        }],
        sysctls: [
            ("net.ipv4.ip_forward".to_owned(), "1".to_owned()),
            ("kernel.shmmni".to_owned(), "1234".to_owned()),
        ]
        .into(),
        interfaces: vec![Interface {
            mac: MAC.to_uppercase(),
            name: "eth0".into(),
            addresses: vec!["10.10.0.2/24".into(), "fd00:10::2/64".into()],
            mtu: 1400,
        }],
        routes: vec![
            Route {
                destination: "default".into(),
                gateway: "10.10.0.1".into(),
                ..Default::default()
            },
            Route {
                destination: "10.20.0.0/16".into(),
                gateway: "10.10.0.254".into(),
                interface: "eth0".into(),
                metric: 50,
                ..Default::default()
            },
            Route {
                destination: "default".into(),
                gateway: "fd00:10::1".into(),
                interface: MAC.into(),
                ..Default::default()
            },
        ],
        neighbours: vec![Neighbour {
            ip: "10.10.0.1".into(),
            mac: "02:00:00:00:00:fe".into(),
            interface: "eth0".into(),
        }],
        mounts: Vec::new(),
        share_pid_namespace: false,
    }
}

async fn setup(
    agent: &NamespacedAgent,
    req: SetupSandboxRequest,
) -> Result<SandboxInfo, tonic::Status> {
    let mut client = SandboxClient::new(agent.channel.clone());
    client
        .setup(req)
        .await
        .map(|r| r.into_inner().sandbox.expect("sandbox info"))
}

fn hostname_in(agent: &NamespacedAgent, uts: &str) -> String {
    let ns = agent.path(uts);
    let out = std::process::Command::new("nsenter")
        .arg(format!("--uts={}", ns.display()))
        .arg("hostname")
        .output()
        .expect("nsenter hostname");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn sysctl(agent: &NamespacedAgent, path: &str) -> String {
    agent.in_netns(&["cat", path]).trim().to_owned()
}

#[tokio::test]
async fn setup_applies_network_files_sysctls_and_hostname() {
    let agent = agent_or_skip!();
    add_veth(&agent);
    let info = match setup(&agent, full_request()).await {
        Ok(info) => info,
        Err(status) => panic!("setup: {status:?}\n{}", agent.log()),
    };
    assert_eq!(info.sandbox_id, "pod-a");
    assert_eq!(info.interfaces.len(), 1);
    assert_eq!(
        (
            info.interfaces[0].mac.as_str(),
            info.interfaces[0].name.as_str()
        ),
        (MAC, "eth0")
    );

    let link = &agent.ip_json(&["link", "show", "eth0"])[0];
    assert_eq!(link["mtu"], 1400);
    assert_eq!(link["address"], MAC);
    assert!(
        link["flags"]
            .as_array()
            .expect("flags")
            .contains(&json!("UP")),
        "{link}"
    );
    let lo = &agent.ip_json(&["link", "show", "lo"])[0];
    assert!(
        lo["flags"]
            .as_array()
            .expect("flags")
            .contains(&json!("UP")),
        "{lo}"
    );

    let addrs = agent.ip_json(&["addr", "show", "eth0"]);
    let local: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect();
    assert!(local.contains(&"10.10.0.2/24".to_owned()), "{local:?}");
    assert!(local.contains(&"fd00:10::2/64".to_owned()), "{local:?}");

    let routes = agent.ip_json(&["route", "show"]);
    let has = |dst: &str, gw: &str| {
        routes
            .as_array()
            .expect("routes")
            .iter()
            .any(|r| r["dst"] == dst && r["gateway"] == gw && r["dev"] == "eth0")
    };
    assert!(has("default", "10.10.0.1"), "{routes}");
    assert!(has("10.20.0.0/16", "10.10.0.254"), "{routes}");
    let metric = routes
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["dst"] == "10.20.0.0/16")
        .map(|r| r["metric"].clone());
    assert_eq!(metric, Some(json!(50)), "{routes}");
    let routes6 = agent.ip_json(&["-6", "route", "show", "default"]);
    assert_eq!(routes6[0]["gateway"], "fd00:10::1", "{routes6}");

    let neigh = agent.ip_json(&["neigh", "show", "dev", "eth0"]);
    let entry = neigh
        .as_array()
        .expect("neigh")
        .iter()
        .find(|n| n["dst"] == "10.10.0.1")
        .unwrap_or_else(|| panic!("no neighbour: {neigh}"));
    assert_eq!(entry["lladdr"], "02:00:00:00:00:fe");
    assert!(entry["state"]
        .as_array()
        .expect("state")
        .contains(&json!("PERMANENT")));

    assert_eq!(sysctl(&agent, "/proc/sys/net/ipv4/ip_forward"), "1");

    let resolv = "nameserver 10.96.0.10\nsearch default.svc.cluster.local\noptions ndots:5\n";
    for dir in ["/etc", "/run/vessel/sandbox"] {
        let read = |name: &str| {
            fs::read_to_string(agent.path(&format!("{dir}/{name}"))).unwrap_or_default()
        };
        assert_eq!(read("resolv.conf"), resolv);
        assert_eq!(read("hostname"), "pod-a-host\n");
        assert!(
            read("hosts").ends_with("10.10.0.2\tpod-a-host\n"),
            "{}",
            read("hosts")
        );
    }
    assert_eq!(info.hosts_path, "/run/vessel/sandbox/hosts");
    let ns = info.namespaces.clone().expect("namespaces");
    assert_eq!(hostname_in(&agent, &ns.uts), "pod-a-host");
    assert!(ns.pid.is_empty());

    // Get reports the same; a second Setup is refused.
    let mut client = SandboxClient::new(agent.channel.clone());
    let got = client
        .get(GetSandboxRequest {})
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.sandbox, Some(info));
    let status = setup(&agent, full_request())
        .await
        .expect_err("second setup");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}

/// Asserts that a failed Setup left the guest untouched.
fn assert_nothing_applied(agent: &NamespacedAgent) {
    let link = &agent.ip_json(&["link", "show", "vtest0"])[0];
    assert_eq!(link["mtu"], 1500, "{link}");
    assert!(
        !link["flags"]
            .as_array()
            .expect("flags")
            .contains(&json!("UP")),
        "{link}"
    );
    let addrs = agent.ip_json(&["addr", "show", "vtest0"]);
    let inet: Vec<&Value> = addrs[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter(|a| a["family"] == "inet" || a["scope"] == "global")
        .collect();
    assert!(inet.is_empty(), "addresses left: {inet:?}");
    assert_eq!(agent.ip_json(&["route", "show"]), json!([]));
    assert_eq!(sysctl(agent, "/proc/sys/net/ipv4/ip_forward"), "0");
    for path in [
        "/etc/hosts",
        "/etc/resolv.conf",
        "/run/vessel/sandbox/hosts",
        "/run/vessel/sandbox/ns/uts",
    ] {
        assert!(!agent.path(path).exists(), "{path} left behind");
    }
}

/// A change that spoils a good request.
type Change = fn(&mut SetupSandboxRequest);

#[tokio::test]
async fn bad_requests_get_clear_statuses_and_apply_nothing() {
    let agent = agent_or_skip!();
    add_veth(&agent);
    let cases: Vec<(Change, &str)> = vec![
        (
            |r| {
                r.interfaces[0].mac = "02:00:00:00:00:99".into();
                r.routes[2].interface = "eth0".into();
            },
            "interfaces[0].mac: no interface with MAC 02:00:00:00:00:99",
        ),
        (
            |r| r.interfaces[0].addresses[0] = "10.10.0.2/33".into(),
            "interfaces[0].addresses[0]",
        ),
        (
            |r| r.routes[1].destination = "10.20.0.0".into(),
            "routes[1].destination",
        ),
        (
            |r| r.routes[0].gateway = "192.168.77.1".into(),
            "routes[0].gateway",
        ),
        (
            |r| {
                r.sysctls.insert("kernel.panic".into(), "1".into());
            },
            "sysctls[\"kernel.panic\"]",
        ),
        (
            |r| {
                r.sysctls.insert("net.ipv4.no_such_knob".into(), "1".into());
            },
            "net.ipv4.no_such_knob",
        ),
        (
            |r| r.neighbours[0].interface = "nosuchlink".into(),
            "neighbours[0].interface",
        ),
        // Fails only after everything else was applied: the mount is the last step.
        (
            |r| {
                r.mounts.push(SharedMount {
                    tag: "no-such-tag".into(),
                    mount_point: "/run/shared".into(),
                    read_only: true,
                })
            },
            "mounts[0].tag \"no-such-tag\"",
        ),
    ];
    for (change, field) in cases {
        let mut req = full_request();
        change(&mut req);
        let status = setup(&agent, req).await.expect_err(field);
        assert!(
            matches!(
                status.code(),
                Code::InvalidArgument | Code::FailedPrecondition
            ),
            "{field}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "want {field:?} in {status:?}"
        );
        assert_nothing_applied(&agent);
    }
    let mut client = SandboxClient::new(agent.channel.clone());
    let status = client
        .get(GetSandboxRequest {})
        .await
        .expect_err("not set up");
    assert_eq!(status.code(), Code::NotFound);
    // Nothing half-created: a good request still succeeds.
    if let Err(status) = setup(&agent, full_request()).await {
        panic!("setup after failures: {status:?}\n{}", agent.log());
    }
}

fn container_spec(script: &str) -> Value {
    let mut spec = minimal_spec(&["sh", "-c", script]);
    spec["hostname"] = json!("pod-b-host");
    add_namespace(&mut spec, "network");
    spec
}

/// Runs a container to completion and returns its stdout.
async fn run(agent: &NamespacedAgent, id: &str, script: &str) -> String {
    let mut client = ContainersClient::new(agent.channel.clone());
    let out = agent.dir.path().join(format!("{id}.out"));
    let req = CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: container_spec(script).to_string(),
        rootfs: agent.dir.path().join("rootfs").display().to_string(),
        stdout_path: out.display().to_string(),
        stderr_path: out.display().to_string(),
        ..Default::default()
    };
    if let Err(status) = client.create(req).await {
        panic!("create {id}: {status:?}\n{}", agent.log());
    }
    client
        .start(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .expect("start");
    let wait = client.wait(WaitContainerRequest {
        container_id: id.into(),
    });
    let exit = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("wait in time")
        .expect("wait")
        .into_inner();
    client
        .delete(DeleteContainerRequest {
            container_id: id.into(),
        })
        .await
        .expect("delete");
    let text = fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(exit.exit_code, 0, "{id}: {text}");
    text
}

/// The inode of a namespace file in the agent's view, as `readlink` shows it: `type:[inode]`.
fn ns_id(agent: &NamespacedAgent, path: &str, typ: &str) -> String {
    let meta = fs::metadata(agent.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    format!("{typ}:[{}]", meta.ino())
}

const NS_SCRIPT: &str =
    "for ns in uts ipc net pid; do readlink /proc/self/ns/$ns; done; hostname; echo $$";

#[tokio::test]
async fn containers_join_the_pods_uts_ipc_and_network_namespaces() {
    let agent = agent_or_skip!();
    build_busybox_rootfs(
        &agent.dir.path().join("rootfs"),
        &["sh", "readlink", "hostname", "echo", "cat"],
    );
    let mut req = full_request();
    req.hostname = "pod-b-host".into();
    req.interfaces.clear();
    req.routes.clear();
    req.neighbours.clear();
    req.sysctls.clear();
    let info = setup(&agent, req).await.expect("setup");
    let ns = info.namespaces.expect("namespaces");
    let a = run(&agent, "a", NS_SCRIPT).await;
    let b = run(&agent, "b", NS_SCRIPT).await;
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    assert_eq!(a.len(), 6, "{a:?}");
    assert_eq!(a[0], ns_id(&agent, &ns.uts, "uts"));
    assert_eq!(a[1], ns_id(&agent, &ns.ipc, "ipc"));
    assert_eq!(a[2], ns_id(&agent, &ns.net, "net"));
    assert_eq!(a[..3], b[..3]);
    // Each container is the init of a pid namespace of its own (inode numbers of
    // freed namespaces are reused, so comparing a[3] and b[3] would prove nothing).
    assert_eq!((a[4], a[5]), ("pod-b-host", "1"));
    assert_eq!((b[4], b[5]), ("pod-b-host", "1"));

    // Another hostname in the pod's UTS namespace is refused.
    let mut client = ContainersClient::new(agent.channel.clone());
    let mut spec = container_spec("true");
    spec["hostname"] = json!("elsewhere");
    let status = client
        .create(CreateContainerRequest {
            container_id: "c".into(),
            oci_spec_json: spec.to_string(),
            rootfs: agent.dir.path().join("rootfs").display().to_string(),
            ..Default::default()
        })
        .await
        .expect_err("hostname");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("oci_spec_json.hostname"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_shared_pid_namespace_is_held_by_the_pause_process() {
    let agent = agent_or_skip!();
    build_busybox_rootfs(
        &agent.dir.path().join("rootfs"),
        &["sh", "readlink", "hostname", "echo", "cat"],
    );
    let mut req = full_request();
    req.hostname = "pod-b-host".into();
    req.interfaces.clear();
    req.routes.clear();
    req.neighbours.clear();
    req.share_pid_namespace = true;
    let info = setup(&agent, req).await.expect("setup");
    let ns = info.namespaces.expect("namespaces");
    assert_eq!(ns.pid, "/run/vessel/sandbox/ns/pid");
    let a = run(&agent, "a", NS_SCRIPT).await;
    let b = run(&agent, "b", NS_SCRIPT).await;
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let pod_pid = ns_id(&agent, &ns.pid, "pid");
    assert_eq!((a[3], b[3]), (pod_pid.as_str(), pod_pid.as_str()));
    // The pause process is PID 1 there, so the containers are not.
    assert_ne!(a[5], "1");
    assert_ne!(b[5], "1");
    // Reachable from the containers, the pause process holds no capability.
    let status = run(&agent, "c", "cat /proc/1/status").await;
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(set));
        assert_eq!(
            line.and_then(|l| l.split_whitespace().nth(1)),
            Some("0000000000000000"),
            "{set} of the pause process:\n{status}"
        );
    }
}
