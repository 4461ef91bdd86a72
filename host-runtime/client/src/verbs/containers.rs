//! Container verbs: `ps`, `create`, `start`, `stop`, `rm`, `inspect`, `exec`, `stats`, `logs`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_cri::v1::{
    Container, ContainerFilter, ContainerState, ContainerStateValue, ContainerStatusRequest,
    ContainerStatusResponse, CreateContainerRequest, ExecSyncRequest, ExecSyncResponse,
    ListContainersRequest, RemoveContainerRequest, StartContainerRequest, StopContainerRequest,
};
use serde_json::{json, Value};

use super::{compile, emit, emit_value, matches, newest, parse_labels, Deadlines, Format};
use crate::config::{load_container_config, load_pod_config};
use crate::connect::{call, request, Cri};
use crate::error::ClientError;
use crate::output::{json, table};
use crate::resolve::{resolve_container, resolve_pod};

/// The kubelet's labels that name a container's pod.
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// Extra time an RPC gets beyond a timeout it carries (stop's grace period, exec's timeout).
const RPC_MARGIN: Duration = Duration::from_secs(30);

/// What `ps` lists and how.
#[derive(Debug, Clone, Default)]
pub struct PsOptions {
    /// Include containers in every state (default: running only).
    pub all: bool,
    /// Only containers whose ID starts with this.
    pub id: Option<String>,
    /// Only containers of pods whose ID starts with this.
    pub pod: Option<String>,
    /// Only containers whose name matches this regular expression.
    pub name: Option<String>,
    /// Only containers in this state (created, running, exited, unknown).
    pub state: Option<String>,
    /// Only containers with these `key=value` labels.
    pub labels: Vec<String>,
    /// Print only IDs.
    pub quiet: bool,
    /// Output format.
    pub output: Format,
    /// Print full IDs in the table.
    pub no_trunc: bool,
    /// Only the newest container (any state).
    pub latest: bool,
    /// Only the newest N containers (any state; 0: all).
    pub last: usize,
}

fn container_state_filter(state: &str) -> Result<ContainerStateValue, ClientError> {
    let state = match state.to_ascii_lowercase().as_str() {
        "created" => ContainerState::ContainerCreated,
        "running" => ContainerState::ContainerRunning,
        "exited" => ContainerState::ContainerExited,
        "unknown" => ContainerState::ContainerUnknown,
        _ => {
            return Err(ClientError::Usage(format!(
                "--state {state:?}: must be created, running, exited or unknown"
            )))
        }
    };
    Ok(ContainerStateValue {
        state: state as i32,
    })
}

/// Lists containers with crictl's filters applied (newest first).
pub async fn list_containers(
    cri: &mut Cri,
    o: &PsOptions,
    deadlines: Deadlines,
) -> Result<Vec<Container>, ClientError> {
    let name = compile(&o.name, "--name")?;
    let state = match &o.state {
        Some(s) => Some(container_state_filter(s)?),
        None if o.all || o.latest || o.last > 0 => None,
        None => Some(ContainerStateValue {
            state: ContainerState::ContainerRunning as i32,
        }),
    };
    let filter = ContainerFilter {
        id: String::new(),
        state,
        pod_sandbox_id: String::new(),
        label_selector: parse_labels(&o.labels)?,
    };
    let reply = call(
        "ListContainers",
        deadlines.quick,
        cri.runtime.list_containers(request(
            ListContainersRequest {
                filter: Some(filter),
            },
            deadlines.quick,
        )),
    )
    .await?;
    let items: Vec<Container> = reply
        .containers
        .into_iter()
        .filter(|c| o.id.as_deref().is_none_or(|id| c.id.starts_with(id)))
        .filter(|c| {
            o.pod
                .as_deref()
                .is_none_or(|pod| c.pod_sandbox_id.starts_with(pod))
        })
        .filter(|c| matches(&name, &c.metadata.clone().unwrap_or_default().name))
        .collect();
    Ok(newest(items, |c| c.created_at, o.latest, o.last))
}

/// The image a table shows for a container: what the user asked for, else the runtime's reference.
fn image_column(c: &Container, no_trunc: bool) -> String {
    let spec = c.image.clone().unwrap_or_default();
    let image = if spec.user_specified_image.is_empty() {
        spec.image
    } else {
        spec.user_specified_image
    };
    if image.starts_with("sha256:") && !no_trunc {
        table::short_id(&image)
    } else {
        image
    }
}

