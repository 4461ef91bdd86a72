//! Import and export for offline and air-gapped nodes: OCI image layouts (a
//! directory or a tar) and `docker save` tarballs in, OCI layout tarballs out.
//!
//! An imported archive is as untrusted as a registry: a tar is extracted with
//! the layer unpacker (confined, capped) into a temporary directory, every
//! path named inside it is opened with openat2 beneath that directory without
//! following symlinks, and every blob is verified against its digest and size.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::digest;
use crate::error::{ImageError, Result};
use crate::fsat;
use crate::manifest::{self, Descriptor, Document, Manifest};
use crate::metadata::ImageRecord;
use crate::platform;
use crate::pull::{check_descriptor, check_manifest, commit_image, verify_bytes, NewImage};
use crate::reference::ImageRef;
use crate::store::Inner;
use crate::unpack::unpack_layer;

/// containerd's annotation with the full image name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation with the reference (a full name or only a tag).
pub const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Removes a temporary directory on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn bad_file(path: &Path, reason: impl std::fmt::Display) -> ImageError {
    ImageError::InvalidArgument {
        field: "file".into(),
        reason: format!("{}: {reason}", path.display()),
    }
}

/// Opens `rel` (a path named inside the archive) beneath `root`.
fn open_in(root: &OwnedFd, src: &Path, rel: &str) -> Result<File> {
    let rel = rel.trim_start_matches("./");
    fsat::open_beneath(
        root.as_fd(),
        OsStr::new(rel),
        libc::O_RDONLY | libc::O_NOFOLLOW,
        0,
    )
    .map(File::from)
    .map_err(|e| bad_file(src, format!("{rel:?}: {e}")))
}

fn read_in(root: &OwnedFd, src: &Path, rel: &str, max: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_in(root, src, rel)?
        .take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| bad_file(src, format!("{rel:?}: {e}")))?;
    if buf.len() as u64 > max {
        return Err(bad_file(src, format!("{rel:?} is over {max} bytes")));
    }
    Ok(buf)
}

fn blob_rel(d: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", digest::hex_of(d)?))
}

/// Copies `rel` into the content store as `digest` of `size` bytes, verified.
fn ingest(inner: &Inner, root: &OwnedFd, src: &Path, rel: &str, d: &str, size: u64) -> Result<()> {
    if inner.content.has(d, size) {
        return Ok(());
    }
    let mut f = open_in(root, src, rel)?.take(size + 1);
    let mut w = inner.content.writer(d, size)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| bad_file(src, format!("{rel:?}: {e}")))?;
        if n == 0 {
            break;
        }
        w.write_chunk(&buf[..n])?;
    }
    w.commit()
}

