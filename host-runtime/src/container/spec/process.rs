//! The container's process: command line, environment, working directory
//! and user, by the rules of containerd's CRI plugin.

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use vessel_agent_api::proto::RunAsUser;

use super::image::ImageConfig;
use super::SpecError;

/// The PATH a process gets when neither the image nor the config sets one
/// (containerd's `oci.WithDefaultPathEnv`).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command line: the config's `command` replaces the image's
/// entrypoint, its `args` replace the image's cmd (as the kubelet documents
/// and containerd implements: with a `command`, the image's cmd is not used
/// even when `args` is empty; an entrypoint of `[""]` means none).
pub fn args(config: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::invalid(
            "command",
            "no command specified: neither the config nor the image has one",
        ));
    }
    Ok(command)
}

/// The environment, in containerd's order: the default PATH, `TERM=xterm`
/// with a terminal, `HOSTNAME`, the image's env, then the config's envs; a
/// later value of a key replaces the earlier one in its place.
pub fn env(
    config: &ContainerConfig,
    image: &ImageConfig,
    hostname: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env = Env::default();
    env.set(DEFAULT_PATH.to_string());
    if config.tty {
        env.set("TERM=xterm".to_string());
    }
    env.set(format!("HOSTNAME={hostname}"));
    for entry in &image.env {
        env.set(entry.clone());
    }
    for (i, kv) in config.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(SpecError::invalid(
                format!("envs[{i}].key"),
                format!("{:?} is not a variable name", kv.key),
            ));
        }
        if kv.value.contains('\0') {
            return Err(SpecError::invalid(
                format!("envs[{i}].value"),
                "contains a NUL byte",
            ));
        }
        env.set(format!("{}={}", kv.key, kv.value));
    }
    Ok(env.0)
}

/// `KEY=value` entries where setting a key again replaces it in place
/// (containerd's `replaceOrAppendEnvValues`).
#[derive(Default)]
struct Env(Vec<String>);

impl Env {
    fn set(&mut self, entry: String) {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        match self
            .0
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(existing) => *existing = entry,
            None => self.0.push(entry),
        }
    }
}

/// The working directory: the config's, else the image's, else `/`.
pub fn cwd(config: &ContainerConfig, image: &ImageConfig) -> Result<String, SpecError> {
    let (field, dir) = if !config.working_dir.is_empty() {
        ("working_dir", config.working_dir.as_str())
    } else if !image.working_dir.is_empty() {
        ("image.working_dir", image.working_dir.as_str())
    } else {
        return Ok("/".to_string());
    };
    if !dir.starts_with('/') || dir.contains('\0') {
        return Err(SpecError::invalid(
            field,
            format!("{dir:?} is not an absolute path"),
        ));
    }
    Ok(dir.to_string())
}

/// Who the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The numeric uid, where the request gives one (else 0 until the agent resolves `run_as`).
    pub uid: u32,
    /// The numeric gid, where the request gives one (else 0 until the agent resolves `run_as`).
    pub gid: u32,
    /// `supplemental_groups` of the security context (the agent adds the
    /// user's groups from the image's `/etc/group`).
    pub additional_gids: Vec<u32>,
    /// The user and group for the agent to resolve in the image (`run_as`).
    pub run_as: RunAsUser,
}

const SC: &str = "linux.security_context";

/// The user, as containerd's `generateUserString` picks it: `run_as_username`
/// over `run_as_user`, `run_as_group` only with one of them, the image's
/// `User` when the config names nobody, and root otherwise. The result is
/// always resolved by the agent in the image (`run_as`), which gives the
/// primary group and the supplementary groups of `/etc/group`, as
/// containerd's `WithUser` and `WithAdditionalGIDs` do.
pub fn user(
    security: Option<&LinuxContainerSecurityContext>,
    image: &ImageConfig,
) -> Result<User, SpecError> {
    let default = LinuxContainerSecurityContext::default();
    let sc = security.unwrap_or(&default);
    let uid = sc
        .run_as_user
        .as_ref()
        .map(|v| id(v.value, &format!("{SC}.run_as_user")))
        .transpose()?;
    let gid = sc
        .run_as_group
        .as_ref()
        .map(|v| id(v.value, &format!("{SC}.run_as_group")))
        .transpose()?;
    if !sc.run_as_username.is_empty() {
        check_name(&sc.run_as_username, &format!("{SC}.run_as_username"))?;
    }
    let additional_gids = sc
        .supplemental_groups
        .iter()
        .enumerate()
        .map(|(i, g)| id(*g, &format!("{SC}.supplemental_groups[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32 {
        return Err(SpecError::invalid(
            format!("{SC}.supplemental_groups_policy"),
            "Strict is not supported: vessel adds the groups of the image's /etc/group",
        ));
    }
    let cri_user = if !sc.run_as_username.is_empty() {
        Some(sc.run_as_username.clone())
    } else {
        uid.map(|u| u.to_string())
    };
    let run_as = match cri_user {
        Some(user) => RunAsUser {
            user,
            group: gid.map(|g| g.to_string()).unwrap_or_default(),
        },
        None if gid.is_some() => {
            return Err(SpecError::invalid(
                format!("{SC}.run_as_group"),
                "is set without run_as_user or run_as_username",
            ))
        }
        None if !image.user.is_empty() => image_user(&image.user)?,
        None => RunAsUser {
            user: "0".to_string(),
            group: String::new(),
        },
    };
    // Numeric ids go into the spec as well, so it reads right on its own.
    let numeric = |s: &str| s.parse::<u32>().ok();
    Ok(User {
        uid: numeric(&run_as.user).unwrap_or(0),
        gid: numeric(&run_as.group).unwrap_or(0),
        additional_gids,
        run_as,
    })
}

/// The image's `User`: `user`, `user:group` (names or numbers).
fn image_user(spec: &str) -> Result<RunAsUser, SpecError> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    check_name(user, "image.user")?;
    if !group.is_empty() {
        check_name(group, "image.user")?;
    }
    Ok(RunAsUser {
        user: user.to_string(),
        group: group.to_string(),
    })
}

/// A CRI id (int64) as a Linux uid/gid: 0 up to 2^32 − 2 (−1 is "no id").
fn id(value: i64, field: &str) -> Result<u32, SpecError> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| SpecError::invalid(field, format!("{value} is not a valid id")))
}

/// A user or group name: non-empty, no `:`, NUL or newline (which would
/// break the agent's `/etc/passwd` lookup), at most 256 bytes.
fn check_name(name: &str, field: &str) -> Result<(), SpecError> {
    if name.is_empty()
        || name.len() > 256
        || name.contains([':', '\0', '\n'])
        || name.chars().any(char::is_whitespace)
    {
        return Err(SpecError::invalid(
            field,
            format!("{name:?} is not a user or group name"),
        ));
    }
    Ok(())
}
