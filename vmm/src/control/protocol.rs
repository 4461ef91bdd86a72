//! The control API's wire format: one JSON request per line, one JSON
//! response line each. Successes carry their result fields; failures are
//! `{"error": "..."}`. See `docs/vmm-api.md`.

use serde_json::{json, Map, Value};

/// Longest request line accepted, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// The operations, in the order the error message lists them.
const OPS: &str = "info, pause, resume, shutdown, stop, counters, postmortem";

/// A parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Configuration, devices, state and timings.
    Info,
    /// Park every vCPU.
    Pause,
    /// Unpark every vCPU.
    Resume,
    /// Graceful stop: ctrl-alt-del to the guest, which shuts down and resets
    /// (the VMM then exits with code 0).
    Shutdown,
    /// Hard stop; the VMM exits with code 3.
    Stop,
    /// VM exits by reason and device byte counts.
    Counters,
    /// The post-mortem: vCPU registers and states, virtio transports,
    /// exit counters, timeline, console tail.
    Postmortem,
}

/// What the VM offers the API; the server dispatches requests to it.
pub trait Controller: Send + Sync {
    /// The `info` result.
    fn info(&self) -> Value;
    /// Pauses the vCPUs; the result or why it failed.
    fn pause(&self) -> Result<Value, String>;
    /// Resumes the vCPUs; the result or why it failed.
    fn resume(&self) -> Result<Value, String>;
    /// The `counters` result.
    fn counters(&self) -> Value;
    /// The `postmortem` result.
    fn postmortem(&self) -> Value;
    /// Asks the guest to shut down; the result or why it failed.
    fn shutdown(&self) -> Result<Value, String>;
    /// Stops the VM (called after the response went out).
    fn stop(&self);
}

/// Parses one request line (without its newline).
pub fn parse(line: &[u8]) -> Result<Request, String> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| format!("request is not valid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("request must be a JSON object such as {\"op\":\"info\"}".into());
    };
    let op = match obj.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err("\"op\" must be a string".into()),
        None => return Err(format!("request lacks \"op\" (one of: {OPS})")),
    };
    if let Some(field) = obj.keys().next() {
        return Err(format!("unknown field {field:?} in {op:?} request"));
    }
    match op.as_str() {
        "info" => Ok(Request::Info),
        "pause" => Ok(Request::Pause),
        "resume" => Ok(Request::Resume),
        "shutdown" => Ok(Request::Shutdown),
        "stop" => Ok(Request::Stop),
        "counters" => Ok(Request::Counters),
        "postmortem" => Ok(Request::Postmortem),
        _ => Err(format!("unknown op {op:?} (one of: {OPS})")),
    }
}

/// An error response line.
pub fn error(message: &str) -> String {
    json!({ "error": message }).to_string()
}

/// Answers one request line: the response line (without newline) and
/// whether the caller must call [`Controller::stop`] once it is sent.
pub fn handle(line: &[u8], ctl: &dyn Controller) -> (String, bool) {
    let request = match parse(line) {
        Ok(r) => r,
        Err(e) => return (error(&e), false),
    };
    let result = match request {
        Request::Info => Ok(ctl.info()),
        Request::Pause => ctl.pause(),
        Request::Resume => ctl.resume(),
        Request::Counters => Ok(ctl.counters()),
        Request::Postmortem => Ok(ctl.postmortem()),
        Request::Shutdown => ctl.shutdown(),
        Request::Stop => Ok(json!({ "state": "stopping" })),
    };
    match result {
        Ok(v) => (to_line(v), request == Request::Stop),
        Err(e) => (error(&e), false),
    }
}

