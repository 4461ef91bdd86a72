//! What the error stream carries when the process ends.

use serde_json::json;

use crate::runtime::RuntimeError;

/// How a process ended, as the streaming server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code.
    Exited(i32),
    /// The runtime failed.
    Failed(RuntimeError),
}

/// The v4+ error stream payload: a JSON `metav1.Status` as the kubelet writes it.
///
/// client-go turns `NonZeroExitCode` with an `ExitCode` cause into `exec.CodeExitError`,
/// which is how `kubectl exec` returns the remote exit code.
pub fn v4_status(outcome: &Outcome) -> Vec<u8> {
    let value = match outcome {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(error) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {error}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": error.to_string()}]},
            "code": 500,
        }),
    };
    // Serializing a json! value cannot fail.
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The v1–v3 error stream payload: nothing on success, else the error text.
pub fn text_status(outcome: &Outcome) -> Vec<u8> {
    match outcome {
        Outcome::Exited(0) => Vec::new(),
        Outcome::Exited(code) => {
            format!("command terminated with non-zero exit code: exit status {code}").into_bytes()
        }
        Outcome::Failed(error) => error.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn success_is_a_bare_success_status() {
        assert_eq!(
            parse(v4_status(&Outcome::Exited(0))),
            json!({"metadata": {}, "status": "Success"})
        );
        assert!(text_status(&Outcome::Exited(0)).is_empty());
    }

    #[test]
    fn a_non_zero_exit_carries_the_code_as_client_go_reads_it() {
        let status = parse(v4_status(&Outcome::Exited(42)));
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "42");
    }

    #[test]
    fn a_runtime_failure_is_an_internal_error() {
        let status = parse(v4_status(&Outcome::Failed(RuntimeError::new(
            "no such container",
        ))));
        assert_eq!(status["reason"], "InternalError");
        assert!(status["message"]
            .as_str()
            .unwrap()
            .contains("no such container"));
        assert_eq!(
            text_status(&Outcome::Failed(RuntimeError::new("boom"))),
            b"boom"
        );
    }
}
