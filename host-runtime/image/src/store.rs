//! The store facade vesseld uses: pull (shared between concurrent callers,
//! watched for progress), list, status, remove, filesystem usage, container
//! rootfs and GC.
//!
//! On-disk layout under the root directory:
//! `blobs/sha256/<hex>` (content), `ingest/` (blobs being written),
//! `layers/<chain hex>/` (unpacked layers), `containers/<id>/{upper,work}`
//! (writable layers); metadata lives in the caller's redb database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::content::ContentStore;
use crate::error::{ImageError, Result};
use crate::gc::{self, GcReport};
use crate::layers::LayerStore;
use crate::manifest::Platform;
use crate::metadata::{ImageRecord, Lease, Metadata};
use crate::pinned::PinnedImages;
use crate::platform;
use crate::pull::{self, Credentials, Progress};
use crate::reference::ImageRef;
use crate::registry::RegistryConfig;
use crate::rootfs;
use crate::unpack::UnpackLimits;
use crate::usage::{self, UsageLimits};

/// The directory of the containers' writable layers, in the store's root.
const CONTAINERS_DIR: &str = "containers";

/// Caps on what a registry or an image may make the store do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest manifest or index accepted.
    pub max_manifest_bytes: u64,
    /// Largest image config accepted.
    pub max_config_bytes: u64,
    /// Largest compressed layer accepted.
    pub max_layer_bytes: u64,
    /// Most layers in one image.
    pub max_layers: usize,
    /// Per-layer unpack caps.
    pub unpack: UnpackLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 8 << 20,
            max_layer_bytes: 16 << 30,
            max_layers: 128,
            unpack: UnpackLimits::default(),
        }
    }
}

/// The store's configuration.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root directory of blobs, layers and writable layers.
    pub root: PathBuf,
    /// Registries, mirrors and the default registry.
    pub registry: RegistryConfig,
    /// The platform picked from indexes.
    pub platform: Platform,
    /// Caps.
    pub limits: Limits,
    /// A pull that moves no byte for this long is cancelled.
    pub progress_timeout: Duration,
    /// How often a long pull logs its progress.
    pub progress_log_interval: Duration,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Images reported as pinned (the kubelet's garbage collector keeps them).
    pub pinned: PinnedImages,
}

impl StoreConfig {
    /// Defaults for a store under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreConfig {
            root: root.into(),
            registry: RegistryConfig::default(),
            platform: platform::default_platform(),
            limits: Limits::default(),
            progress_timeout: Duration::from_secs(300),
            progress_log_interval: Duration::from_secs(10),
            max_concurrent_downloads: 3,
            pinned: PinnedImages::default(),
        }
    }
}

/// The image store's section of vesseld's configuration file (TOML). Every
/// field is optional; missing ones keep `StoreConfig::new`'s defaults.
///
/// ```toml
/// progress_timeout_secs = 300
/// max_concurrent_downloads = 3
/// max_layer_bytes = 17179869184
/// [registry]
/// default_registry = "docker.io"
/// [registry.registries."registry.k8s.io"]
/// mirrors = [{ host = "127.0.0.1:5001", plain_http = true }]
/// ```
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Seconds without progress before a pull is cancelled.
    pub progress_timeout_secs: Option<u64>,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: Option<usize>,
    /// Largest manifest or index.
    pub max_manifest_bytes: Option<u64>,
    /// Largest image config.
    pub max_config_bytes: Option<u64>,
    /// Largest compressed layer.
    pub max_layer_bytes: Option<u64>,
    /// Most layers per image.
    pub max_layers: Option<usize>,
    /// Most bytes one layer may unpack to.
    pub max_unpacked_bytes: Option<u64>,
    /// Most tar entries per layer.
    pub max_entries: Option<u64>,
    /// Registries and mirrors.
    pub registry: Option<RegistryConfig>,
}