/// `ps`: lists containers.
pub async fn ps(
    cri: &mut Cri,
    o: &PsOptions,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let items = list_containers(cri, o, deadlines).await?;
    if o.quiet {
        return emit(
            out,
            &items
                .iter()
                .map(|c| format!("{}\n", c.id))
                .collect::<String>(),
        );
    }
    if o.output != Format::Table {
        let doc = json!({ "containers": items.iter().map(json::container).collect::<Vec<_>>() });
        return emit_value(out, &doc, o.output);
    }
    // Pod names come from the kubelet's labels when present, else from the
    // pod list; the names are cosmetic, so a failed listing only leaves them out.
    let pods: HashMap<String, (String, String)> =
        super::pods::list_pods(cri, &Default::default(), deadlines)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let md = p.metadata.unwrap_or_default();
                (p.id, (md.name, md.namespace))
            })
            .collect();
    let now = SystemTime::now();
    let mut t = table::Table::new(&[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
        "NAMESPACE",
    ]);
    for c in &items {
        let md = c.metadata.clone().unwrap_or_default();
        let (pod_name, pod_namespace) = pods.get(&c.pod_sandbox_id).cloned().unwrap_or_default();
        let label_or = |key: &str, fallback: String| {
            c.labels
                .get(key)
                .cloned()
                .or(Some(fallback).filter(|f| !f.is_empty()))
                .unwrap_or_else(|| "unknown".to_string())
        };
        let id = |id: &str| {
            if o.no_trunc {
                id.to_string()
            } else {
                table::short_id(id)
            }
        };
        t.row(vec![
            id(&c.id),
            image_column(c, o.no_trunc),
            table::ago(c.created_at, now),
            table::container_state(c.state).to_string(),
            md.name,
            md.attempt.to_string(),
            id(&c.pod_sandbox_id),
            label_or(POD_NAME_LABEL, pod_name),
            label_or(POD_NAMESPACE_LABEL, pod_namespace),
        ]);
    }
    emit(out, &t.render())
}

/// What `create` needs.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The pod's ID (or unique prefix).
    pub pod: String,
    /// The container config file.
    pub container_config: PathBuf,
    /// The pod config file (CreateContainer carries it).
    pub pod_config: PathBuf,
    /// Pull the image first.
    pub with_pull: bool,
    /// Registry credentials `USER[:PASSWORD]` for the pull.
    pub creds: Option<String>,
    /// Registry auth string (base64 `USER:PASSWORD`) for the pull.
    pub auth: Option<String>,
}

/// `create`: creates a container in a pod; prints and returns its ID.
pub async fn create(
    cri: &mut Cri,
    o: &CreateOptions,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<String, ClientError> {
    let pod_id = resolve_pod(cri, &o.pod, deadlines.quick).await?;
    let config = load_container_config(&o.container_config)?;
    let sandbox = load_pod_config(&o.pod_config)?;
    if o.with_pull {
        let image = config.image.clone().unwrap_or_default().image;
        let auth = super::images::auth_config(o.creds.as_deref(), o.auth.as_deref())?;
        super::images::pull_image(cri, &image, auth, Some(sandbox.clone()), deadlines).await?;
    }
    let id = create_container(cri, &pod_id, config, sandbox, deadlines).await?;
    emit(out, &format!("{id}\n"))?;
    Ok(id)
}

/// CreateContainer with loaded configs.
pub(super) async fn create_container(
    cri: &mut Cri,
    pod_id: &str,
    config: k8s_cri::v1::ContainerConfig,
    sandbox: k8s_cri::v1::PodSandboxConfig,
    deadlines: Deadlines,
) -> Result<String, ClientError> {
    let reply = call(
        "CreateContainer",
        deadlines.long,
        cri.runtime.create_container(request(
            CreateContainerRequest {
                pod_sandbox_id: pod_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox),
            },
            deadlines.long,
        )),
    )
    .await?;
    if reply.container_id.is_empty() {
        return Err(ClientError::BadReply(
            "CreateContainer returned an empty container ID".into(),
        ));
    }
    Ok(reply.container_id)
}

/// StartContainer for a full ID.
pub(super) async fn start_container(
    cri: &mut Cri,
    id: &str,
    deadlines: Deadlines,
) -> Result<(), ClientError> {
    call(
        "StartContainer",
        deadlines.long,
        cri.runtime.start_container(request(
            StartContainerRequest {
                container_id: id.to_string(),
            },
            deadlines.long,
        )),
    )
    .await?;
    Ok(())
}

/// `start`: starts created containers; prints each ID.
pub async fn start(
    cri: &mut Cri,
    ids: &[String],
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    for prefix in ids {
        let id = resolve_container(cri, prefix, deadlines.quick).await?;
        start_container(cri, &id, deadlines).await?;
        emit(out, &format!("{id}\n"))?;
    }
    Ok(())
}

async fn stop_container(
    cri: &mut Cri,
    id: &str,
    grace_secs: i64,
    deadlines: Deadlines,
) -> Result<(), ClientError> {
    // The RPC may take the whole grace period before its own work starts.
    let deadline = deadlines
        .long
        .map(|d| d + Duration::from_secs(grace_secs.max(0).unsigned_abs()) + RPC_MARGIN);
    call(
        "StopContainer",
        deadline,
        cri.runtime.stop_container(request(
            StopContainerRequest {
                container_id: id.to_string(),
                timeout: grace_secs,
            },
            deadline,
        )),
    )
    .await?;
    Ok(())
}

