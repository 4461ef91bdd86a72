//! A pod VM for the tests that run containers: booting it, the share that
//! holds the containers' busybox rootfs, and vesseld's container spec.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vessel_agent_api::client::stdio::read_output;
use vessel_agent_api::client::Channel;
use vessel_agent_api::proto::containers_client::ContainersClient;
use vessel_agent_api::proto::{
    CreateContainerRequest, DeleteContainerRequest, SandboxInfo, SharedMount,
    StartContainerRequest, StdioStream, StreamStdio, WaitContainerRequest,
};
use vessel_host_runtime::pod::container_spec;
use vessel_host_runtime::vm::{FsShare, VmConfig, VmProcess};

use crate::busybox::build_rootfs;
use crate::virtiofsd::Virtiofsd;
use crate::{console_tail, BOOT_TIMEOUT};

/// Where the agent mounts the share in the guest.
pub const SHARED: &str = "/mnt/pod";

/// Boots the VM and connects to its agent (or panics with the console);
/// returns it, the VMM's pid and the agent channel.
pub async fn boot(config: VmConfig) -> (VmProcess, u32, Channel) {
    let mut vm = VmProcess::spawn(config).expect("vessel-vmm starts");
    let pid = vm.pid().expect("pid");
    match vm.connect_agent(BOOT_TIMEOUT).await {
        Ok(channel) => (vm, pid, channel),
        Err(e) => panic!("agent not reachable: {e}\n{}", console_tail(&vm)),
    }
}

/// Lays out a busybox rootfs in `<state dir>/shared/rootfs`, starts a real
/// virtiofsd on `<state dir>/shared` and adds it to `config` as the share
/// tagged `pod`; returns the shared directory and virtiofsd.
pub async fn share_busybox_rootfs(config: &mut VmConfig) -> (PathBuf, Virtiofsd) {
    let shared = config.state_dir.join("shared");
    build_rootfs(&shared.join("rootfs"));
    let virtiofsd = crate::virtiofsd::start(&shared, &config.state_dir.join("virtiofsd")).await;
    config.shares.push(FsShare {
        tag: "pod".into(),
        socket: virtiofsd.socket().clone(),
    });
    (shared, virtiofsd)
}

/// The share tagged `pod`, mounted read-write at [`SHARED`].
pub fn pod_share() -> SharedMount {
    SharedMount {
        tag: "pod".into(),
        mount_point: SHARED.into(),
        read_only: false,
    }
}

/// The spec vesseld gives a container of the pod (shaped like containerd's
/// default: `host-runtime/src/pod/spec.rs`) running busybox `sh -c script`
/// as root; `sandbox` is what `Sandbox.Setup` returned.
pub fn spec(sandbox: &SandboxInfo, script: &str) -> Value {
    let args = ["/bin/sh", "-c", script].map(String::from);
    let spec = container_spec(&args, sandbox).expect("vesseld's container spec");
    serde_json::to_value(spec).expect("spec as JSON")
}

/// Runs a busybox container (rootfs at `<SHARED>/rootfs`) that writes
/// `bytes` zeros to its stdout with `dd` in `block`-byte writes, reads the
/// stream through the agent's `Stdio.Output`, calling `on_chunk` for each
/// piece, and removes the container; an error says which step failed.
pub async fn dd_to_stdout(
    channel: Channel,
    id: &str,
    bytes: u64,
    block: u64,
    on_chunk: impl FnMut(&[u8]),
) -> Result<(), String> {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": { "uid": 0, "gid": 0 },
            "args": ["/bin/dd", "if=/dev/zero", format!("bs={block}"), format!("count={}", bytes / block)],
            "env": ["PATH=/bin"],
            "cwd": "/"
        },
        "root": { "path": "rootfs", "readonly": true },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"] }
        ],
        "linux": { "namespaces": [{ "type": "pid" }, { "type": "mount" }] }
    });
    let mut containers = ContainersClient::new(channel.clone());
    let container_id = id.to_string();
    containers
        .create(CreateContainerRequest {
            container_id: container_id.clone(),
            oci_spec_json: spec.to_string(),
            rootfs: format!("{SHARED}/rootfs"),
            streams: Some(StreamStdio::default()),
            ..CreateContainerRequest::default()
        })
        .await
        .map_err(|e| format!("Create: {e}"))?;
    containers
        .start(StartContainerRequest {
            container_id: container_id.clone(),
        })
        .await
        .map_err(|e| format!("Start: {e}"))?;
    let got = read_output(channel, id, "", StdioStream::Stdout, on_chunk)
        .await
        .map_err(|e| format!("stdout stream: {e:?}"))?;
    if got != bytes / block * block {
        return Err(format!("stdout stream: {got} bytes, not {bytes}"));
    }
    let exit = containers
        .wait(WaitContainerRequest {
            container_id: container_id.clone(),
        })
        .await
        .map_err(|e| format!("Wait: {e}"))?
        .into_inner();
    if exit.exit_code != 0 {
        return Err(format!("dd exited {}", exit.exit_code));
    }
    containers
        .delete(DeleteContainerRequest { container_id })
        .await
        .map_err(|e| format!("Delete: {e}"))?;
    Ok(())
}

/// A file's text, or "" if it cannot be read (for failure messages).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
