//! CRI messages as crictl prints them: protobuf's canonical JSON mapping
//! (protojson with EmitDefaultValues: lowerCamelCase names, enums by name,
//! 64-bit integers as strings, defaults included, unset messages left out).
//!
//! Built by hand into `serde_json::Value`: the k8s-cri types derive serde, but
//! with Rust's snake_case names, enums as numbers and 64-bit integers as
//! numbers, which is not what crictl users (and their `jq` filters) read. Keys
//! come out sorted, as in crictl's `inspect` output (it re-marshals through
//! Go maps).

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A 64-bit integer as protojson writes it (a string).
fn int64(v: i64) -> Value {
    Value::String(v.to_string())
}

/// An unsigned 64-bit integer as protojson writes it (a string).
fn uint64(v: u64) -> Value {
    Value::String(v.to_string())
}

fn map(m: &HashMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().cloned().map(Value::String).collect())
}

fn list<T>(items: &[T], f: impl Fn(&T) -> Value) -> Value {
    Value::Array(items.iter().map(f).collect())
}

/// An enum by its protobuf name; unknown numbers stay numbers, as protojson does.
fn enum_name<E: TryFrom<i32>>(v: i32, name: impl Fn(E) -> &'static str) -> Value {
    match E::try_from(v) {
        Ok(e) => Value::String(name(e).to_string()),
        Err(_) => Value::from(v),
    }
}

/// Unix nanoseconds as RFC 3339 with nanoseconds (UTC), as crictl shows times.
pub fn rfc3339(nanos: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| nanos.to_string())
}

/// Inserts `key: value` when `value` is present (protojson leaves unset messages out).
fn put(object: &mut Value, key: &str, value: Option<Value>) {
    if let (Value::Object(o), Some(v)) = (object, value) {
        o.insert(key.to_string(), v);
    }
}

fn uint64_value(v: &Option<cri::UInt64Value>) -> Option<Value> {
    v.as_ref().map(|v| json!({ "value": uint64(v.value) }))
}

fn int64_value(v: &Option<cri::Int64Value>) -> Option<Value> {
    v.as_ref().map(|v| json!({ "value": int64(v.value) }))
}

/// `ImageSpec`.
pub fn image_spec(s: &cri::ImageSpec) -> Value {
    json!({
        "image": s.image,
        "annotations": map(&s.annotations),
        "userSpecifiedImage": s.user_specified_image,
        "runtimeHandler": s.runtime_handler,
    })
}

fn id_mapping(m: &cri::IdMapping) -> Value {
    json!({ "hostId": m.host_id, "containerId": m.container_id, "length": m.length })
}

/// `Mount`.
pub fn mount(m: &cri::Mount) -> Value {
    let mut v = json!({
        "containerPath": m.container_path,
        "hostPath": m.host_path,
        "readonly": m.readonly,
        "selinuxRelabel": m.selinux_relabel,
        "propagation": enum_name(m.propagation, |e: cri::MountPropagation| e.as_str_name()),
        "uidMappings": list(&m.uid_mappings, id_mapping),
        "gidMappings": list(&m.gid_mappings, id_mapping),
        "recursiveReadOnly": m.recursive_read_only,
    });
    put(&mut v, "image", m.image.as_ref().map(image_spec));
    v
}

/// `LinuxContainerResources`.
pub fn linux_resources(r: &cri::LinuxContainerResources) -> Value {
    json!({
        "cpuPeriod": int64(r.cpu_period),
        "cpuQuota": int64(r.cpu_quota),
        "cpuShares": int64(r.cpu_shares),
        "memoryLimitInBytes": int64(r.memory_limit_in_bytes),
        "oomScoreAdj": int64(r.oom_score_adj),
        "cpusetCpus": r.cpuset_cpus,
        "cpusetMems": r.cpuset_mems,
        "hugepageLimits": list(&r.hugepage_limits, |h| json!({ "pageSize": h.page_size, "limit": uint64(h.limit) })),
        "unified": map(&r.unified),
        "memorySwapLimitInBytes": int64(r.memory_swap_limit_in_bytes),
    })
}

fn container_metadata(m: &cri::ContainerMetadata) -> Value {
    json!({ "name": m.name, "attempt": m.attempt })
}

fn pod_metadata(m: &cri::PodSandboxMetadata) -> Value {
    json!({ "name": m.name, "uid": m.uid, "namespace": m.namespace, "attempt": m.attempt })
}

