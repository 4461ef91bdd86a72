//! `vessel.image.v1.ImageArchive` on vesseld's socket: `vessel image
//! import` and `export` through the running daemon, so that the store stays
//! vesseld's alone (one writer of its database and content).

use std::path::Path;

use tonic::{Request, Response, Status};
use vessel_image::ImageStore;
use vessel_image_api::v1::image_archive_server::ImageArchive;
use vessel_image_api::v1::{
    ExportRequest, ExportResponse, ImportRequest, ImportResponse, ImportedImage,
};

use crate::cri::image::status_of;

/// The service over the image store.
pub struct ImageArchiveImpl {
    images: ImageStore,
}

impl ImageArchiveImpl {
    /// The service over `images`.
    pub fn new(images: ImageStore) -> Self {
        ImageArchiveImpl { images }
    }
}

/// An absolute path from field `field`, or `InvalidArgument` naming it.
fn absolute<'a>(field: &str, path: &'a str) -> Result<&'a Path, Status> {
    let p = Path::new(path);
    if path.is_empty() || !p.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "{field}: {path:?} is not an absolute path"
        )));
    }
    Ok(p)
}

#[tonic::async_trait]
impl ImageArchive for ImageArchiveImpl {
    async fn import(
        &self,
        request: Request<ImportRequest>,
    ) -> Result<Response<ImportResponse>, Status> {
        let path = request.into_inner().path;
        let imported = self
            .images
            .import(absolute("path", &path)?)
            .await
            .map_err(status_of)
            .inspect_err(
                |e| tracing::warn!(rpc = "Import", path, error = %e.message(), "import failed"),
            )?;
        for image in &imported {
            tracing::info!(rpc = "Import", path, image = %image.id, names = ?image.names, "image imported");
        }
        Ok(Response::new(ImportResponse {
            images: imported
                .into_iter()
                .map(|i| ImportedImage {
                    id: i.id,
                    names: i.names,
                })
                .collect(),
        }))
    }

    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<ExportResponse>, Status> {
        let ExportRequest { image, path } = request.into_inner();
        if image.is_empty() {
            return Err(Status::invalid_argument("image: is empty"));
        }
        self.images
            .export(&image, absolute("path", &path)?)
            .await
            .map_err(status_of)
            .inspect_err(|e| tracing::warn!(rpc = "Export", image, path, error = %e.message(), "export failed"))?;
        tracing::info!(rpc = "Export", image, path, "image exported");
        Ok(Response::new(ExportResponse {}))
    }
}
