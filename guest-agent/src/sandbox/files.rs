//! The pod's hostname, hosts and resolv.conf files: under [`SANDBOX_DIR`] for
//! containers to bind-mount, and in the guest's own `/etc`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::SandboxError;
use super::spec::SandboxSpec;

/// Where the agent keeps the sandbox's files and namespace mounts.
pub const SANDBOX_DIR: &str = "/run/vessel/sandbox";

/// The names of the files written, in both places.
const NAMES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// A file as it was before the setup wrote it.
#[derive(Debug)]
struct Previous {
    path: PathBuf,
    /// `None`: it did not exist.
    content: Option<Vec<u8>>,
}

/// The files written, and what they held before.
#[derive(Debug, Default)]
pub struct Written(Vec<Previous>);

impl Written {
    /// Puts every file back as it was, newest first.
    pub fn undo(self) {
        for prev in self.0.into_iter().rev() {
            let result = match &prev.content {
                Some(content) => write_in_place(&prev.path, content),
                None => fs::remove_file(&prev.path),
            };
            if let Err(err) = result {
                tracing::warn!(path = %prev.path.display(), %err, "cannot restore file");
            }
        }
    }
}

/// Paths of the sandbox's copies: hostname, hosts, resolv.conf.
pub fn sandbox_paths() -> [PathBuf; 3] {
    NAMES.map(|n| Path::new(SANDBOX_DIR).join(n))
}

/// Truncates and writes in place, so a file that is a mount point (a bind
/// mount, as in the tests) is written rather than replaced.
fn write_in_place(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(content)
}

fn write(written: &mut Written, path: PathBuf, content: &[u8]) -> Result<(), SandboxError> {
    let previous = match fs::read(&path) {
        Ok(content) => Some(content),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => {
            return Err(SandboxError::internal(
                format!("read {}", path.display()),
                err,
            ))
        }
    };
    write_in_place(&path, content)
        .map_err(|e| SandboxError::internal(format!("write {}", path.display()), e))?;
    written.0.push(Previous {
        path,
        content: previous,
    });
    Ok(())
}

/// Writes the three files in both places; on error `written` holds what to undo.
pub fn write_all(spec: &SandboxSpec, written: &mut Written) -> Result<(), SandboxError> {
    fs::create_dir_all(SANDBOX_DIR)
        .map_err(|e| SandboxError::internal(format!("create {SANDBOX_DIR}"), e))?;
    let hostname = format!("{}\n", spec.hostname);
    let contents = [
        hostname.as_bytes(),
        spec.hosts.as_bytes(),
        spec.resolv_conf.as_bytes(),
    ];
    for dir in [Path::new(SANDBOX_DIR), Path::new("/etc")] {
        for (name, content) in NAMES.iter().zip(contents) {
            write(written, dir.join(name), content)?;
        }
    }
    Ok(())
}
