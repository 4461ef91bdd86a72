//! Putting devices on the buses and wiring their interrupts and doorbells
//! into KVM (irqfd, ioeventfd).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::boot::cmdline::VirtioMmioArg;
use crate::boot::layout::{
    virtio_mmio_slot, I8042_PORT_BASE, I8042_PORT_LEN, KEYBOARD_IRQ, MAX_VIRTIO_DEVICES,
    SERIAL_IRQ, SERIAL_PORT_BASE, SERIAL_PORT_LEN, VIRTIO_IRQ_BASE, VIRTIO_MMIO_SLOT_SIZE,
};
use crate::bus::{Bus, BusError};
use crate::devices::legacy::boot_mark::BootMarkPort;
use crate::devices::legacy::i8042::{SharedCtrlAltDel, I8042};
use crate::devices::legacy::serial::{ConsoleWriter, SerialDevice};
use crate::devices::legacy::EventFdTrigger;
use crate::devices::virtio::balloon::{Balloon, BalloonCounters};
use crate::devices::virtio::block::disk::DiskImage;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::fs::{BackendLost, Fs, FsSpec};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::counters::NetCounters;
use crate::devices::virtio::net::spec::NetConfig;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{Vsock, VsockBytes};
use crate::devices::virtio::VirtioDevice;
use crate::exit::{ExitLatch, ExitReason};
use crate::memory::GuestMemory;

/// Offset of the QueueNotify register in a virtio-mmio window.
const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;
/// Guest CID of the vsock device (2 is the host; 3 is the first guest CID).
pub const VSOCK_GUEST_CID: u64 = 3;

