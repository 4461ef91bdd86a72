//! The pod's shared namespaces, and the rule that points a container's spec at them.
//!
//! Once the sandbox is set up, a container's network, IPC and UTS namespaces
//! are the pod's whether its spec lists them without a path or not at all; its
//! pid namespace is the pod's only when the pod shares one. A namespace given
//! with a path is joined as given; mount namespaces are always the container's own.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxBuilder, LinuxNamespace, LinuxNamespaceType, Spec};

use super::error::EngineError;

/// Paths (nsfs bind mounts) of the namespaces a pod's containers share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNamespaces {
    /// Network namespace (the guest's root one).
    pub net: PathBuf,
    /// IPC namespace.
    pub ipc: PathBuf,
    /// UTS namespace.
    pub uts: PathBuf,
    /// Pid namespace, when the pod shares one.
    pub pid: Option<PathBuf>,
    /// The pod's hostname, which a container in the pod's UTS namespace must not change.
    pub hostname: String,
}

impl PodNamespaces {
    /// The pod path for a namespace type, if the pod shares that type.
    fn path(&self, typ: LinuxNamespaceType) -> Option<&PathBuf> {
        match typ {
            LinuxNamespaceType::Network => Some(&self.net),
            LinuxNamespaceType::Ipc => Some(&self.ipc),
            LinuxNamespaceType::Uts => Some(&self.uts),
            LinuxNamespaceType::Pid => self.pid.as_ref(),
            _ => None,
        }
    }

    /// Rewrites `spec` so the container joins the pod's namespaces (see the module docs).
    pub fn apply_to(&self, spec: &mut Spec) -> Result<(), EngineError> {
        let mut namespaces: Vec<LinuxNamespace> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for ns in &mut namespaces {
            if ns.path().is_none() {
                if let Some(path) = self.path(ns.typ()) {
                    ns.set_path(Some(path.clone()));
                }
            }
        }
        let mut always = vec![
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
        ];
        if self.pid.is_some() {
            always.push(LinuxNamespaceType::Pid);
        }
        for typ in always {
            if !namespaces.iter().any(|ns| ns.typ() == typ) {
                if let Some(path) = self.path(typ) {
                    let mut ns = LinuxNamespace::default();
                    ns.set_typ(typ);
                    ns.set_path(Some(path.clone()));
                    namespaces.push(ns);
                }
            }
        }
        let joins_pod_uts = namespaces
            .iter()
            .any(|ns| ns.typ() == LinuxNamespaceType::Uts && ns.path().as_ref() == Some(&self.uts));
        if joins_pod_uts {
            if let Some(h) = spec.hostname().as_deref() {
                if h != self.hostname {
                    return Err(EngineError::InvalidArgument(format!(
                        "oci_spec_json.hostname {h:?} differs from the pod's {:?}, and the container shares the pod's UTS namespace",
                        self.hostname
                    )));
                }
            }
            // The pod's namespace already has it; setting it again would need CAP_SYS_ADMIN there for nothing.
            spec.set_hostname(None);
        }
        let mut linux = match spec.linux().clone() {
            Some(linux) => linux,
            None => LinuxBuilder::default().build().map_err(|e| {
                EngineError::Internal(format!("build the spec's linux section: {e}"))
            })?,
        };
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(pid: bool) -> PodNamespaces {
        PodNamespaces {
            net: "/ns/net".into(),
            ipc: "/ns/ipc".into(),
            uts: "/ns/uts".into(),
            pid: pid.then(|| "/ns/pid".into()),
            hostname: "pod".into(),
        }
    }

    fn spec(namespaces: serde_json::Value, hostname: Option<&str>) -> Spec {
        let mut value = json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs" },
            "linux": { "namespaces": namespaces }
        });
        if let Some(h) = hostname {
            value["hostname"] = json!(h);
        }
        serde_json::from_value(value).expect("spec")
    }

    fn paths(spec: &Spec) -> Vec<(String, Option<String>)> {
        let mut out: Vec<_> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .map(|ns| {
                (
                    ns.typ().to_string(),
                    ns.path().as_ref().map(|p| p.display().to_string()),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn pathless_and_missing_shared_types_point_at_the_pod() {
        let mut s = spec(
            json!([{ "type": "pid" }, { "type": "mount" }, { "type": "uts" }, { "type": "network", "path": "/other" }]),
            Some("pod"),
        );
        pod(false).apply_to(&mut s).expect("apply");
        let some = |p: &str| Some(p.to_owned());
        assert_eq!(
            paths(&s),
            vec![
                ("ipc".into(), some("/ns/ipc")),
                ("mnt".into(), None),
                ("net".into(), some("/other")),
                ("pid".into(), None),
                ("uts".into(), some("/ns/uts")),
            ]
        );
        assert_eq!(s.hostname(), &None);
    }

    #[test]
    fn a_shared_pid_namespace_is_joined() {
        let mut s = spec(json!([{ "type": "pid" }]), None);
        pod(true).apply_to(&mut s).expect("apply");
        assert!(paths(&s).contains(&("pid".into(), Some("/ns/pid".into()))));
    }

    #[test]
    fn another_hostname_in_the_pod_uts_namespace_is_refused() {
        let mut s = spec(json!([{ "type": "uts" }]), Some("other"));
        assert!(matches!(
            pod(false).apply_to(&mut s),
            Err(EngineError::InvalidArgument(m)) if m.contains("oci_spec_json.hostname")
        ));
        // With its own UTS namespace (given by path) the container may name itself.
        let mut s = spec(
            json!([{ "type": "uts", "path": "/elsewhere" }]),
            Some("other"),
        );
        pod(false).apply_to(&mut s).expect("apply");
        assert_eq!(s.hostname().as_deref(), Some("other"));
    }
}
