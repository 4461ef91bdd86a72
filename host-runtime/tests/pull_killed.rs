//! vesseld killed with SIGKILL in the middle of a pull, for real: a proxy
//! in front of the registry holds the layer's download after its first MiB,
//! vesseld dies with the partial blob in its store, and the restarted
//! vesseld has removed it, kept the image pulled before, and pulls the
//! interrupted image whole.

// The image store's own test helpers: the registry and the images pushed to it.
#[path = "../image/tests/common/mod.rs"]
mod image_helpers;
mod serve;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1::{ImageSpec, ImageStatusRequest, PullImageRequest};
use oci_client::secrets::RegistryAuth;
use tar::EntryType;
use vessel_client::Cri;

use image_helpers::{busybox_layer, entry, image, push, pusher, Layer, Registry};
use serve::{listed_tags, Daemon};

/// Where the proxy stops forwarding a response: well inside the big layer.
const STALL_AFTER: usize = 1 << 20;

/// A TCP proxy to the registry that forwards every connection's responses
/// until one has carried [`STALL_AFTER`] bytes, then holds that one open
/// without sending more: a download that stops mid-layer and stays so.
struct StallingProxy {
    port: u16,
    stalled: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

impl StallingProxy {
    fn start(upstream: u16) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (flag, stop) = (stalled.clone(), done.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut &c, &mut &s);
                });
                let (flag, stop) = (flag.clone(), stop.clone());
                std::thread::spawn(move || forward_then_hold(server, client, &flag, &stop));
            }
        });
        StallingProxy {
            port,
            stalled,
            done,
        }
    }
}

fn forward_then_hold(
    mut from: TcpStream,
    mut to: TcpStream,
    stalled: &AtomicBool,
    done: &AtomicBool,
) {
    let mut sent = 0;
    let mut buf = [0u8; 16 << 10];
    while sent < STALL_AFTER {
        let want = buf.len().min(STALL_AFTER - sent);
        match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
                sent += n;
            }
        }
    }
    stalled.store(true, Ordering::SeqCst);
    // Hold both sockets, sending nothing, until the test ends.
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn pull(cri: &mut Cri, image: &str) -> Result<String, tonic::Status> {
    cri.image
        .pull_image(PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// The names in a store directory.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_killed_midway_leaves_nothing_and_is_redone() {
    let reg = Registry::start(None);
    let host = reg.host();
    let c = pusher(&reg, &RegistryAuth::Anonymous).await;
    let kept = image(vec![busybox_layer(false)], false, "amd64", |_| {});
    push(&c, &reg, "keep", "1", &kept).await;
    // 8 MiB in an uncompressed layer: the proxy stops it after 1 MiB.
    let mut tar = tar::Builder::new(Vec::new());
    entry(
        &mut tar,
        "data",
        EntryType::Regular,
        &vec![0x5a; 8 << 20],
        "",
        0o644,
    );
    let tar = tar.into_inner().unwrap();
    let big_layer = Layer {
        blob: tar.clone(),
        tar,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
    };
    let big = image(vec![big_layer.clone()], false, "amd64", |_| {});
    push(&c, &reg, "big", "1", &big).await;
    let proxy = StallingProxy::start(reg.port);
    let through_proxy = format!("127.0.0.1:{}", proxy.port);

    let tmp = tempfile::tempdir().unwrap();
    let registries = format!(
        "[registry.registries.\"{host}\"]\nplain_http = true\n[registry.registries.\"{through_proxy}\"]\nplain_http = true\n"
    );
    let store = tmp.path().join("state/images");
    let (daemon, mut cri) = Daemon::start(tmp.path(), &registries).await;
    let keep = format!("{host}/keep:1");
    assert_eq!(pull(&mut cri, &keep).await.unwrap(), kept.id());
    let blobs_before = names(&store.join("blobs/sha256"));
    let layers_before = names(&store.join("layers"));

    // The big image's pull, held mid-layer by the proxy.
    let big_via_proxy = format!("{through_proxy}/big:1");
    let mut held = cri.clone();
    let stuck = tokio::spawn(async move { pull(&mut held, &big_via_proxy).await });
    let big_layer_digest = vessel_image::digest::sha256(&big_layer.blob);
    let partial_prefix = format!("{}.", &big_layer_digest["sha256:".len()..]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let partial = std::fs::read_dir(store.join("ingest"))
            .unwrap()
            .flatten()
            .find(|e| {
                e.file_name().to_string_lossy().starts_with(&partial_prefix)
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            });
        if let (Some(p), true) = (partial, proxy.stalled.load(Ordering::SeqCst)) {
            break p.path();
        }
        assert!(
            Instant::now() < deadline,
            "the pull never got into the layer:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    daemon.kill();
    let ended = tokio::time::timeout(Duration::from_secs(30), stuck)
        .await
        .expect("the held pull ends with vesseld")
        .unwrap();
    assert!(ended.is_err(), "{ended:?}");
    // What the crash left: a partial blob that claims no digest.
    let partial_len = std::fs::metadata(&partial).unwrap().len();
    assert!(partial_len > 0 && partial_len < big_layer.blob.len() as u64);

    // Restarted on the same store: the partial blob and whatever the big
    // image had finished (its config) are gone, the kept image is whole.
    let (daemon, mut cri) = Daemon::start(tmp.path(), &registries).await;
    assert!(names(&store.join("ingest")).is_empty());
    assert_eq!(names(&store.join("blobs/sha256")), blobs_before);
    assert_eq!(names(&store.join("layers")), layers_before);
    assert_eq!(listed_tags(&mut cri).await, std::slice::from_ref(&keep));
    let status = cri
        .image
        .image_status(ImageStatusRequest {
            image: spec(&keep),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.image.map(|i| i.id),
        Some(kept.id()),
        "{}",
        daemon.log()
    );

    // The interrupted image pulls whole, straight from the registry.
    let big_name = format!("{host}/big:1");
    assert_eq!(pull(&mut cri, &big_name).await.unwrap(), big.id());
    assert_eq!(listed_tags(&mut cri).await, [big_name, keep]);
    assert!(names(&store.join("ingest")).is_empty());
}
