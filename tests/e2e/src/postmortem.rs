//! Saving the VMM's post-mortem (docs/operations.md, "Post-mortem") when a
//! test fails with a live VM: the `postmortem` control API request's answer,
//! plus the test host's kernel log tail in nested mode, written beside the
//! test's other logs, where tests/e2e/run.sh finds and names it.

use std::path::{Path, PathBuf};
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

/// The heading of the KVM trace section of a saved post-mortem.
pub const TRACE_HEADER: &str =
    "test host KVM trace of the VMM's threads, 2 s (kvm_exit, kvm_entry, kvm_inj_exception), last 300 lines";

/// How long the trace runs, and how much of it is kept.
const TRACE_SPAN: Duration = Duration::from_secs(2);
const TRACE_LINES: usize = 300;

/// The test host's KVM tracepoints for the VMM's threads (`pid`'s tasks)
/// over [`TRACE_SPAN`]: what a stuck guest keeps doing (exits, injected
/// exceptions). Turned on only now, so it costs the tests nothing, and
/// only in the nested test host, whose tracing is the tests' own.
fn kvm_trace(pid: u32) -> String {
    let t = std::path::Path::new("/sys/kernel/tracing");
    if !t.join("events/kvm").exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev"])
            .arg(t)
            .output();
    }
    if !t.join("events/kvm").exists() {
        return "no KVM tracepoints (tracefs or the kvm events are missing)".into();
    }
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if tids.is_empty() {
        return format!("no threads of pid {pid}: the VMM is gone");
    }
    let set = |file: &str, value: &str| std::fs::write(t.join(file), value);
    let events = ["kvm_exit", "kvm_entry", "kvm_inj_exception"];
    let run = || -> std::io::Result<String> {
        set("tracing_on", "0")?;
        set("trace", "")?;
        set("buffer_size_kb", "1024")?;
        set("set_event_pid", &tids.join(" "))?;
        for e in events {
            set(&format!("events/kvm/{e}/enable"), "1")?;
        }
        set("tracing_on", "1")?;
        std::thread::sleep(TRACE_SPAN);
        set("tracing_on", "0")?;
        let text = std::fs::read_to_string(t.join("trace"))?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        Ok(format!(
            "{} events; the last:\n{}",
            lines.len(),
            lines[lines.len().saturating_sub(TRACE_LINES)..].join("\n")
        ))
    };
    let result = run().unwrap_or_else(|e| format!("tracing failed: {e}"));
    for e in events {
        let _ = set(&format!("events/kvm/{e}/enable"), "0");
    }
    let _ = set("set_event_pid", "");
    let _ = set("trace", "");
    result
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
    write(&name, &answer.to_string(), vm.pid())
}

/// Writes one post-mortem file (the VMM's answer, the test host's kernel
/// log and, in nested mode, its KVM trace of `pid`) and prints its path
/// with [`SAVED_MARKER`].
fn write(name: &str, answer: &str, pid: Option<u32>) -> Result<PathBuf, String> {
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.txt"));
    let mode = std::env::var("VESSEL_KVM_HOST_ACTIVE_MODE").unwrap_or_default();
    let trace = match pid {
        Some(pid) if mode == "nested" => kvm_trace(pid),
        Some(_) => format!(
            "not taken in {mode} mode: only the nested test host's tracing is ours to change"
        ),
        None => "not taken: the VMM's pid is unknown".into(),
    };
    let text = format!(
        "# vessel-vmm post-mortem of {name} (docs/operations.md, \"Post-mortem\")\n\
         {answer}\n\
         # test host ({mode}) kernel log, last 100 lines\n{}\n\
         # {TRACE_HEADER}\n{trace}\n",
        dmesg_tail(100)
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("{SAVED_MARKER}{}", path.display());
    Ok(path)
}

/// What a VMM writes to its log on SIGUSR1, before the post-mortem itself.
const SIGNALLED_MARKER: &str = "post-mortem (SIGUSR1): ";

/// Post-mortems of the pod VMMs of the vesseld whose dir is `vesseld_dir`
/// (pods started through the CRI have no control API socket): each running
/// `vessel-vmm` whose command line names a pod there gets SIGUSR1, writes
/// its post-mortem to the pod's `vmm.log`, and that is saved as [`save`]
/// saves one. Returns, per pod, the file or why there is none.
pub fn save_pods(vesseld_dir: &Path) -> Vec<Result<PathBuf, String>> {
    let pods = vesseld_dir.join("state").join("pods");
    let Ok(entries) = std::fs::read_dir(&pods) else {
        return vec![Err(format!("no pods under {}", pods.display()))];
    };
    entries
        .flatten()
        .map(|pod| {
            let id = pod.file_name().to_string_lossy().into_owned();
            save_pod(&id, &pod.path().join("vmm.log"))
        })
        .collect()
}

/// Signals pod `id`'s VMM and saves the post-mortem it logs to `log`.
fn save_pod(id: &str, log: &Path) -> Result<PathBuf, String> {
    let pid = vmm_pid_naming(id).ok_or_else(|| format!("pod {id}: no running vessel-vmm"))?;
    let seen = std::fs::metadata(log).map_or(0, |m| m.len());
    // SAFETY: kill(2) has no memory effects; the pid was read just now.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) } != 0 {
        return Err(format!(
            "pod {id}: SIGUSR1 to {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        // The log is capped: when it dropped its older half, it is shorter
        // than before and the dump is somewhere in what is left.
        let from = if (text.len() as u64) < seen {
            0
        } else {
            seen as usize
        };
        let new = String::from_utf8_lossy(&text[from..]).into_owned();
        if let Some(at) = new.rfind(SIGNALLED_MARKER) {
            let dump = new[at + SIGNALLED_MARKER.len()..]
                .lines()
                .next()
                .unwrap_or("");
            return write(&format!("pod-{id}"), dump, Some(pid));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "pod {id}: no post-mortem in {} within {ANSWER_TIMEOUT:?} of SIGUSR1",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pid of the running `vessel-vmm` whose command line mentions `id`.
fn vmm_pid_naming(id: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        // comm first: reading a process's cmdline takes its mmap lock,
        // which a wedged process may hold.
        let comm = std::fs::read_to_string(p.path().join("comm")).ok()?;
        if comm.trim() != "vessel-vmm" {
            return None;
        }
        let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(id)
            .then_some(pid)
    })
}
