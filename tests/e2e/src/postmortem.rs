//! Saving the VMM's post-mortem (docs/operations.md, "Post-mortem") when a
//! test fails with a live VM: the `postmortem` control API request's answer,
//! plus the test host's kernel log tail in nested mode, written beside the
//! test's other logs, where tests/e2e/run.sh finds and names it.

use std::path::PathBuf;
use std::time::Duration;

use vessel_host_runtime::vm::VmProcess;

use vessel_vmm_api::{ApiClient, Request};

/// What run.sh looks for in a test's output to name the file in its summary.
pub const SAVED_MARKER: &str = "e2e: post-mortem saved to ";

/// How long the VMM may take to answer (it waits at most ~1 s for its
/// vCPUs; the rest is a slow nested host).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Where post-mortems go: the kvm-host run dir (kept when a test fails,
/// written through to the host in nested mode), else a temp dir.
fn dir() -> PathBuf {
    match std::env::var_os("VESSEL_KVM_HOST_RUN_DIR") {
        Some(d) => PathBuf::from(d).join("postmortem"),
        None => std::env::temp_dir().join("vessel-e2e-postmortem"),
    }
}

/// The last lines of this host's kernel log (the nested test host's, when
/// the test runs there), or why there are none.
fn dmesg_tail(lines: usize) -> String {
    match std::process::Command::new("dmesg").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Ok(out) => format!("dmesg failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => format!("cannot run dmesg: {e}"),
    }
}

/// Asks `vm`'s VMM for its post-mortem and saves it; returns the file, or
/// why there is none (no API socket, the VMM is gone, no answer). Prints
/// the path with [`SAVED_MARKER`].
pub fn save(vm: &VmProcess) -> Result<PathBuf, String> {
    let config = vm.config();
    if !config.api_socket {
        return Err("no control API socket (api_socket is off)".into());
    }
    let api = config.api_path();
    if !api.exists() {
        return Err(format!("{} is gone (the VMM has exited)", api.display()));
    }
    let answer = ApiClient::new(&api, ANSWER_TIMEOUT)
        .call(Request::Postmortem)
        .map_err(|e| format!("postmortem request to {}: {e}", api.display()))?;
    let name = config
        .state_dir
        .file_name()
        .map_or_else(|| "vm".into(), |n| n.to_string_lossy().into_owned());
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.txt"));
    let mode = std::env::var("VESSEL_KVM_HOST_ACTIVE_MODE").unwrap_or_default();
    let text = format!(
        "# vessel-vmm post-mortem of {name} (docs/operations.md, \"Post-mortem\")\n\
         {answer}\n\
         # test host ({mode}) kernel log, last 100 lines\n{}\n",
        dmesg_tail(100)
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("{SAVED_MARKER}{}", path.display());
    Ok(path)
}
