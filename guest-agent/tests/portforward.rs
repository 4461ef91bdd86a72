//! The `PortForward` service end to end: the `vessel-agent` binary in its own
//! namespaces (`tests/common`), a pod set up with a veth, and busybox `nc`
//! listeners in containers joining the pod's network namespace.
//!
//! Skipped (with a note) when not root or when unshare, nsenter, ip or busybox are missing.

mod common;

use std::fs;
use std::time::Duration;

use common::{build_busybox_rootfs, namespaced_supported, NamespacedAgent};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};
use vessel_agent::proto::containers_client::ContainersClient;
use vessel_agent::proto::port_forward_client::PortForwardClient;
use vessel_agent::proto::port_forward_request::Message;
use vessel_agent::proto::sandbox_client::SandboxClient;
use vessel_agent::proto::{
    CreateContainerRequest, Interface, PortForwardRequest, PortForwardResponse, PortForwardTarget,
    SetupSandboxRequest, StartContainerRequest,
};

const MAC: &str = "02:00:00:00:00:01";
const POD_IP: &str = "10.10.0.2";

/// An agent whose pod has `lo` and a veth with [`POD_IP`], and a busybox rootfs.
async fn pod() -> NamespacedAgent {
    let agent = NamespacedAgent::start().await;
    build_busybox_rootfs(
        &agent.dir.path().join("rootfs"),
        &["sh", "nc", "cat", "wc", "echo"],
    );
    agent.in_netns(&[
        "ip", "link", "add", "vtest0", "address", MAC, "type", "veth", "peer", "name", "vpeer0",
    ]);
    agent.in_netns(&["ip", "link", "set", "vpeer0", "up"]);
    let req = SetupSandboxRequest {
        sandbox_id: "pf".into(),
        hostname: "pf-host".into(),
        interfaces: vec![Interface {
            mac: MAC.into(),
            name: "eth0".into(),
            addresses: vec![format!("{POD_IP}/24")],
            mtu: 0,
        }],
        ..Default::default()
    };
    if let Err(status) = SandboxClient::new(agent.channel.clone()).setup(req).await {
        panic!("setup: {status:?}\n{}", agent.log());
    }
    agent
}

macro_rules! pod_or_skip {
    () => {{
        if !namespaced_supported() {
            return;
        }
        pod().await
    }};
}

/// Starts a container in the pod running `args`.
async fn start(agent: &NamespacedAgent, id: &str, args: &[&str]) {
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": { "uid": 0, "gid": 0 }, "args": args, "env": ["PATH=/bin"], "cwd": "/"
        },
        "root": { "path": "rootfs" },
        "mounts": [{ "destination": "/proc", "type": "proc", "source": "proc" }],
        "linux": { "namespaces": [
            { "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
            { "type": "mount" }, { "type": "network" }
        ] }
    });
    let log = agent.dir.path().join(format!("{id}.log"));
    let mut client = ContainersClient::new(agent.channel.clone());
    let req = CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: spec.to_string(),
        rootfs: agent.dir.path().join("rootfs").display().to_string(),
        stdout_path: log.display().to_string(),
        stderr_path: log.display().to_string(),
        ..Default::default()
    };
    if let Err(status) = client.create(req).await {
        panic!("create {id}: {status:?}\n{}", agent.log());
    }
    let req = StartContainerRequest {
        container_id: id.into(),
    };
    client.start(req).await.expect("start");
}

/// An open forward: a sender for the host's data and the agent's responses.
#[derive(Debug)]
struct Forward {
    tx: mpsc::Sender<PortForwardRequest>,
    rx: Streaming<PortForwardResponse>,
}

impl Forward {
    async fn send(&self, data: &[u8]) {
        let msg = PortForwardRequest {
            message: Some(Message::Data(data.to_vec())),
        };
        self.tx.send(msg).await.expect("send");
    }

    /// Reads responses until `want` bytes arrived (or the stream ends).
    async fn read(&mut self, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            match self.rx.message().await {
                Ok(Some(msg)) => got.extend_from_slice(&msg.data),
                Ok(None) => break,
                Err(status) => panic!("forward failed: {status:?}"),
            }
        }
        got
    }

    /// Reads everything up to the end of the response stream.
    async fn read_to_end(&mut self) -> Vec<u8> {
        self.read(usize::MAX).await
    }
}