/// Imports every image in the archive or layout at `path` (blocking; the
/// caller holds the GC lock).
pub(crate) fn import(inner: &Inner, path: &Path) -> Result<Vec<(ImageRecord, Vec<String>)>> {
    let md = fs::metadata(path).map_err(|e| ImageError::io("stat", path, e))?;
    let (dir, _guard) = if md.is_dir() {
        (path.to_path_buf(), None)
    } else {
        let tmp = inner.cfg.root.join("ingest").join(format!(
            "import-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&tmp).map_err(|e| ImageError::io("create", &tmp, e))?;
        let guard = TempDir(tmp.clone());
        let f = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        unpack_layer(
            &path.display().to_string(),
            f,
            &tmp,
            None,
            &inner.cfg.limits.unpack,
            None,
        )?;
        (tmp, Some(guard))
    };
    let root: OwnedFd = File::open(&dir)
        .map_err(|e| ImageError::io("open", &dir, e))?
        .into();
    let has = |rel: &str| open_in(&root, path, rel).is_ok();
    if has("oci-layout") && has("index.json") {
        import_oci(inner, &root, path)
    } else if has("manifest.json") {
        import_docker(inner, &root, path)
    } else {
        Err(bad_file(
            path,
            "neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)",
        ))
    }
}

fn name_of(d: &Descriptor) -> Option<String> {
    let ann = d.annotations.as_ref()?;
    if let Some(n) = ann.get(CONTAINERD_NAME) {
        return Some(n.clone());
    }
    // A bare tag ("latest") is not a name of its own.
    ann.get(OCI_REF_NAME)
        .filter(|n| n.contains('/') || n.contains(':') || n.contains('@'))
        .cloned()
}

fn import_oci(
    inner: &Inner,
    root: &OwnedFd,
    src: &Path,
) -> Result<Vec<(ImageRecord, Vec<String>)>> {
    let limits = &inner.cfg.limits;
    let idx_bytes = read_in(root, src, "index.json", limits.max_manifest_bytes)?;
    let index = match manifest::parse_document(&idx_bytes) {
        Ok(Document::Index(i)) => i,
        Ok(Document::Manifest(_)) => return Err(bad_file(src, "index.json is not an index")),
        Err(e) => return Err(bad_file(src, format!("index.json: {e}"))),
    };
    let mut out = Vec::new();
    for (i, desc) in index.manifests.iter().enumerate() {
        let name = name_of(desc).ok_or_else(|| {
            bad_file(
                src,
                format!("index.json manifests[{i}] has no image name ({CONTAINERD_NAME} or a full {OCI_REF_NAME})"),
            )
        })?;
        let r = ImageRef::parse_with_default(&name, &inner.cfg.registry.default_registry)?;
        check_descriptor(&r, desc, limits.max_manifest_bytes, "manifest")?;
        let top = read_in(
            root,
            src,
            &blob_rel(&desc.digest)?,
            limits.max_manifest_bytes,
        )?;
        verify_bytes(&r, desc, &top)?;
        let (mdesc, mbytes, index_blob) = match manifest::parse_document(&top)
            .map_err(|e| bad_file(src, format!("{}: {e}", desc.digest)))?
        {
            Document::Manifest(_) => (desc.clone(), top, None),
            Document::Index(sub) => {
                let want = &inner.cfg.platform;
                let entry = platform::select(&sub.manifests, want).ok_or_else(|| {
                    ImageError::NoMatchingPlatform {
                        reference: r.to_string(),
                        platform: platform::describe(want),
                    }
                })?;
                check_descriptor(&r, entry, limits.max_manifest_bytes, "manifest")?;
                let b = read_in(
                    root,
                    src,
                    &blob_rel(&entry.digest)?,
                    limits.max_manifest_bytes,
                )?;
                verify_bytes(&r, entry, &b)?;
                (entry.clone(), b, Some((desc.digest.clone(), top)))
            }
        };
        let m: Manifest = match manifest::parse_document(&mbytes) {
            Ok(Document::Manifest(m)) => m,
            _ => {
                return Err(bad_file(
                    src,
                    format!("{} is not an image manifest", mdesc.digest),
                ))
            }
        };
        let (config_size, layer_sizes) = check_manifest(inner, &r, &m)?;
        inner.content.put(&mdesc.digest, &mbytes)?;
        if let Some((d, b)) = &index_blob {
            inner.content.put(d, b)?;
        }
        ingest(
            inner,
            root,
            src,
            &blob_rel(&m.config.digest)?,
            &m.config.digest,
            config_size,
        )?;
        for (l, size) in m.layers.iter().zip(layer_sizes.iter()) {
            ingest(inner, root, src, &blob_rel(&l.digest)?, &l.digest, *size)?;
        }
        let img = NewImage {
            target_digest: desc.digest.clone(),
            extra_blobs: index_blob.iter().map(|(d, _)| d.clone()).collect(),
            manifest_digest: mdesc.digest.clone(),
            manifest_len: mbytes.len() as u64,
            manifest: m,
            config_size,
            layer_sizes,
        };
        out.push(commit_image(inner, &r, &img, None)?);
        tracing::info!(image = %r, file = %src.display(), "imported");
    }
    Ok(out)
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn import_docker(
    inner: &Inner,
    root: &OwnedFd,
    src: &Path,
) -> Result<Vec<(ImageRecord, Vec<String>)>> {
    let limits = &inner.cfg.limits;
    let raw = read_in(root, src, "manifest.json", limits.max_manifest_bytes)?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&raw).map_err(|e| bad_file(src, format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let tags = e.repo_tags.clone().unwrap_or_default();
        let Some(first) = tags.first() else {
            return Err(bad_file(src, format!("manifest.json[{i}] has no RepoTags")));
        };
        let refs = tags
            .iter()
            .map(|t| ImageRef::parse_with_default(t, &inner.cfg.registry.default_registry))
            .collect::<Result<Vec<_>>>()?;
        let config = read_in(root, src, &e.config, limits.max_config_bytes)?;
        let config_digest = digest::sha256(&config);
        inner.content.put(&config_digest, &config)?;
        let parsed: manifest::ImageConfig = serde_json::from_slice(&config)
            .map_err(|err| bad_file(src, format!("{}: {err}", e.config)))?;
        if parsed.rootfs.diff_ids.len() != e.layers.len() {
            return Err(bad_file(
                src,
                format!(
                    "manifest.json[{i}]: {} layers but {} diff_ids",
                    e.layers.len(),
                    parsed.rootfs.diff_ids.len()
                ),
            ));
        }
        // docker save layers are uncompressed tars: their digest is the diff id.
        let mut layers = Vec::new();
        for (rel, diff) in e.layers.iter().zip(parsed.rootfs.diff_ids.iter()) {
            let size = open_in(root, src, rel)?
                .metadata()
                .map_err(|err| bad_file(src, format!("{rel:?}: {err}")))?
                .len();
            layers.push(Descriptor {
                media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
                digest: diff.clone(),
                size: size as i64,
                platform: None,
                annotations: None,
            });
        }
        let m = Manifest {
            schema_version: 2,
            media_type: Some(manifest::DOCKER_MANIFEST.into()),
            config: Descriptor {
                media_type: manifest::DOCKER_CONFIG.into(),
                digest: config_digest.clone(),
                size: config.len() as i64,
                platform: None,
                annotations: None,
            },
            layers,
            annotations: None,
        };
        let r = &refs[0];
        let (config_size, layer_sizes) = check_manifest(inner, r, &m)?;
        for (rel, l) in e.layers.iter().zip(m.layers.iter()) {
            ingest(inner, root, src, rel, &l.digest, l.size as u64)?;
        }
        let mbytes = serde_json::to_vec(&m).map_err(|err| ImageError::Database(err.to_string()))?;
        let mdigest = digest::sha256(&mbytes);
        inner.content.put(&mdigest, &mbytes)?;
        let img = NewImage {
            target_digest: mdigest.clone(),
            extra_blobs: vec![],
            manifest_digest: mdigest,
            manifest_len: mbytes.len() as u64,
            manifest: m,
            config_size,
            layer_sizes,
        };
        let (rec, mut names) = commit_image(inner, r, &img, None)?;
        let more: Vec<String> = refs[1..].iter().map(|r| r.to_string()).collect();
        if !more.is_empty() {
            inner.meta.put_image(&rec, &more)?;
            names.extend(more);
        }
        tracing::info!(image = %first, file = %src.display(), "imported docker archive");
        out.push((rec, names));
    }
    Ok(out)
}

/// Writes image `rec` (named `name`) as an OCI layout tarball at `out`
/// (written to a temporary file and renamed).
pub(crate) fn export(inner: &Inner, rec: &ImageRecord, name: &str, out: &Path) -> Result<()> {
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let f = File::create(&tmp).map_err(|e| ImageError::io("create", &tmp, e))?;
        let mut b = tar::Builder::new(f);
        let io = |e: std::io::Error| ImageError::io("write", &tmp, e);
        let add = |b: &mut tar::Builder<File>, path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, data)
        };
        let mbytes = inner
            .content
            .read(&rec.manifest_digest, inner.cfg.limits.max_manifest_bytes)?;
        let mtype = serde_json::from_slice::<manifest::Versioned>(&mbytes)
            .ok()
            .and_then(|v| v.media_type)
            .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string());
        let tag = name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .filter(|t| !t.contains('/'));
        let mut ann = BTreeMap::new();
        ann.insert(CONTAINERD_NAME.to_string(), name.to_string());
        if let Some(t) = tag {
            ann.insert(OCI_REF_NAME.to_string(), t.to_string());
        }
        let index = manifest::Index {
            schema_version: 2,
            media_type: Some(manifest::OCI_INDEX.into()),
            manifests: vec![Descriptor {
                media_type: mtype,
                digest: rec.manifest_digest.clone(),
                size: mbytes.len() as i64,
                platform: None,
                annotations: Some(ann),
            }],
            annotations: None,
        };
        let index_json =
            serde_json::to_vec(&index).map_err(|e| ImageError::Database(e.to_string()))?;
        add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
        add(&mut b, "index.json", &index_json).map_err(io)?;
        let mut blobs = vec![rec.manifest_digest.clone(), rec.id.clone()];
        blobs.extend(rec.layers.iter().map(|l| l.digest.clone()));
        for d in blobs {
            let p = inner.content.path(&d)?;
            let mut f = File::open(&p).map_err(|e| ImageError::io("open", &p, e))?;
            let len = f
                .metadata()
                .map_err(|e| ImageError::io("stat", &p, e))?
                .len();
            let mut h = tar::Header::new_ustar();
            h.set_size(len);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, blob_rel(&d)?, &mut f).map_err(io)?;
        }
        let f = b.into_inner().map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, out).map_err(|e| ImageError::io("rename", out, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