impl StoreSettings {
    /// Parses the section from TOML; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let s: StoreSettings = toml::from_str(text).map_err(|e| ImageError::Config {
            path: origin.display().to_string(),
            detail: e.to_string(),
        })?;
        if let Some(r) = &s.registry {
            r.validate(origin)?;
        }
        let bad = |field: &str| ImageError::Config {
            path: origin.display().to_string(),
            detail: format!("{field} must be at least 1"),
        };
        if s.progress_timeout_secs == Some(0) {
            return Err(bad("progress_timeout_secs"));
        }
        if s.max_concurrent_downloads == Some(0) {
            return Err(bad("max_concurrent_downloads"));
        }
        Ok(s)
    }

    /// The store configuration for `root` with these settings applied.
    pub fn apply(&self, root: impl Into<PathBuf>) -> StoreConfig {
        let mut c = StoreConfig::new(root);
        if let Some(v) = self.progress_timeout_secs {
            c.progress_timeout = Duration::from_secs(v);
        }
        if let Some(v) = self.max_concurrent_downloads {
            c.max_concurrent_downloads = v;
        }
        let l = &mut c.limits;
        l.max_manifest_bytes = self.max_manifest_bytes.unwrap_or(l.max_manifest_bytes);
        l.max_config_bytes = self.max_config_bytes.unwrap_or(l.max_config_bytes);
        l.max_layer_bytes = self.max_layer_bytes.unwrap_or(l.max_layer_bytes);
        l.max_layers = self.max_layers.unwrap_or(l.max_layers);
        l.unpack.max_bytes = self.max_unpacked_bytes.unwrap_or(l.unpack.max_bytes);
        l.unpack.max_entries = self.max_entries.unwrap_or(l.unpack.max_entries);
        if let Some(r) = &self.registry {
            c.registry = r.clone();
        }
        c
    }
}

/// An image as list/status report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Config digest.
    pub id: String,
    /// `registry/repo:tag` names.
    pub repo_tags: Vec<String>,
    /// `registry/repo@digest` names.
    pub repo_digests: Vec<String>,
    /// Manifest + config + compressed layers.
    pub size: u64,
    /// The config's `User` as written.
    pub user: String,
    /// The uid when `User`'s user part is numeric.
    pub uid: Option<i64>,
    /// The user name when it is not.
    pub username: String,
    /// Never removed by GC.
    pub pinned: bool,
}

/// The result of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The image id (config digest), what CRI's PullImage returns.
    pub id: String,
    /// The names it got.
    pub names: Vec<String>,
}

/// Disk usage of a directory tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// The directory measured.
    pub mountpoint: PathBuf,
    /// Bytes allocated.
    pub used_bytes: u64,
    /// Inodes used.
    pub inodes_used: u64,
}

type SharedPull = Shared<BoxFuture<'static, Result<PulledImage>>>;

pub(crate) struct Inner {
    pub(crate) cfg: StoreConfig,
    pub(crate) content: ContentStore,
    pub(crate) layers: LayerStore,
    pub(crate) meta: Metadata,
    /// Readers: work that puts content GC must not take (pulls, imports,
    /// exports) until the record naming it is committed. Shared, so that a
    /// blocking task holds its own guard: a pull cancelled by its progress
    /// timeout drops its future, but its commit may still be running.
    pub(crate) gc_lock: Arc<tokio::sync::RwLock<()>>,
    containers: PathBuf,
    /// Pulls in progress by reference, with a generation so that only the
    /// pull that made an entry removes it.
    inflight: Mutex<HashMap<String, (u64, SharedPull)>>,
    pull_seq: AtomicU64,
    pulls_started: AtomicU64,
}

/// The image store.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

