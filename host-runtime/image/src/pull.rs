//! Pulling an image from a registry with oci-client: resolve the reference on
//! the first host that answers (mirrors in order, then the registry), pick the
//! platform from an index, then fetch the config and layers into the content
//! store (each verified by size and digest) and unpack the layers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::digest::{self, chain_ids};
use crate::error::{ImageError, Result};
use crate::manifest::{self, Descriptor, Document, ImageConfig, Manifest};
use crate::manifest_fetch::{fetch_manifest, FetchError};
use crate::metadata::{ImageRecord, LayerRecord};
use crate::oauth;
use crate::platform;
use crate::reference::ImageRef;
use crate::registry::Endpoint;
use crate::store::Inner;

/// Credentials for a pull, as CRI's `AuthConfig` carries them. Its `Debug`
/// shows the user and server only, never a secret.
#[derive(Clone, Default)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// base64 of `user:password`.
    pub auth: String,
    /// An identity (OAuth2 refresh) token: exchanged at the registry's token
    /// server, or sent as the Basic password where that does no OAuth2.
    pub identity_token: String,
    /// A registry (bearer) token.
    pub registry_token: String,
    /// The host these credentials are for; empty means the image's registry.
    pub server_address: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The oci-client auth for `ep`, a host serving `registry`. Credentials go
    /// only to the host they are for: the registry itself unless
    /// `server_address` names another (such as a mirror).
    fn for_endpoint(&self, ep: &Endpoint, registry: &str) -> Result<RegistryAuth> {
        // The kubelet passes docker config keys: with a scheme, sometimes a
        // path, and Docker Hub as `https://index.docker.io/v1/`.
        let server = self
            .server_address
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        let server = match server {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            s => s,
        };
        let intended = if server.is_empty() {
            !ep.mirror
        } else if ep.mirror {
            server == ep.host
        } else {
            server == registry || server == ep.host
        };
        if !intended {
            return Ok(RegistryAuth::Anonymous);
        }
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.identity_token.is_empty() {
            let user = if self.username.is_empty() {
                "<token>"
            } else {
                &self.username
            };
            return Ok(RegistryAuth::Basic(
                user.to_string(),
                self.identity_token.clone(),
            ));
        }
        if !self.username.is_empty() {
            return Ok(RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ));
        }
        if !self.auth.is_empty() {
            let bad = |reason: &str| ImageError::InvalidArgument {
                field: "auth.auth".into(),
                reason: reason.into(),
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|_| bad("not base64"))?;
            let s = String::from_utf8(raw).map_err(|_| bad("not UTF-8 once decoded"))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| bad("not user:password once decoded"))?;
            return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// A pull's progress, read by the store's watchdog and progress log.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes downloaded and unpacked so far.
    pub bytes: AtomicU64,
    /// Layers in the image.
    pub layers_total: AtomicUsize,
    /// Layers downloaded and unpacked.
    pub layers_done: AtomicUsize,
}

/// Maps an oci-client error to the store's, naming host and reference.
fn registry_err(host: &str, r: &ImageRef, what: &str, e: OciDistributionError) -> ImageError {
    let registry = host.to_string();
    let reference = r.to_string();
    match &e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => ImageError::Unauthorized {
            registry,
            reference,
            detail: e.to_string(),
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ImageError::Unauthorized {
            registry,
            reference,
            detail: e.to_string(),
        },
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => ImageError::RegistryNotFound {
            registry,
            reference,
            what: what.to_string(),
            detail: e.to_string(),
        },
        OciDistributionError::DigestError(DigestError::VerificationError { .. }) => {
            ImageError::Verification {
                reference,
                digest: what.to_string(),
                detail: e.to_string(),
            }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            use oci_client::errors::OciErrorCode as C;
            let text = envelope.to_string();
            let has = |f: &dyn Fn(&C) -> bool| envelope.errors.iter().any(|e| f(&e.code));
            if has(&|c| matches!(c, C::Unauthorized | C::Denied)) {
                ImageError::Unauthorized {
                    registry,
                    reference,
                    detail: text,
                }
            } else if has(&|c| {
                matches!(
                    c,
                    C::ManifestUnknown | C::NameUnknown | C::BlobUnknown | C::NotFound
                )
            }) {
                ImageError::RegistryNotFound {
                    registry,
                    reference,
                    what: what.to_string(),
                    detail: text,
                }
            } else {
                ImageError::Registry {
                    registry,
                    reference,
                    detail: text,
                }
            }
        }
        _ => ImageError::Registry {
            registry,
            reference,
            detail: format!("{what}: {e}"),
        },
    }
}

