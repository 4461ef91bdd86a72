//! The CRI ImageService against a real registry (Debian's docker-registry on
//! 127.0.0.1 with htpasswd auth): the RPCs and their gRPC codes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tonic::{Code, Request};
use vessel_host_runtime::cri::image::ImageServiceImpl;
use vessel_image::digest::sha256;
use vessel_image::{ImageStore, RegistryConfig, StoreConfig};

/// The registry process, killed on drop even when the test fails.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(user: &str, pass: &str) -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("htpasswd");
    std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
    let cfg = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: t\n    path: {d}/htpasswd\n",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (tests/deps.sh installs it)");
    let reg = Registry {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
            let mut b = [0u8; 8];
            if s.read_exact(&mut b).is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    reg
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_service_over_a_real_registry() {
    let reg = start_registry("kube", "pw");
    let host = format!("127.0.0.1:{}", reg.port);

    // A one-layer busybox image, pushed with oci-client.
    let bb = std::fs::read("/bin/busybox").expect("busybox-static");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(bb.len() as u64);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "bin/busybox", bb.as_slice()).unwrap();
    let layer = b.into_inner().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": { "User": "65534" },
        "rootfs": { "type": "layers", "diff_ids": [sha256(&layer)] },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len() }],
    }))
    .unwrap();
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    client
        .store_auth_if_needed(&host, &RegistryAuth::Basic("kube".into(), "pw".into()))
        .await;
    let r = Reference::with_tag(host.clone(), "app".into(), "v1".into());
    client
        .push_blob(&r, config.clone(), &sha256(&config))
        .await
        .unwrap();
    client
        .push_blob(&r, layer.clone(), &sha256(&layer))
        .await
        .unwrap();
    client
        .push_manifest_raw(
            &r,
            manifest,
            http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path().join("images"));
    cfg.registry = RegistryConfig::from_toml(
        &format!("[registries.\"{host}\"]\nplain_http = true\n"),
        std::path::Path::new("test"),
    )
    .unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("state.redb")).unwrap());
    let svc = ImageServiceImpl::new(ImageStore::open(cfg, db).unwrap());
    let image = format!("{host}/app:v1");
    let auth = |pass: &str| {
        Some(AuthConfig {
            username: "kube".into(),
            password: pass.into(),
            ..Default::default()
        })
    };

    // Wrong password: PermissionDenied naming the registry.
    let e = svc
        .pull_image(Request::new(PullImageRequest {
            image: spec(&image),
            auth: auth("nope"),
            sandbox_config: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(&host), "{}", e.message());
    // Unknown image: NotFound.
    let e = svc
        .pull_image(Request::new(PullImageRequest {
            image: spec(&format!("{host}/app:missing")),
            auth: auth("pw"),
            sandbox_config: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Pull returns the image id (config digest).
    let pulled = svc
        .pull_image(Request::new(PullImageRequest {
            image: spec(&image),
            auth: auth("pw"),
            sandbox_config: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, sha256(&config));

    let st = svc
        .image_status(Request::new(ImageStatusRequest {
            image: spec(&image),
            verbose: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let img = st.image.unwrap();
    assert_eq!(img.id, pulled.image_ref);
    assert_eq!(img.repo_tags, vec![image.clone()]);
    assert_eq!(img.uid.map(|u| u.value), Some(65534));
    assert!(st.info["info"].contains("diff_ids"));

    let list = svc
        .list_images(Request::new(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec(&pulled.image_ref),
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.images.len(), 1);

    // Both filesystems are reported: the store's and the writable layers'.
    let fs = svc
        .image_fs_info(Request::new(ImageFsInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fs.image_filesystems.len(), 1, "{fs:?}");
    assert_eq!(fs.container_filesystems.len(), 1, "{fs:?}");
    assert!(
        fs.image_filesystems[0]
            .used_bytes
            .as_ref()
            .is_some_and(|u| u.value > 0),
        "the pulled image counts: {fs:?}"
    );

    // Removing by the digest name removes the image, every name of it.
    let digest_name = img.repo_digests[0].clone();
    assert!(
        digest_name.starts_with(&format!("{host}/app@sha256:")),
        "{digest_name}"
    );
    svc.remove_image(Request::new(RemoveImageRequest {
        image: spec(&digest_name),
    }))
    .await
    .unwrap();
    let gone = svc
        .image_status(Request::new(ImageStatusRequest {
            image: spec(&image),
            verbose: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(gone.image.is_none(), "{gone:?}");
    let st = svc
        .image_status(Request::new(ImageStatusRequest {
            image: spec(&pulled.image_ref),
            verbose: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_none());
}
