//! `Version`, `Status`, `RuntimeConfig` and the verbose sandbox info.

use std::path::Path;

use k8s_cri::v1::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeCondition, RuntimeConfigResponse,
    RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusResponse, VersionResponse,
};

use crate::daemon::runtime::Runtime;
use crate::store::SandboxRecord;

/// The CRI API version served.
const CRI_API_VERSION: &str = "v1";

/// `Version`.
pub fn version() -> VersionResponse {
    VersionResponse {
        version: "0.1.0".to_string(),
        runtime_name: "vessel".to_string(),
        runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime_api_version: CRI_API_VERSION.to_string(),
    }
}

/// Why no guest can boot on this host, if none can: `/dev/kvm` missing or
/// unusable, or a PVM host (the same checks as `vesseld check`).
fn kvm_unusable() -> Option<String> {
    use crate::check::{kvm_device, kvm_guests, Host, Status as Check};
    let host = Host::default();
    [
        kvm_device(&host.dev_dir.join("kvm")),
        kvm_guests(&host.sys_dir),
    ]
    .into_iter()
    .find(|r| r.status == Check::Fail)
    .map(|r| format!("{}: {} (fix: {})", r.name, r.detail, r.fix))
}

/// `Status`: RuntimeReady when guests can boot here and the default
/// handler's pieces are there, NetworkReady when a CNI config is.
pub fn status(rt: &Runtime, verbose: bool) -> StatusResponse {
    let handler = rt.config.handler(&rt.config.default_runtime_handler);
    let runtime = match (kvm_unusable(), handler) {
        (Some(why), _) => condition("RuntimeReady", false, "KVMUnusable", &why),
        (None, Some(h)) => {
            let missing: Vec<String> = [&h.kernel, &h.initramfs, &h.vmm, &h.virtiofsd]
                .iter()
                .filter(|p| !Path::new(p).is_file())
                .map(|p| p.display().to_string())
                .collect();
            if missing.is_empty() {
                condition("RuntimeReady", true, "", "")
            } else {
                condition(
                    "RuntimeReady",
                    false,
                    "HandlerIncomplete",
                    &format!("missing: {}", missing.join(", ")),
                )
            }
        }
        (None, None) => condition(
            "RuntimeReady",
            false,
            "NoDefaultHandler",
            "the default runtime handler is not configured",
        ),
    };
    let network = match rt.cni() {
        Ok(_) => condition("NetworkReady", true, "", ""),
        Err(e) => condition("NetworkReady", false, "NetworkPluginNotReady", e.message()),
    };
    let mut info = std::collections::HashMap::new();
    if verbose {
        info.insert(
            "config".to_string(),
            serde_json::to_string(&rt.config).unwrap_or_default(),
        );
        let cidr = rt
            .pod_cidr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        info.insert("podCIDR".to_string(), cidr.unwrap_or_default());
    }
    StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime, network],
        }),
        info,
        runtime_handlers: rt
            .config
            .runtime_handlers
            .keys()
            .map(|name| RuntimeHandler {
                name: name.clone(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            })
            .collect(),
        features: None,
    }
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> RuntimeCondition {
    RuntimeCondition {
        r#type: kind.to_string(),
        status: ok,
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

/// `RuntimeConfig`: the host's cgroup driver, for the kubelet's own pod
/// cgroups: systemd where systemd is the init (as sd_booted(3) tells),
/// cgroupfs otherwise. vesseld places its pods' host processes itself,
/// under `cgroup.parent`, either way.
pub fn runtime_config() -> RuntimeConfigResponse {
    runtime_config_for(std::path::Path::new("/run/systemd/system").is_dir())
}

fn runtime_config_for(systemd_booted: bool) -> RuntimeConfigResponse {
    let driver = if systemd_booted {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    };
    RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}

/// The verbose `info` of `PodSandboxStatus`: the VM.
pub fn sandbox_info(rt: &Runtime, s: &SandboxRecord) -> String {
    let vm = s.vm.as_ref();
    serde_json::json!({
        "runtimeHandler": s.runtime_handler,
        "netns": s.netns_path,
        "cgroup": s.cgroup_path,
        "running": rt.pod(&s.id).is_some(),
        "vm": vm.map(|vm| serde_json::json!({
            "pid": vm.vmm.pid,
            "vcpus": vm.vcpus,
            "memoryMiB": vm.memory_mib,
            "uid": vm.vmm_uid,
            // Guest uid/gid g is this host id plus g on the share.
            "guestRootHostId": vm.vmm_uid
                .and_then(crate::pod::ids::PodIds::of_vmm)
                .map(|ids| ids.base()),
            "consoleLog": vm.console_log,
            "vsockSocket": vm.vsock_socket,
        })),
    })
    .to_string()
}

#[cfg(test)]
mod runtime_config_tests {
    use super::*;

    #[test]
    fn the_driver_is_the_hosts() {
        let driver = |booted| runtime_config_for(booted).linux.map(|l| l.cgroup_driver);
        assert_eq!(driver(true), Some(CgroupDriver::Systemd as i32));
        assert_eq!(driver(false), Some(CgroupDriver::Cgroupfs as i32));
    }
}
