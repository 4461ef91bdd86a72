//! The virtio-mmio transport, version 2 ("modern") only (virtio 1.2 §4.2.2).
//!
//! The guest drives everything here through 32-bit register accesses, so
//! every offset, width, value and state transition is checked; anything the
//! spec does not allow is ignored with a debug log and never panics.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use tracing::debug;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Activation, GuestMemory, Interrupt, VirtioDevice};
use crate::bus::BusDevice;

/// "virt" in little endian.
const MMIO_MAGIC: u32 = 0x7472_6976;
/// The only transport version we implement: 2, the non-legacy one.
const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the guest ("VSSL"); drivers do not interpret it.
const VENDOR_ID: u32 = 0x4c53_5356;
/// Size of the register window the transport answers.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Where the device-specific configuration space starts.
const CONFIG_SPACE_START: u64 = 0x100;

// Register offsets (§4.2.2). Kept local as u64 to match bus offsets.
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_SHM_SEL: u64 = 0x0ac;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_BASE_HIGH: u64 = 0x0bc;
const REG_CONFIG_GENERATION: u64 = 0x0fc;

/// Error from setting up a virtio-mmio transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// The device declares no queues.
    #[error("virtio device type {0} declares no queues")]
    NoQueues(u32),
    /// A queue's maximum size is not a power of two in 1..=32768.
    #[error("virtio device type {device_type}: queue {index} has invalid max size {size}")]
    BadQueueMaxSize {
        /// Device type.
        device_type: u32,
        /// Queue index.
        index: usize,
        /// The offending size.
        size: u16,
    },
    /// An eventfd could not be created or duplicated.
    #[error("cannot create queue eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// The interrupt line of one transport: InterruptStatus bits plus the irqfd.
struct MmioInterrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    irq_evt: EventFd,
}

impl Interrupt for MmioInterrupt {
    fn trigger(&self, status: u32) -> std::io::Result<()> {
        self.status.fetch_or(status, Ordering::SeqCst);
        self.irq_evt.write(1)
    }

    fn set_needs_reset(&self) -> std::io::Result<()> {
        self.needs_reset.store(true, Ordering::SeqCst);
        // §2.1.2: with DRIVER_OK set, NEEDS_RESET comes with a config notification.
        self.trigger(VIRTIO_MMIO_INT_CONFIG)
    }
}

/// What the driver wrote for one queue; turned into a `Queue` at DRIVER_OK.
#[derive(Debug, Default, Clone, Copy)]
struct QueueRegs {
    max_size: u16,
    size: u32,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueRegs {
    /// Builds the queue the device will use, validating what the guest wrote.
    fn build(&self, mem: &GuestMemory, event_idx: bool) -> Result<Queue, String> {
        if !self.ready {
            return Err("queue not ready".into());
        }
        let mut queue = Queue::new(self.max_size).map_err(|e| format!("max size: {e}"))?;
        let size = u16::try_from(self.size).map_err(|_| format!("size {}", self.size))?;
        queue
            .try_set_size(size)
            .map_err(|e| format!("size {size}: {e}"))?;
        queue
            .try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(|e| format!("descriptor table {:#x}: {e}", self.desc))?;
        queue
            .try_set_avail_ring_address(GuestAddress(self.driver))
            .map_err(|e| format!("driver area {:#x}: {e}", self.driver))?;
        queue
            .try_set_used_ring_address(GuestAddress(self.device))
            .map_err(|e| format!("device area {:#x}: {e}", self.device))?;
        queue.set_event_idx(event_idx);
        queue.set_ready(true);
        if !queue.is_valid(mem) {
            return Err("rings are outside guest memory".into());
        }
        Ok(queue)
    }
}

/// A virtio device exposed to the guest through a virtio-mmio register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<MmioInterrupt>,
    queue_evts: Vec<EventFd>,
    queues: Vec<QueueRegs>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
}

