//! A real OCI registry (Debian's `docker-registry`) on 127.0.0.1 inside the
//! test host, and a busybox image pushed to it, for the CRI tests to pull.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use crate::busybox::BUSYBOX;

/// A running `docker-registry`, stopped on drop.
pub struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts one with its storage under `dir`, on a free port.
    pub fn start(dir: &Path) -> Registry {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(
            bin.exists(),
            "Debian's docker-registry is needed (tests/deps.sh installs it)"
        );
        std::fs::create_dir_all(dir).expect("registry dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), cfg).expect("registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return reg;
                }
            }
            assert!(Instant::now() < deadline, "docker-registry did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:port`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn sha256(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The applets the busybox image links.
const APPLETS: &[&str] = &[
    "sh",
    "cat",
    "echo",
    "ls",
    "ping",
    "sleep",
    "true",
    "false",
    "id",
    "hostname",
    "ip",
    "nc",
    "head",
    "wc",
    "grep",
    "mkdir",
    "rm",
    "env",
    "pwd",
    "touch",
    "ln",
    "readlink",
    "wget",
    "httpd",
    "stat",
    "test",
    "dd",
    "sha256sum",
    "stty",
];

/// One layer: busybox with its applets, /etc/passwd and /etc/group, /tmp.
fn busybox_layer() -> (Vec<u8>, Vec<u8>) {
    let bb = std::fs::read(BUSYBOX).expect("/bin/busybox (busybox-static)");
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if !link.is_empty() {
            h.set_link_name(link).expect("link name");
        }
        h.set_path(path).expect("path");
        h.set_cksum();
        b.append(&h, data).expect("tar entry");
    };
    for dir in ["bin/", "etc/", "tmp/", "root/", "proc/", "sys/", "dev/"] {
        add(
            dir,
            tar::EntryType::Directory,
            b"",
            "",
            if dir == "tmp/" { 0o1777 } else { 0o755 },
        );
    }
    add("bin/busybox", tar::EntryType::Regular, &bb, "", 0o755);
    for applet in APPLETS {
        add(
            &format!("bin/{applet}"),
            tar::EntryType::Symlink,
            b"",
            "busybox",
            0o777,
        );
    }
    add(
        "etc/passwd",
        tar::EntryType::Regular,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        "",
        0o644,
    );
    add(
        "etc/group",
        tar::EntryType::Regular,
        b"root:x:0:\nnogroup:x:65534:\n",
        "",
        0o644,
    );
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (tar, gz.finish().expect("gzip"))
}

/// Pushes a busybox image as `busybox:latest` (config: `PATH`, `Cmd sh`,
/// `StopSignal SIGTERM`); returns its reference.
pub async fn push_busybox(host: &str) -> String {
    let (tar, blob) = busybox_layer();
    push_one_layer(
        host,
        "busybox",
        serde_json::json!({
            "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
            "Cmd": ["/bin/sh"],
            "StopSignal": "SIGTERM",
        }),
        &tar,
        blob,
    )
    .await
}

/// Pushes `repo:latest`, an image of one layer holding the file `path`
/// (relative) with `data`; returns its reference.
pub async fn push_one_file(host: &str, repo: &str, path: &str, data: &[u8]) -> String {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_path(path).expect("path");
    h.set_cksum();
    b.append(&h, data).expect("tar entry");
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let blob = gz.finish().expect("gzip");
    push_one_layer(host, repo, serde_json::json!({}), &tar, blob).await
}

/// Pushes `repo:latest`, an amd64 image of one gzip layer (`blob`, whose
/// uncompressed form is `tar`) with the image config `config`; returns its
/// reference.
pub async fn push_one_layer(
    host: &str,
    repo: &str,
    config: serde_json::Value,
    tar: &[u8],
    blob: Vec<u8>,
) -> String {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [sha256(tar)] },
    }))
    .expect("config json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&blob), "size": blob.len() }],
    }))
    .expect("manifest json");
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let r = Reference::with_tag(host.to_string(), repo.into(), "latest".into());
    client
        .store_auth_if_needed(host, &RegistryAuth::Anonymous)
        .await;
    client
        .push_blob(&r, config.clone(), &sha256(&config))
        .await
        .expect("push config");
    client
        .push_blob(&r, blob.clone(), &sha256(&blob))
        .await
        .expect("push layer");
    client
        .push_manifest_raw(
            &r,
            manifest,
            http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        )
        .await
        .expect("push manifest");
    format!("{host}/{repo}:latest")
}

/// A scratch directory under `$VESSEL_SCRATCH`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = crate::env_path("VESSEL_SCRATCH").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