/// Error attaching a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An eventfd could not be created.
    #[error("cannot create an eventfd for the {0}: {1}")]
    EventFd(&'static str, std::io::Error),
    /// A KVM registration (irqfd, ioeventfd) failed.
    #[error("cannot register the {what} of the {device} with KVM: {source}")]
    Kvm {
        /// The device.
        device: &'static str,
        /// What was registered.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// The device's range is taken.
    #[error("cannot map the {0}: {1}")]
    Bus(&'static str, BusError),
    /// No virtio-mmio slot or IRQ left.
    #[error("too many virtio devices (at most {MAX_VIRTIO_DEVICES})")]
    NoSlot,
    /// The virtio-mmio transport rejected the device.
    #[error("virtio-mmio transport for the {device}: {reason}")]
    Transport {
        /// The device.
        device: &'static str,
        /// Why.
        reason: String,
    },
    /// A virtio-fs share's backend (virtiofsd) is not usable.
    #[error("--fs tag={tag}: {reason}")]
    Fs {
        /// The share's tag.
        tag: String,
        /// Why.
        reason: String,
    },
    /// The vsock device could not be created (e.g. its socket path is busy).
    #[error("--vsock {}: {reason}", path.display())]
    Vsock {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// An interrupt line for legacy device `name`: an eventfd registered as the
/// irqfd of IO-APIC pin `gsi`.
fn legacy_irq(vm: &VmFd, name: &'static str, gsi: u32) -> Result<EventFdTrigger, DeviceError> {
    let irq = EventFdTrigger::new().map_err(|e| DeviceError::EventFd(name, e))?;
    vm.register_irqfd(irq.event_fd(), gsi)
        .map_err(|source| DeviceError::Kvm {
            device: name,
            what: "irqfd",
            source,
        })?;
    Ok(irq)
}

/// Puts the 16550 at COM1 with its IRQ as an irqfd; returns it for flushing.
pub fn attach_serial(
    vm: &VmFd,
    pio: &mut Bus,
    out: ConsoleWriter,
) -> Result<Arc<Mutex<SerialDevice>>, DeviceError> {
    const NAME: &str = "serial console";
    let irq = legacy_irq(vm, NAME, SERIAL_IRQ)?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(irq, out)));
    pio.insert(serial.clone(), SERIAL_PORT_BASE, SERIAL_PORT_LEN)
        .map_err(|e| DeviceError::Bus(NAME, e))?;
    Ok(serial)
}

/// Reports the guest's i8042 reset request as the VM's exit reason.
pub struct ResetTrigger(Arc<ExitLatch>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.set(ExitReason::GuestReset);
        Ok(())
    }
}

/// The i8042 with its reset line on `exit` and its keyboard interrupt on `kbd_irq`.
fn i8042(
    exit: Arc<ExitLatch>,
    kbd_irq: EventFdTrigger,
) -> Arc<Mutex<I8042<ResetTrigger, EventFdTrigger>>> {
    Arc::new(Mutex::new(I8042::new(ResetTrigger(exit), kbd_irq)))
}

/// Puts the i8042 at 0x60/0x64 with its keyboard interrupt on IRQ 1 as an
/// irqfd; its reset request stops the VM via `exit`. Returns it for typing
/// ctrl-alt-del.
pub fn attach_i8042(
    vm: &VmFd,
    pio: &mut Bus,
    exit: Arc<ExitLatch>,
) -> Result<SharedCtrlAltDel, DeviceError> {
    const NAME: &str = "i8042";
    let irq = legacy_irq(vm, NAME, KEYBOARD_IRQ)?;
    let dev = i8042(exit, irq);
    pio.insert(dev.clone(), I8042_PORT_BASE, I8042_PORT_LEN)
        .map_err(|e| DeviceError::Bus(NAME, e))?;
    Ok(dev)
}

/// Puts the boot-mark port (the guest agent's boot phases for the timeline)
/// at [`vessel_vmm_api::BOOT_MARK_PORT`].
pub fn attach_boot_marks(pio: &mut Bus) -> Result<(), DeviceError> {
    let port = Arc::new(Mutex::new(BootMarkPort));
    pio.insert(port, u64::from(vessel_vmm_api::BOOT_MARK_PORT), 1)
        .map_err(|e| DeviceError::Bus("boot-mark port", e))
}

/// Maps `device` behind a virtio-mmio transport in slot `slot`: queue
/// notifications become ioeventfds (no VM exit to userspace), the interrupt
/// an irqfd. Returns what the kernel command line must announce.
pub fn attach_virtio(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemory,
    name: &'static str,
    device: Box<dyn VirtioDevice>,
    slot: u32,
) -> Result<VirtioMmioArg, DeviceError> {
    if slot >= MAX_VIRTIO_DEVICES {
        return Err(DeviceError::NoSlot);
    }
    let base = virtio_mmio_slot(slot);
    let irq = VIRTIO_IRQ_BASE + slot;
    let kvm_err = |what| {
        move |source| DeviceError::Kvm {
            device: name,
            what,
            source,
        }
    };
    let transport_err = |e: &dyn std::fmt::Display| DeviceError::Transport {
        device: name,
        reason: e.to_string(),
    };

    let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| DeviceError::EventFd(name, e))?;
    let irq_evt_dup = irq_evt
        .try_clone()
        .map_err(|e| DeviceError::EventFd(name, e))?;
    let transport =
        MmioTransport::new(device, mem.clone(), irq_evt_dup).map_err(|e| transport_err(&e))?;
    for (queue, evt) in transport.queue_events().map_err(|e| transport_err(&e))? {
        vm.register_ioevent(
            &evt,
            &IoEventAddress::Mmio(base + VIRTIO_MMIO_QUEUE_NOTIFY),
            queue,
        )
        .map_err(kvm_err("queue ioeventfd"))?;
    }
    vm.register_irqfd(&irq_evt, irq).map_err(kvm_err("irqfd"))?;
    mmio.insert(Arc::new(Mutex::new(transport)), base, VIRTIO_MMIO_SLOT_SIZE)
        .map_err(|e| DeviceError::Bus(name, e))?;
    tracing::debug!("{name}: virtio-mmio at {base:#x}, IRQ {irq}");
    Ok(VirtioMmioArg { base, irq })
}

