//! Pod verbs: `pods`, `runp`, `stopp`, `rmp`, `inspectp`, `statsp`.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandbox, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use serde_json::{json, Value};

use super::{compile, emit, emit_value, matches, newest, parse_labels, Deadlines, Format};
use crate::config::load_pod_config;
use crate::connect::{call, request, Cri};
use crate::error::ClientError;
use crate::output::{json, table};
use crate::resolve::resolve_pod;

/// What `pods` lists and how.
#[derive(Debug, Clone, Default)]
pub struct PodsOptions {
    /// Only pods whose ID starts with this.
    pub id: Option<String>,
    /// Only pods whose name matches this regular expression.
    pub name: Option<String>,
    /// Only pods whose namespace matches this regular expression.
    pub namespace: Option<String>,
    /// Only pods in this state (`ready` or `notready`).
    pub state: Option<String>,
    /// Only pods with these `key=value` labels.
    pub labels: Vec<String>,
    /// Print only IDs.
    pub quiet: bool,
    /// Output format.
    pub output: Format,
    /// Print full IDs in the table.
    pub no_trunc: bool,
    /// Only the newest pod.
    pub latest: bool,
    /// Only the newest N pods (0: all).
    pub last: usize,
}

fn pod_state_filter(state: &str) -> Result<PodSandboxStateValue, ClientError> {
    let state = match state.to_ascii_lowercase().as_str() {
        "ready" => PodSandboxState::SandboxReady,
        "notready" => PodSandboxState::SandboxNotready,
        _ => {
            return Err(ClientError::Usage(format!(
                "--state {state:?}: must be ready or notready"
            )))
        }
    };
    Ok(PodSandboxStateValue {
        state: state as i32,
    })
}

/// Lists pods with crictl's filters applied (newest first).
pub async fn list_pods(
    cri: &mut Cri,
    o: &PodsOptions,
    deadlines: Deadlines,
) -> Result<Vec<PodSandbox>, ClientError> {
    let name = compile(&o.name, "--name")?;
    let namespace = compile(&o.namespace, "--namespace")?;
    let filter = PodSandboxFilter {
        id: String::new(),
        state: o.state.as_deref().map(pod_state_filter).transpose()?,
        label_selector: parse_labels(&o.labels)?,
    };
    let reply = call(
        "ListPodSandbox",
        deadlines.quick,
        cri.runtime.list_pod_sandbox(request(
            ListPodSandboxRequest {
                filter: Some(filter),
            },
            deadlines.quick,
        )),
    )
    .await?;
    let items: Vec<PodSandbox> = reply
        .items
        .into_iter()
        .filter(|p| o.id.as_deref().is_none_or(|id| p.id.starts_with(id)))
        .filter(|p| {
            let md = p.metadata.clone().unwrap_or_default();
            matches(&name, &md.name) && matches(&namespace, &md.namespace)
        })
        .collect();
    Ok(newest(items, |p| p.created_at, o.latest, o.last))
}

/// `pods`: lists pod sandboxes.
pub async fn pods(
    cri: &mut Cri,
    o: &PodsOptions,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let items = list_pods(cri, o, deadlines).await?;
    if o.quiet {
        return emit(
            out,
            &items
                .iter()
                .map(|p| format!("{}\n", p.id))
                .collect::<String>(),
        );
    }
    if o.output != Format::Table {
        let doc = json!({ "items": items.iter().map(json::pod_sandbox).collect::<Vec<_>>() });
        return emit_value(out, &doc, o.output);
    }
    let now = SystemTime::now();
    let mut t = table::Table::new(&[
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]);
    for p in &items {
        let md = p.metadata.clone().unwrap_or_default();
        t.row(vec![
            if o.no_trunc {
                p.id.clone()
            } else {
                table::short_id(&p.id)
            },
            table::ago(p.created_at, now),
            table::pod_state(p.state).to_string(),
            md.name,
            md.namespace,
            md.attempt.to_string(),
            if p.runtime_handler.is_empty() {
                "(default)".to_string()
            } else {
                p.runtime_handler.clone()
            },
        ]);
    }
    emit(out, &t.render())
}

