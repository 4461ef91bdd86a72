//! Unpacking one layer (a tar stream, gzip, zstd or plain) into its own
//! directory, in the form overlayfs reads: whiteouts become 0/0 character
//! devices and opaque directories get `trusted.overlay.opaque=y`, as
//! containerd's overlay snapshotter lays them out.
//!
//! The tar is untrusted. Every entry path is cleaned (absolute paths and `..`
//! are refused), and every file is created relative to its parent directory's
//! fd, reached through `fsat` (openat2 beneath the layer root, no symlinks):
//! a symlink planted by the layer cannot redirect a later entry, and a hard
//! link can only point at a file already in the layer. Size and entry count
//! are capped, and the uncompressed stream must hash to the config's diff id.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Hasher;
use crate::error::{ImageError, Result};
use crate::fsat;

/// Caps on what one layer may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Total bytes of regular file content.
    pub max_bytes: u64,
    /// Number of tar entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 32 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// What an unpack produced.
#[derive(Debug, Clone)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: String,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Tar entries processed.
    pub entries: u64,
}

/// Trailing bytes accepted after the tar's end-of-archive blocks (record padding).
const MAX_TRAILER: u64 = 1 << 20;

/// The largest zstd window accepted (bounds the decoder's memory).
const MAX_ZSTD_WINDOW: u64 = 128 << 20;

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Wraps `input` in the decompressor its first bytes call for.
fn decompress<'a, R: Read + 'a>(layer: &str, input: R) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 << 10, input);
    let head = br.fill_buf().map_err(|e| ImageError::Unpack {
        layer: layer.to_string(),
        detail: format!("read: {e}"),
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(br)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(br, MAX_ZSTD_WINDOW)
            .map_err(|e| ImageError::Unpack {
            layer: layer.to_string(),
            detail: format!("bad zstd stream: {e}"),
        })?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(br))
    }
}

/// A cleaned entry path: its normal components, none of them `..`.
fn clean_path(p: &Path) -> std::result::Result<Vec<OsString>, &'static str> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains \"..\""),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(out)
}

/// Unpacks the layer `input` into the existing, empty directory `dest`.
/// `layer` names the layer in errors; `expected_diff_id`, when given, must be
/// the uncompressed stream's digest. On error `dest` holds a partial tree
/// that the caller removes (it is a temporary directory).
pub fn unpack_layer<R: Read>(
    layer: &str,
    input: R,
    dest: &Path,
    expected_diff_id: Option<&str>,
    limits: &UnpackLimits,
    progress: Option<&AtomicU64>,
) -> Result<UnpackStats> {
    let root: OwnedFd = std::fs::File::open(dest)
        .map_err(|e| ImageError::io("open layer dir", dest, e))?
        .into();
    let reader = HashingReader {
        inner: decompress(layer, input)?,
        hasher: Hasher::default(),
    };
    let mut u = Unpacker {
        layer,
        root,
        limits: *limits,
        bytes: 0,
        entries: 0,
        dir_times: Vec::new(),
        progress,
        pending: None,
    };
    let mut ar = tar::Archive::new(reader);
    // Raw entries: the tar crate would read extended headers (PAX, GNU long
    // names) into memory whole, whatever size the layer claims; here they are
    // read with a cap and applied by `Unpacker::entry`.
    let entries = ar
        .entries()
        .map_err(|e| u.err("", format!("not a tar stream: {e}")))?
        .raw(true);
    for entry in entries {
        let entry = entry.map_err(|e| u.err("", format!("bad tar stream: {e}")))?;
        u.entry(entry)?;
    }
    if u.pending.is_some() {
        return Err(u.err("", "extended header at the end with no entry after it"));
    }
    u.finish_dirs()?;
    let mut rest = ar.into_inner();
    let trailer = io::copy(&mut (&mut rest).take(MAX_TRAILER + 1), &mut io::sink())
        .map_err(|e| u.err("", format!("reading the end of the stream: {e}")))?;
    if trailer > MAX_TRAILER {
        return Err(u.err(
            "",
            format!("more than {MAX_TRAILER} bytes after the end of the tar"),
        ));
    }
    let diff_id = rest.hasher.finish();
    if let Some(want) = expected_diff_id {
        if want != diff_id {
            return Err(ImageError::Verification {
                reference: String::new(),
                digest: want.to_string(),
                detail: format!("layer {layer} uncompresses to {diff_id}"),
            });
        }
    }
    Ok(UnpackStats {
        diff_id,
        bytes: u.bytes,
        entries: u.entries,
    })
}

struct Unpacker<'a> {
    layer: &'a str,
    root: OwnedFd,
    limits: UnpackLimits,
    bytes: u64,
    entries: u64,
    dir_times: Vec<(Vec<OsString>, i64)>,
    progress: Option<&'a AtomicU64>,
    /// Extended headers read for the next entry.
    pending: Option<Ext>,
}