/// What a failed manifest GET means for the pull of `r` from `host`.
fn fetch_err(host: &str, r: &ImageRef, what: &str, e: FetchError) -> ImageError {
    let registry = host.to_string();
    let reference = r.to_string();
    match e {
        FetchError::Auth(e) => registry_err(host, r, what, e),
        FetchError::Status(code @ (401 | 403), text) => ImageError::Unauthorized {
            registry,
            reference,
            detail: format!("{what}: HTTP {code}: {text}"),
        },
        FetchError::Status(404, text) => ImageError::RegistryNotFound {
            registry,
            reference,
            what: what.to_string(),
            detail: format!("HTTP 404: {text}"),
        },
        FetchError::Status(code, text) => ImageError::Registry {
            registry,
            reference,
            detail: format!("{what}: HTTP {code}: {text}"),
        },
        FetchError::TooLarge { limit, declared } => ImageError::TooLarge {
            reference,
            what: what.to_string(),
            detail: match declared {
                Some(n) => format!("{n} bytes declared, limit {limit}"),
                None => format!("more than the limit of {limit} bytes sent"),
            },
        },
        FetchError::Transport(text) => ImageError::Registry {
            registry,
            reference,
            detail: format!("{what}: {text}"),
        },
    }
}

/// A resolved image on one host.
struct Resolved {
    client: Client,
    oref: Reference,
    host: String,
    target_digest: String,
    index: Option<(String, Vec<u8>)>,
    manifest_digest: String,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
}

/// Pulls `r`: the record to store and the names to give it.
pub(crate) async fn pull(
    inner: &Arc<Inner>,
    r: &ImageRef,
    creds: &Credentials,
    progress: &Arc<Progress>,
) -> Result<(ImageRecord, Vec<String>)> {
    let endpoints = inner.cfg.registry.endpoints(&r.registry);
    let mut last: Option<ImageError> = None;
    let mut resolved = None;
    for ep in &endpoints {
        match resolve(inner, ep, r, creds).await {
            Ok(res) => {
                resolved = Some(res);
                break;
            }
            Err(e) => {
                tracing::warn!(reference = %r, host = %ep.host, mirror = ep.mirror, error = %e, "resolve failed");
                last = Some(e);
            }
        }
    }
    let res = match resolved {
        Some(res) => res,
        None => {
            return Err(last.unwrap_or_else(|| ImageError::NotFound(r.to_string())));
        }
    };
    tracing::info!(reference = %r, host = %res.host, manifest = %res.manifest_digest, "resolved");
    fetch(inner, r, res, progress).await
}

