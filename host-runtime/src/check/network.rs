//! The pod network: the tun device (each pod's tap) and the CNI
//! configuration and plugins, read the way the daemon reads them.
//! vhost-net and the host vsock modules are not needed: vessel-vmm serves
//! virtio-net itself and its vsock is a Unix socket on the host.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::CheckResult;
use crate::cni::{load_network, CniError};

/// `/dev/net/tun` exists and opens (every pod's tap is made through it).
pub fn tun(device: &Path) -> CheckResult {
    const NAME: &str = "tun";
    let shown = device.display();
    match std::fs::metadata(device) {
        Err(e) => CheckResult::fail(
            NAME,
            format!("{shown}: {e}"),
            "`modprobe tun` (and `mknod /dev/net/tun c 10 200` where no udev makes it)",
        ),
        Ok(m) if !m.file_type().is_char_device() => CheckResult::fail(
            NAME,
            format!("{shown} is not a character device"),
            format!("remove it and `mknod {shown} c 10 200`; `modprobe tun`"),
        ),
        // Opening it creates nothing: a tap exists only after TUNSETIFF.
        Ok(_) => match OpenOptions::new().read(true).write(true).open(device) {
            Ok(_) => CheckResult::ok(NAME, format!("{shown} opens read-write")),
            Err(e) => CheckResult::fail(
                NAME,
                format!("{shown} does not open read-write: {e}"),
                "`modprobe tun`; run vesseld as root",
            ),
        },
    }
}

/// The network configuration check, and the plugin types it names (to
/// check them next), when it loads.
#[derive(Debug)]
pub struct NetworkCheck {
    /// The result.
    pub result: CheckResult,
    /// The `type` of each plugin of the chain, in order.
    pub plugin_types: Option<Vec<String>>,
}

/// The first network configuration of `conf_dir`, parsed as the daemon
/// parses it (`cni::load_network`): its name, plugin types and cniVersion.
/// Without one the runtime's NetworkReady is false and pods cannot start,
/// but vesseld still serves images: a WARN.
pub fn cni_network(conf_dir: &Path) -> NetworkCheck {
    const NAME: &str = "cni network";
    match load_network(conf_dir) {
        Ok(net) => {
            let types: Vec<String> = net.plugins.iter().map(|p| p.plugin_type.clone()).collect();
            NetworkCheck {
                result: CheckResult::ok(
                    NAME,
                    format!(
                        "{}: network {:?}, cniVersion {}, plugins {}",
                        net.source.display(),
                        net.name,
                        net.cni_version,
                        types.join(", ")
                    ),
                ),
                plugin_types: Some(types),
            }
        }
        Err(e) => {
            let fix = match e {
                CniError::NoConfig { .. } => format!(
                    "install the pod network's configuration in {} (a CNI add-on does, or a \
                     bridge + host-local conflist: docs/kubernetes.md), or set cni.conf_dir",
                    conf_dir.display()
                ),
                _ => "correct the file it names (the daemon reads the first *.conflist, \
                      *.conf or *.json by name)"
                    .to_string(),
            };
            NetworkCheck {
                result: CheckResult::warn(
                    NAME,
                    format!("{e}; until this is fixed NetworkReady is false and no pod can start (images are still served)"),
                    fix,
                ),
                plugin_types: None,
            }
        }
    }
}

/// Every plugin `type` of the network is an executable file in a bin dir.
/// As the daemon does, the first dir holding a file of that name wins. A
/// WARN otherwise: vesseld runs (and serves images), but no pod starts.
pub fn cni_plugins(types: &[String], bin_dirs: &[PathBuf]) -> CheckResult {
    const NAME: &str = "cni plugins";
    let dirs = bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let mut unique: Vec<&String> = Vec::new();
    for t in types {
        if !unique.contains(&t) {
            unique.push(t);
        }
    }
    for plugin in unique {
        let path = bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file());
        match path {
            None => problems.push(format!("{plugin} not found")),
            Some(p) if !is_executable(&p) => {
                problems.push(format!("{} is not executable", p.display()))
            }
            Some(p) => found.push(p.display().to_string()),
        }
    }
    if problems.is_empty() {
        CheckResult::ok(NAME, found.join(", "))
    } else {
        CheckResult::warn(
            NAME,
            format!(
                "{} (searched {dirs}); every RunPodSandbox fails at CNI ADD until they are \
                 there (NetworkReady only looks at the configuration)",
                problems.join("; ")
            ),
            "install the plugins (Debian: `apt install containernetworking-plugins`, into \
             /usr/lib/cni) or set cni.bin_dirs; `chmod +x` the ones that are not executable",
        )
    }
}

/// A regular file with an execute bit for someone (vesseld runs as root,
/// for whom any x bit is enough).
pub(super) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tun_must_be_the_character_device() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("tun");
        assert_eq!(tun(&fake).status, Status::Fail);
        std::fs::write(&fake, b"").unwrap();
        let r = tun(&fake);
        assert_eq!(r.status, Status::Fail);
        assert!(r.detail.contains("not a character device"), "{r:?}");
        // The real one, where the host has it (CI's does: the pod tests need it).
        let real = Path::new("/dev/net/tun");
        if real.exists() {
            assert_eq!(tun(real).status, Status::Ok, "{:?}", tun(real));
        }
    }

    #[test]
    fn a_missing_network_is_a_warning_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let r = cni_network(dir.path());
        assert_eq!(r.result.status, Status::Warn);
        assert!(r.result.detail.contains("NetworkReady is false"));
        assert!(r.result.fix.contains("cni.conf_dir"));
        assert!(r.plugin_types.is_none());
        std::fs::write(dir.path().join("10-bad.conflist"), "{not json").unwrap();
        let r = cni_network(dir.path());
        assert_eq!(r.result.status, Status::Warn);
        assert!(r.result.detail.contains("10-bad.conflist"), "{r:?}");
    }

    #[test]
    fn a_network_is_reported_and_its_plugins_looked_up() {
        let conf = tempfile::tempdir().unwrap();
        std::fs::write(
            conf.path().join("10-pods.conflist"),
            r#"{"cniVersion":"1.0.0","name":"pods","plugins":[
                {"type":"bridge","bridge":"cni0"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let r = cni_network(conf.path());
        assert_eq!(r.result.status, Status::Ok, "{r:?}");
        assert!(r.result.detail.contains("\"pods\"") && r.result.detail.contains("1.0.0"));
        let types = r.plugin_types.unwrap();
        assert_eq!(types, ["bridge", "portmap"]);

        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let dirs = vec![first.path().to_path_buf(), second.path().to_path_buf()];
        let r = cni_plugins(&types, &dirs);
        assert_eq!(r.status, Status::Warn);
        assert!(r.detail.contains("bridge not found") && r.detail.contains("portmap not found"));
        let exe = |p: &Path, mode| {
            std::fs::write(p, b"#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        exe(&second.path().join("bridge"), 0o755);
        exe(&second.path().join("portmap"), 0o755);
        assert_eq!(cni_plugins(&types, &dirs).status, Status::Ok);
        // The first dir's file wins, as in the daemon, even if it cannot run.
        exe(&first.path().join("portmap"), 0o644);
        let r = cni_plugins(&types, &dirs);
        assert_eq!(r.status, Status::Warn);
        assert!(r.detail.contains("portmap is not executable"), "{r:?}");
    }
}
