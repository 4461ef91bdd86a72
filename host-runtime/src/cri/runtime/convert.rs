//! Store records → CRI messages.

use std::collections::HashMap;

use k8s_cri::v1::{
    Container, ContainerMetadata, ContainerResources, ContainerStatus, ImageSpec,
    LinuxPodSandboxStatus, Namespace, NamespaceOption, PodIp, PodSandbox, PodSandboxMetadata,
    PodSandboxNetworkStatus, PodSandboxStatus,
};

use crate::store::{ContainerRecord, SandboxRecord};

fn map(m: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn sandbox_metadata(s: &SandboxRecord) -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: s.metadata.name.clone(),
        uid: s.metadata.uid.clone(),
        namespace: s.metadata.namespace.clone(),
        attempt: s.metadata.attempt,
    }
}

/// A sandbox for `ListPodSandbox`.
pub fn pod_sandbox(s: &SandboxRecord) -> PodSandbox {
    PodSandbox {
        id: s.id.clone(),
        metadata: Some(sandbox_metadata(s)),
        state: s.state.to_cri() as i32,
        created_at: s.created_at,
        labels: map(&s.labels),
        annotations: map(&s.annotations),
        runtime_handler: s.runtime_handler.clone(),
    }
}

/// The namespace modes the pod asked for (RunPodSandbox refuses NODE; each
/// is the VM's own, pid shared or per container as asked).
fn namespace_options(s: &SandboxRecord) -> NamespaceOption {
    use prost::Message;
    k8s_cri::v1::PodSandboxConfig::decode(s.config.as_slice())
        .ok()
        .and_then(|c| c.linux?.security_context?.namespace_options)
        .unwrap_or_default()
}

/// A sandbox for `PodSandboxStatus`: the pod's own network, pid and IPC
/// namespaces (those of its VM), in the modes it asked for.
pub fn pod_sandbox_status(s: &SandboxRecord) -> PodSandboxStatus {
    let mut ips = s.ips.iter();
    PodSandboxStatus {
        id: s.id.clone(),
        metadata: Some(sandbox_metadata(s)),
        state: s.state.to_cri() as i32,
        created_at: s.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(namespace_options(s)),
            }),
        }),
        labels: map(&s.labels),
        annotations: map(&s.annotations),
        runtime_handler: s.runtime_handler.clone(),
    }
}

fn image_spec(c: &ContainerRecord) -> ImageSpec {
    ImageSpec {
        image: c.image_ref.clone(),
        user_specified_image: c.image_ref.clone(),
        ..ImageSpec::default()
    }
}

/// A container for `ListContainers`.
pub fn container(c: &ContainerRecord) -> Container {
    Container {
        id: c.id.clone(),
        pod_sandbox_id: c.sandbox_id.clone(),
        metadata: Some(ContainerMetadata {
            name: c.metadata.name.clone(),
            attempt: c.metadata.attempt,
        }),
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        state: c.state.to_cri() as i32,
        created_at: c.created_at,
        labels: map(&c.labels),
        annotations: map(&c.annotations),
        image_id: c.image_id.clone(),
    }
}

/// A container for `ContainerStatus`.
pub fn container_status(c: &ContainerRecord) -> ContainerStatus {
    ContainerStatus {
        id: c.id.clone(),
        metadata: Some(ContainerMetadata {
            name: c.metadata.name.clone(),
            attempt: c.metadata.attempt,
        }),
        state: c.state.to_cri() as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: map(&c.labels),
        annotations: map(&c.annotations),
        mounts: c.mounts.clone(),
        log_path: c.log_path.clone(),
        resources: c.resources.clone().map(|linux| ContainerResources {
            linux: Some(linux),
            ..ContainerResources::default()
        }),
        image_id: c.image_id.clone(),
        user: None,
    }
}