async fn resolve(
    inner: &Inner,
    ep: &Endpoint,
    r: &ImageRef,
    creds: &Credentials,
) -> Result<Resolved> {
    let limits = &inner.cfg.limits;
    let read_timeout = inner.cfg.progress_timeout * 2;
    let client = Client::try_from(ep.client_config(read_timeout)?)
        .map_err(|e| registry_err(&ep.host, r, "client", e))?;
    let http = ep.http_client(read_timeout)?;
    let mut auth = creds.for_endpoint(ep, &r.registry)?;
    let oref = r.for_host(&ep.host);
    if matches!(&auth, RegistryAuth::Basic(_, secret) if *secret == creds.identity_token && !secret.is_empty())
    {
        let scheme = if ep.plain_http { "http" } else { "https" };
        let base = format!("{scheme}://{}", ep.host);
        match oauth::exchange(&http, &base, oref.repository(), &creds.identity_token).await {
            Ok(Some(token)) => auth = RegistryAuth::Bearer(token),
            Ok(None) => {}
            Err(oauth::OauthError::Transport(detail)) => {
                return Err(ImageError::Registry {
                    registry: ep.host.clone(),
                    reference: r.to_string(),
                    detail: format!("identity token exchange: {detail}"),
                })
            }
            Err(e) => {
                return Err(ImageError::Unauthorized {
                    registry: ep.host.clone(),
                    reference: r.to_string(),
                    detail: e.to_string(),
                })
            }
        }
    }
    let get = |mref: Reference, limit: u64, what: String| {
        let (client, http, auth) = (&client, &http, &auth);
        async move {
            fetch_manifest(
                client,
                http,
                ep.plain_http,
                &mref,
                auth,
                manifest::ACCEPTED_MANIFESTS,
                limit,
            )
            .await
            .map_err(|e| fetch_err(&ep.host, r, &what, e))
        }
    };
    let bytes = get(oref.clone(), limits.max_manifest_bytes, "manifest".into()).await?;
    let target_digest = digest::sha256(&bytes);
    if let Some(want) = &r.digest {
        if *want != target_digest {
            return Err(ImageError::Verification {
                reference: r.to_string(),
                digest: want.clone(),
                detail: format!("manifest hashes to {target_digest}"),
            });
        }
    }
    let bad = |what: &str, detail: String| ImageError::BadManifest {
        reference: r.to_string(),
        what: what.into(),
        detail,
    };
    match manifest::parse_document(&bytes).map_err(|d| bad("manifest", d))? {
        Document::Manifest(m) => Ok(Resolved {
            client,
            oref,
            host: ep.host.clone(),
            manifest_digest: target_digest.clone(),
            target_digest,
            index: None,
            manifest_bytes: bytes,
            manifest: m,
        }),
        Document::Index(idx) => {
            let want = &inner.cfg.platform;
            let entry = platform::select(&idx.manifests, want).ok_or_else(|| {
                ImageError::NoMatchingPlatform {
                    reference: r.to_string(),
                    platform: platform::describe(want),
                }
            })?;
            let size = check_descriptor(r, entry, limits.max_manifest_bytes, "platform manifest")?;
            let mref = oref.clone_with_digest(entry.digest.clone());
            let mbytes = get(mref, size, entry.digest.clone()).await?;
            verify_bytes(r, entry, &mbytes)?;
            let m = match manifest::parse_document(&mbytes).map_err(|d| bad("manifest", d))? {
                Document::Manifest(m) => m,
                Document::Index(_) => {
                    return Err(bad(
                        "index",
                        "an index inside an index is not supported".into(),
                    ))
                }
            };
            Ok(Resolved {
                client,
                oref,
                host: ep.host.clone(),
                index: Some((target_digest.clone(), bytes)),
                target_digest,
                manifest_digest: entry.digest.clone(),
                manifest_bytes: mbytes,
                manifest: m,
            })
        }
    }
}

/// A descriptor's digest must be sha256 and its size within `max`.
pub(crate) fn check_descriptor(r: &ImageRef, d: &Descriptor, max: u64, what: &str) -> Result<u64> {
    digest::hex_of(&d.digest)?;
    let size = u64::try_from(d.size).map_err(|_| ImageError::BadManifest {
        reference: r.to_string(),
        what: what.into(),
        detail: format!("{} has a negative size", d.digest),
    })?;
    if size > max {
        return Err(ImageError::TooLarge {
            reference: r.to_string(),
            what: format!("{what} {}", d.digest),
            detail: format!("{size} bytes, limit {max}"),
        });
    }
    Ok(size)
}

