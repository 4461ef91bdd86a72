//! A container rootfs from a pulled image: overlayfs of the shared layers
//! under a private writable layer, at a directory the caller chooses.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use oci_client::secrets::RegistryAuth;
use vessel_image::Credentials;

/// Unmounts on drop, so a failing test leaves no mount behind.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = vessel_image::rootfs::unmount(&self.0);
    }
}

fn is_mounted(p: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootfs_is_layers_plus_a_private_upper() {
    let reg = Registry::start(None);
    let c = pusher(&reg, &RegistryAuth::Anonymous).await;
    let img = image(
        vec![busybox_layer(false), top_layer(false)],
        false,
        "amd64",
        |_| {},
    );
    push(&c, &reg, "app", "v1", &img).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = store_for(dir.path(), &plain_http(&reg.host()));
    // Overlayfs must work where the store keeps writable layers; say so
    // plainly instead of skipping if it does not.
    vessel_image::rootfs::check_overlay(&cfg.root)
        .unwrap_or_else(|e| panic!("this host cannot run the rootfs test: {e}"));
    let r = format!("{}/app:v1", reg.host());
    let p = store.pull(&r, &Credentials::default()).await.unwrap();
    let base = store.layer_dirs(&p.id).unwrap()[0].clone();

    let pod_share = dir.path().join("pod-share");
    let t1 = pod_share.join("c1/rootfs");
    let t2 = pod_share.join("c2/rootfs");
    std::fs::create_dir_all(&t1).unwrap();
    std::fs::create_dir_all(&t2).unwrap();
    let _g1 = MountGuard(t1.clone());
    let _g2 = MountGuard(t2.clone());
    store.create_rootfs("c1", &r, &t1).await.unwrap();
    store.create_rootfs("c2", &p.id, &t2).await.unwrap();
    assert!(is_mounted(&t1) && is_mounted(&t2));
    // The merged view: base files, the whiteout hides etc/old, opaque var/cache.
    assert!(std::fs::metadata(t1.join("bin/busybox")).unwrap().len() > 100_000);
    assert_eq!(std::fs::read(t1.join("etc/keep")).unwrap(), b"keep\n");
    assert!(!t1.join("etc/old").exists(), "whiteout hides the file");
    assert!(
        !t1.join("var/cache/a").exists(),
        "opaque dir hides the lower"
    );
    assert_eq!(std::fs::read(t1.join("var/cache/b")).unwrap(), b"b");
    // A second container id is refused while the first holds its rootfs.
    assert!(store.create_rootfs("c1", &r, &t2).await.is_err());

    // Writes stay private to the container; the shared layer is untouched.
    std::fs::write(t1.join("etc/keep"), b"changed").unwrap();
    std::fs::write(t1.join("new-file"), b"mine").unwrap();
    assert_eq!(std::fs::read(t2.join("etc/keep")).unwrap(), b"keep\n");
    assert!(!t2.join("new-file").exists());
    assert_eq!(std::fs::read(base.join("etc/keep")).unwrap(), b"keep\n");

    // Removing the image while containers use it keeps the content.
    assert!(store.remove(&r).await.unwrap());
    assert!(store.status(&r).unwrap().is_none());
    assert!(base.exists(), "in-use layer kept");
    assert_eq!(std::fs::read(t2.join("etc/keep")).unwrap(), b"keep\n");

    store.remove_rootfs("c1").await.unwrap();
    assert!(!is_mounted(&t1));
    assert!(
        !cfg.root.join("containers/c1").exists(),
        "writable layer removed"
    );
    assert!(base.exists(), "still used by c2");
    store.remove_rootfs("c2").await.unwrap();
    store.remove_rootfs("c2").await.unwrap(); // idempotent
    assert!(!is_mounted(&t2));
    assert!(!base.exists(), "freed with the last container");
    assert!(tree(&cfg.root.join("layers")).is_empty());

    // Bad container ids are refused before anything is made.
    let e = store.create_rootfs("../x", &p.id, &t1).await.unwrap_err();
    assert!(e.to_string().contains("container_id"), "{e}");
}
