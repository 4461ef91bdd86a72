//! The OCI / Docker schema 2 documents the store reads: manifests, indexes
//! (manifest lists) and image configs. Parsed with our own small serde types
//! so that both media type families and unknown fields are handled the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The media types a pull accepts for a manifest.
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Layer media types the store can unpack (compression is sniffed from the data).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Whether `media_type` is a layer the store can unpack.
pub fn is_layer_type(media_type: &str) -> bool {
    LAYER_TYPES.contains(&media_type)
}

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// Content digest.
    pub digest: String,
    /// Content size in bytes.
    pub size: i64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A platform as index entries and configs describe it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    /// CPU architecture (GOARCH).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (GOOS).
    #[serde(default)]
    pub os: String,
    /// OS version (Windows builds).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// CPU variant (`v7`, `v8`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// The fields every manifest-like document shares, to tell them apart.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Versioned {
    /// 2 for everything the store reads.
    #[serde(default)]
    pub schema_version: i64,
    /// The declared media type (optional in OCI documents).
    #[serde(default)]
    pub media_type: Option<String>,
    /// Present in indexes.
    #[serde(default)]
    pub manifests: Option<serde_json::Value>,
    /// Present in manifests.
    #[serde(default)]
    pub layers: Option<serde_json::Value>,
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// 2.
    pub schema_version: i64,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index or manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// 2.
    pub schema_version: i64,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What a manifest document turned out to be.
#[derive(Debug)]
pub enum Document {
    /// A single-platform image manifest.
    Manifest(Manifest),
    /// An index of manifests.
    Index(Index),
}

/// Parses a manifest or an index, telling them apart by media type or shape.
pub fn parse_document(bytes: &[u8]) -> Result<Document, String> {
    let v: Versioned = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if v.schema_version != 2 {
        return Err(format!(
            "schemaVersion {} (only schema 2 / OCI is supported)",
            v.schema_version
        ));
    }
    let is_index = match v.media_type.as_deref() {
        Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
        Some(other) => return Err(format!("unsupported media type {other:?}")),
        None => v.manifests.is_some() && v.layers.is_none(),
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(Document::Index)
            .map_err(|e| format!("bad index: {e}"))
    } else {
        serde_json::from_slice(bytes)
            .map(Document::Manifest)
            .map_err(|e| format!("bad manifest: {e}"))
    }
}

/// The parts of an image config the store uses.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ImageConfig {
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// OS.
    #[serde(default)]
    pub os: String,
    /// The runtime configuration.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// The layers' uncompressed digests.
    pub rootfs: RootFs,
}

/// The runtime part of an image config.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RunConfig {
    /// `User`: uid, name, `uid:gid` or `name:group`.
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

/// The image's layer diff ids.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Uncompressed layer digests, base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}
