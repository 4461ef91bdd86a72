//! The post-mortem of the `vessel-vmm` binary with tiny hand-made guests on
//! the host's /dev/kvm (no Linux guest needed; skipped without /dev/kvm):
//! through the control API (running, halted, paused and not-yet-started
//! vCPUs) and on SIGUSR1, into the VMM's log; and the boot timeline.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{api_request, kvm_available, serial_hi, wait_for_guest_entry, Scratch, ENTRY};

/// `1: out 0x80, al; jmp 1b`: a VM exit on every turn.
const IO_LOOP: [u8; 4] = [0xe6, 0x80, 0xeb, 0xfc];
/// `cli; 1: hlt; jmp 1b`: halted for good, with interrupts off.
const HALT: [u8; 4] = [0xfa, 0xf4, 0xeb, 0xfd];

struct Vmm {
    child: Child,
    api: PathBuf,
}

impl Vmm {
    fn start(dir: &Scratch, name: &str, code: &[u8], cpus: &str) -> Vmm {
        Vmm::start_logging(dir, name, code, cpus, "warn")
    }

    fn start_logging(dir: &Scratch, name: &str, code: &[u8], cpus: &str, log: &str) -> Vmm {
        let kernel = dir.guest(&format!("{name}.elf"), code, true);
        let api = dir.path(&format!("{name}.sock"));
        let child = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
            .arg("--kernel")
            .arg(&kernel)
            .args(["--memory", "64", "--console", "none", "--cpus", cpus])
            .arg("--api")
            .arg(&api)
            .env("VESSEL_VMM_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Vmm { child, api }
    }

    fn ask(&self, op: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        api_request(&self.api, &format!("{{\"op\":\"{op}\"}}"), deadline)
    }

    /// Asks for post-mortems until `ok` accepts one (the guest may not have
    /// reached the state under test yet).
    fn postmortem_until(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pm = self.ask("postmortem");
            if ok(&pm) {
                return pm;
            }
            assert!(Instant::now() < deadline, "never {what}: {pm:#}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig`, waits for the exit and returns the code and stderr.
    fn stop_with(mut self, sig: libc::c_int) -> (i32, String) {
        // SAFETY: plain syscall on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no exit");
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code().unwrap_or(-1), err)
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rip(vcpu: &Value) -> u64 {
    let s = vcpu["regs"]["rip"]
        .as_str()
        .unwrap_or_else(|| panic!("{vcpu}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn postmortem_of_a_running_then_paused_guest_and_on_sigusr1() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("pm-run");
    let mut code = serial_hi();
    let loop_at = ENTRY + code.len() as u64;
    code.extend_from_slice(&IO_LOOP);
    let vmm = Vmm::start(&dir, "run", &code, "1");
    wait_for_guest_entry(&vmm.api);

    let pm = vmm.postmortem_until("looping", |pm| {
        pm["vcpus"][0]["last_exit"] == "io_out" && pm["console"]["bytes_total"] == 3
    });
    let v0 = &pm["vcpus"][0];
    assert_eq!(v0["answered"], true, "{pm:#}");
    assert!(v0.get("error").is_none());
    assert!(
        (loop_at..loop_at + IO_LOOP.len() as u64).contains(&rip(v0)),
        "rip {:#x} outside the loop at {loop_at:#x}",
        rip(v0)
    );
    // PVH entry: 32-bit protected mode, paging off.
    let cr0 = v0["regs"]["cr0"].as_str().unwrap();
    assert_eq!(u64::from_str_radix(&cr0[2..], 16).unwrap() & 1, 1, "PE");
    assert_eq!(v0["halted"], false);
    assert_eq!(v0["mp_state"], "runnable");
    assert!(v0["events"]["exception"]["pending"].is_boolean());
    assert!(v0["lapic"]["irr"].is_array());
    assert!(v0["exits"]["io_out"].as_u64().unwrap() >= 3);
    assert!(pm["exits"]["io_out"].as_u64().unwrap() >= 3);
    assert_eq!(pm["console"]["tail"], "hi\n");
    assert_eq!(pm["state"], "running");
    assert!(pm["timeline"]["first_vcpu_run"].is_number());
    assert!(pm["timeline"]["first_console_byte"].is_number());
    // The default virtio-rng, which this guest has no driver for.
    let rng = &pm["devices"][0];
    assert_eq!(rng["type"], "virtio-rng", "{pm:#}");
    assert_eq!(rng["base"], "0xd0000000");
    assert_eq!(rng["status"], "0x0");
    assert_eq!(rng["activated"], false);
    assert_eq!(rng["queues"][0]["ready"], false);

    // A paused vCPU answers from its parking place.
    assert_eq!(vmm.ask("pause")["state"], "paused");
    let pm = vmm.ask("postmortem");
    assert_eq!(pm["state"], "paused");
    assert_eq!(pm["vcpus"][0]["run_state"], "parked");
    assert_eq!(pm["vcpus"][0]["answered"], true, "{pm:#}");
    assert_eq!(vmm.ask("resume")["state"], "running");

    // The guest keeps running after a dump.
    let before = pm["exits"]["io_out"].as_u64().unwrap();
    vmm.postmortem_until("running on", |pm| {
        pm["exits"]["io_out"].as_u64().unwrap() > before
    });

    // SIGUSR1: the same dump, in the log; the VM goes on.
    // SAFETY: plain syscall on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(vmm.child.id() as i32, libc::SIGUSR1) },
        0
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(vmm.ask("info")["state"], "running");
    let (code, log) = vmm.stop_with(libc::SIGTERM);
    assert_eq!(code, 4, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("post-mortem (SIGUSR1): "))
        .unwrap_or_else(|| panic!("no post-mortem in the log:\n{log}"));
    let json = &line[line.find("post-mortem (SIGUSR1): ").unwrap() + 23..];
    let dump: Value = serde_json::from_str(json).unwrap();
    assert_eq!(dump["vcpus"][0]["answered"], true, "{dump:#}");
    assert_eq!(dump["console"]["tail"], "hi\n");
}

#[test]
fn postmortem_shows_a_halted_vcpu_and_an_ap_waiting_for_its_sipi() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("pm-halt");
    let mut code = serial_hi();
    let halt_at = ENTRY + code.len() as u64;
    code.extend_from_slice(&HALT);
    let vmm = Vmm::start(&dir, "halt", &code, "2");
    wait_for_guest_entry(&vmm.api);
    // vCPU 1's thread may still be starting (reported as not_started).
    let pm = vmm.postmortem_until("halted, with both threads running", |pm| {
        pm["vcpus"][0]["halted"] == true && pm["vcpus"][1]["answered"] == true
    });
    let v0 = &pm["vcpus"][0];
    assert_eq!(v0["mp_state"], "halted", "{pm:#}");
    assert_eq!(v0["run_state"], "in_guest", "halts inside KVM");
    assert!((halt_at..halt_at + HALT.len() as u64).contains(&rip(v0)));
    let rflags = v0["regs"]["rflags"].as_str().unwrap();
    assert_eq!(
        u64::from_str_radix(&rflags[2..], 16).unwrap() & (1 << 9),
        0,
        "IF is clear"
    );
    // The second vCPU never got INIT/SIPI from the guest.
    let v1 = &pm["vcpus"][1];
    assert_eq!(v1["answered"], true, "{pm:#}");
    assert_eq!(v1["mp_state"], "uninitialized");
    assert_eq!(v1["last_exit"], Value::Null);
    let (code, _) = vmm.stop_with(libc::SIGTERM);
    assert_eq!(code, 4);
}

#[test]
fn info_reports_the_boot_timeline_and_the_log_has_it_once() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("pm-timeline");
    let mut code = serial_hi();
    code.extend_from_slice(&HALT);
    let vmm = Vmm::start_logging(&dir, "timeline", &code, "1", "info");
    wait_for_guest_entry(&vmm.api);
    let deadline = Instant::now() + Duration::from_secs(10);
    let t = loop {
        let t = vmm.ask("info")["timeline"].clone();
        if t["first_console_byte"].is_number() {
            break t;
        }
        assert!(Instant::now() < deadline, "no console byte: {t}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let at = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {t}"));
    assert_eq!(at("process_start"), 0.0);
    let order = [
        "kvm_vm_created",
        "guest_memory_ready",
        "kernel_and_initramfs_loaded",
        "first_vcpu_run",
        "first_console_byte",
    ];
    for pair in order.windows(2) {
        assert!(at(pair[0]) <= at(pair[1]), "{pair:?} out of order: {t}");
    }
    assert!(at("kvm_vm_created") > 0.0);
    // No vsock device here: never reached.
    assert_eq!(t["first_vsock_connection"], Value::Null);
    let (code, log) = vmm.stop_with(libc::SIGTERM);
    assert_eq!(code, 4);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("boot timeline"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("first_console_byte"), "{}", lines[0]);
}
