//! The virtio-mmio transport with a real device behind it (rng, block on a
//! scratch image, vsock on a scratch socket, balloon), for the `mmio_devices` fuzz
//! target: activation, notifications, resets and config accesses in any
//! order, with the device's own worker thread running as in a VM.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::bus::BusDevice;
use crate::devices::virtio::balloon::Balloon;
use crate::devices::virtio::block::disk::{DiskImage, DiskSpec};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{GuestMemory, VirtioDevice};

/// Which real device sits behind the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// virtio-rng.
    Rng,
    /// virtio-blk on a 64 KiB scratch image.
    Block {
        /// Whether the image is read-only.
        read_only: bool,
    },
    /// Hybrid vsock on a scratch socket.
    Vsock,
    /// virtio-balloon with free page reporting. The fuzz target's RAM is
    /// anonymous, so every range that passes the checks ends in "not
    /// file-backed" instead of a punch: the checks are what is fuzzed.
    Balloon,
}

impl DeviceKind {
    /// A kind from a fuzzed byte.
    pub fn from_byte(b: u8) -> DeviceKind {
        match b % 5 {
            0 => DeviceKind::Rng,
            1 => DeviceKind::Block { read_only: false },
            2 => DeviceKind::Block { read_only: true },
            3 => DeviceKind::Vsock,
            _ => DeviceKind::Balloon,
        }
    }
}

/// A transport and its device, in a scratch directory removed on drop.
pub struct DevicesHarness {
    dir: PathBuf,
    // Dropped before the directory goes: stops the device's worker.
    transport: Option<MmioTransport>,
    mem: GuestMemory,
    vsock: Option<PathBuf>,
    clients: Vec<UnixStream>,
}

impl DevicesHarness {
    /// `kind` behind a fresh transport over `mem`.
    pub fn new(kind: DeviceKind, mem: GuestMemory) -> std::io::Result<DevicesHarness> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vessel-fuzz-mmio-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let other = |e: String| std::io::Error::other(e);
        let mut vsock = None;
        let device: Box<dyn VirtioDevice> = match kind {
            DeviceKind::Rng => Box::new(Rng::new()),
            DeviceKind::Block { read_only } => {
                let path = dir.join("disk.img");
                std::fs::write(&path, vec![0x5a; 64 << 10])?;
                let spec = DiskSpec {
                    path,
                    read_only,
                    serial: None,
                };
                Box::new(Block::new(
                    DiskImage::open(&spec).map_err(|e| other(e.to_string()))?,
                ))
            }
            DeviceKind::Vsock => {
                let path = dir.join("v.sock");
                let dev = Vsock::new(3, &path).map_err(|e| other(e.to_string()))?;
                vsock = Some(path);
                Box::new(dev)
            }
            DeviceKind::Balloon => Box::new(Balloon::new()),
        };
        let irq = EventFd::new(EFD_NONBLOCK)?;
        let transport =
            MmioTransport::new(device, mem.clone(), irq).map_err(|e| other(e.to_string()))?;
        Ok(DevicesHarness {
            dir,
            transport: Some(transport),
            mem,
            vsock,
            clients: Vec::new(),
        })
    }

    /// Guest RAM.
    pub fn mem(&self) -> &GuestMemory {
        &self.mem
    }

    /// A guest read of `data.len()` bytes at `offset` in the register window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(t) = self.transport.as_mut() {
            t.read(offset, data);
        }
    }

    /// A guest write at `offset` in the register window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(t) = self.transport.as_mut() {
            t.write(offset, data);
        }
    }

    /// A 32-bit register write.
    pub fn write_reg(&mut self, offset: u64, v: u32) {
        self.write(offset, &v.to_le_bytes());
    }

    /// A 32-bit register read.
    pub fn read_reg(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// The driver's init sequence (§3.1.1): accepts the offered features
    /// masked by `feature_mask` (VERSION_1 kept), then each queue with the
    /// given size and ring addresses, then DRIVER_OK.
    pub fn init(&mut self, feature_mask: u64, queues: &[(u16, [u64; 3])]) {
        self.write_reg(0x70, 0);
        self.write_reg(0x70, 1);
        self.write_reg(0x70, 3);
        let mut offered = 0u64;
        for sel in 0..2u32 {
            self.write_reg(0x14, sel);
            offered |= u64::from(self.read_reg(0x10)) << (32 * sel);
        }
        let feats = offered & (feature_mask | (1 << 32));
        self.write_reg(0x24, 0);
        self.write_reg(0x20, feats as u32);
        self.write_reg(0x24, 1);
        self.write_reg(0x20, (feats >> 32) as u32);
        self.write_reg(0x70, 0xb);
        for (q, (size, addrs)) in (0u32..).zip(queues) {
            self.write_reg(0x30, q);
            self.write_reg(0x38, u32::from(*size));
            for (reg, a) in [0x80u64, 0x90, 0xa0].into_iter().zip(addrs) {
                self.write_reg(reg, *a as u32);
                self.write_reg(reg + 4, (*a >> 32) as u32);
            }
            self.write_reg(0x44, 1);
        }
        self.write_reg(0x70, 0xf);
    }

    /// The driver notifies queue `q` and gives the device's worker a moment.
    pub fn notify(&mut self, q: u32) {
        self.write_reg(0x50, q);
        std::thread::sleep(Duration::from_micros(50));
    }

    /// For vsock: a host client connects and sends `data` (e.g. a
    /// `CONNECT` line); later calls write to the same few clients.
    pub fn host_send(&mut self, data: &[u8]) {
        use std::io::Write;
        let Some(path) = &self.vsock else {
            return;
        };
        if self.clients.len() < 4 {
            if let Ok(s) = UnixStream::connect(path) {
                let _ = s.set_nonblocking(true);
                self.clients.push(s);
            }
        }
        if let Some(s) = self.clients.last_mut() {
            let _ = s.write(data);
        }
    }
}

impl Drop for DevicesHarness {
    fn drop(&mut self) {
        self.clients.clear();
        drop(self.transport.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
