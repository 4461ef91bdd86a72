//! Resolving ID prefixes client side, as `docker`/`crictl` users expect:
//! an exact ID wins, else exactly one ID must start with the prefix.

use k8s_cri::v1::{
    ContainerFilter, ListContainersRequest, ListPodSandboxRequest, PodSandboxFilter,
};

use crate::connect::{call, request, Cri};
use crate::error::ClientError;
use std::time::Duration;

/// How many matches an "ambiguous" error lists.
const AMBIGUOUS_EXAMPLES: usize = 3;

/// Picks the one ID in `ids` that equals or starts with `prefix`.
pub fn resolve_id<'a, I>(kind: &'static str, prefix: &str, ids: I) -> Result<String, ClientError>
where
    I: IntoIterator<Item = &'a str>,
{
    if prefix.is_empty() {
        return Err(ClientError::Usage(format!("{kind} ID cannot be empty")));
    }
    let mut matches: Vec<&str> = Vec::new();
    for id in ids {
        if id == prefix {
            return Ok(id.to_string());
        }
        if id.starts_with(prefix) && !matches.contains(&id) {
            matches.push(id);
        }
    }
    match matches.as_slice() {
        [] => Err(ClientError::NotFound {
            kind,
            id: prefix.to_string(),
        }),
        [one] => Ok(one.to_string()),
        many => Err(ClientError::Ambiguous {
            kind,
            id: prefix.to_string(),
            count: many.len(),
            examples: many
                .iter()
                .take(AMBIGUOUS_EXAMPLES)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Resolves a pod sandbox ID prefix against the runtime's pod list.
pub async fn resolve_pod(
    cri: &mut Cri,
    prefix: &str,
    deadline: Option<Duration>,
) -> Result<String, ClientError> {
    let list = call(
        "ListPodSandbox",
        deadline,
        cri.runtime.list_pod_sandbox(request(
            ListPodSandboxRequest {
                filter: Some(PodSandboxFilter::default()),
            },
            deadline,
        )),
    )
    .await?;
    resolve_id("pod", prefix, list.items.iter().map(|p| p.id.as_str()))
}

/// Resolves a container ID prefix against the runtime's container list.
pub async fn resolve_container(
    cri: &mut Cri,
    prefix: &str,
    deadline: Option<Duration>,
) -> Result<String, ClientError> {
    let list = call(
        "ListContainers",
        deadline,
        cri.runtime.list_containers(request(
            ListContainersRequest {
                filter: Some(ContainerFilter::default()),
            },
            deadline,
        )),
    )
    .await?;
    resolve_id(
        "container",
        prefix,
        list.containers.iter().map(|c| c.id.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 4] = ["abc123", "abd456", "abc", "ffff00"];

    #[test]
    fn exact_match_wins_over_longer_ids() {
        assert_eq!(resolve_id("pod", "abc", IDS).unwrap(), "abc");
    }

    #[test]
    fn unique_prefix_resolves() {
        assert_eq!(resolve_id("pod", "abd", IDS).unwrap(), "abd456");
        assert_eq!(resolve_id("pod", "f", IDS).unwrap(), "ffff00");
    }

    #[test]
    fn ambiguous_prefix_lists_matches() {
        let err = resolve_id("container", "ab", IDS).unwrap_err().to_string();
        assert!(
            err.contains("ambiguous") && err.contains("3 containers"),
            "{err}"
        );
        assert!(err.contains("abc123") && err.contains("abd456"), "{err}");
    }

    #[test]
    fn no_match_and_empty_prefix_are_errors() {
        let err = resolve_id("pod", "zz", IDS).unwrap_err().to_string();
        assert_eq!(err, "no pod matches ID \"zz\"");
        assert!(resolve_id("pod", "", IDS)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }
}
