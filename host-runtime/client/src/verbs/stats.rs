//! `stats` and `statsp`: container and pod resource usage.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerStatsFilter, ListContainerStatsRequest, ListPodSandboxStatsRequest,
    PodSandboxStatsFilter,
};
use serde_json::json;

use super::{cpu, emit, emit_value, parse_labels, Deadlines, Format};
use crate::connect::{call, request, Cri};
use crate::error::ClientError;
use crate::output::{json, table};
use crate::resolve::{resolve_container, resolve_pod};

/// What `stats` shows.
#[derive(Debug, Clone, Default)]
pub struct StatsOptions {
    /// One container (ID or unique prefix).
    pub id: Option<String>,
    /// Only containers of this pod (ID or unique prefix).
    pub pod: Option<String>,
    /// Only containers with these `key=value` labels.
    pub labels: Vec<String>,
    /// Output format.
    pub output: Format,
}

/// `stats`: container resource usage.
pub async fn stats(
    cri: &mut Cri,
    o: &StatsOptions,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let id = match &o.id {
        Some(prefix) => resolve_container(cri, prefix, deadlines.quick).await?,
        None => String::new(),
    };
    let pod_sandbox_id = match &o.pod {
        Some(prefix) => resolve_pod(cri, prefix, deadlines.quick).await?,
        None => String::new(),
    };
    let filter = ContainerStatsFilter {
        id,
        pod_sandbox_id,
        label_selector: parse_labels(&o.labels)?,
    };
    let list = |cri: &mut Cri| {
        let filter = filter.clone();
        let mut client = cri.runtime.clone();
        async move {
            call(
                "ListContainerStats",
                deadlines.quick,
                client.list_container_stats(request(
                    ListContainerStatsRequest {
                        filter: Some(filter),
                    },
                    deadlines.quick,
                )),
            )
            .await
        }
    };
    let mut reply = list(cri).await?;
    let mut first = HashMap::new();
    let mut elapsed = Duration::ZERO;
    if o.output == Format::Table
        && cpu::needs_second_sample(reply.stats.iter().map(|s| s.cpu.as_ref()))
    {
        first = cpu::by_id(
            reply
                .stats
                .iter()
                .map(|s| (s.attributes.clone().unwrap_or_default().id, s.cpu.as_ref())),
        );
        let started = Instant::now();
        tokio::time::sleep(cpu::SAMPLE_INTERVAL).await;
        reply = list(cri).await?;
        elapsed = started.elapsed();
    }
    if o.output != Format::Table {
        let doc =
            json!({ "stats": reply.stats.iter().map(json::container_stats).collect::<Vec<_>>() });
        return emit_value(out, &doc, o.output);
    }
    let mut t = table::Table::new(&["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"]);
    for s in &reply.stats {
        let attrs = s.attributes.clone().unwrap_or_default();
        let disk = s.writable_layer.clone().unwrap_or_default();
        t.row(vec![
            table::short_id(&attrs.id),
            attrs.metadata.clone().unwrap_or_default().name,
            cpu::percent(first.get(&attrs.id), s.cpu.as_ref(), elapsed),
            table::human_size(
                s.memory
                    .and_then(|m| m.working_set_bytes)
                    .map_or(0, |v| v.value),
            ),
            table::human_size(disk.used_bytes.map_or(0, |v| v.value)),
            disk.inodes_used.map_or(0, |v| v.value).to_string(),
        ]);
    }
    emit(out, &t.render())
}

/// `statsp`: pod resource usage (optionally one pod, by ID prefix, or by labels).
pub async fn statsp(
    cri: &mut Cri,
    id: Option<&str>,
    labels: &[String],
    format: Format,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let id = match id {
        Some(prefix) => resolve_pod(cri, prefix, deadlines.quick).await?,
        None => String::new(),
    };
    let filter = PodSandboxStatsFilter {
        id,
        label_selector: parse_labels(labels)?,
    };
    let list = |cri: &mut Cri| {
        let filter = filter.clone();
        let mut client = cri.runtime.clone();
        async move {
            call(
                "ListPodSandboxStats",
                deadlines.quick,
                client.list_pod_sandbox_stats(request(
                    ListPodSandboxStatsRequest {
                        filter: Some(filter),
                    },
                    deadlines.quick,
                )),
            )
            .await
        }
    };
    let linux_cpu = |s: &k8s_cri::v1::PodSandboxStats| s.linux.as_ref().and_then(|l| l.cpu);
    let mut reply = list(cri).await?;
    let mut first = std::collections::HashMap::new();
    let mut elapsed = std::time::Duration::ZERO;
    if format == Format::Table
        && cpu::needs_second_sample(
            reply
                .stats
                .iter()
                .map(|s| s.linux.as_ref().and_then(|l| l.cpu.as_ref())),
        )
    {
        let firsts: Vec<_> = reply
            .stats
            .iter()
            .map(|s| (s.attributes.clone().unwrap_or_default().id, linux_cpu(s)))
            .collect();
        first = cpu::by_id(firsts.iter().map(|(id, c)| (id.clone(), c.as_ref())));
        let started = std::time::Instant::now();
        tokio::time::sleep(cpu::SAMPLE_INTERVAL).await;
        reply = list(cri).await?;
        elapsed = started.elapsed();
    }
    if format != Format::Table {
        let doc = json!({ "stats": reply.stats.iter().map(json::pod_stats).collect::<Vec<_>>() });
        return emit_value(out, &doc, format);
    }
    let mut t = table::Table::new(&["POD", "POD ID", "CPU %", "MEM"]);
    for s in &reply.stats {
        let attrs = s.attributes.clone().unwrap_or_default();
        let linux = s.linux.clone().unwrap_or_default();
        t.row(vec![
            attrs.metadata.clone().unwrap_or_default().name,
            table::short_id(&attrs.id),
            cpu::percent(first.get(&attrs.id), linux.cpu.as_ref(), elapsed),
            table::human_size(
                linux
                    .memory
                    .and_then(|m| m.working_set_bytes)
                    .map_or(0, |v| v.value),
            ),
        ]);
    }
    emit(out, &t.render())
}
