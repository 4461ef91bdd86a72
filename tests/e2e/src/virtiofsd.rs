//! A real virtiofsd serving one directory, started the way vesseld starts
//! one per pod (`vessel_host_runtime::virtiofsd`).

use std::path::Path;

pub use vessel_host_runtime::virtiofsd::Virtiofsd;
use vessel_host_runtime::virtiofsd::VirtiofsdConfig;

use crate::env_path;

/// Starts `$VESSEL_VIRTIOFSD` on `shared` with its socket and log in `dir`.
pub async fn start(shared: &Path, dir: &Path) -> Virtiofsd {
    // (async for its callers' sake: the socket is bound before it returns.)
    let config = VirtiofsdConfig {
        binary: env_path("VESSEL_VIRTIOFSD"),
        shared_dir: shared.to_path_buf(),
        socket: dir.join("virtiofsd.sock"),
        log: dir.join("virtiofsd.log"),
        translation: None,
    };
    Virtiofsd::start(config).unwrap_or_else(|e| panic!("virtiofsd: {e}"))
}