impl ImageStore {
    /// Opens the store: creates its directories, removes interrupted writes
    /// and unpacks, and collects garbage. `db` is vesseld's state database.
    pub fn open(cfg: StoreConfig, db: Arc<redb::Database>) -> Result<Self> {
        let content = ContentStore::open(&cfg.root)?;
        let layers = LayerStore::open(&cfg.root.join("layers"))?;
        let containers = cfg.root.join(CONTAINERS_DIR);
        std::fs::create_dir_all(&containers)
            .map_err(|e| ImageError::io("create", &containers, e))?;
        let meta = Metadata::new(db)?;
        let inner = Arc::new(Inner {
            cfg,
            content,
            layers,
            meta,
            gc_lock: Arc::new(tokio::sync::RwLock::new(())),
            containers,
            inflight: Mutex::new(HashMap::new()),
            pull_seq: AtomicU64::new(0),
            pulls_started: AtomicU64::new(0),
        });
        gc::collect(&inner.meta, &inner.content, &inner.layers)?;
        Ok(ImageStore { inner })
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Parses a reference with the configured default registry.
    pub fn parse_reference(&self, reference: &str) -> Result<ImageRef> {
        ImageRef::parse_with_default(reference, &self.inner.cfg.registry.default_registry)
    }

    /// How many pulls actually ran (concurrent pulls of one reference count once).
    pub fn pulls_started(&self) -> u64 {
        self.inner.pulls_started.load(Ordering::Relaxed)
    }

    /// Pulls `reference`. Concurrent pulls of the same reference share one
    /// download; a pull with no progress for `progress_timeout` is cancelled.
    pub async fn pull(&self, reference: &str, creds: &Credentials) -> Result<PulledImage> {
        let r = self.parse_reference(reference)?;
        let key = r.to_string();
        let fut = {
            let mut map = self
                .inner
                .inflight
                .lock()
                .map_err(|_| ImageError::Database("pull table poisoned".into()))?;
            if let Some((_, f)) = map.get(&key) {
                tracing::info!(reference = %key, "joining a pull in progress");
                f.clone()
            } else {
                let inner = self.inner.clone();
                let creds = creds.clone();
                let (r2, key2) = (r.clone(), key.clone());
                let gen = self.inner.pull_seq.fetch_add(1, Ordering::Relaxed);
                // Spawned, so that a caller that goes away does not cancel
                // the pull for the others; the task itself clears its entry
                // (under the lock this insert holds), so a finished pull is
                // never joined even when all its callers were cancelled.
                let handle = tokio::spawn(async move {
                    let out = run_pull(inner.clone(), r2, creds).await;
                    if let Ok(mut map) = inner.inflight.lock() {
                        if map.get(&key2).is_some_and(|(g, _)| *g == gen) {
                            map.remove(&key2);
                        }
                    }
                    out
                });
                let f: SharedPull = async move {
                    handle
                        .await
                        .unwrap_or_else(|e| Err(ImageError::Database(format!("pull task: {e}"))))
                }
                .boxed()
                .shared();
                map.insert(key.clone(), (gen, f.clone()));
                f
            }
        };
        fut.await
    }

    /// Imports every image of an OCI image layout (a directory or a tar) or
    /// a `docker save` tarball at `path`. Images are named from their
    /// `io.containerd.image.name` / `org.opencontainers.image.ref.name`
    /// annotation (or `RepoTags`).
    pub async fn import(&self, path: &Path) -> Result<Vec<PulledImage>> {
        let imported = {
            let gc = self.inner.gc_lock.clone().read_owned().await;
            let (inner, p) = (self.inner.clone(), path.to_path_buf());
            tokio::task::spawn_blocking(move || {
                let _gc = gc;
                crate::archive::import(&inner, &p)
            })
            .await
            .map_err(|e| ImageError::Database(format!("import task: {e}")))??
        };
        self.gc().await?;
        Ok(imported
            .into_iter()
            .map(|(rec, names)| PulledImage { id: rec.id, names })
            .collect())
    }

    /// Writes an image as an OCI layout tarball at `out`, named after the
    /// reference given (or the image's first tag when given an id).
    pub async fn export(&self, reference_or_id: &str, out: &Path) -> Result<()> {
        let _g = self.inner.gc_lock.read().await;
        let id = self
            .resolve(reference_or_id)?
            .ok_or_else(|| ImageError::NotFound(reference_or_id.to_string()))?;
        let rec = self
            .inner
            .meta
            .image(&id)?
            .ok_or_else(|| ImageError::NotFound(id.clone()))?;
        let mut names = self.inner.meta.names_of(&id)?;
        names.sort_by_key(|n| n.contains('@'));
        let name = match self.parse_reference(reference_or_id) {
            Ok(r) if !reference_or_id.starts_with("sha256:") && names.contains(&r.to_string()) => {
                r.to_string()
            }
            _ => names.first().cloned().unwrap_or_else(|| id.clone()),
        };
        let (inner, out) = (self.inner.clone(), out.to_path_buf());
        tokio::task::spawn_blocking(move || crate::archive::export(&inner, &rec, &name, &out))
            .await
            .map_err(|e| ImageError::Database(format!("export task: {e}")))?
    }

    /// Resolves a name, reference or image id to an image id.
    pub fn resolve(&self, reference_or_id: &str) -> Result<Option<String>> {
        let s = reference_or_id;
        let as_id = if s.starts_with("sha256:") {
            Some(s.to_string())
        } else if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(format!("sha256:{s}"))
        } else {
            None
        };
        if let Some(id) = as_id {
            crate::digest::hex_of(&id)?;
            if self.inner.meta.image(&id)?.is_some() {
                return Ok(Some(id));
            }
            if s.starts_with("sha256:") {
                return Ok(None);
            }
        }
        let r = self.parse_reference(s)?;
        self.inner.meta.id_by_name(&r.to_string())
    }

