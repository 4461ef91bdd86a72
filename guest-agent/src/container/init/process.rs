//! The container process's identity and limits: rlimits, user and groups,
//! capabilities, no_new_privs, cwd, and the exec itself.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process, Spec};

use super::{seccomp, sys, SetupError};
use crate::init::DEFAULT_PATH;

/// Why an OCI capability name has no counterpart in the `caps` crate.
#[derive(Debug, thiserror::Error)]
#[error("unknown capability {0}")]
pub struct UnknownCapability(String);

/// Maps an OCI capability to the `caps` crate's, by name (`CAP_` + the OCI name).
pub fn to_caps_capability(
    cap: oci_spec::runtime::Capability,
) -> Result<caps::Capability, UnknownCapability> {
    let name = format!("CAP_{cap}");
    name.parse().map_err(|_| UnknownCapability(name))
}

/// The exec, with every string converted before the start byte arrives.
#[derive(Debug)]
pub struct Prepared {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    /// The seccomp profile, when it goes on right before the exec.
    seccomp: Option<crate::container::seccomp::Profile>,
}

impl Prepared {
    /// Replaces this process with the container's; returns only on failure.
    pub fn exec(self) -> SetupError {
        // The Rust runtime of this init stage ignores SIGPIPE, and an ignored signal
        // stays ignored across execve: give the process the default back.
        // Safe: SIG_DFL installs no handler; this process is single-threaded.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
        if let Some(profile) = &self.seccomp {
            if let Err(err) = seccomp::install(profile) {
                return err;
            }
        }
        match nix::unistd::execve(&self.path, &self.args, &self.env) {
            // Not an executable the kernel can run (bad ELF, missing interpreter): an image problem.
            Err(errno) => {
                SetupError::invalid(format!("exec process.args[0] {:?}: {errno}", self.path))
            }
            Ok(never) => match never {},
        }
    }
}

fn cstring(what: &str, value: &[u8]) -> Result<CString, SetupError> {
    CString::new(value).map_err(|_| SetupError::invalid(format!("{what} contains a NUL byte")))
}

/// Applies limits and identity, and resolves the executable, leaving only the exec.
pub fn prepare(spec: &Spec) -> Result<Prepared, SetupError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SetupError::invalid("process is missing"))?;
    set_rlimits(process)?;
    let mut profile = seccomp::load(spec)?;
    if !seccomp::can_install_late(process) {
        if let Some(profile) = profile.take() {
            seccomp::install(&profile)?;
        }
    }
    set_user(process)?;
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| sys("set no_new_privs", e))?;
    }
    // After the user switch, so the directory's permissions apply to the container's user.
    nix::unistd::chdir(process.cwd())
        .map_err(|e| sys(format!("process.cwd {:?}", process.cwd()), e))?;
    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let args: Vec<String> = process.args().clone().unwrap_or_default();
    let first = args
        .first()
        .ok_or_else(|| SetupError::invalid("process.args is empty"))?;
    let path = resolve(first, &env)?;
    Ok(Prepared {
        path: cstring("process.args[0]", path.as_os_str().as_bytes())?,
        args: args
            .iter()
            .map(|a| cstring("process.args", a.as_bytes()))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|e| cstring("process.env", e.as_bytes()))
            .collect::<Result<_, _>>()?,
        seccomp: profile,
    })
}

/// Finds `name` as execvp would, in the container's `PATH` (or the default one).
fn resolve(name: &str, env: &[String]) -> Result<PathBuf, SetupError> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return if executable(Path::new(name)) {
            Ok(PathBuf::from(name))
        } else {
            Err(SetupError::invalid(format!(
                "process.args[0] {name:?} is not an executable file in the rootfs"
            )))
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| executable(p))
        .ok_or_else(|| {
            SetupError::invalid(format!(
                "process.args[0] {name:?} not found in PATH {path:?}"
            ))
        })
}

fn resource(typ: PosixRlimitType) -> Resource {
    match typ {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

fn set_rlimits(process: &Process) -> Result<(), SetupError> {
    for limit in process.rlimits().iter().flatten() {
        setrlimit(resource(limit.typ()), limit.soft(), limit.hard())
            .map_err(|e| sys(format!("setrlimit {}", limit.typ()), e))?;
    }
    Ok(())
}

fn cap_set(set: Option<&Capabilities>) -> CapsHashSet {
    // Validation rejected unknown names, so nothing is dropped here.
    set.into_iter()
        .flatten()
        .filter_map(|c| to_caps_capability(*c).ok())
        .collect()
}

/// Switches to the spec's uid, gid and groups, keeping exactly the spec's capabilities.
fn set_user(process: &Process) -> Result<(), SetupError> {
    let caps = process.capabilities().as_ref();
    let bounding = cap_set(caps.and_then(|c| c.bounding().as_ref()));
    // Dropping from the bounding set needs CAP_SETPCAP, so it happens while still root.
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            match caps::drop(None, CapSet::Bounding, cap) {
                Ok(()) => {}
                // Capabilities newer than the running kernel are not in its bounding set.
                Err(_) if !caps::runtime::thread_all_supported().contains(&cap) => {}
                Err(e) => {
                    return Err(SetupError::internal(format!(
                        "drop {cap} from bounding: {e}"
                    )))
                }
            }
        }
    }
    // Keep permitted capabilities across the uid change; the sets are set exactly below.
    nix::sys::prctl::set_keepcaps(true).map_err(|e| sys("set keepcaps", e))?;
    let user = process.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    setgroups(&groups).map_err(|e| sys("setgroups", e))?;
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(|e| sys(format!("setgid {gid}"), e))?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).map_err(|e| sys(format!("setuid {uid}"), e))?;
    // capset keeps effective within permitted and raises inheritable only from the
    // old permitted set: inheritable while permitted is still whole, then effective,
    // then permitted, and ambient (which needs both) last.
    let sets = [
        (
            CapSet::Inheritable,
            caps.and_then(|c| c.inheritable().as_ref()),
        ),
        (CapSet::Effective, caps.and_then(|c| c.effective().as_ref())),
        (CapSet::Permitted, caps.and_then(|c| c.permitted().as_ref())),
        (CapSet::Ambient, caps.and_then(|c| c.ambient().as_ref())),
    ];
    for (set, wanted) in sets {
        caps::set(None, set, &cap_set(wanted))
            .map_err(|e| SetupError::internal(format!("set {set:?} capabilities: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_capability_names_map_to_caps() {
        use oci_spec::runtime::Capability as Oci;
        let pairs = [
            (Oci::Chown, caps::Capability::CAP_CHOWN),
            (Oci::DacReadSearch, caps::Capability::CAP_DAC_READ_SEARCH),
            (Oci::NetBindService, caps::Capability::CAP_NET_BIND_SERVICE),
            (Oci::SysAdmin, caps::Capability::CAP_SYS_ADMIN),
        ];
        for (oci, expected) in pairs {
            assert_eq!(to_caps_capability(oci).ok(), Some(expected));
        }
    }

    #[test]
    fn resolves_in_the_spec_path_only() {
        let env = vec!["PATH=/nonexistent:/bin".to_owned()];
        assert_eq!(resolve("sh", &env).ok(), Some(PathBuf::from("/bin/sh")));
        assert!(resolve("no-such-binary-here", &env).is_err());
        assert!(resolve("/nonexistent/sh", &env).is_err());
    }
}
