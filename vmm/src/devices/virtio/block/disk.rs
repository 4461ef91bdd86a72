//! Opening a disk image from its [`DiskSpec`] (parsed and checked in the
//! `vessel-vmm-api` crate).
//!
//! Every error names the flag and the path, and is found before any KVM
//! setup, so a bad disk never half-starts a VM.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tracing::info;

/// Bytes per sector: virtio-blk's fixed unit for capacity and offsets.
pub const SECTOR_SIZE: u64 = 512;
pub use vessel_vmm_api::disk::{DiskSpec, ID_BYTES};

/// Error from a `--disk` flag; the message names the flag and the path.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image cannot be opened (missing, no permission, read-only fs).
    #[error("--disk {}: cannot open {}: {source}{hint}", path.display(), if *read_only { "read-only" } else { "read-write" })]
    Open {
        /// The path.
        path: PathBuf,
        /// Whether it was opened read-only.
        read_only: bool,
        /// Why it failed.
        source: io::Error,
        /// Advice when a read-only open would have worked.
        hint: &'static str,
    },
    /// The path is neither a regular file nor a block device.
    #[error("--disk {}: not a regular file or block device", .0.display())]
    NotADisk(PathBuf),
    /// The size cannot be read.
    #[error("--disk {}: cannot read its size: {}", .0.display(), .1)]
    Size(PathBuf, #[source] io::Error),
    /// The image is empty.
    #[error("--disk {}: the image is empty", .0.display())]
    Empty(PathBuf),
    /// The size is not whole sectors: the tail would be unreachable.
    #[error("--disk {}: size {} bytes is not a multiple of {SECTOR_SIZE}", .0.display(), .1)]
    NotSectorMultiple(PathBuf, u64),
    /// Another process (e.g. another VM) holds a conflicting lock.
    #[error("--disk {}: locked by another user of the image (another VM, or the same image given twice)", .0.display())]
    Locked(PathBuf),
}

/// An opened, checked disk image.
#[derive(Debug)]
pub struct DiskImage {
    /// Path as given (for logs and errors).
    pub path: PathBuf,
    /// The open image.
    pub file: File,
    /// Whether the guest may only read.
    pub read_only: bool,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// GET_ID answer, NUL-padded.
    pub id: [u8; ID_BYTES],
}

impl DiskImage {
    /// Opens and checks the image `spec` names.
    pub fn open(spec: &DiskSpec) -> Result<DiskImage, DiskError> {
        let path = &spec.path;
        let mut file = OpenOptions::new()
            .read(true)
            .write(!spec.read_only)
            .open(path)
            .map_err(|source| DiskError::Open {
                path: path.clone(),
                read_only: spec.read_only,
                hint: rw_hint(spec.read_only, &source),
                source,
            })?;
        let meta = file
            .metadata()
            .map_err(|e| DiskError::Size(path.clone(), e))?;
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_block_device() {
            return Err(DiskError::NotADisk(path.clone()));
        }
        lock(&file, spec.read_only).map_err(|_| DiskError::Locked(path.clone()))?;
        // metadata().len() is 0 for block devices; seeking to the end works for both.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| DiskError::Size(path.clone(), e))?;
        if size == 0 {
            return Err(DiskError::Empty(path.clone()));
        }
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(DiskError::NotSectorMultiple(path.clone(), size));
        }
        let id = disk_id(spec.serial.as_deref(), path);
        info!(
            path = %path.display(),
            size,
            read_only = spec.read_only,
            "disk image opened"
        );
        Ok(DiskImage {
            path: path.clone(),
            file,
            read_only: spec.read_only,
            sectors: size / SECTOR_SIZE,
            id,
        })
    }
}

/// Points at `,ro` when only the write access was refused.
fn rw_hint(read_only: bool, e: &io::Error) -> &'static str {
    let denied =
        e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS);
    if !read_only && denied {
        " (add ,ro for a read-only disk)"
    } else {
        ""
    }
}

/// Takes an advisory lock so two VMs cannot write one image: shared for
/// read-only disks, exclusive for read-write ones (as QEMU and Cloud
/// Hypervisor do). The lock lives as long as the file.
fn lock(file: &File, read_only: bool) -> io::Result<()> {
    let op = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The GET_ID answer: the serial if given, else the file name, cut to
/// `ID_BYTES` and NUL-padded (no terminator when it fills all 20 bytes).
fn disk_id(serial: Option<&str>, path: &Path) -> [u8; ID_BYTES] {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let src = serial.unwrap_or(&name);
    let mut id = [0u8; ID_BYTES];
    for (d, s) in id.iter_mut().zip(src.bytes().filter(u8::is_ascii_graphic)) {
        *d = s;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ro_hint_only_when_write_access_was_refused() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let erofs = io::Error::from_raw_os_error(libc::EROFS);
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(rw_hint(false, &denied), " (add ,ro for a read-only disk)");
        assert_eq!(rw_hint(false, &erofs), " (add ,ro for a read-only disk)");
        assert_eq!(rw_hint(true, &denied), "");
        assert_eq!(rw_hint(false, &missing), "");
    }
}