    fn info(&self, rec: &ImageRecord, names: Vec<String>) -> ImageInfo {
        let pinned = rec.pinned || self.inner.cfg.pinned.matches(&rec.id, &names);
        let (mut repo_digests, mut repo_tags): (Vec<String>, Vec<String>) =
            names.into_iter().partition(|n| n.contains('@'));
        repo_tags.sort();
        repo_digests.sort();
        let user_part = rec.user.split(':').next().unwrap_or("").to_string();
        let (uid, username) = match user_part.parse::<i64>() {
            Ok(u) => (Some(u), String::new()),
            Err(_) => (None, user_part),
        };
        ImageInfo {
            id: rec.id.clone(),
            repo_tags,
            repo_digests,
            size: rec.size,
            user: rec.user.clone(),
            uid,
            username,
            pinned,
        }
    }

    /// Named images, optionally only the one `filter` (a reference or id) names.
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<ImageInfo>> {
        let want = match filter.filter(|f| !f.is_empty()) {
            Some(f) => match self.resolve(f)? {
                Some(id) => Some(id),
                None => return Ok(vec![]),
            },
            None => None,
        };
        let mut out = Vec::new();
        for (rec, names) in self.inner.meta.images()? {
            if names.is_empty() || want.as_ref().is_some_and(|w| *w != rec.id) {
                continue;
            }
            out.push(self.info(&rec, names));
        }
        Ok(out)
    }

