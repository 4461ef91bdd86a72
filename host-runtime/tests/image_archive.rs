//! `vessel image import` / `export` through a real `vesseld serve` (no VM
//! needed: images work on any host): an OCI layout in, the image listed by
//! the CRI, a tarball out, removed and imported back under the same id; bad
//! requests get their codes.

mod serve;

use std::path::Path;
use std::time::Duration;

use k8s_cri::v1::{ImageSpec, RemoveImageRequest};
use serde_json::json;
use tonic::Code;
use vessel_client::verbs::{self, Deadlines};
use vessel_image::digest::sha256;
use vessel_image_api::v1::{ExportRequest, ImportRequest};

use serve::{listed_tags, Daemon};

const NAME: &str = "example.com/archive/test:1";

fn blob(dir: &Path, data: &[u8]) -> (String, usize) {
    let digest = sha256(data);
    let path = dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
    std::fs::write(path, data).unwrap();
    (digest, data.len())
}

/// A one-layer OCI layout named [`NAME`]; the image's id.
fn layout(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("hello").unwrap();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    tar.append(&h, &b"hello\n"[..]).unwrap();
    let layer = tar.into_inner().unwrap();
    let (layer_digest, layer_len) = blob(dir, &layer);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_len) = blob(dir, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_len}],
    });
    let (manifest_digest, manifest_len) = blob(dir, manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_len,
            "annotations": {"io.containerd.image.name": NAME},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    config_digest
}

/// `vessel image import`'s line for the image: its tag, its digest name, its id.
fn said_imported(out: &[u8], id: &str) {
    let said = String::from_utf8_lossy(out);
    assert!(
        said.starts_with(&format!(
            "imported {NAME}, example.com/archive/test@sha256:"
        )) && said.ends_with(&format!(" ({id})\n")),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_go_in_and_out_through_vesseld() {
    let tmp = tempfile::tempdir().unwrap();
    let id = layout(&tmp.path().join("layout"));
    let (_daemon, mut cri) = Daemon::start(tmp.path(), "").await;
    let deadlines = Deadlines {
        quick: Some(Duration::from_secs(10)),
        long: Some(Duration::from_secs(60)),
    };

    let mut out = Vec::new();
    verbs::import(&mut cri, &tmp.path().join("layout"), deadlines, &mut out)
        .await
        .unwrap();
    said_imported(&out, &id);
    assert_eq!(listed_tags(&mut cri).await, [NAME]);

    // Out as a tarball, removed, back in under the same id.
    let tarball = tmp.path().join("out.tar");
    verbs::export(&mut cri, NAME, &tarball, deadlines)
        .await
        .unwrap();
    assert!(std::fs::metadata(&tarball).unwrap().len() > 0);
    cri.image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: NAME.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let listed = listed_tags(&mut cri).await;
    assert!(listed.is_empty(), "{listed:?}");
    let mut out = Vec::new();
    verbs::import(&mut cri, &tarball, deadlines, &mut out)
        .await
        .unwrap();
    said_imported(&out, &id);

    // Bad requests name what is wrong.
    let err = cri
        .archive
        .import(ImportRequest {
            path: "relative.tar".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("path"), "{err}");
    let err = cri
        .archive
        .import(ImportRequest {
            path: tmp.path().join("missing.tar").display().to_string(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("missing.tar"), "{err}");
    let err = cri
        .archive
        .export(ExportRequest {
            image: "example.com/none:1".into(),
            path: tmp.path().join("none.tar").display().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(!tmp.path().join("none.tar").exists());
}
