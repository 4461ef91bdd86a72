//! The seccomp filters as the VMM installs them: a syscall the vCPU role
//! does not allow kills the whole process with SIGSYS (checked in a child
//! process: this test binary re-runs itself), and every thread of a running
//! VMM is filtered. The second test needs /dev/kvm (not a Linux guest).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vessel_vmm::exit::ExitLatch;
use vessel_vmm::seccomp::{self, Filters, Mode, Role};

mod common;

use common::{kvm_available, wait_for_guest_entry, Scratch, SPIN};

/// Names the case a re-run of this binary performs in `child_case`.
const CASE_ENV: &str = "VESSEL_VMM_SECCOMP_CASE";

fn run_case(case: &str) -> ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_case", "--nocapture", "--test-threads=1"])
        .env(CASE_ENV, case)
        .stdout(Stdio::null())
        .status()
        .unwrap()
}

/// In a child: activates the filters as the VMM does, enters the vCPU role
/// on a new thread and makes one syscall from there.
#[test]
fn child_case() {
    let Ok(case) = std::env::var(CASE_ENV) else {
        return; // not a child
    };
    let mode = if case == "log" { Mode::Log } else { Mode::Kill };
    let filters = Filters::compile(mode).unwrap().unwrap();
    filters.activate(Arc::new(ExitLatch::new())).unwrap();
    let worked = std::thread::spawn(move || {
        seccomp::enter(Role::Vcpu).unwrap();
        // SAFETY: plain syscalls; results are only inspected.
        unsafe {
            match case.as_str() {
                "socket" | "log" => {
                    let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                    fd >= 0
                }
                "execve" => {
                    let path = c"/bin/true".as_ptr();
                    let argv = [path, std::ptr::null()];
                    libc::execve(path, argv.as_ptr(), std::ptr::null());
                    false
                }
                // Allowed: a lock, a log line, an eventfd write, thread exit.
                _ => {
                    let m = std::sync::Mutex::new(1);
                    *m.lock().unwrap() += 1;
                    eprintln!("vcpu thread still alive");
                    let efd = libc::eventfd(0, 0);
                    efd >= 0 && libc::write(efd, [1u64].as_ptr().cast(), 8) == 8
                }
            }
        }
    })
    .join()
    .unwrap();
    std::process::exit(if worked { 0 } else { 1 });
}

#[test]
fn a_forbidden_syscall_on_a_vcpu_thread_kills_the_process() {
    for case in ["socket", "execve"] {
        let status = run_case(case);
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{case}: {status}");
    }
}

#[test]
fn allowed_syscalls_pass_and_log_mode_only_logs() {
    let status = run_case("allowed");
    assert!(status.success(), "allowed: {status}");
    // The eventfd creation above is a vCPU syscall (device activation);
    // socket(AF_INET) is not, but `log` lets it through.
    let status = run_case("log");
    assert!(status.success(), "log: {status}");
}

/// A field of a thread's status; None once the thread is gone (API client
/// threads come and go).
fn status_field(pid: u32, tid: &str, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// Kills the VMM if the test fails before it stops.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every thread of a running VMM is in seccomp filter mode: main,
/// signals, api, launcher and the vCPUs.
#[test]
fn every_vmm_thread_is_filtered() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("seccomp-threads");
    let kernel = dir.guest("spin.elf", &SPIN, true);
    let api = dir.path("api.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64", "--cpus", "2", "--console", "none"])
        .arg("--api")
        .arg(&api)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    wait_for_guest_entry(&api);
    // The main thread installs its filter right after starting the vCPUs;
    // give it a bounded moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let names = loop {
        let mut names = Vec::new();
        let mut unfiltered = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let tid = task.unwrap().file_name().into_string().unwrap();
            let (Some(name), Some(mode)) = (
                status_field(pid, &tid, "Name"),
                status_field(pid, &tid, "Seccomp"),
            ) else {
                continue;
            };
            if mode != "2" {
                unfiltered.push(name.clone());
            }
            names.push(name);
        }
        if unfiltered.is_empty() {
            break names;
        }
        assert!(
            Instant::now() < deadline,
            "unfiltered threads: {unfiltered:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    for want in ["vessel-vmm", "signals", "api", "launcher", "vcpu0", "vcpu1"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in {names:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let stop = common::api_request(&api, r#"{"op":"stop"}"#, deadline);
    assert!(stop.get("error").is_none(), "{stop}");
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{status}");
}
