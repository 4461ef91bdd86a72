//! The CRI ImageService against a real registry (Debian's docker-registry on
//! 127.0.0.1 with htpasswd auth): the RPCs and their gRPC codes.

// The image store's own test helpers: the registry and the images pushed to it.
#[path = "../image/tests/common/mod.rs"]
mod image_helpers;

use std::sync::Arc;

use image_helpers::{busybox_layer, image, push, pusher, Registry};
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};
use oci_client::secrets::RegistryAuth;
use tonic::{Code, Request};
use vessel_host_runtime::cri::image::ImageServiceImpl;
use vessel_image::pinned::PinnedImages;
use vessel_image::{ImageStore, RegistryConfig, StoreConfig};

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_service_over_a_real_registry() {
    let reg = Registry::start(Some(("kube", "pw")));
    let host = reg.host();

    // A busybox image with a numeric user, pushed with oci-client.
    let img = image(vec![busybox_layer(false)], false, "amd64", |c| {
        c["config"]["User"] = "65534".into();
    });
    let c = pusher(&reg, &RegistryAuth::Basic("kube".into(), "pw".into())).await;
    push(&c, &reg, "app", "v1", &img).await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path().join("images"));
    cfg.registry = RegistryConfig::from_toml(
        &format!("[registries.\"{host}\"]\nplain_http = true\n"),
        std::path::Path::new("test"),
    )
    .unwrap();
    // The operator pins the app's images: status and list report it.
    cfg.pinned = PinnedImages::new(&[format!("{host}/app*")], "docker.io").unwrap();
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
    assert_eq!(pulled.image_ref, img.id());

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
    assert!(img.pinned, "{img:?}");
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
    assert!(list.images[0].pinned);

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
