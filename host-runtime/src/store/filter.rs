//! The filters of `ListPodSandbox` and `ListContainers`.

use std::collections::{BTreeMap, HashMap};

use super::records::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};

/// Which sandboxes `ListPodSandbox` wants; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    /// An id or a prefix of one (as crictl users type them).
    pub id: String,
    /// Only this state.
    pub state: Option<SandboxState>,
    /// Every one of these labels, with these values.
    pub labels: BTreeMap<String, String>,
}

impl SandboxFilter {
    /// From the CRI filter (an unknown state number matches nothing).
    pub fn from_cri(filter: Option<&k8s_cri::v1::PodSandboxFilter>) -> Self {
        let Some(f) = filter else {
            return Self::default();
        };
        let raw = f.state.as_ref().map(|s| s.state);
        let mut out = SandboxFilter {
            id: f.id.clone(),
            state: raw.map(|s| SandboxState::from_cri(s).unwrap_or(SandboxState::NotReady)),
            labels: sorted(&f.label_selector),
        };
        if raw.is_some_and(|s| SandboxState::from_cri(s).is_none()) {
            out.id = NO_ID.to_string();
        }
        out
    }

    /// Whether a sandbox matches.
    pub fn matches(&self, s: &SandboxRecord) -> bool {
        s.id.starts_with(&self.id)
            && self.state.is_none_or(|st| st == s.state)
            && labels_match(&self.labels, &s.labels)
    }
}

/// Which containers `ListContainers` wants; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    /// An id or a prefix of one.
    pub id: String,
    /// A sandbox id or a prefix of one.
    pub sandbox_id: String,
    /// Only this state.
    pub state: Option<ContainerState>,
    /// Every one of these labels, with these values.
    pub labels: BTreeMap<String, String>,
}

impl ContainerFilter {
    /// From the CRI filter (an unknown state number matches nothing).
    pub fn from_cri(filter: Option<&k8s_cri::v1::ContainerFilter>) -> Self {
        let Some(f) = filter else {
            return Self::default();
        };
        let raw = f.state.as_ref().map(|s| s.state);
        let mut out = ContainerFilter {
            id: f.id.clone(),
            sandbox_id: f.pod_sandbox_id.clone(),
            state: raw.map(|s| ContainerState::from_cri(s).unwrap_or(ContainerState::Unknown)),
            labels: sorted(&f.label_selector),
        };
        if raw.is_some_and(|s| ContainerState::from_cri(s).is_none()) {
            out.id = NO_ID.to_string();
        }
        out
    }

    /// Whether a container matches.
    pub fn matches(&self, c: &ContainerRecord) -> bool {
        c.id.starts_with(&self.id)
            && c.sandbox_id.starts_with(&self.sandbox_id)
            && self.state.is_none_or(|st| st == c.state)
            && labels_match(&self.labels, &c.labels)
    }
}

/// An id prefix no generated id has (ids are hex): matches nothing.
const NO_ID: &str = "-";

fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Equality-based selector: every wanted label is there with that value.
fn labels_match(wanted: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| have.get(k) == Some(v))
}
