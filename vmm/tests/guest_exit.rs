//! End-to-end exit behaviour of the `vessel-vmm` binary with tiny hand-made
//! guests: ELF images of a few instructions that print to the serial port and
//! then reset through the i8042 or triple-fault. They need /dev/kvm (a PVM
//! host is enough: they never run Linux) and are skipped without it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ENTRY: u64 = 0x10_0000;

/// `mov dx, 0x3f8` then `mov al, c; out dx, al` for each byte of "hi\n".
fn serial_hi() -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for c in b"hi\n" {
        code.extend_from_slice(&[0xb0, *c, 0xee]);
    }
    code
}

/// `mov al, 0xfe; out 0x64, al; hlt; jmp hlt` (same bytes in 32- and 64-bit mode).
const RESET: [u8; 7] = [0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];
/// `ud2` with an empty IDT: #UD, #GP, #DF, then a triple fault.
const CRASH: [u8; 2] = [0x0f, 0x0b];

/// A minimal ELF64 executable loading `code` at 1 MiB, with the PVH entry
/// note if `pvh` (otherwise the VMM uses the 64-bit Linux boot protocol).
fn elf(code: &[u8], pvh: bool) -> Vec<u8> {
    let phnum: u16 = if pvh { 2 } else { 1 };
    let note_off = 64 + 56 * u64::from(phnum);
    let mut note = Vec::new();
    if pvh {
        for v in [4u32, 4, 0x12] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&(ENTRY as u32).to_le_bytes());
    }
    let code_off = 0x1000u64;
    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&ENTRY.to_le_bytes());
    out.extend_from_slice(&64u64.to_le_bytes()); // phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, phnum, 64, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let phdr =
        |out: &mut Vec<u8>, ty: u32, flags: u32, off: u64, addr: u64, size: u64, align: u64| {
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            for v in [off, addr, addr, size, size, align] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
    phdr(&mut out, 1, 5, code_off, ENTRY, code.len() as u64, 0x1000);
    if pvh {
        phdr(&mut out, 4, 4, note_off, 0, note.len() as u64, 4);
    }
    out.extend_from_slice(&note);
    out.resize(code_off as usize, 0);
    out.extend_from_slice(code);
    out
}

fn kvm_available() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!("skipped: /dev/kvm is not available");
    }
    ok
}

/// A per-test scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vessel-vmm-it-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn guest(&self, name: &str, code: &[u8], pvh: bool) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, elf(code, pvh)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
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
        (vec!["--cpus", "0"], "--cpus 0"),
        (vec!["--cpus", "33"], "--cpus 33"),
        (vec!["--memory", "32"], "--memory 32"),
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
