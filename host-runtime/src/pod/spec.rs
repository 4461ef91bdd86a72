//! The OCI runtime spec of a pod's container, as the agent's
//! `Containers.Create` takes it.

use std::collections::HashSet;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use vessel_agent_api::proto::SandboxInfo;

/// The capabilities containerd gives a container by default (NET_RAW among
/// them, so `ping` works).
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths containerd masks in every container (kernel state a container
/// should not read).
const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths containerd makes read-only in every container.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The spec of a container running `args` as root in the pod, shaped like
/// containerd's default: its own mount, pid and cgroup namespaces, the pod's
/// network, IPC and UTS namespaces (entries without a path: see
/// docs/agent-api.md), containerd's masked and read-only paths, and the
/// pod's hosts, hostname and resolv.conf files.
pub fn container_spec(
    args: &[String],
    sandbox: &SandboxInfo,
) -> Result<Spec, oci_spec::OciSpecError> {
    let caps: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let process = ProcessBuilder::default()
        .args(args.to_vec())
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            format!("HOSTNAME={}", sandbox.hostname),
        ])
        .cwd("/")
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()?,
        )
        .no_new_privileges(true)
        .build()?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()?,
        )
        // Same as the pod's (the agent refuses anything else in the pod's UTS namespace).
        .hostname(sandbox.hostname.clone())
        .mounts(mounts(sandbox)?)
        .linux(
            LinuxBuilder::default()
                .namespaces(namespaces)
                .masked_paths(MASKED_PATHS.map(String::from).to_vec())
                .readonly_paths(READONLY_PATHS.map(String::from).to_vec())
                .build()?,
        )
        .build()
}

fn mounts(sandbox: &SandboxInfo) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        // In the container's cgroup namespace: its own cgroup, read-only.
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"])?,
    ];
    for (dest, source) in [
        ("/etc/hosts", &sandbox.hosts_path),
        ("/etc/hostname", &sandbox.hostname_path),
        ("/etc/resolv.conf", &sandbox.resolv_conf_path),
    ] {
        if !source.is_empty() {
            mounts.push(mount(dest, "bind", source, &["rbind", "ro"])?);
        }
    }
    Ok(mounts)
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
    }
}
