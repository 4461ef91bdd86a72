//! The OCI runtime spec of `run-pod`'s container, as the agent's
//! `Containers.Create` takes it: the CRI spec builder
//! (`container::spec`, the one builder of container specs) with a config
//! that runs `args` as root.

use k8s_cri::v1::{
    ContainerConfig, LinuxContainerConfig, LinuxContainerSecurityContext, Mount as CriMount,
    PodSandboxConfig,
};
use oci_spec::runtime::{MountBuilder, Spec};

use vessel_agent_api::proto::SandboxInfo;

use crate::container::spec::{self, ImageConfig, SpecError, SpecInput};

/// The spec of a container running `args` as root in the pod, shaped like
/// containerd's default: its own mount, pid and cgroup namespaces, the pod's
/// network, IPC and UTS namespaces (entries without a path: see
/// docs/agent-api.md), containerd's masked and read-only paths, and the
/// pod's hosts, hostname and resolv.conf files; plus, for `run-pod`,
/// `no_new_privs` and a tmpfs on `/tmp`.
pub fn container_spec(args: &[String], sandbox: &SandboxInfo) -> Result<Spec, SpecError> {
    let config = ContainerConfig {
        command: args.to_vec(),
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext {
                no_new_privs: true,
                ..LinuxContainerSecurityContext::default()
            }),
        }),
        ..ContainerConfig::default()
    };
    let no_host_paths = |i: usize, _: &CriMount| -> Result<String, SpecError> {
        Err(SpecError::invalid(
            format!("mounts[{i}]"),
            "run-pod shares no host paths",
        ))
    };
    let tmp = MountBuilder::default()
        .destination("/tmp")
        .typ("tmpfs")
        .source("tmpfs")
        .options(["nosuid", "nodev", "mode=1777"].map(String::from).to_vec())
        .build()?;
    let built = spec::build(SpecInput {
        config: &config,
        sandbox_config: &PodSandboxConfig::default(),
        sandbox,
        image: &ImageConfig::default(),
        host_paths: &no_host_paths,
        extra_mounts: vec![tmp],
    })?;
    Ok(built.spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> SandboxInfo {
        SandboxInfo {
            sandbox_id: "demo".into(),
            hostname: "demo".into(),
            hosts_path: "/run/vessel/sandbox/hosts".into(),
            hostname_path: "/run/vessel/sandbox/hostname".into(),
            resolv_conf_path: String::new(),
            ..SandboxInfo::default()
        }
    }

    #[test]
    fn the_spec_joins_the_pod_and_runs_the_command() {
        let args = vec!["sh".to_string(), "-c".to_string(), "echo hi".to_string()];
        let spec = container_spec(&args, &sandbox()).unwrap();
        let json: serde_json::Value = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["args"], serde_json::json!(args));
        assert_eq!(json["hostname"], "demo");
        let namespaces = json["linux"]["namespaces"].as_array().unwrap();
        // Pod namespaces are entries without a path: the agent substitutes the pod's.
        assert!(namespaces.iter().all(|ns| ns.get("path").is_none()));
        let types: Vec<&str> = namespaces
            .iter()
            .map(|ns| ns["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["pid", "ipc", "uts", "mount", "network", "cgroup"]);
        let masked = json["linux"]["maskedPaths"].as_array().unwrap();
        assert!(
            masked.contains(&serde_json::json!("/proc/kcore")),
            "{masked:?}"
        );
        let readonly = json["linux"]["readonlyPaths"].as_array().unwrap();
        assert!(
            readonly.contains(&serde_json::json!("/proc/sys")),
            "{readonly:?}"
        );
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&serde_json::json!("CAP_NET_RAW")), "{caps:?}");
        let dests: Vec<&str> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert!(dests.contains(&"/etc/hosts") && dests.contains(&"/etc/hostname"));
        assert!(dests.contains(&"/sys/fs/cgroup") && dests.contains(&"/dev/mqueue"));
        // No resolv.conf path from the sandbox: no mount for it.
        assert!(!dests.contains(&"/etc/resolv.conf"));
        assert!(dests.contains(&"/tmp"));
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["process"]["user"]["uid"], 0);
    }
}