fn container_state(s: i32) -> Value {
    enum_name(s, |e: cri::ContainerState| e.as_str_name())
}

fn pod_state(s: i32) -> Value {
    enum_name(s, |e: cri::PodSandboxState| e.as_str_name())
}

/// `ContainerStatus`, with its times as RFC 3339 strings as crictl shows them.
pub fn container_status(s: &cri::ContainerStatus) -> Value {
    let mut v = json!({
        "id": s.id,
        "state": container_state(s.state),
        "createdAt": rfc3339(s.created_at),
        "startedAt": rfc3339(s.started_at),
        "finishedAt": rfc3339(s.finished_at),
        "exitCode": s.exit_code,
        "imageRef": s.image_ref,
        "reason": s.reason,
        "message": s.message,
        "labels": map(&s.labels),
        "annotations": map(&s.annotations),
        "mounts": list(&s.mounts, mount),
        "logPath": s.log_path,
        "imageId": s.image_id,
    });
    // crictl re-marshals the status through a map that has every field, so
    // unset messages print as null there.
    for key in ["metadata", "image", "resources", "user"] {
        put(&mut v, key, Some(Value::Null));
    }
    put(
        &mut v,
        "metadata",
        s.metadata.as_ref().map(container_metadata),
    );
    put(&mut v, "image", s.image.as_ref().map(image_spec));
    put(
        &mut v,
        "resources",
        s.resources.as_ref().map(|r| {
            let mut o = json!({});
            put(&mut o, "linux", r.linux.as_ref().map(linux_resources));
            o
        }),
    );
    put(
        &mut v,
        "user",
        s.user.as_ref().map(|u| {
            let mut o = json!({});
            put(
                &mut o,
                "linux",
                u.linux.as_ref().map(|l| {
                    json!({
                        "uid": int64(l.uid),
                        "gid": int64(l.gid),
                        "supplementalGroups": Value::Array(l.supplemental_groups.iter().map(|g| int64(*g)).collect()),
                    })
                }),
            );
            o
        }),
    );
    v
}

fn namespace_option(n: &cri::NamespaceOption) -> Value {
    let mode = |m: i32| enum_name(m, |e: cri::NamespaceMode| e.as_str_name());
    let mut v = json!({
        "network": mode(n.network),
        "pid": mode(n.pid),
        "ipc": mode(n.ipc),
        "targetId": n.target_id,
    });
    put(
        &mut v,
        "usernsOptions",
        n.userns_options.as_ref().map(|u| {
            json!({
                "mode": mode(u.mode),
                "uids": list(&u.uids, id_mapping),
                "gids": list(&u.gids, id_mapping),
            })
        }),
    );
    v
}

/// `PodSandboxStatus`, with its creation time as an RFC 3339 string as crictl shows it.
pub fn pod_status(s: &cri::PodSandboxStatus) -> Value {
    let mut v = json!({
        "id": s.id,
        "metadata": null,
        "state": pod_state(s.state),
        "createdAt": rfc3339(s.created_at),
        "network": null,
        "linux": null,
        "labels": map(&s.labels),
        "annotations": map(&s.annotations),
        "runtimeHandler": s.runtime_handler,
    });
    put(&mut v, "metadata", s.metadata.as_ref().map(pod_metadata));
    put(
        &mut v,
        "network",
        s.network.as_ref().map(|n| {
            json!({
                "ip": n.ip,
                "additionalIps": list(&n.additional_ips, |ip| json!({ "ip": ip.ip })),
            })
        }),
    );
    put(
        &mut v,
        "linux",
        s.linux.as_ref().map(|l| {
            let mut o = json!({});
            put(
                &mut o,
                "namespaces",
                l.namespaces.as_ref().map(|n| {
                    let mut ns = json!({});
                    put(&mut ns, "options", n.options.as_ref().map(namespace_option));
                    ns
                }),
            );
            o
        }),
    );
    v
}

/// One `PodSandbox` of a list.
pub fn pod_sandbox(p: &cri::PodSandbox) -> Value {
    let mut v = json!({
        "id": p.id,
        "state": pod_state(p.state),
        "createdAt": int64(p.created_at),
        "labels": map(&p.labels),
        "annotations": map(&p.annotations),
        "runtimeHandler": p.runtime_handler,
    });
    put(&mut v, "metadata", p.metadata.as_ref().map(pod_metadata));
    v
}

