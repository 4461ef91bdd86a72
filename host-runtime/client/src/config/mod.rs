//! crictl-format pod and container config files (JSON or YAML).
//!
//! The k8s-cri types derive serde, but with every field required and unknown
//! fields ignored, which is the wrong way round for hand-written files: crictl's
//! files name only what they set, and a typo must be an error, not a silently
//! dropped setting. So this module has serde mirrors of the config messages
//! (`#[serde(default, deny_unknown_fields)]`, crictl's snake_case names) that
//! convert into the prost types.

mod common;
mod container;
mod enums;
mod pod;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::de::DeserializeOwned;

use crate::error::ClientError;

/// The largest config file accepted: real ones are a few KiB.
pub const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// Loads a crictl-format PodSandboxConfig (YAML if the name ends in `.yaml`/`.yml`, else JSON).
///
/// As crictl does, an empty `metadata.uid` gets a random one, and
/// `metadata.name` and `metadata.namespace` are required.
pub fn load_pod_config(path: &Path) -> Result<PodSandboxConfig, ClientError> {
    let mirror: pod::PodSandboxConfigFile = load(path)?;
    let mut config = PodSandboxConfig::from(mirror);
    let invalid = |field: &str, message: &str| config_error(path, field, message);
    let Some(metadata) = config.metadata.as_mut() else {
        return Err(invalid("metadata", "is required"));
    };
    if metadata.name.is_empty() {
        return Err(invalid("metadata.name", "is required"));
    }
    if metadata.namespace.is_empty() {
        return Err(invalid("metadata.namespace", "is required"));
    }
    if metadata.uid.is_empty() {
        metadata.uid = random_uid()
            .map_err(|e| invalid("metadata.uid", &format!("cannot make a random uid: {e}")))?;
    }
    Ok(config)
}

/// Loads a crictl-format ContainerConfig (YAML if the name ends in `.yaml`/`.yml`, else JSON).
///
/// As crictl does, `metadata.name` and `image.image` are required.
pub fn load_container_config(path: &Path) -> Result<ContainerConfig, ClientError> {
    let mirror: container::ContainerConfigFile = load(path)?;
    let config = ContainerConfig::from(mirror);
    let invalid = |field: &str| config_error(path, field, "is required");
    match &config.metadata {
        None => return Err(invalid("metadata")),
        Some(m) if m.name.is_empty() => return Err(invalid("metadata.name")),
        Some(_) => {}
    }
    match &config.image {
        None => return Err(invalid("image")),
        Some(i) if i.image.is_empty() => return Err(invalid("image.image")),
        Some(_) => {}
    }
    Ok(config)
}

/// Parses a pod config from text (`yaml` picks the format); used by tests and tools.
pub fn parse_pod_config(text: &str, yaml: bool) -> Result<PodSandboxConfig, ClientError> {
    let mirror: pod::PodSandboxConfigFile = parse(Path::new("<text>"), text.as_bytes(), yaml)?;
    Ok(mirror.into())
}

/// Parses a container config from text (`yaml` picks the format); used by tests and tools.
pub fn parse_container_config(text: &str, yaml: bool) -> Result<ContainerConfig, ClientError> {
    let mirror: container::ContainerConfigFile = parse(Path::new("<text>"), text.as_bytes(), yaml)?;
    Ok(mirror.into())
}

fn config_error(path: &Path, field: &str, message: &str) -> ClientError {
    ClientError::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        message: message.to_string(),
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("yaml" | "yml")
    )
}

fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ClientError> {
    let io = |source| ClientError::Io {
        path: path.to_path_buf(),
        error: source,
    };
    let file = File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    // Read one byte past the limit so that an oversized file is detected
    // without trusting its metadata (it may be a pipe).
    file.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CONFIG_SIZE {
        return Err(ClientError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_SIZE,
        });
    }
    parse(path, &bytes, is_yaml(path))
}

fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8], yaml: bool) -> Result<T, ClientError> {
    let fail = |field: String, message: String| ClientError::Config {
        path: path.to_path_buf(),
        field: if field.is_empty() {
            ".".to_string()
        } else {
            field
        },
        message,
    };
    if yaml {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| fail(String::new(), format!("not UTF-8: {e}")))?;
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| fail(e.path().to_string(), e.inner().to_string()))
    } else {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value: T = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| fail(e.path().to_string(), e.inner().to_string()))?;
        de.end().map_err(|e| fail(String::new(), e.to_string()))?;
        Ok(value)
    }
}

/// A random RFC 4122 version 4 UUID, as crictl puts in an empty `metadata.uid`.
fn random_uid() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests;
