//! CRI `ImageService` over the image store (vessel-image): request checks,
//! conversions and gRPC status codes. Semantics follow containerd's CRI
//! plugin: an unknown image is an empty `ImageStatus` and a successful
//! `RemoveImage` (the kubelet relies on both); a pull of an image the
//! registry does not have is `NotFound`.

use std::collections::HashMap;

use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::{
    AuthConfig, FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest,
    ImageFsInfoResponse, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, UInt64Value,
};
use tonic::{Request, Response, Status};
use vessel_image::{Credentials, ImageError, ImageInfo, ImageStore};

/// The CRI image service.
#[derive(Clone)]
pub struct ImageServiceImpl {
    store: ImageStore,
}

impl ImageServiceImpl {
    /// Serves `store`.
    pub fn new(store: ImageStore) -> Self {
        ImageServiceImpl { store }
    }
}

/// The gRPC status for a store error.
pub fn status_of(e: ImageError) -> Status {
    let msg = e.to_string();
    match e {
        ImageError::InvalidReference { .. }
        | ImageError::InvalidDigest { .. }
        | ImageError::InvalidArgument { .. } => Status::invalid_argument(msg),
        ImageError::NotFound(_)
        | ImageError::RegistryNotFound { .. }
        | ImageError::NoMatchingPlatform { .. } => Status::not_found(msg),
        ImageError::Unauthorized { .. } => Status::permission_denied(msg),
        ImageError::NoProgress { .. } => Status::deadline_exceeded(msg),
        ImageError::TooLarge { .. } => Status::resource_exhausted(msg),
        ImageError::Registry { .. } => Status::unavailable(msg),
        ImageError::Verification { .. }
        | ImageError::BadManifest { .. }
        | ImageError::Unpack { .. } => Status::failed_precondition(msg),
        ImageError::Io { .. }
        | ImageError::Database(_)
        | ImageError::Mount { .. }
        | ImageError::Config { .. } => Status::internal(msg),
    }
}

/// The image reference of a request's `ImageSpec`, which must be present
/// and non-empty; `field` names it in the error.
fn image_of(spec: Option<&ImageSpec>, field: &str) -> Result<String, Status> {
    match spec {
        Some(s) if !s.image.is_empty() => Ok(s.image.clone()),
        Some(_) => Err(Status::invalid_argument(format!("{field}.image is empty"))),
        None => Err(Status::invalid_argument(format!("{field} is missing"))),
    }
}

fn credentials(auth: Option<&AuthConfig>) -> Credentials {
    match auth {
        None => Credentials::default(),
        Some(a) => Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
            auth: a.auth.clone(),
            identity_token: a.identity_token.clone(),
            registry_token: a.registry_token.clone(),
            server_address: a.server_address.clone(),
        },
    }
}

fn to_cri(i: ImageInfo) -> Image {
    Image {
        spec: Some(ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        id: i.id,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
        size: i.size,
        uid: i.uid.map(|value| Int64Value { value }),
        username: i.username,
        pinned: i.pinned,
    }
}

/// A store usage figure in the CRI's shape.
pub(crate) fn usage(u: vessel_image::FsUsage, now: i64) -> FilesystemUsage {
    FilesystemUsage {
        timestamp: now,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: u.mountpoint.display().to_string(),
        }),
        used_bytes: Some(UInt64Value {
            value: u.used_bytes,
        }),
        inodes_used: Some(UInt64Value {
            value: u.inodes_used,
        }),
    }
}

