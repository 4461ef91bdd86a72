//! A share's [`FsSpec`] (parsed and checked in the `vessel-vmm-api` crate)
//! and the one check that needs the host: its virtiofsd socket exists.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

pub use vessel_vmm_api::fs::{FsSpec, DEFAULT_QUEUE_SIZE, MAX_QUEUE_SIZE};

// The api crate checks tags against the same length the config space holds.
const _: () = assert!(vessel_vmm_api::fs::TAG_LEN == super::config_space::TAG_LEN);

/// A share whose socket is missing or not a socket.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--fs tag={tag}: socket {}: {reason} (is virtiofsd running? see docs/operations.md)", path.display())]
pub struct FsSocketError {
    /// The share's tag.
    pub tag: String,
    /// The socket path.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks that every share's socket exists and is a Unix socket.
pub fn check_sockets(specs: &[FsSpec]) -> Result<(), FsSocketError> {
    specs
        .iter()
        .try_for_each(|s| check_socket(&s.tag, &s.socket))
}

fn check_socket(tag: &str, path: &Path) -> Result<(), FsSocketError> {
    let err = |reason: String| FsSocketError {
        tag: tag.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.file_type().is_socket() {
        Ok(())
    } else {
        Err(err("not a Unix socket".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_must_be_real() {
        let dir = std::env::temp_dir().join(format!("vessel-fs-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("v.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"").unwrap();
        let spec =
            |p: &Path| -> FsSpec { format!("tag=a,socket={}", p.display()).parse().unwrap() };

        check_sockets(&[spec(&sock), spec(&sock)]).unwrap();
        let err = check_sockets(&[spec(&file)]).unwrap_err();
        assert!(err.to_string().contains("not a Unix socket"), "{err}");
        let err = check_sockets(&[spec(&dir.join("missing"))]).unwrap_err();
        assert!(err.to_string().starts_with("--fs tag=a: socket "), "{err}");
        assert!(err.to_string().contains("virtiofsd"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
