//! The container's seccomp profile: the runtime default, none, or a profile
//! file of the host (the kubelet's `localhost` profiles).
//!
//! The default profile is `seccomp-default.json`, the Docker-format profile
//! of containers/common (the one CRI-O and Podman apply; a descendant of
//! Docker's default, ERRNO(ENOSYS) for unknown calls so newer libcs fall
//! back), taken unchanged from Debian's `golang-github-containers-common`
//! 0.50.1 package (Apache-2.0, as vessel). Docker-format profiles carry
//! conditional rules (`includes`/`excludes` by capability, architecture and
//! kernel version) that must be resolved against the container before they
//! are an OCI `linux.seccomp`, as containerd's and Docker's `setupSeccomp`
//! do; that resolution is written here because no Rust crate does it.

use std::collections::HashSet;
use std::io::Read;

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{LinuxContainerSecurityContext, SecurityProfile};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

use super::SpecError;

/// The default profile (see the module doc).
const DEFAULT_PROFILE: &str = include_str!("seccomp-default.json");

/// The largest profile file read from the host. Docker's default is about
/// 20 KiB; the agent takes at most 1 MiB for the whole spec.
pub const MAX_PROFILE_BYTES: u64 = 256 * 1024;

/// The guest's architecture, as Docker-format profiles name it (Go's name).
const GUEST_ARCH: &str = "amd64";

/// The guest's seccomp architecture (`archMap` key).
const GUEST_SCMP_ARCH: Arch = Arch::ScmpArchX86_64;

/// The guest kernel's version (kernel-config/ builds 6.1), for `minKernel`.
const GUEST_KERNEL: (u32, u32) = (6, 1);

const SC: &str = "linux.security_context";

/// The profile a container gets, as containerd's
/// `generateSeccompSpecOpts` chooses it: none for a privileged container;
/// else the `seccomp` field (`RuntimeDefault`, `Unconfined`, `Localhost`
/// with an absolute path on the host), or, without it, the deprecated
/// `seccomp_profile_path` (empty or `unconfined`, `runtime/default` or
/// `docker/default`, `localhost/PATH`). `capabilities` is the bounding set,
/// which decides the conditional rules of Docker-format profiles.
pub fn profile(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    capabilities: &HashSet<Capability>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    let Some(sc) = sc else {
        return Ok(None);
    };
    match &sc.seccomp {
        Some(SecurityProfile {
            profile_type,
            localhost_ref,
        }) => match ProfileType::try_from(*profile_type) {
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::RuntimeDefault) => default_profile(capabilities).map(Some),
            Ok(ProfileType::Localhost) => {
                let path = localhost_ref
                    .strip_prefix("localhost/")
                    .unwrap_or(localhost_ref);
                localhost(path, &format!("{SC}.seccomp.localhost_ref"), capabilities).map(Some)
            }
            Err(_) => Err(SpecError::invalid(
                format!("{SC}.seccomp.profile_type"),
                format!("unknown profile type {profile_type}"),
            )),
        },
        None => {
            #[allow(deprecated)] // Older kubelets send only the path.
            let path = sc.seccomp_profile_path.as_str();
            let field = format!("{SC}.seccomp_profile_path");
            match path {
                "" | "unconfined" => Ok(None),
                "runtime/default" | "docker/default" => default_profile(capabilities).map(Some),
                other => match other.strip_prefix("localhost/") {
                    Some(path) => localhost(path, &field, capabilities).map(Some),
                    None => Err(SpecError::invalid(
                        field,
                        format!("{other:?} is not unconfined, runtime/default or localhost/PATH"),
                    )),
                },
            }
        }
    }
}

/// The runtime default profile for a process with these capabilities.
pub fn default_profile(capabilities: &HashSet<Capability>) -> Result<LinuxSeccomp, SpecError> {
    let profile: Profile = serde_json::from_str(DEFAULT_PROFILE).map_err(|e| {
        SpecError::invalid(
            "seccomp",
            format!("the built-in default profile is malformed: {e}"),
        )
    })?;
    resolve(profile, capabilities, "seccomp")
}