/// Serialises a result; a non-object result is wrapped as `{"result": ...}`
/// so every response is an object.
fn to_line(v: Value) -> String {
    match v {
        Value::Object(_) => v.to_string(),
        other => {
            let mut m = Map::new();
            m.insert("result".into(), other);
            Value::Object(m).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct Fake {
        paused: AtomicBool,
        stopped: AtomicBool,
    }

    impl Controller for Fake {
        fn info(&self) -> Value {
            json!({ "state": if self.paused.load(Ordering::SeqCst) { "paused" } else { "running" } })
        }
        fn pause(&self) -> Result<Value, String> {
            self.paused.store(true, Ordering::SeqCst);
            Ok(json!({ "state": "paused" }))
        }
        fn resume(&self) -> Result<Value, String> {
            Err("the VM is stopping".into())
        }
        fn counters(&self) -> Value {
            json!({ "exits": { "total": 7 } })
        }
        fn postmortem(&self) -> Value {
            json!({ "vcpus": [] })
        }
        fn shutdown(&self) -> Result<Value, String> {
            Ok(json!({ "state": "shutting_down" }))
        }
        fn stop(&self) {
            self.stopped.store(true, Ordering::SeqCst);
        }
    }

    fn answer(line: &str) -> (Value, bool) {
        let fake = Fake::default();
        let (resp, stop) = handle(line.as_bytes(), &fake);
        assert!(!resp.contains('\n'), "one line: {resp}");
        (serde_json::from_str(&resp).unwrap(), stop)
    }

    fn error_of(line: &str) -> String {
        let (v, stop) = answer(line);
        assert!(!stop);
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error for {line}: {v}"))
            .to_string()
    }

    #[test]
    fn every_op_parses() {
        for (line, want) in [
            (r#"{"op":"info"}"#, Request::Info),
            (r#" {"op": "pause"} "#, Request::Pause),
            (r#"{"op":"resume"}"#, Request::Resume),
            (r#"{"op":"shutdown"}"#, Request::Shutdown),
            (r#"{"op":"stop"}"#, Request::Stop),
            (r#"{"op":"counters"}"#, Request::Counters),
            (r#"{"op":"postmortem"}"#, Request::Postmortem),
        ] {
            assert_eq!(parse(line.as_bytes()), Ok(want), "{line}");
        }
    }

    #[test]
    fn bad_requests_name_the_problem() {
        assert!(error_of("hello").starts_with("request is not valid JSON"));
        assert!(error_of("{\"op\":\"info\"").starts_with("request is not valid JSON"));
        assert!(error_of("\u{fffd}\u{0}").starts_with("request is not valid JSON"));
        assert!(error_of("[1,2]").starts_with("request must be a JSON object"));
        assert!(error_of("{}").starts_with("request lacks \"op\""));
        assert_eq!(error_of(r#"{"op":7}"#), "\"op\" must be a string");
        assert_eq!(
            error_of(r#"{"op":"reboot"}"#),
            "unknown op \"reboot\" (one of: info, pause, resume, shutdown, stop, counters, postmortem)"
        );
        assert_eq!(
            error_of(r#"{"op":"info","verbose":true}"#),
            "unknown field \"verbose\" in \"info\" request"
        );
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        let fake = Fake::default();
        let (resp, stop) = handle(b"{\"op\":\"\xff\xfe\"}", &fake);
        assert!(!stop);
        assert!(resp.contains("not valid JSON"), "{resp}");
    }

    #[test]
    fn dispatch_reaches_the_controller() {
        let fake = Fake::default();
        let (resp, stop) = handle(br#"{"op":"pause"}"#, &fake);
        assert_eq!(resp, r#"{"state":"paused"}"#);
        assert!(!stop);
        assert!(fake.paused.load(Ordering::SeqCst));
        let (resp, _) = handle(br#"{"op":"info"}"#, &fake);
        assert_eq!(resp, r#"{"state":"paused"}"#);
        assert_eq!(answer(r#"{"op":"counters"}"#).0["exits"]["total"], 7);
        assert!(answer(r#"{"op":"postmortem"}"#).0["vcpus"].is_array());
        assert_eq!(error_of(r#"{"op":"resume"}"#), "the VM is stopping");
    }

    #[test]
    fn stop_answers_first_and_leaves_the_stop_to_the_caller() {
        let fake = Fake::default();
        let (resp, stop) = handle(br#"{"op":"stop"}"#, &fake);
        assert_eq!(resp, r#"{"state":"stopping"}"#);
        assert!(stop);
        assert!(!fake.stopped.load(Ordering::SeqCst));
    }

    #[test]
    fn shutdown_answers_without_stopping() {
        let fake = Fake::default();
        let (resp, stop) = handle(br#"{"op":"shutdown"}"#, &fake);
        assert_eq!(resp, r#"{"state":"shutting_down"}"#);
        assert!(!stop);
        assert!(!fake.stopped.load(Ordering::SeqCst));
    }

    #[test]
    fn non_object_results_are_wrapped() {
        assert_eq!(to_line(json!(3)), r#"{"result":3}"#);
    }
}
