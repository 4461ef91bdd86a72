//! A real virtiofsd serving one directory, started the way vesseld starts
//! one per pod (`vessel_host_runtime::virtiofsd`).

use std::path::Path;
use std::time::Duration;

pub use vessel_host_runtime::virtiofsd::Virtiofsd;
use vessel_host_runtime::virtiofsd::VirtiofsdConfig;

use crate::env_path;

/// Starts `$VESSEL_VIRTIOFSD` on `shared` with its socket and log in `dir`.
pub async fn start(shared: &Path, dir: &Path) -> Virtiofsd {
    let config = VirtiofsdConfig {
        binary: env_path("VESSEL_VIRTIOFSD"),
        shared_dir: shared.to_path_buf(),
        socket: dir.join("virtiofsd.sock"),
        log: dir.join("virtiofsd.log"),
    };
    Virtiofsd::start(config, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("virtiofsd: {e}"))
}
