//! `vesseld serve`: opens the stores, binds the CRI socket and serves
//! RuntimeService and ImageService on it until SIGTERM or SIGINT.

pub mod image_archive;
pub mod runtime;

use image_archive::ImageArchiveImpl;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use vessel_image_api::v1::image_archive_server::ImageArchiveServer;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use vessel_image::{ImageStore, StoreConfig};

use crate::config::Config;
use crate::cri::image::ImageServiceImpl;
use crate::cri::runtime::RuntimeServiceImpl;
use crate::store::{open_database, Store};
use runtime::Runtime;

/// Largest CRI message accepted or sent (ExecSync returns up to 16 MiB per
/// stream, as the kubelet allows).
const MAX_MESSAGE: usize = 40 << 20;

/// Serving failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The CRI socket is taken or cannot be made.
    #[error("CRI socket {path}: {why}")]
    Socket {
        /// The socket path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The state store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The image store could not be opened.
    #[error("image store: {0}")]
    Images(#[from] vessel_image::ImageError),
    /// The streaming server (Exec, Attach, PortForward) could not start.
    #[error("streaming server: {0}")]
    Streaming(#[from] vessel_streaming::ServerError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// The image store's configuration from vesseld's: registries and the
/// `[images]` limits.
pub fn image_store_config(config: &Config) -> StoreConfig {
    let mut images = StoreConfig::new(config.state_dir.join("images"));
    images.registry = config.registry.clone();
    images.max_concurrent_downloads = config.images.max_concurrent_downloads.max(1) as usize;
    images.progress_timeout = std::time::Duration::from_secs(config.images.progress_timeout_secs);
    images.limits.max_manifest_bytes = config.images.max_manifest_bytes;
    images.limits.max_config_bytes = config.images.max_config_bytes;
    images.limits.max_layers = usize::try_from(config.images.max_layers).unwrap_or(usize::MAX);
    images.limits.max_layer_bytes = config.images.max_layer_bytes;
    images.limits.unpack.max_bytes = config.images.max_unpacked_bytes;
    images.limits.unpack.max_entries = config.images.max_entries;
    // Config::parse has rejected entries that are not references.
    images.pinned = vessel_image::pinned::PinnedImages::new(
        &config.images.pinned,
        &config.registry.default_registry,
    )
    .unwrap_or_default();
    images
}

/// Opens everything and serves until a signal; then returns (the pods keep
/// running: a restarted vesseld takes them over).
pub async fn serve(config: Config) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.run_dir).map_err(|e| DaemonError::Socket {
        path: config.run_dir.display().to_string(),
        why: e.to_string(),
    })?;
    let db = open_database(&config.state_dir)?;
    let store = Store::open(Arc::clone(&db))?;
    let images = ImageStore::open(image_store_config(&config), db)?;
    let listener = bind(&config.socket)?;
    let socket = config.socket.clone();
    let rt = Runtime::new(config, store, images.clone());
    rt.recover().await;
    let streaming = crate::streaming::start(&rt).await?;
    tracing::info!(address = %streaming, "streaming server (Exec, Attach, PortForward) listening");
    tracing::info!(socket = %socket.display(), "serving CRI (RuntimeService, ImageService)");
    let result = tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::new(RuntimeServiceImpl::new(Arc::clone(&rt)))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::new(ImageServiceImpl::new(images.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(ImageArchiveServer::new(ImageArchiveImpl::new(images)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal())
        .await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped serving; pods keep running");
    result.map_err(DaemonError::from)
}

/// Binds the CRI socket (mode 0660): a stale file is replaced, a socket
/// another vesseld answers on is refused.
fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |why: String| DaemonError::Socket {
        path: path.display().to_string(),
        why,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(
                "another vesseld is serving on it (stop it first)".to_string()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err(e.to_string()))?;
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, serve until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_images_section_reaches_the_image_store() {
        let config = Config::parse(
            "[images]\nmax_manifest_bytes = 1000\nmax_config_bytes = 1500\nmax_layers = 7\nprogress_timeout_secs = 9\nmax_layer_bytes = 2000\nmax_unpacked_bytes = 3000\nmax_entries = 40\nmax_concurrent_downloads = 5\npinned = [\"busybox\"]\n",
            std::path::Path::new("config.toml"),
        )
        .unwrap();
        let store = image_store_config(&config);
        assert_eq!(store.limits.max_manifest_bytes, 1000);
        assert_eq!(store.limits.max_config_bytes, 1500);
        assert_eq!(store.limits.max_layers, 7);
        assert_eq!(store.progress_timeout, std::time::Duration::from_secs(9));
        assert_eq!(store.limits.max_layer_bytes, 2000);
        assert_eq!(store.limits.unpack.max_bytes, 3000);
        assert_eq!(store.limits.unpack.max_entries, 40);
        let busybox = ["docker.io/library/busybox:latest".to_string()];
        assert!(store.pinned.matches("sha256:1", &busybox));
        assert_eq!(store.max_concurrent_downloads, 5);
        assert_eq!(store.root, config.state_dir.join("images"));
    }
}
