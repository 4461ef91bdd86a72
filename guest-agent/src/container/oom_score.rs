//! `process.oomScoreAdj`: written for each new process before its exec, so
//! it and everything it starts inherit it. Always written, default 0: the
//! agent as PID 1 runs at -1000 (see [`protect_agent`]), which its
//! children must not inherit.

use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::error::EngineError;

/// The kernel's range for `oom_score_adj`.
const RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// What a process gets when nothing says otherwise (the kernel's default).
pub const DEFAULT: i32 = 0;

/// The agent's own score: the OOM killer never picks it, since the pod
/// dies with it; the guest's memory limit is for the containers.
const AGENT: i32 = -1000;

/// The spec's `oomScoreAdj`, checked; `None` if unset. `field` names the
/// spec's `process` in the request, for the error.
pub fn from_spec(spec: &Spec, field: &str) -> Result<Option<i32>, EngineError> {
    let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) else {
        return Ok(None);
    };
    if RANGE.contains(&adj) {
        Ok(Some(adj))
    } else {
        Err(EngineError::InvalidArgument(format!(
            "{field}.oomScoreAdj {adj} is outside -1000..=1000"
        )))
    }
}

/// Makes the calling process (the agent as PID 1) the OOM killer's last
/// choice.
pub fn protect_agent() -> std::io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", AGENT.to_string())
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
            "process.oomScoreAdj {adj}: cannot write {path}: {e}{hint}"
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
        let field = "oci_spec_json.process";
        assert_eq!(from_spec(&spec(500), field).ok(), Some(Some(500)));
        assert_eq!(from_spec(&spec(-1000), field).ok(), Some(Some(-1000)));
        let err = from_spec(&spec(1001), field).expect_err("out of range");
        assert!(
            err.to_string()
                .contains("oci_spec_json.process.oomScoreAdj"),
            "{err}"
        );
    }
}
