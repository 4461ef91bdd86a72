//! A real `vesseld serve` inside the test host, on a scratch configuration
//! (its own socket, state and run dirs, a CNI conflist of Debian's bridge,
//! host-local and portmap plugins), and a CRI client connected to it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use tonic::Code;

use crate::env_path;
use crate::netns::netns_exists;
use crate::running_vmms;

/// The pod subnet of the test network (host-local hands out from it; the
/// bridge `vsl0` on the test host is its gateway).
pub const POD_SUBNET: &str = "10.99.0.0/24";

/// The gateway on the test host.
pub const POD_GATEWAY: &str = "10.99.0.1";

/// The CNI network's bridge on the test host.
pub const BRIDGE: &str = "vsl0";

/// The test network's CNI conflist: Debian's bridge (the gateway on the test
/// host) with host-local addresses from `subnet` kept in `ipam_dir`, then
/// portmap.
pub fn bridge_conflist(
    name: &str,
    bridge: &str,
    subnet: &str,
    gateway: &str,
    ipam_dir: &Path,
) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                "ipam": {
                    "type": "host-local", "dataDir": ipam_dir,
                    "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// A vesseld serving CRI, killed (SIGKILL) on drop if still running.
pub struct Vesseld {
    child: Option<Child>,
    /// Its scratch root.
    pub dir: PathBuf,
    /// The CRI socket.
    pub socket: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// Where host-local keeps its allocations.
    pub ipam_dir: PathBuf,
}

impl Drop for Vesseld {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Vesseld {
    /// Writes the configuration under `dir` and starts vesseld; waits for its socket.
    pub fn start(dir: &Path, registry_host: &str) -> Vesseld {
        Self::start_with(dir, registry_host, "")
    }

    /// As [`Vesseld::start`], with `extra` appended to the config file (more tables).
    pub fn start_with(dir: &Path, registry_host: &str, extra: &str) -> Vesseld {
        let conf_dir = dir.join("cni");
        let ipam_dir = dir.join("ipam");
        std::fs::create_dir_all(&conf_dir).expect("cni conf dir");
        std::fs::write(
            conf_dir.join("10-vessel-e2e.conflist"),
            bridge_conflist("vessel-e2e", BRIDGE, POD_SUBNET, POD_GATEWAY, &ipam_dir).to_string(),
        )
        .expect("conflist");
        let socket = dir.join("vessel.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"socket = "{socket}"
state_dir = "{state}"
run_dir = "{run}"

[log]
level = "debug"

[cni]
conf_dir = "{conf}"
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]

[cgroup]
parent = "{CGROUP_PARENT}"

[registry.registries."{registry_host}"]
plain_http = true
{extra}
"#,
                socket = socket.display(),
                state = dir.join("state").display(),
                run = dir.join("run").display(),
                conf = conf_dir.display(),
            ),
        )
        .expect("config.toml");
        let mut v = Vesseld {
            child: None,
            dir: dir.to_path_buf(),
            socket,
            config,
            ipam_dir,
        };
        v.spawn();
        v
    }

    /// (Re)starts the daemon on the same configuration.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vesseld.log"))
            .expect("vesseld log");
        let child = Command::new(env_path("VESSEL_VESSELD"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start vesseld serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("vesseld exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "vesseld did not serve:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the daemon with SIGKILL (its pods keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("vesseld runs");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("wait for vesseld")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vesseld.log")).unwrap_or_default()
    }

    /// The last 4 KiB of every pod's `console.log` and `vmm.log`: what a
    /// failing test prints to say whether the guest or the VMM gave up.
    pub fn pod_log_tails(&self) -> String {
        pod_log_tails(&self.dir)
    }

    /// The pods' run dir.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// A CRI client on its socket.
    pub async fn connect(&self) -> Cri {
        connect(&self.socket).await
    }
}

/// The `vessel` client's CRI connection (both services on one channel):
/// the e2e suite drives vesseld through the same library as the client.
pub use vessel_client::Cri;

/// Connects to a CRI socket.
pub async fn connect(socket: &Path) -> Cri {
    let endpoint = format!("unix://{}", socket.display());
    vessel_client::connect_with_timeout(&endpoint, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("connect to the CRI socket {}: {e}", socket.display()))
}

/// A pod config as the kubelet builds one: metadata, hostname, DNS, a label `app=NAME`.
pub fn pod_config(name: &str, log_dir: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "e2e".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.into(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.99.0.53".into()],
            searches: vec!["e2e.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// A container config: metadata, image, command, env `GREETING`, working dir `/tmp`, log `NAME.log`.
pub fn container_config(name: &str, image: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        envs: vec![KeyValue {
            key: "GREETING".into(),
            value: "hello from CRI".into(),
        }],
        working_dir: "/tmp".into(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// The container's CRI status.
pub async fn status_of(cri: &mut Cri, id: &str) -> ContainerStatus {
    cri.runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("a status")
}

/// Waits (60 s at most) until the container has exited; its status.
pub async fn wait_exited(cri: &mut Cri, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status_of(cri, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The code and message of a call that must fail.
pub fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let e = r.expect_err("the call must fail");
    (e.code(), e.message().to_string())
}

/// No sandbox, container, VMM, netns, pod state, host-local address or
/// mount of vesseld's is left (after the pod `pod_id` was removed).
pub async fn nothing_left(cri: &mut Cri, vesseld: &Vesseld, pod_id: &str) {
    let listed = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");
    let containers = cri
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(containers.is_empty(), "{containers:?}");
    assert!(
        !netns_exists(&format!("vessel-{}", &pod_id[..16])),
        "the pod's netns is left"
    );
    no_pod_leftovers(vesseld);
}

/// What no pod may leave on the node once none runs (also after a refused
/// or failed RunPodSandbox): a VMM, a virtiofsd, a netns, its run or state
/// dir (sockets, logs), a host-local allocation, a cgroup, a mount.
pub fn no_pod_leftovers(vesseld: &Vesseld) {
    assert_eq!(running_vmms(), Vec::<u32>::new(), "stray vessel-vmm");
    assert_eq!(
        crate::running_virtiofsds(),
        Vec::<u32>::new(),
        "stray virtiofsd"
    );
    let netns: Vec<_> = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vessel-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(netns.is_empty(), "pod netns left: {netns:?}");
    for pods in [
        vesseld.run_dir().join("pods"),
        vesseld.dir.join("state").join("pods"),
    ] {
        let left: Vec<_> = std::fs::read_dir(&pods)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "pod state left: {left:?}");
    }
    let ipam: Vec<_> = std::fs::read_dir(vesseld.ipam_dir.join("vessel-e2e"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(ipam.is_empty(), "host-local allocations left: {ipam:?}");
    let cgroups: Vec<_> = std::fs::read_dir(pod_cgroups())
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(cgroups.is_empty(), "pod cgroups left: {cgroups:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = vesseld.dir.display().to_string();
    let ours: Vec<_> = mounts.lines().filter(|l| l.contains(&root)).collect();
    assert!(ours.is_empty(), "mounts left: {ours:#?}");
}

/// Whether `ip` answers one ping from the test host.
pub fn ping(ip: &str) -> bool {
    // busybox's: the test host (the development machine's root) has no iputils.
    std::process::Command::new(crate::busybox::BUSYBOX)
        .args(["ping", "-c", "1", "-W", "5", ip])
        .status()
        .is_ok_and(|s| s.success())
}

/// Pulls `image` through the CRI; its image ref.
pub async fn pull(cri: &mut Cri, image: &str) -> String {
    cri.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("PullImage {image}: {e}"))
        .into_inner()
        .image_ref
}

/// Runs a pod sandbox; its id (panics with vesseld's log on failure).
pub async fn run_pod(cri: &mut Cri, vesseld: &Vesseld, config: &PodSandboxConfig) -> String {
    let id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", vesseld.log()))
        .into_inner()
        .pod_sandbox_id;
    let cgroup = pod_cgroups().join(&id[..16]);
    assert!(
        cgroup.is_dir(),
        "the pod's cgroup is not under cgroup.parent: {}",
        cgroup.display()
    );
    id
}

/// `cgroup.parent` of the tests' vesseld: a nested slice, so that the
/// tests see it expanded as systemd lays slices out.
pub const CGROUP_PARENT: &str = "vessel-e2e.slice";

/// Where the tests' vesseld puts pod cgroups (the test host has cgroup v2).
pub fn pod_cgroups() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup/vessel.slice/vessel-e2e.slice")
}

/// Creates and starts a container in a pod; its id.
pub async fn start_container(
    cri: &mut Cri,
    vesseld: &Vesseld,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let name = config.metadata.as_ref().map(|m| m.name.clone());
    let id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer {name:?}: {e}\n{}", vesseld.log()))
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer {name:?}: {e}\n{}", vesseld.log()));
    id
}

/// What a command run with ExecSync printed and returned.
#[derive(Debug)]
pub struct ExecOutput {
    /// stdout, lossily as text.
    pub stdout: String,
    /// stderr, lossily as text.
    pub stderr: String,
    /// The exit code.
    pub exit_code: i32,
}

/// Runs `sh -c SCRIPT` in a container through ExecSync (30 s timeout).
pub async fn sh(cri: &mut Cri, container_id: &str, script: &str) -> ExecOutput {
    let r = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: container_id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 30,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync {script:?}: {e}"))
        .into_inner();
    ExecOutput {
        stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        exit_code: r.exit_code,
    }
}

/// Stops and removes a pod sandbox.
pub async fn remove_pod(cri: &mut Cri, vesseld: &Vesseld, pod_id: &str) {
    cri.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", vesseld.log()));
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", vesseld.log()));
}

/// [`Vesseld::pod_log_tails`] of the vesseld whose dir is `dir`.
pub fn pod_log_tails(dir: &Path) -> String {
    let mut out = String::new();
    let pods = dir.join("state").join("pods");
    for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
        for name in ["console.log", "vmm.log"] {
            let path = pod.path().join(name);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let tail = &bytes[bytes.len().saturating_sub(4 << 10)..];
            out += &format!(
                "--- {} ends:\n{}\n",
                path.display(),
                String::from_utf8_lossy(tail)
            );
        }
    }
    out
}