/// One `Container` of a list.
pub fn container(c: &cri::Container) -> Value {
    let mut v = json!({
        "id": c.id,
        "podSandboxId": c.pod_sandbox_id,
        "imageRef": c.image_ref,
        "state": container_state(c.state),
        "createdAt": int64(c.created_at),
        "labels": map(&c.labels),
        "annotations": map(&c.annotations),
        "imageId": c.image_id,
    });
    put(
        &mut v,
        "metadata",
        c.metadata.as_ref().map(container_metadata),
    );
    put(&mut v, "image", c.image.as_ref().map(image_spec));
    v
}

/// One `Image`.
pub fn image(i: &cri::Image) -> Value {
    let mut v = json!({
        "id": i.id,
        "repoTags": strings(&i.repo_tags),
        "repoDigests": strings(&i.repo_digests),
        "size": uint64(i.size),
        "username": i.username,
        "pinned": i.pinned,
    });
    put(&mut v, "uid", int64_value(&i.uid));
    put(&mut v, "spec", i.spec.as_ref().map(image_spec));
    v
}

/// `RuntimeStatus` (the conditions of `info`).
pub fn runtime_status(s: &cri::RuntimeStatus) -> Value {
    json!({
        "conditions": list(&s.conditions, |c| json!({
            "type": c.r#type,
            "status": c.status,
            "reason": c.reason,
            "message": c.message,
        })),
    })
}

/// One `RuntimeHandler`.
pub fn runtime_handler(h: &cri::RuntimeHandler) -> Value {
    let mut v = json!({ "name": h.name });
    put(
        &mut v,
        "features",
        h.features.as_ref().map(|f| {
            json!({
                "recursiveReadOnlyMounts": f.recursive_read_only_mounts,
                "userNamespaces": f.user_namespaces,
            })
        }),
    );
    v
}

fn cpu_usage(c: &cri::CpuUsage) -> Value {
    let mut v = json!({ "timestamp": int64(c.timestamp) });
    put(
        &mut v,
        "usageCoreNanoSeconds",
        uint64_value(&c.usage_core_nano_seconds),
    );
    put(&mut v, "usageNanoCores", uint64_value(&c.usage_nano_cores));
    v
}

fn memory_usage(m: &cri::MemoryUsage) -> Value {
    let mut v = json!({ "timestamp": int64(m.timestamp) });
    put(
        &mut v,
        "workingSetBytes",
        uint64_value(&m.working_set_bytes),
    );
    put(&mut v, "availableBytes", uint64_value(&m.available_bytes));
    put(&mut v, "usageBytes", uint64_value(&m.usage_bytes));
    put(&mut v, "rssBytes", uint64_value(&m.rss_bytes));
    put(&mut v, "pageFaults", uint64_value(&m.page_faults));
    put(
        &mut v,
        "majorPageFaults",
        uint64_value(&m.major_page_faults),
    );
    v
}

fn filesystem_usage(f: &cri::FilesystemUsage) -> Value {
    let mut v = json!({ "timestamp": int64(f.timestamp) });
    put(
        &mut v,
        "fsId",
        f.fs_id
            .as_ref()
            .map(|id| json!({ "mountpoint": id.mountpoint })),
    );
    put(&mut v, "usedBytes", uint64_value(&f.used_bytes));
    put(&mut v, "inodesUsed", uint64_value(&f.inodes_used));
    v
}

fn attributes(
    id: &str,
    metadata: Option<Value>,
    labels: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
) -> Value {
    let mut v = json!({ "id": id, "labels": map(labels), "annotations": map(annotations) });
    put(&mut v, "metadata", metadata);
    v
}

/// One `ContainerStats`.
pub fn container_stats(s: &cri::ContainerStats) -> Value {
    let mut v = json!({});
    put(
        &mut v,
        "attributes",
        s.attributes.as_ref().map(|a| {
            attributes(
                &a.id,
                a.metadata.as_ref().map(container_metadata),
                &a.labels,
                &a.annotations,
            )
        }),
    );
    put(&mut v, "cpu", s.cpu.as_ref().map(cpu_usage));
    put(&mut v, "memory", s.memory.as_ref().map(memory_usage));
    put(
        &mut v,
        "writableLayer",
        s.writable_layer.as_ref().map(filesystem_usage),
    );
    put(
        &mut v,
        "swap",
        s.swap.as_ref().map(|w| {
            let mut o = json!({ "timestamp": int64(w.timestamp) });
            put(
                &mut o,
                "swapAvailableBytes",
                uint64_value(&w.swap_available_bytes),
            );
            put(&mut o, "swapUsageBytes", uint64_value(&w.swap_usage_bytes));
            o
        }),
    );
    v
}

