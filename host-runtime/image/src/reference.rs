//! Image references, normalized as the kubelet and containerd do
//! (`busybox` -> `docker.io/library/busybox:latest`). Parsing is
//! oci-spec's docker-compatible grammar; this module adds the default tag,
//! digest checks and a typed error that names the reference.

use std::fmt;

use oci_client::Reference;

use crate::digest;
use crate::error::{ImageError, Result};

/// Docker Hub, where names without a registry go unless configured otherwise.
pub const DOCKER_HUB: &str = "docker.io";

/// A normalized image reference: registry, repository and a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Manifest digest when the reference pins one.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalizes `s` with Docker Hub as the default registry.
    pub fn parse(s: &str) -> Result<Self> {
        Self::parse_with_default(s, DOCKER_HUB)
    }

    /// Parses and normalizes `s`; names without a registry go to
    /// `default_registry` (`library/` is added only for Docker Hub).
    pub fn parse_with_default(s: &str, default_registry: &str) -> Result<Self> {
        let bad = |reason: String| ImageError::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty reference".into()));
        }
        if s.len() > 4096 {
            return Err(bad("longer than 4096 bytes".into()));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters".into()));
        }
        let parsed: Reference = s.parse().map_err(|e| bad(format!("{e}")))?;
        let mut registry = parsed.registry().to_string();
        let mut repository = parsed.repository().to_string();
        if default_registry != DOCKER_HUB && !has_explicit_registry(s) {
            registry = default_registry.to_string();
            if let Some(rest) = repository.strip_prefix("library/") {
                if !s.starts_with("library/") {
                    repository = rest.to_string();
                }
            }
        }
        if repository.is_empty() {
            return Err(bad("empty repository".into()));
        }
        let digest = match parsed.digest() {
            Some(d) => {
                digest::hex_of(d).map_err(|e| bad(e.to_string()))?;
                Some(d.to_string())
            }
            None => None,
        };
        // As containerd does: a reference with a digest pulls by digest and
        // the tag is ignored; without either, the tag is `latest`.
        let tag = match (&digest, parsed.tag()) {
            (Some(_), _) => None,
            (None, Some(t)) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, the name repo tags and digests start with.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository@digest` for another digest of the same repository.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{}", self.name(), digest)
    }

    /// The oci-client reference for pulling this image from `host`
    /// (the registry itself or one of its mirrors).
    pub fn for_host(&self, host: &str) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => {
                Reference::with_digest(host.to_string(), self.repository.clone(), d.clone())
            }
            (None, t) => Reference::with_tag(
                host.to_string(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.digest, &self.tag) {
            (Some(d), _) => write!(f, "{}/{}@{}", self.registry, self.repository, d),
            (None, Some(t)) => write!(f, "{}/{}:{}", self.registry, self.repository, t),
            (None, None) => write!(f, "{}/{}", self.registry, self.repository),
        }
    }
}

/// Whether the first path component of `s` names a registry (as the docker
/// grammar decides: it has a `.` or `:` or is `localhost`).
fn has_explicit_registry(s: &str) -> bool {
    match s.split_once('/') {
        None => false,
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).expect(s).to_string()
    }

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("127.0.0.1:5000/a/b/c:v1"), "127.0.0.1:5000/a/b/c:v1");
        let d = crate::digest::sha256(b"m");
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        // tag + digest: the digest wins, as in containerd.
        assert_eq!(
            norm(&format!("busybox:1.0@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
    }

    #[test]
    fn default_registry_applies_to_short_names_only() {
        let r = ImageRef::parse_with_default("busybox", "mirror.local:5000").unwrap();
        assert_eq!(r.to_string(), "mirror.local:5000/busybox:latest");
        let r = ImageRef::parse_with_default("quay.io/x/y", "mirror.local:5000").unwrap();
        assert_eq!(r.to_string(), "quay.io/x/y:latest");
    }

    #[test]
    fn malformed_references_name_themselves() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox@sha256:1234",
            "busybox@md5:d41d8cd98f00b204e9800998ecf8427e",
            "a b",
            "busybox:bad tag",
            "::",
            "/busybox",
        ] {
            match ImageRef::parse(bad) {
                Err(ImageError::InvalidReference { reference, .. }) => assert_eq!(reference, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