    /// The status of one image, or None when there is no such image.
    pub fn status(&self, reference_or_id: &str) -> Result<Option<ImageInfo>> {
        let Some(id) = self.resolve(reference_or_id)? else {
            return Ok(None);
        };
        let Some(rec) = self.inner.meta.image(&id)? else {
            return Ok(None);
        };
        let names = self.inner.meta.names_of(&id)?;
        if names.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.info(&rec, names)))
    }

    /// The image's config JSON (for verbose status).
    pub fn config_json(&self, id: &str) -> Result<Vec<u8>> {
        self.inner
            .content
            .read(id, self.inner.cfg.limits.max_config_bytes)
    }

    /// Removes by tag (that tag only; the image goes with its last tag), by
    /// digest reference or by id (the image and all its names). Content is
    /// freed when no image and no container uses it. False when not found.
    pub async fn remove(&self, reference_or_id: &str) -> Result<bool> {
        let Some(id) = self.resolve(reference_or_id)? else {
            return Ok(false);
        };
        let names = self.inner.meta.names_of(&id)?;
        let by_tag = match self.parse_reference(reference_or_id) {
            Ok(r) if r.tag.is_some() && names.contains(&r.to_string()) => Some(r.to_string()),
            _ => None,
        };
        let doomed: Vec<String> = match by_tag {
            Some(tag) => {
                let other_tags = names.iter().any(|n| *n != tag && !n.contains('@'));
                if other_tags {
                    vec![tag]
                } else {
                    names
                }
            }
            None => names,
        };
        tracing::info!(image = %id, names = ?doomed, "removing image names");
        self.inner.meta.remove_names(&doomed)?;
        self.gc().await?;
        Ok(true)
    }

    /// Frees what no image and no container uses.
    pub async fn gc(&self) -> Result<GcReport> {
        let _w = self.inner.gc_lock.write().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || gc::collect(&inner.meta, &inner.content, &inner.layers))
            .await
            .map_err(|e| ImageError::Database(format!("gc task: {e}")))?
    }

    /// Usage of the image store (blobs and layers) and of the containers'
    /// writable layers.
    pub fn fs_info(&self) -> Result<(FsUsage, FsUsage)> {
        let root = &self.inner.cfg.root;
        let mut images = du(root, Some(std::ffi::OsStr::new(CONTAINERS_DIR)))?;
        images.mountpoint = root.clone();
        let mut containers = du(&self.inner.containers, None)?;
        containers.mountpoint = self.inner.containers.clone();
        Ok((images, containers))
    }

    /// Usage of `container_id`'s writable layer (what its rootfs wrote),
    /// walked without following anything the guest made; `None` when it
    /// has none.
    pub fn writable_usage(&self, container_id: &str) -> Result<Option<FsUsage>> {
        rootfs::check_container_id(container_id)?;
        let upper = self.inner.containers.join(container_id).join("upper");
        match du(&upper, None) {
            Ok(mut u) => {
                u.mountpoint = self.inner.containers.clone();
                Ok(Some(u))
            }
            Err(ImageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Mounts a rootfs for `container_id` from image `reference_or_id` at
    /// `target` (an existing empty directory): the image's layers read-only
    /// under a writable layer of the container's own. The image is held
    /// until `remove_rootfs`.
    pub async fn create_rootfs(
        &self,
        container_id: &str,
        reference_or_id: &str,
        target: &Path,
    ) -> Result<()> {
        rootfs::check_container_id(container_id)?;
        let _g = self.inner.gc_lock.read().await;
        let id = self
            .resolve(reference_or_id)?
            .ok_or_else(|| ImageError::NotFound(reference_or_id.to_string()))?;
        let rec = self
            .inner
            .meta
            .image(&id)?
            .ok_or_else(|| ImageError::NotFound(id.clone()))?;
        let lowers = rec
            .layers
            .iter()
            .rev()
            .map(|l| self.inner.layers.path(&l.chain_id))
            .collect::<Result<Vec<_>>>()?;
        let dir = self.inner.containers.join(container_id);
        self.inner.meta.add_lease(
            container_id,
            &Lease {
                image_id: id.clone(),
                target: target.display().to_string(),
            },
        )?;
        let made = (|| {
            for d in ["upper", "work"] {
                std::fs::create_dir_all(dir.join(d))
                    .map_err(|e| ImageError::io("create", dir.join(d), e))?;
            }
            rootfs::mount_overlay(&lowers, &dir.join("upper"), &dir.join("work"), target)
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            let _ = self.inner.meta.remove_lease(container_id);
            return Err(e);
        }
        tracing::info!(container = container_id, image = %id, target = %target.display(), "rootfs mounted");
        Ok(())
    }

    /// Unmounts and deletes a container's rootfs and releases its image.
    /// Unknown containers are fine (idempotent, as CRI removal is).
    pub async fn remove_rootfs(&self, container_id: &str) -> Result<()> {
        rootfs::check_container_id(container_id)?;
        let Some(lease) = self.inner.meta.lease(container_id)? else {
            return Ok(());
        };
        rootfs::unmount(Path::new(&lease.target))?;
        let dir = self.inner.containers.join(container_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("remove", &dir, e)),
        }
        self.inner.meta.remove_lease(container_id)?;
        tracing::info!(container = container_id, image = %lease.image_id, "rootfs removed");
        self.gc().await?;
        Ok(())
    }

    /// The directories of an image's layers, base first (for tests and tools).
    pub fn layer_dirs(&self, reference_or_id: &str) -> Result<Vec<PathBuf>> {
        let id = self
            .resolve(reference_or_id)?
            .ok_or_else(|| ImageError::NotFound(reference_or_id.to_string()))?;
        let rec = self
            .inner
            .meta
            .image(&id)?
            .ok_or_else(|| ImageError::NotFound(id.clone()))?;
        rec.layers
            .iter()
            .map(|l| self.inner.layers.path(&l.chain_id))
            .collect()
    }
}

async fn run_pull(inner: Arc<Inner>, r: ImageRef, creds: Credentials) -> Result<PulledImage> {
    inner.pulls_started.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let work = pull::pull(&inner, &r, &creds, &progress);
    tokio::pin!(work);
    let timeout = inner.cfg.progress_timeout;
    let mut tick = tokio::time::interval(
        (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
    );
    let (mut last_bytes, mut last_change, mut last_log) = (0u64, Instant::now(), Instant::now());
    tracing::info!(reference = %r, "pull started");
    let result = loop {
        tokio::select! {
            res = &mut work => break res,
            _ = tick.tick() => {
                let b = progress.bytes.load(Ordering::Relaxed);
                if b != last_bytes {
                    last_bytes = b;
                    last_change = Instant::now();
                } else if last_change.elapsed() >= timeout {
                    break Err(ImageError::NoProgress { reference: r.to_string(), seconds: timeout.as_secs() });
                }
                if last_log.elapsed() >= inner.cfg.progress_log_interval {
                    last_log = Instant::now();
                    tracing::info!(
                        reference = %r,
                        bytes = b,
                        layers_done = progress.layers_done.load(Ordering::Relaxed),
                        layers = progress.layers_total.load(Ordering::Relaxed),
                        "pull progress"
                    );
                }
            }
        }
    };
    match result {
        Ok((rec, names)) => {
            tracing::info!(reference = %r, image = %rec.id, bytes = progress.bytes.load(Ordering::Relaxed), ms = started.elapsed().as_millis() as u64, "pull done");
            // A tag that moved may have left its old image unnamed.
            let _w = inner.gc_lock.write().await;
            let i2 = inner.clone();
            tokio::task::spawn_blocking(move || gc::collect(&i2.meta, &i2.content, &i2.layers))
                .await
                .map_err(|e| ImageError::Database(format!("gc task: {e}")))??;
            Ok(PulledImage { id: rec.id, names })
        }
        Err(e) => {
            tracing::warn!(reference = %r, error = %e, "pull failed");
            Err(e)
        }
    }
}

/// Bytes and inodes under `dir` on its filesystem (a bounded walk by file
/// descriptor: `usage::tree_usage`), `skip` (a top-level name) left out.
fn du(dir: &Path, skip: Option<&std::ffi::OsStr>) -> Result<FsUsage> {
    let u = usage::tree_usage(dir, skip, UsageLimits::default())
        .map_err(|e| ImageError::io("measure", dir, e))?;
    Ok(FsUsage {
        mountpoint: dir.to_path_buf(),
        used_bytes: u.bytes,
        inodes_used: u.inodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_over_defaults_and_bad_ones_name_the_field() {
        let s = StoreSettings::from_toml(
            "progress_timeout_secs = 7\nmax_entries = 10\n[registry.registries.\"r.io\"]\nplain_http = true\n",
            Path::new("vessel.toml"),
        )
        .unwrap();
        let c = s.apply("/var/lib/vessel/images");
        assert_eq!(c.progress_timeout, Duration::from_secs(7));
        assert_eq!(c.limits.unpack.max_entries, 10);
        assert_eq!(c.limits.max_layers, Limits::default().max_layers);
        assert!(c.registry.endpoints("r.io")[0].plain_http);
        let e = StoreSettings::from_toml("max_concurrent_downloads = 0\n", Path::new("v.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_concurrent_downloads") && e.contains("v.toml"),
            "{e}"
        );
        let e = StoreSettings::from_toml("nope = 1\n", Path::new("v.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