impl MmioTransport {
    /// Wraps `device`; `irq_evt` is written whenever the device interrupts
    /// (the VMM registers it as the device's irqfd).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        irq_evt: EventFd,
    ) -> Result<Self, MmioError> {
        let device_type = device.device_type();
        let max_sizes = device.queue_max_sizes();
        if max_sizes.is_empty() {
            return Err(MmioError::NoQueues(device_type));
        }
        let mut queues = Vec::with_capacity(max_sizes.len());
        let mut queue_evts = Vec::with_capacity(max_sizes.len());
        for (index, &size) in max_sizes.iter().enumerate() {
            if Queue::new(size).is_err() {
                return Err(MmioError::BadQueueMaxSize {
                    device_type,
                    index,
                    size,
                });
            }
            queues.push(QueueRegs {
                max_size: size,
                ..Default::default()
            });
            queue_evts.push(EventFd::new(EFD_NONBLOCK).map_err(MmioError::EventFd)?);
        }
        Ok(MmioTransport {
            device,
            mem,
            interrupt: Arc::new(MmioInterrupt {
                status: AtomicU32::new(0),
                needs_reset: AtomicBool::new(false),
                irq_evt,
            }),
            queue_evts,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            activated: false,
        })
    }

    /// One EventFd per queue, as `(queue index, eventfd)`: the VMM registers
    /// each as an ioeventfd on QueueNotify (base + 0x50) matching the index.
    /// They are the same eventfds the device gets at activation.
    pub fn queue_events(&self) -> Result<Vec<(u32, EventFd)>, MmioError> {
        let mut out = Vec::with_capacity(self.queue_evts.len());
        for (i, evt) in (0u32..).zip(&self.queue_evts) {
            out.push((i, evt.try_clone().map_err(MmioError::EventFd)?));
        }
        Ok(out)
    }

    /// Whether the driver has brought the device up (DRIVER_OK accepted).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The device status as the guest sees it.
    fn device_status(&self) -> u32 {
        if self.interrupt.needs_reset.load(Ordering::SeqCst) {
            self.status | VIRTIO_CONFIG_S_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn offered_features(&self) -> u64 {
        // Modern-only transport: VERSION_1 is always offered.
        self.device.features() | (1u64 << VIRTIO_F_VERSION_1)
    }

    fn selected_queue(&self) -> Option<&QueueRegs> {
        self.queues.get(self.queue_sel as usize)
    }

    /// Queue registers may be written only between FEATURES_OK and DRIVER_OK
    /// (§4.2.3.2), and not while the selected queue is marked ready.
    fn selected_queue_writable(&mut self) -> Option<&mut QueueRegs> {
        let s = self.status;
        if s & VIRTIO_CONFIG_S_FEATURES_OK == 0 || s & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            debug!(
                status = s,
                "virtio-mmio: queue register write in wrong state"
            );
            return None;
        }
        let queue = self.queues.get_mut(self.queue_sel as usize)?;
        if queue.ready {
            debug!("virtio-mmio: queue register write while queue is ready");
            return None;
        }
        Some(queue)
    }

    fn read_reg(&self, offset: u64) -> Option<u32> {
        let v = match offset {
            REG_MAGIC => MMIO_MAGIC,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            REG_QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            REG_INTERRUPT_STATUS => self.interrupt.status.load(Ordering::SeqCst),
            REG_STATUS => self.device_status(),
            REG_CONFIG_GENERATION => self.config_generation,
            // No shared memory regions: a length of all ones says so
            // (§4.2.2); zero would announce an empty region, which
            // virtio-fs with DAX would try to map.
            REG_SHM_LEN_LOW..=REG_SHM_BASE_HIGH => u32::MAX,
            _ => return None,
        };
        Some(v)
    }

    fn write_reg(&mut self, offset: u64, v: u32) -> bool {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES => self.write_driver_features(v),
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM => {
                if let Some(q) = self.selected_queue_writable() {
                    q.size = v;
                }
            }
            REG_QUEUE_READY => self.write_queue_ready(v),
            REG_QUEUE_NOTIFY => self.notify(v),
            REG_INTERRUPT_ACK => {
                self.interrupt.status.fetch_and(!v, Ordering::SeqCst);
            }
            REG_STATUS => self.write_status(v),
            REG_SHM_SEL => {}
            REG_QUEUE_DESC_LOW => self.set_queue_addr(|q| &mut q.desc, v, false),
            REG_QUEUE_DESC_HIGH => self.set_queue_addr(|q| &mut q.desc, v, true),
            REG_QUEUE_DRIVER_LOW => self.set_queue_addr(|q| &mut q.driver, v, false),
            REG_QUEUE_DRIVER_HIGH => self.set_queue_addr(|q| &mut q.driver, v, true),
            REG_QUEUE_DEVICE_LOW => self.set_queue_addr(|q| &mut q.device, v, false),
            REG_QUEUE_DEVICE_HIGH => self.set_queue_addr(|q| &mut q.device, v, true),
            _ => return false,
        }
        true
    }

    fn write_driver_features(&mut self, v: u32) {
        let s = self.status;
        if s & VIRTIO_CONFIG_S_DRIVER == 0 || s & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            debug!(
                status = s,
                "virtio-mmio: DriverFeatures write in wrong state"
            );
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
            sel => debug!(sel, "virtio-mmio: DriverFeatures write with bad selector"),
        }
    }

    fn write_queue_ready(&mut self, v: u32) {
        let s = self.status;
        if s & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            debug!("virtio-mmio: QueueReady write after DRIVER_OK");
            return;
        }
        if let Some(q) = self.queues.get_mut(self.queue_sel as usize) {
            // Setting ready needs FEATURES_OK; clearing it is always allowed.
            if v == 0 || s & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
                q.ready = v == 1;
            }
        }
    }

    fn set_queue_addr(&mut self, field: fn(&mut QueueRegs) -> &mut u64, v: u32, high: bool) {
        if let Some(q) = self.selected_queue_writable() {
            let f = field(q);
            *f = if high {
                (*f & 0xffff_ffff) | (u64::from(v) << 32)
            } else {
                (*f & !0xffff_ffff) | u64::from(v)
            };
        }
    }

    /// A QueueNotify write that reached us instead of the ioeventfd.
    fn notify(&self, v: u32) {
        if !self.activated {
            debug!(queue = v, "virtio-mmio: notify before DRIVER_OK");
            return;
        }
        match self.queue_evts.get(v as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    crate::guest_warn!(queue = v, "virtio-mmio: cannot signal queue: {e}");
                }
            }
            None => debug!(queue = v, "virtio-mmio: notify for unknown queue"),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        if v & old != old {
            debug!(
                old,
                new = v,
                "virtio-mmio: driver tried to clear status bits"
            );
            return;
        }
        if v & VIRTIO_CONFIG_S_FAILED != 0 {
            self.status |= VIRTIO_CONFIG_S_FAILED;
        }
        // Bits are accepted in the order of §3.1.1; each needs its predecessors.
        let steps = [
            (VIRTIO_CONFIG_S_ACKNOWLEDGE, 0),
            (VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_ACKNOWLEDGE),
            (
                VIRTIO_CONFIG_S_FEATURES_OK,
                VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
            ),
            (
                VIRTIO_CONFIG_S_DRIVER_OK,
                VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
            ),
        ];
        for (bit, needs) in steps {
            if v & bit == 0 || self.status & bit != 0 {
                continue;
            }
            if self.status & needs != needs || self.status & VIRTIO_CONFIG_S_FAILED != 0 {
                debug!(
                    status = self.status,
                    bit, "virtio-mmio: status bit out of order"
                );
                return;
            }
            if bit == VIRTIO_CONFIG_S_FEATURES_OK && !self.negotiate_features() {
                // The driver sees FEATURES_OK not set and gives up (§3.1.1).
                return;
            }
            self.status |= bit;
            if bit == VIRTIO_CONFIG_S_DRIVER_OK {
                self.activate();
            }
        }
        let unknown = v & !(self.status | VIRTIO_CONFIG_S_FAILED);
        if unknown != 0 {
            debug!(bits = unknown, "virtio-mmio: ignored status bits");
        }
    }

    fn negotiate_features(&mut self) -> bool {
        let offered = self.offered_features();
        let wanted = self.driver_features;
        if wanted & !offered != 0 {
            crate::guest_warn!(
                offered,
                wanted,
                "virtio-mmio: driver accepted features the device did not offer"
            );
            return false;
        }
        if wanted & (1u64 << VIRTIO_F_VERSION_1) == 0 {
            crate::guest_warn!("virtio-mmio: driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)");
            return false;
        }
        self.device.ack_features(wanted);
        true
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & (1u64 << VIRTIO_RING_F_EVENT_IDX) != 0;
        // Queues of features the driver declined stay unused (and may be
        // left unset); the device's own answer is capped at what it declared.
        let in_use = self.device.queues_in_use().min(self.queues.len());
        let mut queues = Vec::with_capacity(in_use);
        for (i, regs) in self.queues.iter().take(in_use).enumerate() {
            match regs.build(&self.mem, event_idx) {
                Ok(q) => queues.push(q),
                Err(e) => {
                    crate::guest_warn!(queue = i, "virtio-mmio: invalid queue at DRIVER_OK: {e}");
                    self.fail_activation();
                    return;
                }
            }
        }
        let mut evts = Vec::with_capacity(in_use);
        for evt in self.queue_evts.iter().take(in_use) {
            match evt.try_clone() {
                Ok(e) => evts.push(e),
                Err(e) => {
                    crate::guest_warn!("virtio-mmio: cannot clone queue eventfd: {e}");
                    self.fail_activation();
                    return;
                }
            }
        }
        let interrupt: Arc<dyn Interrupt> = self.interrupt.clone();
        match self.device.activate(Activation {
            mem: self.mem.clone(),
            interrupt,
            queues,
            queue_evts: evts,
        }) {
            Ok(()) => self.activated = true,
            Err(e) => {
                crate::guest_warn!(
                    device_type = self.device.device_type(),
                    "virtio-mmio: device activation failed: {e}"
                );
                self.fail_activation();
            }
        }
    }

    fn fail_activation(&self) {
        if let Err(e) = self.interrupt.set_needs_reset() {
            crate::guest_warn!("virtio-mmio: cannot raise config interrupt: {e}");
        }
    }

    /// Driver reset (status 0): stop the device and forget all driver state.
    fn reset(&mut self) {
        if self.activated && !self.device.reset() {
            // The device cannot start over; report it as failed for good.
            crate::guest_warn!(
                device_type = self.device.device_type(),
                "virtio-mmio: device cannot be reset"
            );
            self.status = VIRTIO_CONFIG_S_FAILED;
            return;
        }
        self.activated = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueRegs {
                max_size: q.max_size,
                ..Default::default()
            };
        }
        // Stale notifications must not wake the next activation's worker.
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        self.interrupt.status.store(0, Ordering::SeqCst);
        self.interrupt.needs_reset.store(false, Ordering::SeqCst);
        self.config_generation = self.config_generation.wrapping_add(1);
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if (CONFIG_SPACE_START..MMIO_WINDOW_SIZE).contains(&offset) {
            let end = offset.checked_add(data.len() as u64);
            if end.is_some_and(|e| e <= MMIO_WINDOW_SIZE) {
                self.device.read_config(offset - CONFIG_SPACE_START, data);
                return;
            }
        } else if data.len() == 4 && offset & 3 == 0 {
            if let Some(v) = self.read_reg(offset) {
                data.copy_from_slice(&v.to_le_bytes());
                return;
            }
        }
        debug!(
            offset,
            len = data.len(),
            "virtio-mmio: ignored read of bad offset or width"
        );
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if (CONFIG_SPACE_START..MMIO_WINDOW_SIZE).contains(&offset) {
            let end = offset.checked_add(data.len() as u64);
            if end.is_some_and(|e| e <= MMIO_WINDOW_SIZE) {
                self.device.write_config(offset - CONFIG_SPACE_START, data);
                return;
            }
        } else if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            if offset & 3 == 0 && self.write_reg(offset, u32::from_le_bytes(bytes)) {
                return;
            }
        }
        debug!(
            offset,
            len = data.len(),
            "virtio-mmio: ignored write of bad offset or width"
        );
    }

    fn report(&self) -> Option<serde_json::Value> {
        Some(self.postmortem())
    }
}

mod report;

#[cfg(test)]
mod tests;