/// One `PodSandboxStats` (Linux part).
pub fn pod_stats(s: &cri::PodSandboxStats) -> Value {
    let mut v = json!({});
    put(
        &mut v,
        "attributes",
        s.attributes.as_ref().map(|a| {
            attributes(
                &a.id,
                a.metadata.as_ref().map(pod_metadata),
                &a.labels,
                &a.annotations,
            )
        }),
    );
    put(
        &mut v,
        "linux",
        s.linux.as_ref().map(|l| {
            let mut o = json!({ "containers": list(&l.containers, container_stats) });
            put(&mut o, "cpu", l.cpu.as_ref().map(cpu_usage));
            put(&mut o, "memory", l.memory.as_ref().map(memory_usage));
            put(
                &mut o,
                "process",
                l.process.as_ref().map(|p| {
                    let mut po = json!({ "timestamp": int64(p.timestamp) });
                    put(&mut po, "processCount", uint64_value(&p.process_count));
                    po
                }),
            );
            o
        }),
    );
    v
}

/// crictl's `inspect`/`inspectp`/`info` document: `{"status": ..., <info keys>...}`.
///
/// Each info value that looks like a JSON object is embedded parsed (as
/// crictl does, so `info.pid` and friends are reachable with `jq`); others
/// are strings with surrounding quotes removed.
pub fn status_document(status: Value, info: &HashMap<String, String>) -> Value {
    let mut doc = Map::new();
    doc.insert("status".to_string(), status);
    for (key, raw) in info {
        let value = if raw.starts_with('{') {
            serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.clone()))
        } else {
            Value::String(raw.trim_matches('"').to_string())
        };
        doc.insert(key.clone(), value);
    }
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_status_is_protojson_shaped() {
        let status = cri::ContainerStatus {
            id: "c1".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 1,
            }),
            state: cri::ContainerState::ContainerRunning as i32,
            created_at: 1_700_000_000_123_456_789,
            exit_code: 0,
            labels: [("a".to_string(), "b".to_string())].into(),
            resources: Some(cri::ContainerResources {
                linux: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: 1 << 30,
                    ..Default::default()
                }),
                windows: None,
            }),
            ..Default::default()
        };
        let info = HashMap::from([
            (
                "info".to_string(),
                r#"{"pid":42,"sandboxID":"p1"}"#.to_string(),
            ),
            ("plain".to_string(), "\"quoted\"".to_string()),
        ]);
        let doc = status_document(container_status(&status), &info);
        assert_eq!(doc["status"]["state"], "CONTAINER_RUNNING");
        assert_eq!(doc["status"]["metadata"]["name"], "app");
        assert_eq!(doc["status"]["createdAt"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(doc["status"]["startedAt"], "1970-01-01T00:00:00Z");
        assert_eq!(doc["status"]["exitCode"], 0);
        assert_eq!(doc["status"]["labels"]["a"], "b");
        assert_eq!(doc["status"]["image"], Value::Null);
        assert_eq!(
            doc["status"]["resources"]["linux"]["memoryLimitInBytes"],
            "1073741824"
        );
        assert_eq!(doc["info"]["pid"], 42);
        assert_eq!(doc["plain"], "quoted");
    }

    #[test]
    fn pod_status_names_enums_and_keeps_unknown_numbers() {
        let status = cri::PodSandboxStatus {
            id: "p1".into(),
            state: cri::PodSandboxState::SandboxNotready as i32,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: "10.88.0.2".into(),
                additional_ips: vec![],
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network: 9,
                        ..Default::default()
                    }),
                }),
            }),
            ..Default::default()
        };
        let v = pod_status(&status);
        assert_eq!(v["state"], "SANDBOX_NOTREADY");
        assert_eq!(v["network"]["ip"], "10.88.0.2");
        assert_eq!(v["linux"]["namespaces"]["options"]["pid"], "POD");
        assert_eq!(v["linux"]["namespaces"]["options"]["network"], 9);
        assert_eq!(v["metadata"], Value::Null);
    }
}