/// `runp`: runs a pod sandbox from a config file; prints and returns its ID.
pub async fn runp(
    cri: &mut Cri,
    config: &Path,
    runtime_handler: &str,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<String, ClientError> {
    let config = load_pod_config(config)?;
    let id = run_pod(cri, config, runtime_handler, deadlines).await?;
    emit(out, &format!("{id}\n"))?;
    Ok(id)
}

/// RunPodSandbox with an already loaded config.
pub(super) async fn run_pod(
    cri: &mut Cri,
    config: k8s_cri::v1::PodSandboxConfig,
    runtime_handler: &str,
    deadlines: Deadlines,
) -> Result<String, ClientError> {
    let reply = call(
        "RunPodSandbox",
        deadlines.long,
        cri.runtime.run_pod_sandbox(request(
            RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: runtime_handler.to_string(),
            },
            deadlines.long,
        )),
    )
    .await?;
    if reply.pod_sandbox_id.is_empty() {
        return Err(ClientError::BadReply(
            "RunPodSandbox returned an empty pod ID".into(),
        ));
    }
    Ok(reply.pod_sandbox_id)
}

/// StopPodSandbox for a full ID.
pub(super) async fn stop_pod(
    cri: &mut Cri,
    id: &str,
    deadlines: Deadlines,
) -> Result<(), ClientError> {
    call(
        "StopPodSandbox",
        deadlines.long,
        cri.runtime.stop_pod_sandbox(request(
            StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            },
            deadlines.long,
        )),
    )
    .await?;
    Ok(())
}

/// RemovePodSandbox for a full ID.
pub(super) async fn remove_pod(
    cri: &mut Cri,
    id: &str,
    deadlines: Deadlines,
) -> Result<(), ClientError> {
    call(
        "RemovePodSandbox",
        deadlines.long,
        cri.runtime.remove_pod_sandbox(request(
            RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            },
            deadlines.long,
        )),
    )
    .await?;
    Ok(())
}

async fn pod_status(
    cri: &mut Cri,
    id: &str,
    verbose: bool,
    deadlines: Deadlines,
) -> Result<k8s_cri::v1::PodSandboxStatusResponse, ClientError> {
    call(
        "PodSandboxStatus",
        deadlines.quick,
        cri.runtime.pod_sandbox_status(request(
            PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose,
            },
            deadlines.quick,
        )),
    )
    .await
}

/// `stopp`: stops pods (ID prefixes allowed).
pub async fn stopp(
    cri: &mut Cri,
    ids: &[String],
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    for prefix in ids {
        let id = resolve_pod(cri, prefix, deadlines.quick).await?;
        stop_pod(cri, &id, deadlines).await?;
        emit(out, &format!("Stopped sandbox {id}\n"))?;
    }
    Ok(())
}

/// `rmp`: removes pods; a ready pod only with `force` (stopped first). `all` removes every pod.
pub async fn rmp(
    cri: &mut Cri,
    ids: &[String],
    force: bool,
    all: bool,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let targets = if all {
        list_pods(cri, &PodsOptions::default(), deadlines)
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect()
    } else {
        let mut resolved = Vec::new();
        for prefix in ids {
            resolved.push(resolve_pod(cri, prefix, deadlines.quick).await?);
        }
        resolved
    };
    for id in targets {
        let status = pod_status(cri, &id, false, deadlines).await?;
        if status
            .status
            .as_ref()
            .is_some_and(|s| s.state == PodSandboxState::SandboxReady as i32)
        {
            if !force {
                return Err(ClientError::Refused(format!(
                    "pod sandbox {id} is running, please stop it first (or use --force)"
                )));
            }
            stop_pod(cri, &id, deadlines).await?;
        }
        remove_pod(cri, &id, deadlines).await?;
        emit(out, &format!("Removed sandbox {id}\n"))?;
    }
    Ok(())
}

/// `inspectp`: crictl's status document of each pod (an array if several).
pub async fn inspectp(
    cri: &mut Cri,
    ids: &[String],
    format: Format,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut docs = Vec::new();
    for prefix in ids {
        let id = resolve_pod(cri, prefix, deadlines.quick).await?;
        let reply = pod_status(cri, &id, true, deadlines).await?;
        let status = reply.status.as_ref().map(json::pod_status).ok_or_else(|| {
            ClientError::BadReply(format!("PodSandboxStatus of {id} has no status"))
        })?;
        docs.push(json::status_document(status, &reply.info));
    }
    let doc = if docs.len() == 1 {
        docs.remove(0)
    } else {
        Value::Array(docs)
    };
    emit_value(out, &doc, format)
}