/// A profile file of the host, read with a size bound.
fn localhost(
    path: &str,
    field: &str,
    capabilities: &HashSet<Capability>,
) -> Result<LinuxSeccomp, SpecError> {
    if !path.starts_with('/') {
        return Err(SpecError::invalid(
            field,
            format!("{path:?} is not an absolute path"),
        ));
    }
    let read_error = |source: std::io::Error| SpecError::ProfileRead {
        field: field.to_string(),
        path: path.to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            SpecError::invalid(field, format!("seccomp profile {path:?} does not exist"))
        }
        _ => read_error(e),
    })?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(SpecError::invalid(
            field,
            format!("seccomp profile {path:?} is not a regular file"),
        ));
    }
    let mut text = String::new();
    // The bound holds even if the file grows after the metadata check.
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_PROFILE_BYTES {
        return Err(SpecError::invalid(
            field,
            format!(
                "seccomp profile {path:?} is larger than {} KiB",
                MAX_PROFILE_BYTES / 1024
            ),
        ));
    }
    let profile: Profile = serde_json::from_str(&text).map_err(|e| {
        SpecError::invalid(field, format!("seccomp profile {path:?} is malformed: {e}"))
    })?;
    resolve(profile, capabilities, field)
}

/// A seccomp profile in Docker's format, a superset of OCI's `linux.seccomp`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
}

/// One architecture and the ones it also runs (x86_64 runs x86 and x32 code).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

/// One rule; `includes`/`excludes` say when it applies.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// Docker's older single-name form.
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Condition>,
    #[serde(default)]
    excludes: Option<Condition>,
}

/// Architectures, capabilities and a kernel version a rule depends on.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// Turns a Docker-format profile into the OCI profile for this container:
/// a rule applies when the guest's architecture, every capability and the
/// kernel version of its `includes` match, and nothing of its `excludes`
/// does (Docker's `setupSeccomp`).
fn resolve(
    profile: Profile,
    capabilities: &HashSet<Capability>,
    field: &str,
) -> Result<LinuxSeccomp, SpecError> {
    let has_cap = |name: &String| {
        serde_json::from_value::<Capability>(serde_json::Value::String(name.clone()))
            .map(|c| capabilities.contains(&c))
            // A capability this build does not know cannot be in the set.
            .unwrap_or(false)
    };
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for (i, rule) in profile.syscalls.into_iter().flatten().enumerate() {
        let includes = rule.includes.unwrap_or_default();
        let excludes = rule.excludes.unwrap_or_default();
        if !includes.arches.is_empty() && !includes.arches.iter().any(|a| a == GUEST_ARCH) {
            continue;
        }
        if excludes.arches.iter().any(|a| a == GUEST_ARCH) {
            continue;
        }
        if !includes.caps.iter().all(has_cap) || excludes.caps.iter().any(has_cap) {
            continue;
        }
        if let Some(min) = &includes.min_kernel {
            let version = parse_kernel(min).ok_or_else(|| {
                SpecError::invalid(
                    field,
                    format!("syscalls[{i}].includes.minKernel: {min:?} is not a kernel version"),
                )
            })?;
            if version > GUEST_KERNEL {
                continue;
            }
        }
        let mut names = rule.names;
        names.extend(rule.name);
        if names.is_empty() {
            continue;
        }
        let mut builder = LinuxSyscallBuilder::default()
            .names(names)
            .action(rule.action);
        if let Some(errno) = rule.errno_ret {
            builder = builder.errno_ret(errno);
        }
        if let Some(args) = rule.args.filter(|a| !a.is_empty()) {
            builder = builder.args(args);
        }
        syscalls.push(builder.build()?);
    }
    let architectures = match (profile.architectures, profile.arch_map) {
        (Some(arches), _) => arches,
        (None, Some(map)) => map
            .into_iter()
            .filter(|m| m.architecture == GUEST_SCMP_ARCH)
            .flat_map(|m| std::iter::once(m.architecture).chain(m.sub_architectures))
            .collect(),
        (None, None) => Vec::new(),
    };
    let mut builder = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .syscalls(syscalls);
    if let Some(errno) = profile.default_errno_ret {
        builder = builder.default_errno_ret(errno);
    }
    if !architectures.is_empty() {
        builder = builder.architectures(architectures);
    }
    if let Some(flags) = profile.flags.filter(|f| !f.is_empty()) {
        builder = builder.flags(flags);
    }
    Ok(builder.build()?)
}

/// `"4.8"` → (4, 8).
fn parse_kernel(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}
