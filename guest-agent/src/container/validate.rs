//! Checking a `Create` request before anything is created, so bad input gets
//! a status that names the field and leaves no trace.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::error::EngineError;
use super::stdio::StreamSpec;
use crate::proto::CreateContainerRequest;

/// Largest accepted `oci_spec_json`; real specs are a few KiB.
pub const MAX_SPEC_LEN: usize = 1 << 20;

/// Longest accepted container id.
pub const MAX_ID_LEN: usize = 64;

/// A validated `Create` request.
#[derive(Debug)]
pub struct CreateSpec {
    /// The container id.
    pub id: String,
    /// The parsed OCI spec.
    pub spec: Spec,
    /// The root filesystem directory.
    pub rootfs: PathBuf,
    /// Where stdout goes, if anywhere.
    pub stdout: Option<PathBuf>,
    /// Where stderr goes, if anywhere.
    pub stderr: Option<PathBuf>,
    /// Streamed stdio instead of the files.
    pub streams: Option<StreamSpec>,
}

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(msg.into())
}

/// Checks an id: 1–64 of `[A-Za-z0-9_.-]`, not starting with `.` or `-` (it names state and logs).
pub fn validate_id(id: &str) -> Result<(), EngineError> {
    if id.is_empty() {
        return Err(invalid("container_id is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(format!(
            "container_id is longer than {MAX_ID_LEN} bytes"
        )));
    }
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok_chars || id.starts_with(['.', '-']) {
        return Err(invalid(format!(
            "container_id {id:?} must be [A-Za-z0-9_.-] and not start with '.' or '-'"
        )));
    }
    Ok(())
}

/// Whether `path` is absolute and has no `..` (it is joined under the rootfs).
fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute() && !path.components().any(|c| c == Component::ParentDir)
}

pub(super) fn optional_file(field: &str, value: &str) -> Result<Option<PathBuf>, EngineError> {
    if value.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(value);
    if !is_clean_absolute(&path) {
        return Err(invalid(format!(
            "{field} {value:?} must be an absolute path without '..'"
        )));
    }
    match path.parent() {
        Some(dir) if dir.is_dir() => Ok(Some(path)),
        _ => Err(EngineError::NotFound(format!(
            "{field}: the directory of {value:?} does not exist"
        ))),
    }
}

impl CreateSpec {
    /// Validates every field of `req`.
    pub fn from_request(req: &CreateContainerRequest) -> Result<Self, EngineError> {
        validate_id(&req.container_id)?;
        let mut spec = parse_spec(&req.oci_spec_json)?;
        let rootfs = validate_rootfs(&req.rootfs)?;
        super::users::apply_to_spec(&mut spec, &rootfs, req.run_as.as_ref())?;
        check_seccomp(&req.container_id, &spec)?;
        let stdout = optional_file("stdout_path", &req.stdout_path)?;
        let stderr = optional_file("stderr_path", &req.stderr_path)?;
        let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
        let streams = StreamSpec::from_request(
            req.streams.as_ref(),
            terminal,
            stdout.is_some() || stderr.is_some(),
            "oci_spec_json.process",
        )?;
        Ok(Self {
            id: req.container_id.clone(),
            spec,
            rootfs,
            stdout,
            stderr,
            streams,
        })
    }
}

fn validate_rootfs(value: &str) -> Result<PathBuf, EngineError> {
    if value.is_empty() {
        return Err(invalid("rootfs is empty"));
    }
    let rootfs = PathBuf::from(value);
    if !is_clean_absolute(&rootfs) {
        return Err(invalid(format!(
            "rootfs {value:?} must be an absolute path without '..'"
        )));
    }
    match std::fs::metadata(&rootfs) {
        Ok(meta) if meta.is_dir() => Ok(rootfs),
        Ok(_) => Err(invalid(format!("rootfs {value:?} is not a directory"))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(EngineError::NotFound(
            format!("rootfs {value:?} does not exist"),
        )),
        Err(err) => Err(invalid(format!("rootfs {value:?}: {err}"))),
    }
}

fn parse_spec(json: &str) -> Result<Spec, EngineError> {
    if json.len() > MAX_SPEC_LEN {
        return Err(invalid(format!(
            "oci_spec_json is longer than {MAX_SPEC_LEN} bytes"
        )));
    }
    let spec: Spec = serde_json::from_str(json).map_err(|err| {
        // serde does not say where in the profile an unknown action or operator is.
        invalid(
            super::seccomp::explain_parse_error(json)
                .unwrap_or_else(|| format!("oci_spec_json is not a valid OCI runtime spec: {err}")),
        )
    })?;
    check_process(&spec)?;
    check_mounts(&spec)?;
    check_namespaces(&spec)?;
    Ok(spec)
}

pub(super) fn check_process(spec: &Spec) -> Result<(), EngineError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("oci_spec_json.process is missing"))?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(invalid("oci_spec_json.process.args is empty")),
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(format!(
            "oci_spec_json.process.cwd {:?} is not absolute",
            process.cwd()
        )));
    }
    if let Some(caps) = process.capabilities() {
        let sets = [
            caps.bounding(),
            caps.effective(),
            caps.permitted(),
            caps.inheritable(),
            caps.ambient(),
        ];
        for cap in sets.into_iter().flatten().flatten() {
            super::init::to_caps_capability(*cap).map_err(|_| {
                invalid(format!(
                    "oci_spec_json.process.capabilities: {cap} is unknown to this agent"
                ))
            })?;
        }
    }
    Ok(())
}

/// Compiles the seccomp profile once here, so a bad one fails `Create` with the field named.
fn check_seccomp(id: &str, spec: &Spec) -> Result<(), EngineError> {
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(());
    };
    let profile = super::seccomp::compile(seccomp).map_err(|e| invalid(e.to_string()))?;
    if !profile.unknown.is_empty() {
        tracing::warn!(container_id = %id, syscalls = ?profile.unknown, "seccomp: skipping syscalls unknown to this agent");
    }
    Ok(())
}

fn check_mounts(spec: &Spec) -> Result<(), EngineError> {
    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        if !is_clean_absolute(mount.destination()) {
            return Err(invalid(format!(
                "oci_spec_json.mounts[{i}].destination {:?} must be absolute without '..'",
                mount.destination()
            )));
        }
        let is_bind = mount.typ().as_deref() == Some("bind")
            || mount
                .options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if is_bind {
            match mount.source() {
                Some(src) if src.exists() => {}
                Some(src) => {
                    return Err(EngineError::NotFound(format!(
                        "oci_spec_json.mounts[{i}].source {src:?} does not exist"
                    )))
                }
                None => {
                    return Err(invalid(format!(
                        "oci_spec_json.mounts[{i}].source is missing for a bind mount"
                    )))
                }
            }
        }
    }
    Ok(())
}

fn check_namespaces(spec: &Spec) -> Result<(), EngineError> {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for (i, ns) in namespaces.into_iter().flatten().enumerate() {
        if ns.typ() == LinuxNamespaceType::User {
            return Err(invalid(format!(
                "oci_spec_json.linux.namespaces[{i}]: user namespaces are not supported"
            )));
        }
        if let Some(path) = ns.path() {
            if !path.exists() {
                return Err(EngineError::NotFound(format!(
                    "oci_spec_json.linux.namespaces[{i}].path {path:?} does not exist"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "web-1", "x.y_z", &"a".repeat(MAX_ID_LEN)] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "-a",
            "a/b",
            "../x",
            "a b",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(
                matches!(validate_id(bad), Err(EngineError::InvalidArgument(m)) if m.contains("container_id")),
                "{bad}"
            );
        }
    }
}