pub(crate) fn verify_bytes(r: &ImageRef, d: &Descriptor, bytes: &[u8]) -> Result<()> {
    let actual = digest::sha256(bytes);
    if bytes.len() as i64 != d.size || actual != d.digest {
        return Err(ImageError::Verification {
            reference: r.to_string(),
            digest: d.digest.clone(),
            detail: format!(
                "got {} bytes hashing to {actual}, descriptor says {} bytes",
                bytes.len(),
                d.size
            ),
        });
    }
    Ok(())
}

/// Downloads a blob into the content store unless present, verified.
async fn fetch_blob(
    inner: &Inner,
    res: &Resolved,
    r: &ImageRef,
    d: &Descriptor,
    size: u64,
    progress: &Progress,
) -> Result<()> {
    if inner.content.has(&d.digest, size) {
        progress.bytes.fetch_add(size, Ordering::Relaxed);
        return Ok(());
    }
    let desc = OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        ..Default::default()
    };
    let mut stream = res
        .client
        .pull_blob_stream(&res.oref, &desc)
        .await
        .map_err(|e| registry_err(&res.host, r, &d.digest, e))?;
    if let Some(len) = stream.content_length {
        if len != size {
            return Err(ImageError::Verification {
                reference: r.to_string(),
                digest: d.digest.clone(),
                detail: format!("registry sends {len} bytes, descriptor says {size}"),
            });
        }
    }
    let with_ref = |e: ImageError| match e {
        ImageError::Verification { digest, detail, .. } => ImageError::Verification {
            reference: r.to_string(),
            digest,
            detail,
        },
        e => e,
    };
    let mut w = inner.content.writer(&d.digest, size)?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if let Some(de) = e.get_ref().and_then(|i| i.downcast_ref::<DigestError>()) {
                ImageError::Verification {
                    reference: r.to_string(),
                    digest: d.digest.clone(),
                    detail: de.to_string(),
                }
            } else {
                ImageError::Registry {
                    registry: res.host.clone(),
                    reference: r.to_string(),
                    detail: format!("reading {}: {e}", d.digest),
                }
            }
        })?;
        w.write_chunk(&chunk).map_err(with_ref)?;
        progress
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    tokio::task::spawn_blocking(move || w.commit())
        .await
        .map_err(|e| ImageError::Database(format!("commit task: {e}")))?
        .map_err(with_ref)
}

/// Checks a manifest before anything is fetched for it: an image config,
/// unpackable layers, sizes and count within the caps. Returns the config
/// size and the layer sizes.
pub(crate) fn check_manifest(inner: &Inner, r: &ImageRef, m: &Manifest) -> Result<(u64, Vec<u64>)> {
    let limits = &inner.cfg.limits;
    let bad = |detail: String| ImageError::BadManifest {
        reference: r.to_string(),
        what: "manifest".into(),
        detail,
    };
    if m.config.media_type != manifest::OCI_CONFIG && m.config.media_type != manifest::DOCKER_CONFIG
    {
        return Err(bad(format!(
            "config media type {:?} is not a container image",
            m.config.media_type
        )));
    }
    if m.layers.len() > limits.max_layers {
        return Err(ImageError::TooLarge {
            reference: r.to_string(),
            what: "layer count".into(),
            detail: format!("{} layers, limit {}", m.layers.len(), limits.max_layers),
        });
    }
    let config_size = check_descriptor(r, &m.config, limits.max_config_bytes, "config")?;
    let mut layer_sizes = Vec::new();
    for l in &m.layers {
        if !manifest::is_layer_type(&l.media_type) {
            return Err(bad(format!(
                "layer {} has media type {:?}",
                l.digest, l.media_type
            )));
        }
        layer_sizes.push(check_descriptor(r, l, limits.max_layer_bytes, "layer")?);
    }
    Ok((config_size, layer_sizes))
}

