//! A real `vesseld serve` inside the test host, on a scratch configuration
//! (its own socket, state and run dirs, a CNI conflist of Debian's bridge,
//! host-local and portmap plugins), and a CRI client connected to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::env_path;

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

[registry.registries."{registry_host}"]
plain_http = true
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

    /// The pods' run dir.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// A CRI client on its socket.
    pub async fn connect(&self) -> Cri {
        connect(&self.socket).await
    }
}

/// Both CRI services on one channel.
pub struct Cri {
    /// RuntimeService.
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService.
    pub image: ImageServiceClient<Channel>,
}

/// Connects to a CRI socket.
pub async fn connect(socket: &Path) -> Cri {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://vessel.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect to the CRI socket");
    Cri {
        runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(40 << 20),
        image: ImageServiceClient::new(channel),
    }
}
