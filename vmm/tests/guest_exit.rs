//! End-to-end exit behaviour of the `vessel-vmm` binary with tiny hand-made
//! guests: ELF images of a few instructions that print to the serial port and
//! then reset through the i8042 or triple-fault. They need /dev/kvm (a PVM
//! host is enough: they never run Linux) and are skipped without it.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{kvm_available, serial_hi, Scratch};

/// `mov al, 0xfe; out 0x64, al; hlt; jmp hlt` (same bytes in 32- and 64-bit mode).
const RESET: [u8; 7] = [0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];
/// `ud2` with an empty IDT: #UD, #GP, #DF, then a triple fault.
const CRASH: [u8; 2] = [0x0f, 0x0b];

struct Outcome {
    code: i32,
    stderr: String,
    elapsed: Duration,
}

fn run_vmm(kernel: &Path, args: &[&str]) -> Outcome {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
        .arg("--kernel")
        .arg(kernel)
        .args(if args.contains(&"--memory") {
            &[][..]
        } else {
            &["--memory", "64"][..]
        })
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("vessel-vmm did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Outcome {
        code: status.code().expect("exited by signal"),
        stderr,
        elapsed: started.elapsed(),
    }
}

#[test]
fn reset_exits_0_and_console_reaches_the_file() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("reset");
    for (pvh, cpus) in [(true, "1"), (true, "4"), (false, "1"), (false, "32")] {
        let code = [serial_hi(), RESET.to_vec()].concat();
        let kernel = dir.guest(&format!("reset-{pvh}-{cpus}.elf"), &code, pvh);
        let console = dir.path(&format!("console-{pvh}-{cpus}.log"));
        let out = run_vmm(
            &kernel,
            &["--cpus", cpus, "--console", console.to_str().unwrap()],
        );
        assert_eq!(out.code, 0, "pvh={pvh} cpus={cpus}: {}", out.stderr);
        assert_eq!(std::fs::read(&console).unwrap(), b"hi\n");
        // The other vCPUs wait for SIPI inside KVM_RUN: they must be kicked out.
        assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
    }
}

#[test]
fn triple_fault_exits_2_with_a_reason() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("crash");
    for (pvh, cpus) in [(true, "2"), (false, "1")] {
        let code = [serial_hi(), CRASH.to_vec()].concat();
        let kernel = dir.guest(&format!("crash-{pvh}.elf"), &code, pvh);
        let out = run_vmm(&kernel, &["--cpus", cpus, "--console", "none"]);
        assert_eq!(out.code, 2, "pvh={pvh}: {}", out.stderr);
        assert!(out.stderr.contains("triple fault"), "{}", out.stderr);
        // One line says why; the only other line allowed is the warning of
        // a host without huge pages for guest RAM.
        let why = out
            .stderr
            .trim()
            .lines()
            .filter(|l| !l.contains("guest RAM on 4 KiB pages"));
        assert_eq!(why.count(), 1, "{}", out.stderr);
    }
}

#[test]
fn bad_input_exits_1_naming_the_problem() {
    let dir = Scratch::new("bad-input");
    let not_elf = dir.path("bzImage");
    std::fs::write(&not_elf, b"MZ not an ELF").unwrap();
    let out = run_vmm(&not_elf, &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("--kernel") && out.stderr.contains("not an ELF"),
        "{}",
        out.stderr
    );

    let kernel = dir.guest("ok.elf", &RESET, true);
    for (args, needle) in [
        (vec!["--cpus", "0"], "cpus 0: must be between 1 and 32"),
        (vec!["--cpus", "33"], "cpus 33"),
        (vec!["--memory", "32"], "memory_mib 32"),
        (
            vec!["--initramfs", "/nonexistent/initrd"],
            "--initramfs /nonexistent/initrd",
        ),
        (vec!["--cpus", "many"], "--cpus"),
    ] {
        let out = run_vmm(&kernel, &args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}
