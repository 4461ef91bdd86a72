//! Binding the listeners and running the router on them.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};
use tonic::transport::server::Router;

use crate::shutdown::ShutdownSignal;

/// Why the server could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The vsock listener could not be bound (no vsock device or driver?).
    #[error("cannot listen on vsock port {port}")]
    BindVsock {
        /// The port.
        port: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The Unix socket could not be bound.
    #[error("cannot listen on Unix socket {path}")]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Something still accepts connections on the socket: another agent.
    #[error("{path} is in use: something accepts connections on it")]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// The path exists and is not a socket, so it is left alone.
    #[error("{path} exists and is not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

pub(super) async fn serve_vsock(
    router: Router,
    port: u32,
    shutdown: &ShutdownSignal,
) -> Result<(), ServerError> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))
        .map_err(|source| ServerError::BindVsock { port, source })?;
    // Before the log line, which crawls out of the serial console.
    crate::init::boot_mark::mark(vessel_vmm_api::BootMark::Listening);
    tracing::info!(port, "listening on vsock");
    router
        .serve_with_incoming_shutdown(listener.incoming(), shutdown.triggered())
        .await?;
    Ok(())
}

pub(super) async fn serve_unix(
    router: Router,
    path: &Path,
    shutdown: &ShutdownSignal,
) -> Result<(), ServerError> {
    remove_stale_socket(path)?;
    let listener = UnixListener::bind(path).map_err(|source| ServerError::BindUnix {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::info!(path = %path.display(), "listening on unix socket");
    let result = router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown.triggered())
        .await;
    if let Err(err) = std::fs::remove_file(path) {
        tracing::debug!(path = %path.display(), %err, "cannot remove socket");
    }
    Ok(result?)
}

/// A socket left by an earlier run would make bind fail; anything else is
/// not ours to delete, and neither is a socket something still listens on
/// (a second agent started on the same path must not cut off the first).
fn remove_stale_socket(path: &Path) -> Result<(), ServerError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(|source| ServerError::BindUnix {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => Err(ServerError::NotASocket {
            path: path.to_path_buf(),
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ServerError::BindUnix {
            path: path.to_path_buf(),
            source,
        }),
    }
}
