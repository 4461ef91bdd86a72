//! Helpers shared by the tests that run vessel-vmm with tiny hand-made
//! guests: building their ELF images, checking /dev/kvm, scratch directories.
// Each test binary uses only some of these.
#![allow(dead_code)]

use std::path::PathBuf;

pub const ENTRY: u64 = 0x10_0000;

/// `mov dx, 0x3f8` then `mov al, c; out dx, al` for each byte of "hi\n".
pub fn serial_hi() -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for c in b"hi\n" {
        code.extend_from_slice(&[0xb0, *c, 0xee]);
    }
    code
}

/// A minimal ELF64 executable loading `code` at 1 MiB, with the PVH entry
/// note if `pvh` (otherwise the VMM uses the 64-bit Linux boot protocol).
pub fn elf(code: &[u8], pvh: bool) -> Vec<u8> {
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

pub fn kvm_available() -> bool {
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
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vessel-vmm-it-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn guest(&self, name: &str, code: &[u8], pvh: bool) -> PathBuf {
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

/// `1: jmp 1b`: a guest that spins without exiting to the VMM.
pub const SPIN: [u8; 2] = [0xeb, 0xfe];

/// Sends one control API request line to the socket at `api` with the
/// `vessel-vmm-api` client, retrying while the socket is not there yet
/// (until `deadline`), and returns the parsed response.
pub fn api_request(
    api: &std::path::Path,
    line: &str,
    deadline: std::time::Instant,
) -> serde_json::Value {
    let client = vessel_vmm_api::ApiClient::new(api, std::time::Duration::from_secs(10));
    let reply = loop {
        match client.call_raw(line) {
            Ok(reply) => break reply,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "API: {e}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    };
    serde_json::from_str(&reply).unwrap()
}

/// Waits until the VM's first vCPU has entered the guest (its filter is
/// installed before that), through the control API's `info`.
pub fn wait_for_guest_entry(api: &std::path::Path) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let info = api_request(api, r#"{"op":"info"}"#, deadline);
        if info["boot_time_ms"].is_number() {
            return info;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "guest never entered: {info}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
