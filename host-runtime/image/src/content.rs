//! The content store: blobs addressed by digest under `blobs/sha256/<hex>`.
//! A blob is written to `ingest/`, verified (size and digest), fsynced and
//! renamed into place, so a crash mid-write never leaves a file under a
//! digest it does not have; leftovers in `ingest/` are removed at start-up.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{self, Hasher};
use crate::error::{ImageError, Result};

/// The blob directory tree.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Opens (creating) the store under `root`, removing interrupted writes.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        fs::create_dir_all(&blobs).map_err(|e| ImageError::io("create", &blobs, e))?;
        if ingest.exists() {
            fs::remove_dir_all(&ingest).map_err(|e| ImageError::io("clean", &ingest, e))?;
        }
        fs::create_dir_all(&ingest).map_err(|e| ImageError::io("create", &ingest, e))?;
        Ok(ContentStore { blobs, ingest })
    }

    /// Where the blob `digest` lives.
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs.join(digest::hex_of(digest)?))
    }

    /// Whether the blob is present with the expected size.
    pub fn has(&self, digest: &str, size: u64) -> bool {
        match self
            .path(digest)
            .and_then(|p| fs::metadata(&p).map_err(|e| ImageError::io("stat", &p, e)))
        {
            Ok(m) => m.is_file() && m.len() == size,
            Err(_) => false,
        }
    }

    /// Starts writing a blob that must hash to `digest` and be `size` bytes.
    pub fn writer(&self, digest: &str, size: u64) -> Result<BlobWriter> {
        let hex = digest::hex_of(digest)?;
        let seq = INGEST_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .ingest
            .join(format!("{hex}.{}.{seq}", std::process::id()));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| ImageError::io("create", &tmp, e))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            dest: self.blobs.join(hex),
            dir: self.blobs.clone(),
            digest: digest.to_string(),
            size,
            written: 0,
            hasher: Hasher::default(),
        })
    }

    /// Stores `data` as a blob, verifying it against `digest`.
    pub fn put(&self, digest: &str, data: &[u8]) -> Result<()> {
        if self.has(digest, data.len() as u64) {
            return Ok(());
        }
        let mut w = self.writer(digest, data.len() as u64)?;
        w.write_chunk(data)?;
        w.commit()
    }

    /// Reads a whole blob, refusing one over `max` bytes.
    pub fn read(&self, digest: &str, max: u64) -> Result<Vec<u8>> {
        let p = self.path(digest)?;
        let f = File::open(&p).map_err(|e| ImageError::io("open", &p, e))?;
        let mut buf = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| ImageError::io("read", &p, e))?;
        if buf.len() as u64 > max {
            return Err(ImageError::InvalidArgument {
                field: "blob".into(),
                reason: format!("{digest} is over {max} bytes"),
            });
        }
        Ok(buf)
    }

    /// Every blob digest in the store.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.blobs).map_err(|e| ImageError::io("list", &self.blobs, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| ImageError::io("list", &self.blobs, e))?;
            if let Some(name) = ent.file_name().to_str() {
                let d = format!("sha256:{name}");
                if digest::hex_of(&d).is_ok() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Removes a blob; a missing one is not an error. Returns the bytes freed.
    pub fn delete(&self, digest: &str) -> Result<u64> {
        let p = self.path(digest)?;
        let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&p) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(ImageError::io("remove", &p, e)),
        }
    }
}

/// A blob being written; dropped without `commit` it leaves nothing behind.
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
    digest: String,
    size: u64,
    written: u64,
    hasher: Hasher,
}

impl BlobWriter {
    /// Appends bytes; more than the declared size is an error right away.
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<()> {
        self.written += data.len() as u64;
        if self.written > self.size {
            return Err(ImageError::Verification {
                reference: String::new(),
                digest: self.digest.clone(),
                detail: format!("more than the declared {} bytes", self.size),
            });
        }
        self.hasher.update(data);
        let f = self.file.as_mut().ok_or_else(|| {
            ImageError::io(
                "write",
                &self.tmp,
                std::io::Error::other("writer already closed"),
            )
        })?;
        f.write_all(data)
            .map_err(|e| ImageError::io("write", &self.tmp, e))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies size and digest, fsyncs and moves the blob into place.
    pub fn commit(mut self) -> Result<()> {
        if self.written != self.size {
            return Err(ImageError::Verification {
                reference: String::new(),
                digest: self.digest.clone(),
                detail: format!("got {} bytes, descriptor says {}", self.written, self.size),
            });
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.digest {
            return Err(ImageError::Verification {
                reference: String::new(),
                digest: self.digest.clone(),
                detail: format!("content hashes to {actual}"),
            });
        }
        if let Some(f) = self.file.take() {
            f.sync_all()
                .map_err(|e| ImageError::io("fsync", &self.tmp, e))?;
        }
        fs::rename(&self.tmp, &self.dest).map_err(|e| ImageError::io("rename", &self.dest, e))?;
        sync_dir(&self.dir)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// fsyncs a directory so that a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_write_and_failures_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = digest::sha256(b"hello");
        cs.put(&d, b"hello").unwrap();
        assert!(cs.has(&d, 5));
        assert_eq!(cs.read(&d, 100).unwrap(), b"hello");

        // Wrong content under a digest: refused, nothing stored.
        let d2 = digest::sha256(b"other");
        assert!(matches!(
            cs.put(&d2, b"lies!"),
            Err(ImageError::Verification { .. })
        ));
        assert!(!cs.has(&d2, 5));
        // Too many bytes: refused at the write.
        let mut w = cs.writer(&d2, 2).unwrap();
        assert!(w.write_chunk(b"other").is_err());
        drop(w);
        // A writer dropped mid-way (a crash or a cancelled pull) leaves no file.
        let mut w = cs.writer(&d2, 5).unwrap();
        w.write_chunk(b"oth").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        assert_eq!(cs.list().unwrap(), vec![d.clone()]);
        assert_eq!(cs.delete(&d).unwrap(), 5);
        assert!(cs.list().unwrap().is_empty());
    }
}
