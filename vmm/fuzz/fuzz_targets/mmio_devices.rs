//! The virtio-mmio transport with a REAL device behind it (rng, block on a
//! scratch image read-write or read-only, hybrid vsock on a scratch socket,
//! balloon with free page reporting)
//! driven by a guest that does anything in any order: the init sequence
//! with chosen features, queue sizes and ring addresses, register accesses
//! of any offset and width, resets, notifications while the device's own
//! worker thread runs, guest-memory writes under its feet, and (vsock) host
//! clients. Nothing may panic or hang; dropping the harness stops the worker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vessel_vmm::fuzzing::{guest_memory, DeviceKind, DevicesHarness};
use vm_memory::{Bytes, GuestAddress};

/// Pulls little-endian integers off the input; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    /// A ring address: usually aligned inside the 64 KiB of memory,
    /// sometimes anywhere.
    fn addr(&mut self) -> u64 {
        let a = self.u16();
        if a & 1 != 0 {
            self.u64()
        } else {
            u64::from(a & 0xfff0)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let kind = DeviceKind::from_byte(inp.u8());
    let Some(mem) = guest_memory(&[]) else {
        return;
    };
    let Ok(mut h) = DevicesHarness::new(kind, mem) else {
        return;
    };
    // Bounded so a long input cannot turn into a slow one.
    for _ in 0..64 {
        if inp.0.is_empty() {
            break;
        }
        let op = inp.u8();
        match op % 8 {
            0 => {
                let off = u64::from(inp.u16() & 0x1fff);
                let width = [1usize, 2, 4, 8][usize::from(op >> 4) & 3];
                let mut buf = [0u8; 8];
                h.read(off, &mut buf[..width]);
            }
            1 => {
                let off = u64::from(inp.u16() & 0x1fff);
                let width = [1usize, 2, 4, 8][usize::from(op >> 4) & 3];
                let v = inp.u64().to_le_bytes();
                h.write(off, &v[..width]);
            }
            2 | 3 => {
                let mask = inp.u64();
                let queues: Vec<(u16, [u64; 3])> = (0..3)
                    .map(|_| {
                        let size = 1u16 << (inp.u8() % 9);
                        (size, [inp.addr(), inp.addr(), inp.addr()])
                    })
                    .collect();
                h.init(mask, &queues);
            }
            4 => {
                // The driver lays out descriptors or ring entries.
                let addr = u64::from(inp.u16());
                let len = usize::from(inp.u8());
                let bytes = inp.bytes(len).to_vec();
                let _ = h.mem().write_slice(&bytes, GuestAddress(addr));
            }
            5 => h.notify(u32::from(inp.u8() % 4)),
            6 => {
                // Reset, or an interrupt acknowledgement.
                if op & 0x80 != 0 {
                    h.write_reg(0x70, 0);
                } else {
                    let status = h.read_reg(0x60);
                    h.write_reg(0x64, status);
                }
            }
            _ => {
                let line = match inp.u8() % 2 {
                    0 => b"CONNECT 1024\n".to_vec(),
                    _ => {
                        let len = usize::from(inp.u8());
                        inp.bytes(len).to_vec()
                    }
                };
                h.host_send(&line);
            }
        }
    }
});
