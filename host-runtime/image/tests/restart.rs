//! What a restart after `kill -9` finds: interrupted downloads and unpacks
//! are removed, unreferenced content is collected, recorded images survive.

mod common;

use common::*;
use serde_json::json;
use vessel_image::digest::sha256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_cleans_interrupted_work_and_keeps_images() {
    let tmp = tempfile::tempdir().unwrap();
    // An image to keep, imported from a hand-made OCI layout.
    let img = image(vec![busybox_layer(false)], false, "amd64", |_| {});
    let lay = tmp.path().join("layout");
    std::fs::create_dir_all(lay.join("blobs/sha256")).unwrap();
    std::fs::write(lay.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for b in [&img.config, &img.manifest, &img.layers[0].blob] {
        std::fs::write(lay.join("blobs/sha256").join(&sha256(b)[7..]), b).unwrap();
    }
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": img.manifest_type, "digest": img.digest(), "size": img.manifest.len(),
        "annotations": {"io.containerd.image.name": "example.com/keep:1"}}]});
    std::fs::write(lay.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();

    let dir = tmp.path().join("node");
    let (store, cfg) = store_for(&dir, "");
    store.import(&lay).await.unwrap();
    let kept_layer = store.layer_dirs("example.com/keep:1").unwrap()[0].clone();
    drop(store);

    // What a kill -9 mid-pull leaves: a partial download, a half-unpacked
    // layer, and a complete blob no image record names yet.
    std::fs::write(cfg.root.join("ingest/abc.123.0"), b"partial").unwrap();
    std::fs::create_dir_all(cfg.root.join("layers/.tmp-abc-1-0/usr")).unwrap();
    let orphan = sha256(b"orphan");
    std::fs::write(cfg.root.join("blobs/sha256").join(&orphan[7..]), b"orphan").unwrap();

    let (store, _) = store_for(&dir, "");
    assert!(tree(&cfg.root.join("ingest")).is_empty());
    assert!(!cfg.root.join("layers/.tmp-abc-1-0").exists());
    assert!(!cfg.root.join("blobs/sha256").join(&orphan[7..]).exists());
    let st = store.status("example.com/keep:1").unwrap().unwrap();
    assert_eq!(st.id, img.id());
    assert!(kept_layer.join("bin/busybox").exists());
}
