//! The client against a real CRI runtime: a private containerd (Debian's
//! package, the project's peer runtime) with its own root, state and socket
//! in a temporary directory, pulling from a private Debian `docker-registry`
//! on 127.0.0.1. It checks that the wire, the errors and the output match a
//! runtime that crictl users know. Pods are not run here (that needs runc
//! and a pause image; vesseld's own pods are the end-to-end suite's job).
//!
//! Needs root, `containerd` and `docker-registry` (tests/deps.sh installs them).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vessel_client::verbs::{self, Deadlines, Format};
use vessel_client::{connect_with_timeout, ClientError, Cri};

const DEADLINES: Deadlines = Deadlines {
    quick: Some(Duration::from_secs(10)),
    long: Some(Duration::from_secs(60)),
};

/// A child process killed and reaped when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str], log: &Path) -> Reaped {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} (tests/deps.sh installs it): {e}"));
    Reaped(child)
}

fn sha256(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to the registry; returns the status and the Location header.
fn http(
    port: u16,
    method: &str,
    target: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Option<String>) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, None); // Not listening (yet).
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    let status = reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let location = reply.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_string())
    });
    (status, location)
}

fn push_blob(port: u16, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let (status, location) = http(
        port,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        "text/plain",
        b"",
    );
    assert_eq!(status, 202, "blob upload start");
    let location = location.unwrap();
    let path = location
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .unwrap_or(&location);
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _) = http(
        port,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        "application/octet-stream",
        data,
    );
    assert_eq!(status, 201, "blob upload");
    digest
}

/// Pushes a one-layer OCI image (busybox as /bin/sh) as `repo:tag`.
fn push_image(port: u16, repo: &str, tag: &str) {
    let mut tar = tar::Builder::new(Vec::new());
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static (tests/deps.sh installs it)");
    let mut header = tar::Header::new_gnu();
    header.set_size(busybox.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, "bin/sh", busybox.as_slice())
        .unwrap();
    let layer = tar.into_inner().unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        sha256(&layer)
    );
    let layer_digest = push_blob(port, repo, &layer);
    let config_digest = push_blob(port, repo, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":{},"digest":"{layer_digest}"}}]}}"#,
        config.len(),
        layer.len()
    );
    let (status, _) = http(
        port,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    );
    assert_eq!(status, 201, "manifest upload");
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn verbs_against_containerd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let port = free_port();
    std::fs::write(
        d.join("registry.yml"),
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            d.join("registry").display()
        ),
    )
    .unwrap();
    let _registry = spawn(
        "docker-registry",
        &["serve", d.join("registry.yml").to_str().unwrap()],
        &d.join("registry.log"),
    );
    wait_for("docker-registry", || {
        http(port, "GET", "/v2/", "text/plain", b"").0 == 200
    });
    push_image(port, "busybox", "1");

    let socket = d.join("containerd.sock");
    std::fs::write(
        d.join("containerd.toml"),
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_port = "0"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:{port}"]
  endpoint = ["http://127.0.0.1:{port}"]
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
        ),
    )
    .unwrap();
    let _containerd = spawn(
        "containerd",
        &["--config", d.join("containerd.toml").to_str().unwrap()],
        &d.join("containerd.log"),
    );
    wait_for("containerd's socket", || socket.exists());
    let endpoint = format!("unix://{}", socket.display());
    let mut cri: Option<Cri> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cri.is_none() {
        // The socket exists a moment before the CRI services answer.
        if let Ok(mut c) = connect_with_timeout(&endpoint, Duration::from_secs(5)).await {
            if verbs::version(&mut c, DEADLINES, &mut Vec::new())
                .await
                .is_ok()
            {
                cri = Some(c);
                continue;
            }
        }
        assert!(
            Instant::now() < deadline,
            "containerd's CRI did not answer in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut cri = cri.unwrap();

    let mut out = Vec::new();
    verbs::version(&mut cri, DEADLINES, &mut out).await.unwrap();
    let version = text(out);
    assert!(version.contains("RuntimeName:  containerd\n"), "{version}");
    assert!(version.ends_with("RuntimeApiVersion:  v1\n"), "{version}");

    let mut out = Vec::new();
    verbs::info(&mut cri, Format::Json, DEADLINES, &mut out)
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let conditions = info["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions.iter().any(|c| c["type"] == "RuntimeReady"),
        "{info}"
    );
    // containerd's verbose info values are JSON objects: embedded parsed, as crictl does.
    assert!(info["config"].is_object(), "{info}");

    let image = format!("127.0.0.1:{port}/busybox:1");
    let mut out = Vec::new();
    let image_ref = verbs::pull(&mut cri, &image, &Default::default(), DEADLINES, &mut out)
        .await
        .unwrap();
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    assert_eq!(text(out), format!("Image is up to date for {image_ref}\n"));

    let mut out = Vec::new();
    verbs::images(&mut cri, &Default::default(), DEADLINES, &mut out)
        .await
        .unwrap();
    let table = text(out);
    let row = format!("127.0.0.1:{port}/busybox");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&row) && l.contains(&image_ref[7..20])),
        "{table}"
    );

    let mut out = Vec::new();
    verbs::inspecti(
        &mut cri,
        std::slice::from_ref(&image),
        Format::Json,
        DEADLINES,
        &mut out,
    )
    .await
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["status"]["id"], image_ref.as_str());
    assert_eq!(doc["status"]["repoTags"][0], image.as_str());
    assert!(
        doc["status"]["size"].is_string(),
        "uint64 as a string: {doc}"
    );
    assert_eq!(
        doc["info"]["imageSpec"]["config"]["Entrypoint"][0],
        "/bin/sh"
    );

    // The image filesystem's usage, as crictl prints it.
    let mut out = Vec::new();
    verbs::imagefsinfo(&mut cri, Format::Json, DEADLINES, &mut out)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let fs = &doc["status"]["imageFilesystems"][0];
    assert!(
        fs["fsId"]["mountpoint"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{doc}"
    );
    assert!(
        fs["usedBytes"]["value"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some(),
        "uint64 as a string (containerd counts its snapshots later): {doc}"
    );

    // A runtime error keeps its gRPC code and message.
    let missing = format!("127.0.0.1:{port}/busybox:nope");
    let err = verbs::pull(
        &mut cri,
        &missing,
        &Default::default(),
        DEADLINES,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Rpc { .. }), "{err}");
    assert!(err.to_string().contains("not found"), "{err}");

    let mut out = Vec::new();
    verbs::pods(&mut cri, &Default::default(), DEADLINES, &mut out)
        .await
        .unwrap();
    assert_eq!(text(out).lines().count(), 1, "only the header: no pods");

    let mut out = Vec::new();
    verbs::rmi(
        &mut cri,
        std::slice::from_ref(&image),
        false,
        DEADLINES,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(text(out), format!("Deleted: {image}\n"));
    let mut out = Vec::new();
    let quiet = verbs::ImagesOptions {
        quiet: true,
        ..Default::default()
    };
    verbs::images(&mut cri, &quiet, DEADLINES, &mut out)
        .await
        .unwrap();
    assert_eq!(text(out), "");
}
