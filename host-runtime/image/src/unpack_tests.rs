//! Unpack tests with hand-made layers: the overlay form of whiteouts, every
//! kind of entry and its metadata, and every hostile case, each of which must
//! fail with a clear error and leave nothing under the layer store.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tar::{EntryType, Header};

use crate::digest;
use crate::error::ImageError;
use crate::layers::LayerStore;
use crate::unpack::UnpackLimits;

/// A tar entry with raw name and link bytes: the tar crate's own setters
/// refuse `..` and absolute paths, which is exactly what these tests need.
fn raw(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: EntryType,
    data: &[u8],
    link: &str,
    mode: u32,
) {
    let mut h = Header::new_ustar();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    store: LayerStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("layers");
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let store = LayerStore::open(&root).unwrap();
    Fixture {
        root,
        outside,
        store,
        _dir: dir,
    }
}

impl Fixture {
    /// Unpacks `blob` (whose uncompressed form is `tar`) as a one-layer stack.
    fn unpack(
        &self,
        blob: &[u8],
        tar: &[u8],
        limits: UnpackLimits,
    ) -> crate::Result<std::path::PathBuf> {
        let diff = digest::sha256(tar);
        let path = self.root.parent().unwrap().join("blob");
        fs::write(&path, blob).unwrap();
        self.store
            .unpack(&diff, "test-layer", &path, &diff, &limits, None)?;
        self.store.path(&diff)
    }

    /// A hostile layer must fail, name `needle`, and leave nothing behind.
    fn refuses(&self, tar: &[u8], limits: UnpackLimits, needle: &str) {
        let err = self.unpack(tar, tar, limits).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ImageError::Unpack { .. }),
            "wrong error kind: {err:?}"
        );
        assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
        assert_eq!(
            fs::read_dir(&self.root).unwrap().count(),
            0,
            "half-made layer left: {msg}"
        );
        let outside: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, vec![std::ffi::OsString::from("secret")], "{msg}");
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"secret");
    }
}

fn good_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, "./", EntryType::Directory, b"", "", 0o755);
    raw(&mut b, "bin/", EntryType::Directory, b"", "", 0o755);
    let mut h = Header::new_ustar();
    h.set_path("bin/tool").unwrap();
    h.set_entry_type(EntryType::Regular);
    h.set_size(5);
    h.set_mode(0o4755);
    h.set_uid(1000);
    h.set_gid(1001);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append_pax_extensions([("SCHILY.xattr.user.note", b"hi".as_slice())])
        .unwrap();
    b.append(&h, b"tool!".as_slice()).unwrap();
    raw(&mut b, "bin/alias", EntryType::Link, b"", "bin/tool", 0o755);
    raw(
        &mut b,
        "bin/sh",
        EntryType::Symlink,
        b"",
        "/bin/tool",
        0o777,
    );
    raw(&mut b, "etc/deep/file", EntryType::Regular, b"x", "", 0o600);
    raw(&mut b, "dev/fifo", EntryType::Fifo, b"", "", 0o620);
    let mut h = Header::new_ustar();
    h.set_path("dev/null").unwrap();
    h.set_entry_type(EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_mode(0o666);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, b"".as_slice()).unwrap();
    raw(&mut b, "var/.wh.gone", EntryType::Regular, b"", "", 0o600);
    raw(
        &mut b,
        "opt/.wh..wh..opq",
        EntryType::Regular,
        b"",
        "",
        0o600,
    );
    raw(&mut b, "opt/new", EntryType::Regular, b"n", "", 0o644);
    raw(&mut b, ".wh..wh.plnk", EntryType::Directory, b"", "", 0o700);
    b.into_inner().unwrap()
}

