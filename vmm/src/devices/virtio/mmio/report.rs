//! The transport's state for a post-mortem: device status and features,
//! interrupt status, and each queue's ring indices as they are in guest
//! memory (what the driver made available, what the device has used, and
//! with EVENT_IDX where each side asked to be notified next).

use serde_json::{json, Value};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress};

use super::{GuestMemory, MmioTransport, QueueRegs};

/// The names of the status bits set in `status`, in the order a driver sets them.
pub fn status_names(status: u32) -> Vec<&'static str> {
    [
        (VIRTIO_CONFIG_S_ACKNOWLEDGE, "acknowledge"),
        (VIRTIO_CONFIG_S_DRIVER, "driver"),
        (VIRTIO_CONFIG_S_FEATURES_OK, "features_ok"),
        (VIRTIO_CONFIG_S_DRIVER_OK, "driver_ok"),
        (VIRTIO_CONFIG_S_NEEDS_RESET, "needs_reset"),
        (VIRTIO_CONFIG_S_FAILED, "failed"),
    ]
    .into_iter()
    .filter(|(bit, _)| status & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

fn read_u16(mem: &GuestMemory, addr: u64, offset: u64) -> Option<u16> {
    let at = addr.checked_add(offset)?;
    mem.read_obj::<u16>(GuestAddress(at)).ok()
}

/// One queue's registers and, once it is ready, its ring indices read
/// from guest memory (the guest chose the addresses: every read is checked).
fn queue_report(index: usize, q: &QueueRegs, mem: &GuestMemory, event_idx: bool) -> Value {
    let mut v = json!({
        "index": index,
        "ready": q.ready,
        "size": q.size,
        "max_size": q.max_size,
    });
    if !q.ready || q.size == 0 {
        return v;
    }
    let size = u64::from(q.size);
    let rings = json!({
        // The driver's side: the next slot it will fill, and whether it
        // asked for no interrupts.
        "avail_idx": read_u16(mem, q.driver, 2),
        "avail_flags": read_u16(mem, q.driver, 0),
        // The device's side: how far it has completed.
        "used_idx": read_u16(mem, q.device, 2),
        "used_flags": read_u16(mem, q.device, 0),
        // EVENT_IDX: the used index the driver wants an interrupt at, and
        // the avail index the device last published as seen (wants a
        // notification at).
        "used_event": event_idx.then(|| read_u16(mem, q.driver, 4 + 2 * size)).flatten(),
        "avail_event": event_idx.then(|| read_u16(mem, q.device, 4 + 8 * size)).flatten(),
        "desc_table": format!("{:#x}", q.desc),
        "avail_ring": format!("{:#x}", q.driver),
        "used_ring": format!("{:#x}", q.device),
    });
    if let (Value::Object(out), Value::Object(more)) = (&mut v, rings) {
        out.extend(more);
    }
    v
}

impl MmioTransport {
    /// The transport's state for a post-mortem.
    pub fn postmortem(&self) -> Value {
        let event_idx = self.driver_features & (1u64 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let status = self.device_status();
        let queues: Vec<Value> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| queue_report(i, q, &self.mem, event_idx))
            .collect();
        json!({
            "type": crate::control::virtio_name(self.device.device_type()),
            "status": format!("{status:#x}"),
            "status_bits": status_names(status),
            "activated": self.activated,
            "device_features": format!("{:#x}", self.offered_features()),
            "driver_features": format!("{:#x}", self.driver_features),
            "interrupt_status": self.interrupt.status.load(std::sync::atomic::Ordering::SeqCst),
            "config_generation": self.config_generation,
            "queues": queues,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bits_are_named() {
        assert!(status_names(0).is_empty());
        assert_eq!(
            status_names(0xf),
            ["acknowledge", "driver", "features_ok", "driver_ok"]
        );
        assert_eq!(status_names(0x80 | 0x1), ["acknowledge", "failed"]);
    }

    #[test]
    fn queue_indices_come_from_guest_memory_and_bad_addresses_read_as_null() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let q = QueueRegs {
            max_size: 256,
            size: 16,
            ready: true,
            desc: 0x1000,
            driver: 0x2000,
            device: 0x3000,
        };
        mem.write_obj(5u16, GuestAddress(0x2002)).unwrap();
        mem.write_obj(3u16, GuestAddress(0x3002)).unwrap();
        mem.write_obj(4u16, GuestAddress(0x2000 + 4 + 32)).unwrap();
        mem.write_obj(5u16, GuestAddress(0x3000 + 4 + 128)).unwrap();
        let v = queue_report(1, &q, &mem, true);
        assert_eq!(v["index"], 1);
        assert_eq!(v["avail_idx"], 5);
        assert_eq!(v["used_idx"], 3);
        assert_eq!(v["used_event"], 4);
        assert_eq!(v["avail_event"], 5);
        assert_eq!(v["avail_ring"], "0x2000");
        let v = queue_report(0, &q, &mem, false);
        assert_eq!(v["used_event"], Value::Null);
        let far = QueueRegs {
            driver: u64::MAX - 1,
            device: 0x10_0000,
            ..q
        };
        let v = queue_report(0, &far, &mem, true);
        assert_eq!(v["avail_idx"], Value::Null);
        assert_eq!(v["used_idx"], Value::Null);
        let idle = QueueRegs { ready: false, ..q };
        assert!(queue_report(0, &idle, &mem, true)
            .get("avail_idx")
            .is_none());
    }
}
