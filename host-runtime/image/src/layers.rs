//! Unpacked layers: one read-only directory per chain id under `layers/`,
//! shared by every image and container that has that layer stack. A layer is
//! unpacked into `layers/.tmp-*` and renamed into place only when complete,
//! so a failed or interrupted unpack never leaves a half-made layer under its
//! chain id; leftovers are removed at start-up.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::content::sync_dir;
use crate::digest;
use crate::error::{ImageError, Result};
use crate::unpack::{unpack_layer, UnpackLimits, UnpackStats};

const TMP_PREFIX: &str = ".tmp-";
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The directory of unpacked layers.
#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    /// Opens (creating) `root`, removing interrupted unpacks.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).map_err(|e| ImageError::io("create", root, e))?;
        let rd = fs::read_dir(root).map_err(|e| ImageError::io("list", root, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| ImageError::io("list", root, e))?;
            if ent.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let p = ent.path();
                fs::remove_dir_all(&p).map_err(|e| ImageError::io("remove", &p, e))?;
            }
        }
        Ok(LayerStore {
            root: root.to_path_buf(),
        })
    }

    /// The directory of chain id `chain`.
    pub fn path(&self, chain: &str) -> Result<PathBuf> {
        Ok(self.root.join(digest::hex_of(chain)?))
    }

    /// Whether the layer stack `chain` is unpacked.
    pub fn exists(&self, chain: &str) -> bool {
        self.path(chain).map(|p| p.is_dir()).unwrap_or(false)
    }

    /// Unpacks the blob at `blob` as chain id `chain`, unless present. Blocking.
    pub fn unpack(
        &self,
        chain: &str,
        layer_digest: &str,
        blob: &Path,
        diff_id: &str,
        limits: &UnpackLimits,
        progress: Option<&AtomicU64>,
    ) -> Result<Option<UnpackStats>> {
        let dest = self.path(chain)?;
        if dest.is_dir() {
            return Ok(None);
        }
        let tmp = self.root.join(format!(
            "{TMP_PREFIX}{}-{}-{}",
            digest::hex_of(chain)?,
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&tmp).map_err(|e| ImageError::io("create", &tmp, e))?;
        let result = (|| {
            let f = fs::File::open(blob).map_err(|e| ImageError::io("open", blob, e))?;
            let stats = unpack_layer(layer_digest, f, &tmp, Some(diff_id), limits, progress)?;
            sync_tree_root(&tmp)?;
            fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| ImageError::io("chmod", &tmp, e))?;
            match fs::rename(&tmp, &dest) {
                Ok(()) => {}
                // Another pull unpacked the same stack meanwhile: keep theirs.
                Err(e) if dest.is_dir() => {
                    tracing::debug!(chain, error = %e, "layer unpacked concurrently");
                    let _ = fs::remove_dir_all(&tmp);
                }
                Err(e) => return Err(ImageError::io("rename", &dest, e)),
            }
            sync_dir(&self.root)?;
            Ok(stats)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(Some)
    }

    /// Every chain id present.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.root).map_err(|e| ImageError::io("list", &self.root, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| ImageError::io("list", &self.root, e))?;
            let d = format!("sha256:{}", ent.file_name().to_string_lossy());
            if digest::hex_of(&d).is_ok() {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Removes a layer directory.
    pub fn remove(&self, chain: &str) -> Result<()> {
        let p = self.path(chain)?;
        match fs::remove_dir_all(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io("remove", &p, e)),
        }
    }
}

/// syncfs of the filesystem holding `dir`: the unpacked files reach the disk
/// before the layer is published under its chain id.
fn sync_tree_root(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir).map_err(|e| ImageError::io("open", dir, e))?;
    // SAFETY: valid fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } < 0 {
        return Err(ImageError::io(
            "syncfs",
            dir,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