async fn fetch(
    inner: &Arc<Inner>,
    r: &ImageRef,
    res: Resolved,
    progress: &Arc<Progress>,
) -> Result<(ImageRecord, Vec<String>)> {
    let m = &res.manifest;
    let (config_size, layer_sizes) = check_manifest(inner, r, m)?;
    progress
        .layers_total
        .store(m.layers.len(), Ordering::Relaxed);

    // Hold off GC until the record naming this content is committed (the
    // commit task holds the guard: it outlives this future if it is dropped).
    let gc = inner.gc_lock.clone().read_owned().await;
    inner
        .content
        .put(&res.manifest_digest, &res.manifest_bytes)?;
    if let Some((d, b)) = &res.index {
        inner.content.put(d, b)?;
    }
    fetch_blob(inner, &res, r, &m.config, config_size, progress).await?;
    let mut downloads: Vec<futures_util::future::BoxFuture<'_, Result<()>>> = Vec::new();
    for (l, size) in m.layers.iter().zip(layer_sizes.iter()) {
        downloads.push(Box::pin(fetch_blob(inner, &res, r, l, *size, progress)));
    }
    futures_util::stream::iter(downloads)
        .buffer_unordered(inner.cfg.max_concurrent_downloads.max(1))
        .try_collect::<Vec<()>>()
        .await?;

    let (inner2, r2, p2) = (inner.clone(), r.clone(), progress.clone());
    let img = NewImage {
        target_digest: res.target_digest.clone(),
        extra_blobs: res.index.iter().map(|(d, _)| d.clone()).collect(),
        manifest_digest: res.manifest_digest.clone(),
        manifest_len: res.manifest_bytes.len() as u64,
        manifest: res.manifest.clone(),
        config_size,
        layer_sizes,
    };
    tokio::task::spawn_blocking(move || {
        let _gc = gc;
        commit_image(&inner2, &r2, &img, Some(&p2))
    })
    .await
    .map_err(|e| ImageError::Database(format!("unpack task: {e}")))?
}

/// An image whose blobs are all in the content store, ready to unpack and record.
pub(crate) struct NewImage {
    /// What the names point at (the index, or the manifest).
    pub target_digest: String,
    /// An index kept with the image.
    pub extra_blobs: Vec<String>,
    /// The platform manifest.
    pub manifest_digest: String,
    /// Its size.
    pub manifest_len: u64,
    /// The manifest.
    pub manifest: Manifest,
    /// Config size.
    pub config_size: u64,
    /// Layer sizes.
    pub layer_sizes: Vec<u64>,
}