/// Creates the hybrid vsock device (guest CID 3) with its host socket at
/// `path` and attaches it in `slot`; also returns its byte counters.
pub fn attach_vsock(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemory,
    path: &Path,
    slot: u32,
) -> Result<(VirtioMmioArg, Arc<VsockBytes>), DeviceError> {
    let vsock = Vsock::new(VSOCK_GUEST_CID, path).map_err(|e| DeviceError::Vsock {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let bytes = vsock.bytes();
    let arg = attach_virtio(vm, mmio, mem, "vsock device", Box::new(vsock), slot)?;
    Ok((arg, bytes))
}

/// Attaches one virtio-blk device per disk (in order: vda, vdb, ...), then
/// the virtio-rng if wanted, in the next free slots; appends what the
/// command line must announce to `virtio`.
pub fn attach_disks_and_rng(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemory,
    disks: Vec<DiskImage>,
    rng: bool,
    virtio: &mut Vec<VirtioMmioArg>,
) -> Result<(), DeviceError> {
    for disk in disks {
        let slot = u32::try_from(virtio.len()).map_err(|_| DeviceError::NoSlot)?;
        let dev = Box::new(Block::new(disk));
        virtio.push(attach_virtio(vm, mmio, mem, "block device", dev, slot)?);
    }
    if rng {
        let slot = u32::try_from(virtio.len()).map_err(|_| DeviceError::NoSlot)?;
        let dev = Box::new(Rng::new());
        virtio.push(attach_virtio(vm, mmio, mem, "rng device", dev, slot)?);
    }
    Ok(())
}

/// Attaches the virtio-balloon (free page reporting) in the next free slot;
/// appends what the command line must announce to `virtio` and returns its
/// counters. It comes after every other device, so adding it moved none of
/// them.
pub fn attach_balloon(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemory,
    virtio: &mut Vec<VirtioMmioArg>,
) -> Result<Arc<BalloonCounters>, DeviceError> {
    let slot = u32::try_from(virtio.len()).map_err(|_| DeviceError::NoSlot)?;
    let dev = Balloon::new();
    let counters = dev.counters();
    virtio.push(attach_virtio(
        vm,
        mmio,
        mem,
        "balloon device",
        Box::new(dev),
        slot,
    )?);
    Ok(counters)
}

/// Connects every virtio-fs share to its virtiofsd (failing if one is not
/// there) and attaches it in the next free slot; appends what the command
/// line must announce to `virtio`. A virtiofsd that goes away while the
/// guest uses its share stops the VM through `exit` (a VMM error, exit 1):
/// the guest's requests to it would hang forever, and the share holds the
/// pod's root filesystems, so failing the pod is the honest answer.
pub fn attach_shares(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemory,
    shares: &[FsSpec],
    virtio: &mut Vec<VirtioMmioArg>,
    exit: &Arc<ExitLatch>,
) -> Result<(), DeviceError> {
    for spec in shares {
        let slot = u32::try_from(virtio.len()).map_err(|_| DeviceError::NoSlot)?;
        let exit = Arc::clone(exit);
        let lost: BackendLost = Arc::new(move |tag: &str| {
            exit.set(ExitReason::VmmError(format!(
                "virtio-fs share {tag:?}: virtiofsd disconnected"
            )));
        });
        let dev = Fs::new(spec)
            .map_err(|e| DeviceError::Fs {
                tag: spec.tag.clone(),
                reason: e.to_string(),
            })?
            .on_backend_lost(lost);
        virtio.push(attach_virtio(
            vm,
            mmio,
            mem,
            "virtio-fs device",
            Box::new(dev),
            slot,
        )?);
    }
    Ok(())
}

/// Attaches one virtio-net device per NIC, in order (eth0, eth1, ...), in
/// the next free slots; returns each one's tap name and counters.
pub fn attach_nets(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemory,
    nets: Vec<NetConfig>,
    virtio: &mut Vec<VirtioMmioArg>,
) -> Result<Vec<(String, Arc<NetCounters>)>, DeviceError> {
    let mut out = Vec::with_capacity(nets.len());
    for net in nets {
        let slot = u32::try_from(virtio.len()).map_err(|_| DeviceError::NoSlot)?;
        let name = net.tap.name().to_string();
        let dev = Net::new(net.tap, net.mac);
        let counters = dev.counters();
        virtio.push(attach_virtio(
            vm,
            mmio,
            mem,
            "net device",
            Box::new(dev),
            slot,
        )?);
        out.push((name, counters));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_trigger_records_guest_reset() {
        let latch = Arc::new(ExitLatch::new());
        let mut pio = Bus::new();
        let dev = i8042(latch.clone(), EventFdTrigger::new().unwrap());
        pio.insert(dev, I8042_PORT_BASE, I8042_PORT_LEN).unwrap();
        assert!(!latch.is_set());
        assert!(pio.write(0x64, &[0xfe]));
        assert!(latch.is_set());
        assert_eq!(latch.wait(), ExitReason::GuestReset);
    }
}