async fn open(agent: &NamespacedAgent, port: u32, address: &str) -> Result<Forward, Status> {
    let (tx, rx) = mpsc::channel(4);
    let target = PortForwardRequest {
        message: Some(Message::Target(PortForwardTarget {
            port,
            address: address.into(),
        })),
    };
    tx.send(target).await.expect("queue target");
    let mut client = PortForwardClient::new(agent.channel.clone());
    let rx = client.forward(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Forward { tx, rx })
}

/// Opens a forward, retrying while the container's listener is not up yet.
async fn open_when_listening(agent: &NamespacedAgent, port: u32, address: &str) -> Forward {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open(agent, port, address).await {
            Ok(forward) => return forward,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("forward to {port}: {status:?}\n{}", agent.log()),
        }
    }
}

#[tokio::test]
async fn data_flows_both_ways_through_a_forward() {
    let agent = pod_or_skip!();
    let script = "read l; echo \"got $l\"; read m; echo \"and $m\"";
    start(
        &agent,
        "chat",
        &["nc", "-l", "-p", "7001", "-e", "sh", "-c", script],
    )
    .await;
    // To the pod's interface address, not loopback.
    let mut fwd = open_when_listening(&agent, 7001, POD_IP).await;
    fwd.send(b"one\n").await;
    assert_eq!(fwd.read(8).await, b"got one\n");
    fwd.send(b"two\n").await;
    assert_eq!(fwd.read(8).await, b"and two\n");
    // The program exited: its EOF ends the response stream.
    assert_eq!(fwd.read_to_end().await, b"");
}

#[tokio::test]
async fn host_half_close_reaches_the_listener() {
    let agent = pod_or_skip!();
    start(
        &agent,
        "count",
        &["nc", "-l", "-p", "7002", "-e", "wc", "-c"],
    )
    .await;
    let mut fwd = open_when_listening(&agent, 7002, "").await;
    // 1 MiB in 64 KiB messages; wc answers only after our end of stream.
    let chunk = vec![b'x'; 64 * 1024];
    let sender = {
        let tx = fwd.tx.clone();
        tokio::spawn(async move {
            for _ in 0..16 {
                let msg = PortForwardRequest {
                    message: Some(Message::Data(chunk.clone())),
                };
                tx.send(msg).await.expect("send");
            }
        })
    };
    sender.await.expect("sender");
    let (tx, _) = mpsc::channel(1);
    drop(std::mem::replace(&mut fwd.tx, tx));
    let out = fwd.read_to_end().await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "1048576");
}

#[tokio::test]
async fn large_responses_arrive_whole() {
    let agent = pod_or_skip!();
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    fs::write(agent.dir.path().join("rootfs/big"), &data).expect("write");
    start(
        &agent,
        "big",
        &["nc", "-l", "-p", "7003", "-e", "cat", "/big"],
    )
    .await;
    let mut fwd = open_when_listening(&agent, 7003, "127.0.0.1").await;
    let out = fwd.read_to_end().await;
    assert_eq!(out.len(), data.len());
    assert!(out == data, "bytes differ");
}

#[tokio::test]
async fn refused_ports_and_bad_targets_get_clear_statuses() {
    let agent = pod_or_skip!();
    let status = open(&agent, 7999, "").await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("port 7999"), "{status:?}");
    assert!(status.message().contains("refused"), "{status:?}");

    let status = open(&agent, 0, "").await.expect_err("port 0");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("target.port"), "{status:?}");
    let status = open(&agent, 80, "pod.local").await.expect_err("a name");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("target.address"), "{status:?}");

    // Data before the target.
    let (tx, rx) = mpsc::channel(1);
    let data = PortForwardRequest {
        message: Some(Message::Data(b"x".to_vec())),
    };
    tx.send(data).await.expect("queue");
    let status = PortForwardClient::new(agent.channel.clone())
        .forward(ReceiverStream::new(rx))
        .await
        .expect_err("data first");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("target"), "{status:?}");
}