/// Reads the config, unpacks the layers and records the image under `r`'s
/// names (blocking; the caller holds the GC lock).
pub(crate) fn commit_image(
    inner: &Inner,
    r: &ImageRef,
    img: &NewImage,
    progress: Option<&Progress>,
) -> Result<(ImageRecord, Vec<String>)> {
    let limits = &inner.cfg.limits;
    let m = &img.manifest;
    let bad = |what: &str, detail: String| ImageError::BadManifest {
        reference: r.to_string(),
        what: what.into(),
        detail,
    };
    let config_bytes = inner
        .content
        .read(&m.config.digest, limits.max_config_bytes)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| bad("config", e.to_string()))?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(bad(
            "config",
            format!(
                "{} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                m.layers.len()
            ),
        ));
    }
    for d in &config.rootfs.diff_ids {
        digest::hex_of(d)?;
    }
    let want = &inner.cfg.platform;
    if (!config.os.is_empty() && config.os != want.os)
        || (!config.architecture.is_empty() && config.architecture != want.architecture)
    {
        tracing::warn!(reference = %r, os = %config.os, arch = %config.architecture, "image config is for another platform");
    }
    let chains = chain_ids(&config.rootfs.diff_ids);
    let mut layers = Vec::new();
    for ((l, size), (diff_id, chain)) in m
        .layers
        .iter()
        .zip(img.layer_sizes.iter())
        .zip(config.rootfs.diff_ids.iter().zip(chains.iter()))
    {
        let blob = inner.content.path(&l.digest)?;
        let started = std::time::Instant::now();
        let stats = inner
            .layers
            .unpack(
                chain,
                &l.digest,
                &blob,
                diff_id,
                &limits.unpack,
                progress.map(|p| &p.bytes),
            )
            .map_err(|e| match e {
                ImageError::Verification { digest, detail, .. } => ImageError::Verification {
                    reference: r.to_string(),
                    digest,
                    detail,
                },
                e => e,
            })?;
        if let Some(s) = stats {
            tracing::info!(reference = %r, layer = %l.digest, entries = s.entries, bytes = s.bytes, ms = started.elapsed().as_millis() as u64, "layer unpacked");
        }
        if let Some(p) = progress {
            p.layers_done.fetch_add(1, Ordering::Relaxed);
        }
        layers.push(LayerRecord {
            digest: l.digest.clone(),
            size: *size,
            media_type: l.media_type.clone(),
            diff_id: diff_id.clone(),
            chain_id: chain.clone(),
        });
    }
    let size = img.manifest_len + img.config_size + img.layer_sizes.iter().sum::<u64>();
    let rec = ImageRecord {
        id: m.config.digest.clone(),
        manifest_digest: img.manifest_digest.clone(),
        target_digest: img.target_digest.clone(),
        extra_blobs: img.extra_blobs.clone(),
        config_size: img.config_size,
        layers,
        size,
        user: config.config.and_then(|c| c.user).unwrap_or_default(),
        pinned: false,
    };
    let mut names = Vec::new();
    if r.tag.is_some() {
        names.push(r.to_string());
    }
    names.push(r.with_digest(&img.target_digest));
    inner.meta.put_image(&rec, &names)?;
    Ok((rec, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, mirror: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            mirror,
            plain_http: false,
            skip_verify: false,
            ca_files: vec![],
        }
    }

    fn is_basic(a: &RegistryAuth) -> bool {
        matches!(a, RegistryAuth::Basic(u, p) if u == "u" && p == "p")
    }

    #[test]
    fn credentials_go_only_to_their_host() {
        let c = |server: &str| Credentials {
            username: "u".into(),
            password: "p".into(),
            server_address: server.into(),
            ..Default::default()
        };
        let hub = ep("registry-1.docker.io", false);
        for s in [
            "",
            "https://index.docker.io/v1/",
            "docker.io",
            "registry-1.docker.io",
        ] {
            assert!(
                is_basic(&c(s).for_endpoint(&hub, "docker.io").unwrap()),
                "{s}"
            );
        }
        assert!(!is_basic(
            &c("quay.io").for_endpoint(&hub, "docker.io").unwrap()
        ));
        // A mirror gets them only when named.
        let m = ep("mirror.local:5000", true);
        assert!(!is_basic(&c("").for_endpoint(&m, "docker.io").unwrap()));
        assert!(!is_basic(
            &c("docker.io").for_endpoint(&m, "docker.io").unwrap()
        ));
        assert!(is_basic(
            &c("http://mirror.local:5000")
                .for_endpoint(&m, "docker.io")
                .unwrap()
        ));
        // Token kinds.
        let t = Credentials {
            registry_token: "tok".into(),
            ..Default::default()
        };
        assert!(
            matches!(t.for_endpoint(&hub, "docker.io").unwrap(), RegistryAuth::Bearer(x) if x == "tok")
        );
        let bad = Credentials {
            auth: "bm9jb2xvbg==".into(), // "nocolon"
            ..Default::default()
        };
        let e = bad.for_endpoint(&hub, "docker.io").unwrap_err().to_string();
        assert!(e.contains("auth.auth"), "{e}");
        // Debug never shows secrets.
        let secret = Credentials {
            username: "u".into(),
            password: "s3cr3t-pw".into(),
            registry_token: "s3cr3t-tok".into(),
            ..Default::default()
        };
        assert!(!format!("{secret:?}").contains("s3cr3t"));
    }
}