/// `stop`: stops containers, killing them after `grace_secs`; prints each ID.
pub async fn stop(
    cri: &mut Cri,
    ids: &[String],
    grace_secs: i64,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    for prefix in ids {
        let id = resolve_container(cri, prefix, deadlines.quick).await?;
        stop_container(cri, &id, grace_secs, deadlines).await?;
        emit(out, &format!("{id}\n"))?;
    }
    Ok(())
}

pub(super) async fn container_status(
    cri: &mut Cri,
    id: &str,
    verbose: bool,
    deadlines: Deadlines,
) -> Result<ContainerStatusResponse, ClientError> {
    call(
        "ContainerStatus",
        deadlines.quick,
        cri.runtime.container_status(request(
            ContainerStatusRequest {
                container_id: id.to_string(),
                verbose,
            },
            deadlines.quick,
        )),
    )
    .await
}

/// Removes a container's log file and its rotations (`<log>.*`), as crictl's `rm` does.
fn remove_logs(log_path: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let path = Path::new(log_path);
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|b| b.to_str())) else {
        return failures;
    };
    let rotation_prefix = format!("{base}.");
    let mut victims = vec![path.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        victims.extend(
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&rotation_prefix))
                })
                .map(|e| e.path()),
        );
    }
    for victim in victims {
        match std::fs::remove_file(&victim) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("{}: {e}", victim.display())),
        }
    }
    failures
}

/// How `rm` removes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RmOptions {
    /// Stop a running container first instead of refusing.
    pub force: bool,
    /// Remove every container (the IDs are ignored).
    pub all: bool,
    /// Keep the container's log file and its rotations.
    pub keep_logs: bool,
}

/// `rm`: removes containers; a running one only with `force` (stopped first).
/// Log files are removed too unless `keep_logs`, as crictl does; failures to
/// remove them are written to `warnings`.
pub async fn rm(
    cri: &mut Cri,
    ids: &[String],
    o: RmOptions,
    deadlines: Deadlines,
    out: &mut dyn Write,
    warnings: &mut dyn Write,
) -> Result<(), ClientError> {
    let RmOptions {
        force,
        all,
        keep_logs,
    } = o;
    let targets = if all {
        let every = PsOptions {
            all: true,
            ..Default::default()
        };
        list_containers(cri, &every, deadlines)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect()
    } else {
        let mut resolved = Vec::new();
        for prefix in ids {
            resolved.push(resolve_container(cri, prefix, deadlines.quick).await?);
        }
        resolved
    };
    for id in targets {
        let status = container_status(cri, &id, false, deadlines)
            .await?
            .status
            .unwrap_or_default();
        if status.state == ContainerState::ContainerRunning as i32 {
            if !force {
                return Err(ClientError::Refused(format!(
                    "container {id} is running, please stop it first (or use --force)"
                )));
            }
            stop_container(cri, &id, 0, deadlines).await?;
        }
        call(
            "RemoveContainer",
            deadlines.long,
            cri.runtime.remove_container(request(
                RemoveContainerRequest {
                    container_id: id.clone(),
                },
                deadlines.long,
            )),
        )
        .await?;
        if !keep_logs && !status.log_path.is_empty() {
            for failure in remove_logs(&status.log_path) {
                emit(
                    warnings,
                    &format!("warning: removing the log of {id}: {failure}\n"),
                )?;
            }
        }
        emit(out, &format!("{id}\n"))?;
    }
    Ok(())
}

/// `inspect`: crictl's status document of each container (an array if several).
pub async fn inspect(
    cri: &mut Cri,
    ids: &[String],
    format: Format,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut docs = Vec::new();
    for prefix in ids {
        let id = resolve_container(cri, prefix, deadlines.quick).await?;
        let reply = container_status(cri, &id, true, deadlines).await?;
        let status = reply
            .status
            .as_ref()
            .map(json::container_status)
            .ok_or_else(|| {
                ClientError::BadReply(format!("ContainerStatus of {id} has no status"))
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

/// `exec` (ExecSync): runs `cmd` in a container and returns its output and
/// exit code. `timeout_secs` 0 means no timeout, as in the kubelet.
pub async fn exec_sync(
    cri: &mut Cri,
    id: &str,
    cmd: &[String],
    timeout_secs: i64,
    deadlines: Deadlines,
) -> Result<ExecSyncResponse, ClientError> {
    if cmd.is_empty() {
        return Err(ClientError::Usage("exec needs a command".into()));
    }
    if timeout_secs < 0 {
        return Err(ClientError::Usage(format!(
            "--timeout {timeout_secs}: must be 0 (none) or a number of seconds"
        )));
    }
    let id = resolve_container(cri, id, deadlines.quick).await?;
    let deadline =
        (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs.unsigned_abs()) + RPC_MARGIN);
    call(
        "ExecSync",
        deadline,
        cri.runtime.exec_sync(request(
            ExecSyncRequest {
                container_id: id,
                cmd: cmd.to_vec(),
                timeout: timeout_secs,
            },
            deadline,
        )),
    )
    .await
}
