//! `process.oomScoreAdj`: written for the container's init before its exec, so
//! the process and everything it starts inherit it.

use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::error::EngineError;

/// The kernel's range for `oom_score_adj`.
const RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// The spec's `oomScoreAdj`, checked; `None` if unset.
pub fn from_spec(spec: &Spec) -> Result<Option<i32>, EngineError> {
    let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) else {
        return Ok(None);
    };
    if RANGE.contains(&adj) {
        Ok(Some(adj))
    } else {
        Err(EngineError::InvalidArgument(format!(
            "oci_spec_json.process.oomScoreAdj {adj} is outside -1000..=1000"
        )))
    }
}

/// Writes `adj` to `/proc/<pid>/oom_score_adj`.
pub fn apply(pid: Pid, adj: i32) -> Result<(), EngineError> {
    let path = format!("/proc/{pid}/oom_score_adj");
    std::fs::write(&path, adj.to_string()).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (lowering it needs CAP_SYS_RESOURCE, which this agent lacks)"
        } else {
            ""
        };
        EngineError::FailedPrecondition(format!(
            "oci_spec_json.process.oomScoreAdj {adj}: cannot write {path}: {e}{hint}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(adj: i32) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": { "args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "oomScoreAdj": adj }
        }))
        .expect("spec")
    }

    #[test]
    fn the_range_is_checked() {
        assert_eq!(from_spec(&spec(500)).ok(), Some(Some(500)));
        assert_eq!(from_spec(&spec(-1000)).ok(), Some(Some(-1000)));
        let err = from_spec(&spec(1001)).expect_err("out of range");
        assert!(err.to_string().contains("process.oomScoreAdj"), "{err}");
    }
}
