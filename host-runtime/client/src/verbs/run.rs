//! `run`: pull if missing, run the pod, create and start the container.

use std::io::Write;
use std::path::PathBuf;

use super::{emit, Deadlines};
use crate::config::{load_container_config, load_pod_config};
use crate::connect::Cri;
use crate::error::ClientError;

/// What `run` needs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The container config file.
    pub container_config: PathBuf,
    /// The pod config file.
    pub pod_config: PathBuf,
    /// The runtime handler for the pod (empty: the runtime's default).
    pub runtime_handler: String,
    /// Do not pull the image even if the runtime does not have it.
    pub no_pull: bool,
    /// Registry credentials `USER[:PASSWORD]` for the pull.
    pub creds: Option<String>,
    /// Registry auth string (base64 `USER:PASSWORD`) for the pull.
    pub auth: Option<String>,
}

/// `run`: prints and returns the new container's ID. If a step after the pod
/// was made fails, the pod is stopped and removed again (nothing is left
/// behind), and the step's error is returned.
pub async fn run(
    cri: &mut Cri,
    o: &RunOptions,
    deadlines: Deadlines,
    out: &mut dyn Write,
) -> Result<String, ClientError> {
    let config = load_container_config(&o.container_config)?;
    let sandbox = load_pod_config(&o.pod_config)?;
    let image = config.image.clone().unwrap_or_default().image;
    if !o.no_pull {
        let present = super::images::image_status(cri, &image, false, deadlines)
            .await?
            .image
            .is_some();
        if !present {
            let auth = super::images::auth_config(o.creds.as_deref(), o.auth.as_deref())?;
            super::images::pull_image(cri, &image, auth, Some(sandbox.clone()), deadlines).await?;
        }
    }
    let pod_id = super::pods::run_pod(cri, sandbox.clone(), &o.runtime_handler, deadlines).await?;
    let started = async {
        let id =
            super::containers::create_container(cri, &pod_id, config, sandbox, deadlines).await?;
        super::containers::start_container(cri, &id, deadlines).await?;
        Ok::<_, ClientError>(id)
    }
    .await;
    match started {
        Ok(id) => {
            emit(out, &format!("{id}\n"))?;
            Ok(id)
        }
        Err(err) => {
            // Roll back the pod; its removal also removes a created container.
            let rollback = match super::pods::stop_pod(cri, &pod_id, deadlines).await {
                Ok(()) => super::pods::remove_pod(cri, &pod_id, deadlines).await,
                Err(e) => Err(e),
            };
            match rollback {
                Ok(()) => Err(err),
                Err(rollback) => Err(ClientError::RollbackFailed {
                    error: Box::new(err),
                    pod: pod_id,
                    rollback: Box::new(rollback),
                }),
            }
        }
    }
}