fn check_good(dir: &Path) {
    let tool = dir.join("bin/tool");
    let md = fs::metadata(&tool).unwrap();
    assert_eq!(fs::read(&tool).unwrap(), b"tool!");
    assert_eq!(md.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    assert_eq!(md.mtime(), 1_600_000_000);
    let alias = fs::metadata(dir.join("bin/alias")).unwrap();
    assert_eq!(alias.ino(), md.ino(), "hard link shares the inode");
    assert_eq!(
        fs::read_link(dir.join("bin/sh")).unwrap(),
        Path::new("/bin/tool")
    );
    let note = xattr(&tool, "user.note");
    assert_eq!(note.as_deref(), Some(b"hi".as_slice()));
    assert_eq!(fs::read(dir.join("etc/deep/file")).unwrap(), b"x");
    assert!(fs::symlink_metadata(dir.join("dev/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let null = fs::symlink_metadata(dir.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    // Whiteout: a 0/0 character device named like the removed file.
    let gone = fs::symlink_metadata(dir.join("var/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!dir.join("var/.wh.gone").exists());
    // Opaque directory: overlayfs' xattr, no marker file.
    assert_eq!(
        xattr(&dir.join("opt"), "trusted.overlay.opaque").as_deref(),
        Some(b"y".as_slice())
    );
    assert!(!dir.join("opt/.wh..wh..opq").exists());
    assert!(!dir.join(".wh..wh.plnk").exists());
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

#[test]
fn unpacks_every_entry_kind_plain_gzip_and_zstd() {
    let tar = good_layer();
    let f = fixture();
    check_good(&f.unpack(&tar, &tar, UnpackLimits::default()).unwrap());
    let f = fixture();
    check_good(
        &f.unpack(&gzip(&tar), &tar, UnpackLimits::default())
            .unwrap(),
    );
    let f = fixture();
    let z = ruzstd::encoding::compress_to_vec(
        tar.as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    check_good(&f.unpack(&z, &tar, UnpackLimits::default()).unwrap());
}

#[test]
fn refuses_dotdot() {
    let f = fixture();
    let t = tar_of(|b| raw(b, "../outside/evil", EntryType::Regular, b"x", "", 0o644));
    f.refuses(&t, UnpackLimits::default(), "\"..\"");
    let t = tar_of(|b| {
        raw(
            b,
            "a/../../outside/evil",
            EntryType::Regular,
            b"x",
            "",
            0o644,
        )
    });
    f.refuses(&t, UnpackLimits::default(), "\"..\"");
}

#[test]
fn refuses_absolute_paths() {
    let f = fixture();
    let abs = format!("{}/evil", f.outside.display());
    let t = tar_of(|b| raw(b, &abs, EntryType::Regular, b"x", "", 0o644));
    f.refuses(&t, UnpackLimits::default(), "absolute path");
}

#[test]
fn refuses_writing_through_a_symlink() {
    let f = fixture();
    let out = f.outside.display().to_string();
    let t = tar_of(|b| {
        raw(b, "escape", EntryType::Symlink, b"", &out, 0o777);
        raw(b, "escape/evil", EntryType::Regular, b"x", "", 0o644);
    });
    f.refuses(&t, UnpackLimits::default(), "is a symlink");
    // A relative symlink climbing out, then a directory entry through it.
    let t = tar_of(|b| {
        raw(b, "up", EntryType::Symlink, b"", "../outside", 0o777);
        raw(b, "up/newdir/", EntryType::Directory, b"", "", 0o755);
    });
    f.refuses(&t, UnpackLimits::default(), "is a symlink");
}

#[test]
fn refuses_symlinked_parent_even_inside_the_layer() {
    let f = fixture();
    let t = tar_of(|b| {
        raw(b, "real/", EntryType::Directory, b"", "", 0o755);
        raw(b, "alias", EntryType::Symlink, b"", "real", 0o777);
        raw(b, "alias/file", EntryType::Regular, b"x", "", 0o644);
    });
    f.refuses(&t, UnpackLimits::default(), "parent \"alias\" is a symlink");
}

#[test]
fn refuses_hard_link_escapes() {
    let f = fixture();
    let t = tar_of(|b| raw(b, "h", EntryType::Link, b"", "../outside/secret", 0o644));
    f.refuses(&t, UnpackLimits::default(), "hard link target");
    let abs = format!("{}/secret", f.outside.display());
    let t = tar_of(|b| raw(b, "h", EntryType::Link, b"", &abs, 0o644));
    f.refuses(&t, UnpackLimits::default(), "absolute path");
    // Through a symlink to the outside directory.
    let out = f.outside.display().to_string();
    let t = tar_of(|b| {
        raw(b, "s", EntryType::Symlink, b"", &out, 0o777);
        raw(b, "h", EntryType::Link, b"", "s/secret", 0o644);
    });
    f.refuses(&t, UnpackLimits::default(), "is a symlink");
    // To a file that is not in the layer (host files are never linked).
    let t = tar_of(|b| raw(b, "h", EntryType::Link, b"", "etc/passwd", 0o644));
    f.refuses(&t, UnpackLimits::default(), "open parent");
}

#[test]
fn refuses_tar_bombs_over_the_caps() {
    let f = fixture();
    let big = vec![0u8; 4096];
    let t = tar_of(|b| {
        raw(b, "a", EntryType::Regular, &big, "", 0o644);
        raw(b, "b", EntryType::Regular, &big, "", 0o644);
    });
    let limits = UnpackLimits {
        max_bytes: 6000,
        max_entries: 100,
    };
    f.refuses(&t, limits, "more than 6000 bytes");
    let t = tar_of(|b| {
        for i in 0..20 {
            raw(b, &format!("f{i}"), EntryType::Regular, b"", "", 0o644);
        }
    });
    let limits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 10,
    };
    f.refuses(&t, limits, "more than 10 entries");
    // A compressed bomb: 64 MiB of zeros in a few KiB of gzip.
    let zeros = vec![0u8; 64 << 20];
    let t = tar_of(|b| raw(b, "zeros", EntryType::Regular, &zeros, "", 0o644));
    let gz = gzip(&t);
    assert!(gz.len() < 1 << 20);
    let err = f
        .unpack(
            &gz,
            &t,
            UnpackLimits {
                max_bytes: 1 << 20,
                max_entries: 10,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
    assert_eq!(fs::read_dir(&f.root).unwrap().count(), 0);
}

#[test]
fn refuses_truncated_layers() {
    let f = fixture();
    let data = vec![7u8; 10_000];
    let t = tar_of(|b| raw(b, "file", EntryType::Regular, &data, "", 0o644));
    let cut = &t[..5000];
    f.refuses(cut, UnpackLimits::default(), "file");
    let gz = gzip(&t);
    let cutgz = &gz[..gz.len() / 2];
    let err = f.unpack(cutgz, &t, UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Unpack { .. }), "{err:?}");
    assert_eq!(fs::read_dir(&f.root).unwrap().count(), 0);
}

#[test]
fn refuses_what_is_not_a_tar() {
    let f = fixture();
    let mut junk = vec![0x41u8; 2048];
    junk[0] = b'{';
    f.refuses(&junk, UnpackLimits::default(), "tar");
    f.refuses(b"this is not a tar at all", UnpackLimits::default(), "tar");
    // Garbage after a gzip magic.
    let mut g = vec![0x1f, 0x8b];
    g.extend_from_slice(&[0u8; 100]);
    let err = f.unpack(&g, &g, UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Unpack { .. }), "{err:?}");
    assert_eq!(fs::read_dir(&f.root).unwrap().count(), 0);
}

#[test]
fn a_lying_diff_id_leaves_nothing() {
    let f = fixture();
    let t = tar_of(|b| raw(b, "file", EntryType::Regular, b"x", "", 0o644));
    let path = f.root.parent().unwrap().join("blob");
    fs::write(&path, &t).unwrap();
    let lie = digest::sha256(b"something else");
    let err = f
        .store
        .unpack(&lie, "l", &path, &lie, &UnpackLimits::default(), None)
        .unwrap_err();
    assert!(matches!(err, ImageError::Verification { .. }), "{err:?}");
    assert_eq!(fs::read_dir(&f.root).unwrap().count(), 0);
}

#[test]
fn refuses_forged_overlay_xattrs_quietly() {
    let f = fixture();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_ustar();
    h.set_path("d/").unwrap();
    h.set_entry_type(EntryType::Directory);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h.set_cksum();
    b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", b"/etc".as_slice())])
        .unwrap();
    b.append(&h, b"".as_slice()).unwrap();
    let t = b.into_inner().unwrap();
    let dir = f.unpack(&t, &t, UnpackLimits::default()).unwrap();
    assert!(xattr(&dir.join("d"), "trusted.overlay.redirect").is_none());
}

#[test]
fn long_names_through_gnu_and_pax_headers() {
    let f = fixture();
    let long_dir = "d".repeat(120);
    let gnu_path = format!("{long_dir}/gnu-file");
    let pax_path = format!("{long_dir}/{}", "p".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    // GNU headers: the tar crate writes a ././@LongLink entry for long names.
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(3);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(5);
    b.append_data(&mut h, &gnu_path, b"gnu".as_slice()).unwrap();
    // PAX path, uid and a long symlink target.
    let target = format!("/{}", "t".repeat(200));
    b.append_pax_extensions([
        ("path", pax_path.as_bytes()),
        ("uid", b"4242".as_slice()),
        ("linkpath", target.as_bytes()),
    ])
    .unwrap();
    raw(&mut b, "short", EntryType::Symlink, b"", "x", 0o777);
    let t = b.into_inner().unwrap();
    let dir = f.unpack(&t, &t, UnpackLimits::default()).unwrap();
    assert_eq!(fs::read(dir.join(&gnu_path)).unwrap(), b"gnu");
    let md = fs::symlink_metadata(dir.join(&pax_path)).unwrap();
    assert!(md.file_type().is_symlink());
    assert_eq!(md.uid(), 4242);
    assert_eq!(
        fs::read_link(dir.join(&pax_path)).unwrap(),
        Path::new(&target)
    );
    assert!(!dir.join("short").exists());
}

#[test]
fn refuses_huge_extended_headers_and_dangling_ones() {
    let f = fixture();
    let big = vec![b'a'; 2 << 20];
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("comment", big.as_slice())])
        .unwrap();
    raw(&mut b, "file", EntryType::Regular, b"x", "", 0o644);
    let t = b.into_inner().unwrap();
    f.refuses(&t, UnpackLimits::default(), "extended header of");
    // A PAX path that climbs out is refused like any other.
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", b"../outside/evil".as_slice())])
        .unwrap();
    raw(&mut b, "file", EntryType::Regular, b"x", "", 0o644);
    let t = b.into_inner().unwrap();
    f.refuses(&t, UnpackLimits::default(), "\"..\"");
}
