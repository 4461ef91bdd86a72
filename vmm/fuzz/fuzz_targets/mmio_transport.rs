//! The virtio-mmio transport driven by a guest that does anything: register
//! reads and writes of any offset, width and value, guest-memory writes (to
//! lay out rings), and a device that walks whatever queues it was handed at
//! DRIVER_OK. Nothing may panic. The device is a dummy so no worker threads
//! start; it processes its queues synchronously when the input says so.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use vessel_vmm::bus::BusDevice;
use vessel_vmm::devices::virtio::mmio::MmioTransport;
use vessel_vmm::devices::virtio::{
    read_config_space, ActivateError, Activation, GuestMemory, Interrupt, VirtioDevice,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const MEM_SIZE: usize = 0x1_0000;
/// VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | one device bit.
const FEATURES: u64 = (1 << 32) | (1 << 29) | 1;

/// What the device got at DRIVER_OK, shared with the fuzz loop.
struct Active {
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    queues: Vec<Queue>,
}

type Shared = Arc<Mutex<Option<Active>>>;

struct Dummy {
    config: [u8; 8],
    shared: Shared,
    fail_activate: bool,
    can_reset: bool,
}

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        4
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[8, 256]
    }
    fn features(&self) -> u64 {
        FEATURES
    }
    fn ack_features(&mut self, _features: u64) {}
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let Some(idx) = (offset as usize).checked_add(i) else {
                return;
            };
            if let Some(slot) = self.config.get_mut(idx) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::BadQueues("fuzz".into()));
        }
        *self.shared.lock().unwrap() = Some(Active {
            mem: activation.mem,
            interrupt: activation.interrupt,
            queues: activation.queues,
        });
        Ok(())
    }
    fn reset(&mut self) -> bool {
        *self.shared.lock().unwrap() = None;
        self.can_reset
    }
}

/// Serves up to a bounded number of chains per queue, reading and writing
/// through the chains as a real device would.
fn process(shared: &Shared) {
    let mut guard = shared.lock().unwrap();
    let Some(active) = guard.as_mut() else {
        return;
    };
    let mut buf = [0u8; 512];
    for q in &mut active.queues {
        for _ in 0..64 {
            let Some(chain) = q.pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            let mut used = 0u32;
            if let Ok(mut r) = chain.clone().reader(&active.mem) {
                let n = r.available_bytes().min(buf.len());
                let _ = std::io::Read::read(&mut r, &mut buf[..n]);
            }
            if let Ok(mut w) = chain.writer(&active.mem) {
                let n = w.available_bytes().min(buf.len());
                if std::io::Write::write(&mut w, &buf[..n]).is_ok() {
                    used = n as u32;
                }
            }
            if q.add_used(&active.mem, head, used).is_err() {
                break;
            }
        }
        if q.needs_notification(&active.mem).unwrap_or(true) {
            let _ = active.interrupt.trigger(1);
        }
    }
}

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
    /// A guest address: usually inside the 64 KiB of memory, sometimes anywhere.
    fn addr(&mut self) -> u64 {
        let a = self.u32();
        if a & 0x8000_0000 != 0 {
            self.u64()
        } else {
            u64::from(a & 0xffff)
        }
    }
}

fn write_reg(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// The standard driver init sequence (§3.1.1) with input-chosen queue sizes
/// and ring addresses, ending with DRIVER_OK.
fn init(t: &mut MmioTransport, inp: &mut Input<'_>) {
    write_reg(t, 0x70, 0);
    write_reg(t, 0x70, 1);
    write_reg(t, 0x70, 3);
    let feats = inp.u64();
    write_reg(t, 0x24, 0);
    write_reg(t, 0x20, feats as u32);
    write_reg(t, 0x24, 1);
    write_reg(t, 0x20, (feats >> 32) as u32);
    write_reg(t, 0x70, 0xb);
    for q in 0..2u32 {
        write_reg(t, 0x30, q);
        write_reg(t, 0x38, u32::from(inp.u16()));
        for reg in [0x80u64, 0x90, 0xa0] {
            let a = inp.addr();
            write_reg(t, reg, a as u32);
            write_reg(t, reg + 4, (a >> 32) as u32);
        }
        write_reg(t, 0x44, 1);
    }
    write_reg(t, 0x70, 0xf);
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let flags = inp.u8();
    let shared: Shared = Arc::new(Mutex::new(None));
    let dev = Dummy {
        config: [0x5a; 8],
        shared: shared.clone(),
        fail_activate: flags & 1 != 0,
        can_reset: flags & 2 == 0,
    };
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut t = MmioTransport::new(Box::new(dev), mem.clone(), irq).unwrap();

    // Bounded so a long input cannot turn into a slow one.
    for _ in 0..256 {
        if inp.0.is_empty() {
            break;
        }
        let op = inp.u8();
        match op % 6 {
            0 | 1 => {
                let off = u64::from(inp.u16() & 0x1fff);
                let width = [1usize, 2, 4, 8][usize::from(op >> 4) & 3];
                if op % 6 == 0 {
                    let mut buf = [0u8; 8];
                    t.read(off, &mut buf[..width]);
                } else {
                    let v = inp.u64().to_le_bytes();
                    t.write(off, &v[..width]);
                }
            }
            2 => init(&mut t, &mut inp),
            3 => {
                // The driver lays out descriptors or ring entries.
                let addr = u64::from(inp.u16());
                let len = usize::from(inp.u8());
                let bytes = inp.bytes(len).to_vec();
                let _ = mem.write_slice(&bytes, GuestAddress(addr));
            }
            4 => {
                write_reg(&mut t, 0x50, u32::from(inp.u8() & 3));
                process(&shared);
            }
            _ => {
                let mut b = [0u8; 4];
                t.read(0x60, &mut b);
                t.write(0x64, &b);
            }
        }
    }
});
