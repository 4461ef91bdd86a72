//! The hybrid-vsock connection state machine (muxer + connections) driven
//! by arbitrary interleavings of guest packets, host clients (connect,
//! bytes, half and full close, reads), host listeners for the guest's own
//! connections, epoll events and time. Nothing may panic, and after every
//! step the muxer's bounds hold and every packet it hands the guest is
//! well-formed (checked inside `MuxerHarness`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vessel_vmm::fuzzing::MuxerHarness;

/// Pulls bytes off the input; zeros once it runs out.
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
}

/// Ports the guest and host use, from a byte: mostly a few small ones so
/// that packets meet their connections, sometimes anything.
fn port(b: u8) -> u32 {
    match b {
        0..=199 => 1024 + u32::from(b % 4),
        200..=249 => (1 << 30) + u32::from(b % 8),
        _ => u32::from(b) << 24,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut h) = MuxerHarness::new() else {
        return;
    };
    let mut inp = Input(data);
    // Bounded so a long input cannot turn into a slow one.
    for _ in 0..128 {
        if inp.0.is_empty() {
            break;
        }
        match inp.u8() % 10 {
            0 | 1 => {
                // A guest packet: a header with chosen ports, op and credit.
                let mut raw = [0u8; 44];
                let well_formed = inp.u8() & 7 != 0;
                let head = inp.bytes(44).to_vec();
                raw[..head.len()].copy_from_slice(&head);
                if well_formed {
                    let (src, dst) = (port(inp.u8()), port(inp.u8()));
                    raw[16..20].copy_from_slice(&src.to_le_bytes());
                    raw[20..24].copy_from_slice(&dst.to_le_bytes());
                    raw[24..28].copy_from_slice(&u32::from(inp.u8()).to_le_bytes());
                }
                let len = usize::from(inp.u8());
                let payload = inp.bytes(len).to_vec();
                h.guest_tx(&raw, well_formed, &payload);
            }
            2 => h.host_connect(),
            3 => {
                let i = usize::from(inp.u8());
                let bytes: Vec<u8> = match inp.u8() % 3 {
                    0 => format!("CONNECT {}\n", port(inp.u8())).into_bytes(),
                    _ => {
                        let len = usize::from(inp.u8());
                        inp.bytes(len).to_vec()
                    }
                };
                h.host_write(i, &bytes);
            }
            4 => h.host_read(usize::from(inp.u8())),
            5 => {
                let b = inp.u8();
                h.host_close(usize::from(b >> 1), b & 1 == 0);
            }
            6 => h.host_listen(port(inp.u8())),
            7 => h.host_accept(),
            8 => {
                let n = usize::from(inp.u8() % 16);
                let cap = usize::from(inp.u16());
                h.guest_rx(n, cap);
            }
            _ => {
                h.poll();
                // Mostly small steps; sometimes past every deadline.
                let ms = match inp.u8() {
                    0..=239 => 0,
                    b => u64::from(b - 239) * 1000,
                };
                h.advance(ms);
            }
        }
    }
    // The host side drains whatever is left.
    h.poll();
    h.guest_rx(64, 4096);
});