#[tonic::async_trait]
impl ImageService for ImageServiceImpl {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match self.store.list(filter.as_deref()) {
            Ok(v) => v,
            // A filter that is not a reference matches nothing.
            Err(ImageError::InvalidReference { .. }) => vec![],
            Err(e) => return Err(status_of(e)),
        };
        Ok(Response::new(ListImagesResponse {
            images: images.into_iter().map(to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let image = image_of(req.image.as_ref(), "image")?;
        let Some(info) = self.store.status(&image).map_err(status_of)? else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut extra = HashMap::new();
        if req.verbose {
            let config = self.store.config_json(&info.id).map_err(status_of)?;
            extra.insert(
                "info".to_string(),
                serde_json::json!({
                    "imageSpec": serde_json::from_slice::<serde_json::Value>(&config)
                        .unwrap_or(serde_json::Value::Null),
                    "user": info.user,
                })
                .to_string(),
            );
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(to_cri(info)),
            info: extra,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = req.into_inner();
        let image = image_of(req.image.as_ref(), "image")?;
        let creds = credentials(req.auth.as_ref());
        let pulled = self.store.pull(&image, &creds).await.map_err(status_of)?;
        tracing::info!(image = %image, id = %pulled.id, "PullImage");
        Ok(Response::new(PullImageResponse {
            image_ref: pulled.id,
        }))
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let image = image_of(req.into_inner().image.as_ref(), "image")?;
        let removed = self.store.remove(&image).await.map_err(status_of)?;
        tracing::info!(image = %image, removed, "RemoveImage");
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let store = self.store.clone();
        let (images, containers) = tokio::task::spawn_blocking(move || store.fs_info())
            .await
            .map_err(|e| Status::internal(format!("fs info task: {e}")))?
            .map_err(status_of)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![usage(images, now)],
            container_filesystems: vec![usage(containers, now)],
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use vessel_image::StoreConfig;

    fn service(dir: &std::path::Path) -> ImageServiceImpl {
        let db = Arc::new(redb::Database::create(dir.join("state.redb")).unwrap());
        let store = ImageStore::open(StoreConfig::new(dir.join("images")), db).unwrap();
        ImageServiceImpl::new(store)
    }

    fn spec(image: &str) -> Option<ImageSpec> {
        Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn bad_requests_get_invalid_argument_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let e = svc
            .pull_image(Request::new(PullImageRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("image is missing"), "{}", e.message());
        let e = svc
            .pull_image(Request::new(PullImageRequest {
                image: spec(""),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert!(
            e.message().contains("image.image is empty"),
            "{}",
            e.message()
        );
        let e = svc
            .pull_image(Request::new(PullImageRequest {
                image: spec("Bad:Ref:"),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("Bad:Ref:"), "{}", e.message());
        let e = svc
            .image_status(Request::new(ImageStatusRequest {
                image: spec("no way"),
                verbose: false,
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = svc
            .pull_image(Request::new(PullImageRequest {
                image: spec("localhost:1/x:y"),
                auth: Some(AuthConfig {
                    auth: "%%%".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("auth.auth"), "{}", e.message());
    }

    #[tokio::test]
    async fn unknown_images_as_the_kubelet_expects() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let st = svc
            .image_status(Request::new(ImageStatusRequest {
                image: spec("busybox"),
                verbose: true,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(st.image.is_none());
        svc.remove_image(Request::new(RemoveImageRequest {
            image: spec("busybox"),
        }))
        .await
        .unwrap();
        let l = svc
            .list_images(Request::new(ListImagesRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert!(l.images.is_empty());
        let fs = svc
            .image_fs_info(Request::new(ImageFsInfoRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fs.image_filesystems.len(), 1);
        assert!(fs.image_filesystems[0].inodes_used.as_ref().unwrap().value > 0);
    }

    #[test]
    fn registry_errors_map_to_codes() {
        let nf = ImageError::RegistryNotFound {
            registry: "r".into(),
            reference: "r/x:y".into(),
            what: "manifest".into(),
            detail: "manifest unknown".into(),
        };
        assert_eq!(status_of(nf).code(), tonic::Code::NotFound);
        let un = ImageError::Unauthorized {
            registry: "r".into(),
            reference: "r/x:y".into(),
            detail: "401".into(),
        };
        assert_eq!(status_of(un).code(), tonic::Code::PermissionDenied);
    }
}
