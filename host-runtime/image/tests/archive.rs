//! Import and export: OCI image layouts (directory and tar) and docker save
//! tarballs, built by hand from busybox-static, and hostile archives.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;
use serde_json::json;
use vessel_image::digest::sha256;
use vessel_image::ImageError;

fn write_blob(dir: &Path, data: &[u8]) {
    let p = dir
        .join("blobs/sha256")
        .join(sha256(data).trim_start_matches("sha256:"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// An OCI layout directory holding `img` with the given annotations.
fn layout(dir: &Path, img: &Image, annotations: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    write_blob(dir, &img.config);
    write_blob(dir, &img.manifest);
    for l in &img.layers {
        write_blob(dir, &l.blob);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": img.manifest_type, "digest": img.digest(), "size": img.manifest.len(),
            "annotations": annotations,
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A tar of the files under `dir`.
fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap().flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_dir_import_export_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(
        vec![busybox_layer(false), top_layer(false)],
        false,
        "amd64",
        |c| {
            c["config"]["User"] = json!("123");
        },
    );
    let lay = tmp.path().join("layout");
    layout(
        &lay,
        &img,
        json!({ "io.containerd.image.name": "example.com/tools/bb:1.0" }),
    );

    let (store, _) = store_for(&tmp.path().join("a"), "");
    let got = store.import(&lay).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, img.id());
    let st = store.status("example.com/tools/bb:1.0").unwrap().unwrap();
    assert_eq!(st.uid, Some(123));
    assert_eq!(
        st.repo_digests,
        vec![format!("example.com/tools/bb@{}", img.digest())]
    );

    // Export, then import the tarball into a fresh store.
    let out = tmp.path().join("bb.tar");
    store
        .export("example.com/tools/bb:1.0", &out)
        .await
        .unwrap();
    let (store2, cfg2) = store_for(&tmp.path().join("b"), "");
    let got = store2.import(&out).await.unwrap();
    assert_eq!(got[0].id, img.id());
    let st2 = store2.status("example.com/tools/bb:1.0").unwrap().unwrap();
    assert_eq!(st2.repo_tags, st.repo_tags);
    let dirs = store2.layer_dirs(&img.id()).unwrap();
    assert!(
        std::fs::metadata(dirs[0].join("bin/busybox"))
            .unwrap()
            .len()
            > 100_000
    );
    // The import's temporary extraction is gone.
    assert!(tree(&cfg2.root.join("ingest")).is_empty());
    // Unknown images cannot be exported.
    let e = store.export("example.com/none:1", &out).await.unwrap_err();
    assert!(matches!(e, ImageError::NotFound(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_save_tarball_and_oci_ref_name() {
    let tmp = tempfile::tempdir().unwrap();
    // docker save: manifest.json, the config file, uncompressed layer tars.
    let base = busybox_layer(true);
    let img = image(vec![base.clone()], true, "amd64", |_| {});
    let d = tmp.path().join("save");
    std::fs::create_dir_all(d.join("abc")).unwrap();
    std::fs::write(d.join("cfg.json"), &img.config).unwrap();
    std::fs::write(d.join("abc/layer.tar"), &base.tar).unwrap();
    let m = json!([{ "Config": "cfg.json", "RepoTags": ["busybox:saved", "other/name:v2"], "Layers": ["abc/layer.tar"] }]);
    std::fs::write(d.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let t = tmp.path().join("save.tar");
    tar_dir(&d, &t);
    let (store, _) = store_for(&tmp.path().join("s"), "");
    let got = store.import(&t).await.unwrap();
    assert_eq!(got[0].id, img.id());
    let st = store.status("busybox:saved").unwrap().unwrap();
    assert_eq!(
        st.repo_tags,
        vec![
            "docker.io/library/busybox:saved".to_string(),
            "docker.io/other/name:v2".to_string()
        ]
    );

    // An OCI layout tar named by org.opencontainers.image.ref.name.
    let img2 = image(vec![top_layer(false)], false, "amd64", |_| {});
    let lay = tmp.path().join("lay2");
    layout(
        &lay,
        &img2,
        json!({ "org.opencontainers.image.ref.name": "quay.io/x/y:z" }),
    );
    let t2 = tmp.path().join("lay2.tar");
    tar_dir(&lay, &t2);
    assert_eq!(store.import(&t2).await.unwrap()[0].id, img2.id());
    assert!(store.status("quay.io/x/y:z").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_broken_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, cfg) = store_for(&tmp.path().join("s"), "");
    let secret = tmp.path().join("secret.json");
    std::fs::write(&secret, b"{}").unwrap();

    // manifest.json naming a file outside the archive.
    let d = tmp.path().join("evil");
    std::fs::create_dir_all(&d).unwrap();
    let m = json!([{ "Config": format!("../{}", "secret.json"), "RepoTags": ["evil:1"], "Layers": [] }]);
    std::fs::write(d.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let e = store.import(&d).await.unwrap_err();
    assert!(matches!(e, ImageError::InvalidArgument { .. }), "{e:?}");
    let m =
        json!([{ "Config": secret.display().to_string(), "RepoTags": ["evil:1"], "Layers": [] }]);
    std::fs::write(d.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    assert!(store.import(&d).await.is_err());
    // A symlink inside the archive pointing out.
    std::os::unix::fs::symlink(&secret, d.join("cfg.json")).unwrap();
    let m = json!([{ "Config": "cfg.json", "RepoTags": ["evil:1"], "Layers": [] }]);
    std::fs::write(d.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let e = store.import(&d).await.unwrap_err();
    assert!(e.to_string().contains("cfg.json"), "{e}");

    // A layout whose blob lies about its digest.
    let img = image(vec![top_layer(false)], false, "amd64", |_| {});
    let lay = tmp.path().join("liar");
    layout(&lay, &img, json!({ "io.containerd.image.name": "liar:1" }));
    let layer_hex = sha256(&img.layers[0].blob);
    std::fs::write(
        lay.join("blobs/sha256")
            .join(layer_hex.trim_start_matches("sha256:")),
        b"lies",
    )
    .unwrap();
    let e = store.import(&lay).await.unwrap_err();
    assert!(matches!(e, ImageError::Verification { .. }), "{e:?}");
    // No name: refused with the field named.
    let lay2 = tmp.path().join("noname");
    layout(
        &lay2,
        &img,
        json!({ "org.opencontainers.image.ref.name": "latest" }),
    );
    let e = store.import(&lay2).await.unwrap_err();
    assert!(e.to_string().contains("manifests[0]"), "{e}");
    // Not an archive at all.
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, b"definitely not a tar file").unwrap();
    assert!(store.import(&junk).await.is_err());
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = store.import(&empty).await.unwrap_err();
    assert!(e.to_string().contains("neither an OCI image layout"), "{e}");

    assert!(store.list(None).unwrap().is_empty());
    assert!(tree(&cfg.root.join("layers")).is_empty());
    assert!(tree(&cfg.root.join("ingest")).is_empty());
    assert_eq!(std::fs::read(&secret).unwrap(), b"{}");
}