/// Extended headers (PAX, GNU long name and link) for the entry that follows.
#[derive(Default)]
struct Ext {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// The largest extended header accepted (a long path, xattrs).
const MAX_EXT: u64 = 1 << 20;

fn strip_nuls(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

const OPAQUE: &str = ".wh..wh..opq";
const WH_PREFIX: &str = ".wh.";
const WH_META_PREFIX: &str = ".wh..wh.";

/// xattrs an image may set: user.*, trusted.* except overlay's own (an image
/// must not forge redirects or opaque markers), and file capabilities.
fn xattr_allowed(name: &str) -> bool {
    (name.starts_with("user.") || name.starts_with("trusted.") || name == "security.capability")
        && !name.starts_with("trusted.overlay.")
}

impl<'a> Unpacker<'a> {
    fn err(&self, path: &str, detail: impl std::fmt::Display) -> ImageError {
        let detail = if path.is_empty() {
            detail.to_string()
        } else {
            format!("entry {path:?}: {detail}")
        };
        ImageError::Unpack {
            layer: self.layer.to_string(),
            detail,
        }
    }

    /// Opens the directory at `comps` under the root, creating missing ones.
    fn dir(&self, shown: &str, comps: &[OsString], create: bool) -> Result<OwnedFd> {
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| self.err(shown, format!("dup: {e}")))?;
        for c in comps {
            let next = match fsat::open_dir(cur.as_fd(), c) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    fsat::mkdir(cur.as_fd(), c, 0o755)
                        .map_err(|e| self.err(shown, format!("mkdir {c:?}: {e}")))?;
                    fsat::open_dir(cur.as_fd(), c)
                }
                r => r,
            };
            cur = next.map_err(|e| {
                let is_link = fsat::lstat(cur.as_fd(), c)
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
                let why = match e.raw_os_error() {
                    _ if is_link => format!("parent {c:?} is a symlink (refused)"),
                    Some(libc::ELOOP) => format!("parent {c:?} is a symlink (refused)"),
                    Some(libc::ENOTDIR) => format!("parent {c:?} is not a directory"),
                    Some(libc::EXDEV) => format!("parent {c:?} escapes the layer"),
                    _ => format!("open parent {c:?}: {e}"),
                };
                self.err(shown, why)
            })?;
        }
        Ok(cur)
    }

    /// Removes whatever non-directory is at `name` (a later entry replaces it).
    fn clear(&self, shown: &str, parent: &OwnedFd, name: &OsStr) -> Result<()> {
        match fsat::unlink(parent.as_fd(), name, false) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                // Only an empty directory can be replaced; entries of a
                // layer do not normally replace whole trees.
                fsat::unlink(parent.as_fd(), name, true)
                    .map_err(|e| self.err(shown, format!("replaces a directory: {e}")))
            }
            Err(e) => Err(self.err(shown, format!("remove existing: {e}"))),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.err(
                "",
                format!("more than {} entries (limit)", self.limits.max_entries),
            ));
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_local_extensions() || kind.is_gnu_longname() || kind.is_gnu_longlink() {
            let size = entry
                .header()
                .size()
                .map_err(|e| self.err("", format!("extended header size: {e}")))?;
            if size > MAX_EXT {
                return Err(self.err(
                    "",
                    format!("extended header of {size} bytes (limit {MAX_EXT})"),
                ));
            }
            let mut data = Vec::new();
            (&mut entry)
                .take(MAX_EXT)
                .read_to_end(&mut data)
                .map_err(|e| self.err("", format!("extended header: {e}")))?;
            let ext = self.pending.get_or_insert_with(Ext::default);
            let slot = if kind.is_pax_local_extensions() {
                &mut ext.pax
            } else if kind.is_gnu_longname() {
                &mut ext.long_name
            } else {
                &mut ext.long_link
            };
            if slot.is_some() {
                return Err(self.err("", "two extended headers of one kind for one entry"));
            }
            *slot = Some(data);
            return Ok(());
        }
        if kind.is_pax_global_extensions() {
            return Ok(()); // its data is skipped by the iterator
        }
        let ext = self.pending.take().unwrap_or_default();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(p) = &ext.pax {
            for rec in tar::PaxExtensions::new(p) {
                let rec = rec.map_err(|e| self.err("", format!("bad PAX header: {e}")))?;
                let key = rec
                    .key()
                    .map_err(|e| self.err("", format!("bad PAX key: {e}")))?;
                pax.push((key.to_string(), rec.value_bytes().to_vec()));
            }
        }
        let pax_get = |k: &str| {
            pax.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let pax_num = |k: &str| -> Option<u64> {
            let v = pax_get(k)?;
            let s = String::from_utf8_lossy(&v).to_string();
            s.split('.').next()?.trim().parse().ok()
        };
        let path_bytes = match (pax_get("path"), ext.long_name) {
            (Some(p), _) => p,
            (None, Some(l)) => strip_nuls(l),
            (None, None) => entry.path_bytes().into_owned(),
        };
        let link_bytes = match (pax_get("linkpath"), ext.long_link) {
            (Some(p), _) => Some(p),
            (None, Some(l)) => Some(strip_nuls(l)),
            (None, None) => entry.link_name_bytes().map(|b| b.into_owned()),
        };
        let raw_path = std::path::PathBuf::from(OsString::from_vec(path_bytes));
        let shown = raw_path.display().to_string();
        let link = link_bytes.map(|b| std::path::PathBuf::from(OsString::from_vec(b)));
        let comps = clean_path(&raw_path).map_err(|why| self.err(&shown, why))?;
        let Some((name, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./"): its metadata is the mount's business.
            return Ok(());
        };
        let hdr = entry.header().clone();
        if let Some(sz) = pax_num("size") {
            if Some(sz) != hdr.size().ok() {
                return Err(self.err(&shown, "PAX size override is not supported"));
            }
        }
        let uid = match pax_num("uid") {
            Some(u) => u,
            None => hdr
                .uid()
                .map_err(|e| self.err(&shown, format!("uid: {e}")))?,
        };
        let gid = match pax_num("gid") {
            Some(g) => g,
            None => hdr
                .gid()
                .map_err(|e| self.err(&shown, format!("gid: {e}")))?,
        };
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) => (u, g),
            _ => return Err(self.err(&shown, "uid or gid out of range")),
        };
        let mode = hdr
            .mode()
            .map_err(|e| self.err(&shown, format!("mode: {e}")))?
            & 0o7777;
        let mtime = match pax_num("mtime") {
            Some(m) => m,
            None => hdr
                .mtime()
                .map_err(|e| self.err(&shown, format!("mtime: {e}")))?,
        };
        let mtime = i64::try_from(mtime).unwrap_or(i64::MAX);

        let name_str = name.to_string_lossy();
        if let Some(whited) = name_str.strip_prefix(WH_PREFIX) {
            let parent = self.dir(&shown, parent_comps, true)?;
            if name_str == OPAQUE {
                return fsat::set_xattr(parent.as_fd(), "trusted.overlay.opaque", b"y")
                    .map_err(|e| self.err(&shown, format!("mark opaque: {e}")));
            }
            if name_str.starts_with(WH_META_PREFIX) {
                return Ok(()); // aufs bookkeeping (.wh..wh.plnk and the like)
            }
            let target = OsStr::new(whited).to_os_string();
            if target.is_empty() || target == "." || target == ".." {
                return Err(self.err(&shown, "bad whiteout name"));
            }
            self.clear(&shown, &parent, &target)?;
            return fsat::mknod(parent.as_fd(), &target, libc::S_IFCHR, 0)
                .map_err(|e| self.err(&shown, format!("whiteout: {e}")));
        }

        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        for (key, value) in &pax {
            if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                if xattr_allowed(x) {
                    xattrs.push((x.to_string(), value.clone()));
                } else {
                    tracing::debug!(layer = self.layer, entry = %shown, xattr = x, "xattr skipped");
                }
            }
        }

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                let parent = self.dir(&shown, parent_comps, true)?;
                match fsat::mkdir(parent.as_fd(), name, 0o700) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        let st = fsat::lstat(parent.as_fd(), name)
                            .map_err(|e| self.err(&shown, format!("stat: {e}")))?;
                        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                            self.clear(&shown, &parent, name)?;
                            fsat::mkdir(parent.as_fd(), name, 0o700)
                                .map_err(|e| self.err(&shown, format!("mkdir: {e}")))?;
                        }
                    }
                    Err(e) => return Err(self.err(&shown, format!("mkdir: {e}"))),
                }
                let d = fsat::open_dir(parent.as_fd(), name)
                    .map_err(|e| self.err(&shown, format!("open: {e}")))?;
                fsat::chown_chmod_fd(d.as_fd(), uid, gid, mode)
                    .map_err(|e| self.err(&shown, format!("owner/mode: {e}")))?;
                self.set_xattrs(&shown, &d, &xattrs)?;
                self.dir_times.push((comps.clone(), mtime));
            }
            T::Regular | T::Continuous => {
                let size = hdr
                    .size()
                    .map_err(|e| self.err(&shown, format!("size: {e}")))?;
                if self.bytes.saturating_add(size) > self.limits.max_bytes {
                    return Err(self.err(
                        &shown,
                        format!(
                            "layer unpacks to more than {} bytes (limit)",
                            self.limits.max_bytes
                        ),
                    ));
                }
                let parent = self.dir(&shown, parent_comps, true)?;
                self.clear(&shown, &parent, name)?;
                let mut f = fsat::create_file(parent.as_fd(), name)
                    .map_err(|e| self.err(&shown, format!("create: {e}")))?;
                let n = io::copy(&mut (&mut entry).take(size), &mut f)
                    .map_err(|e| self.err(&shown, format!("write: {e}")))?;
                if n != size {
                    return Err(self.err(&shown, format!("truncated: {n} of {size} bytes")));
                }
                self.bytes += n;
                if let Some(p) = self.progress {
                    p.fetch_add(n, Ordering::Relaxed);
                }
                fsat::chown_chmod_fd(f.as_fd(), uid, gid, mode)
                    .map_err(|e| self.err(&shown, format!("owner/mode: {e}")))?;
                let fd: OwnedFd = f.into();
                self.set_xattrs(&shown, &fd, &xattrs)?;
                fsat::set_mtime_fd(fd.as_fd(), mtime)
                    .map_err(|e| self.err(&shown, format!("mtime: {e}")))?;
            }
            T::Symlink => {
                let target = link
                    .clone()
                    .ok_or_else(|| self.err(&shown, "symlink without a target"))?;
                let parent = self.dir(&shown, parent_comps, true)?;
                self.clear(&shown, &parent, name)?;
                // The target is stored as text; it is never followed here.
                fsat::symlink(target.as_os_str(), parent.as_fd(), name)
                    .map_err(|e| self.err(&shown, format!("symlink: {e}")))?;
                fsat::chown(parent.as_fd(), name, uid, gid)
                    .map_err(|e| self.err(&shown, format!("owner: {e}")))?;
                fsat::set_mtime_at(parent.as_fd(), name, mtime)
                    .map_err(|e| self.err(&shown, format!("mtime: {e}")))?;
            }
            T::Link => {
                let target = link
                    .clone()
                    .ok_or_else(|| self.err(&shown, "hard link without a target"))?;
                let tcomps = clean_path(&target)
                    .map_err(|why| self.err(&shown, format!("hard link target: {why}")))?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(self.err(&shown, "hard link to the layer root"));
                };
                let tdir = self.dir(&shown, tparent, false)?;
                let parent = self.dir(&shown, parent_comps, true)?;
                self.clear(&shown, &parent, name)?;
                fsat::hardlink(tdir.as_fd(), tname, parent.as_fd(), name).map_err(|e| {
                    self.err(
                        &shown,
                        format!(
                            "hard link to {:?} (must be a file earlier in this layer): {e}",
                            target
                        ),
                    )
                })?;
            }
            T::Char | T::Block | T::Fifo => {
                let major = hdr.device_major().ok().flatten().unwrap_or(0);
                let minor = hdr.device_minor().ok().flatten().unwrap_or(0);
                let ftype = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let parent = self.dir(&shown, parent_comps, true)?;
                self.clear(&shown, &parent, name)?;
                fsat::mknod(
                    parent.as_fd(),
                    name,
                    ftype | 0o600,
                    libc::makedev(major, minor),
                )
                .map_err(|e| self.err(&shown, format!("mknod: {e}")))?;
                fsat::chown(parent.as_fd(), name, uid, gid)
                    .map_err(|e| self.err(&shown, format!("owner: {e}")))?;
                fsat::chmod(parent.as_fd(), name, mode)
                    .map_err(|e| self.err(&shown, format!("mode: {e}")))?;
                fsat::set_mtime_at(parent.as_fd(), name, mtime)
                    .map_err(|e| self.err(&shown, format!("mtime: {e}")))?;
            }
            T::XGlobalHeader => {}
            other => {
                return Err(self.err(&shown, format!("unsupported tar entry type {other:?}")));
            }
        }
        Ok(())
    }

    fn set_xattrs(&self, shown: &str, fd: &OwnedFd, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
        for (k, v) in xattrs {
            fsat::set_xattr(fd.as_fd(), k, v)
                .map_err(|e| self.err(shown, format!("xattr {k}: {e}")))?;
        }
        Ok(())
    }

    /// Directory mtimes last: creating entries inside changes them.
    fn finish_dirs(&mut self) -> Result<()> {
        for (comps, mtime) in std::mem::take(&mut self.dir_times) {
            let shown = comps
                .iter()
                .map(|c| c.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let d = self.dir(&shown, &comps, false)?;
            fsat::set_mtime_fd(d.as_fd(), mtime)
                .map_err(|e| self.err(&shown, format!("mtime: {e}")))?;
        }
        Ok(())
    }
}
