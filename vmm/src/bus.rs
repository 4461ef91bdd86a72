//! Address-space dispatch: maps PIO and MMIO ranges to emulated devices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use serde_json::json;

/// A device that answers guest reads and writes within the range it is mapped at.
///
/// `offset` is relative to the start of the device's range. Implementations
/// must never panic on any offset or length: the guest chooses both.
pub trait BusDevice: Send {
    /// Fills `data` with what the guest reads at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
    /// The device's state for a post-mortem; None (the default) for
    /// devices with nothing to report.
    fn report(&self) -> Option<serde_json::Value> {
        None
    }
}

/// A device shared between the vCPU threads that may touch it.
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

/// Error from mapping a device on a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around the end of the address space.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// The range overlaps a device that is already mapped.
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other:#x}")]
    Overlap {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
        /// Start of the range it collides with.
        other: u64,
    },
}

/// One mapped range.
#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedBusDevice,
}

/// An address space (the PIO ports or the MMIO window) and the devices in it.
///
/// Built once before the vCPUs start, then only read, so vCPU threads share
/// it without a lock; each device has its own mutex.
#[derive(Clone, Default)]
pub struct Bus {
    // Keyed by base address: the candidate for an address is the last entry
    // whose base is <= it, found in O(log n).
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    /// Creates an empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` at `[base, base + len)`; rejects empty, wrapping or overlapping ranges.
    pub fn insert(&mut self, device: SharedBusDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = match base.checked_add(len) {
            Some(end) if len > 0 => end,
            _ => return Err(BusError::InvalidRange { base, len }),
        };
        // The closest range starting at or below `base` must end before it...
        if let Some((&other, e)) = self.ranges.range(..=base).next_back() {
            if other + e.len > base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        // ...and no range may start inside the new one.
        if let Some((&other, _)) = self.ranges.range(base..end).next() {
            return Err(BusError::Overlap { base, len, other });
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Returns the device whose range holds the whole access `[addr, addr + len)`,
    /// with the access's offset inside that range.
    fn resolve(&self, addr: u64, len: usize) -> Option<(u64, &SharedBusDevice)> {
        let (&base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        let access_end = offset.checked_add(len as u64)?;
        (access_end <= entry.len).then_some((offset, &entry.device))
    }

    /// Dispatches a guest read; returns false when nothing is mapped there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                // A poisoned lock means a device panicked earlier; its state
                // is still memory-safe, so keep serving rather than panic too.
                device
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a guest write; returns false when nothing is mapped there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                device
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

impl Bus {
    /// Every device's [`BusDevice::report`], as `{"base": .., ...}` in
    /// address order. A device whose lock stays taken for `wait` (a vCPU
    /// stuck in one of its accesses) is reported as busy rather than waited
    /// for: a post-mortem must not hang on what it is diagnosing.
    pub fn reports(&self, wait: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        for (&base, entry) in &self.ranges {
            let report = loop {
                match entry.device.try_lock() {
                    Ok(dev) => break dev.report(),
                    Err(TryLockError::Poisoned(p)) => break p.into_inner().report(),
                    Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(TryLockError::WouldBlock) => {
                        break Some(json!({
                            "error": format!("busy: its lock was held for {} ms", wait.as_millis())
                        }))
                    }
                }
            };
            if let Some(mut r) = report {
                if let Some(obj) = r.as_object_mut() {
                    obj.insert("base".into(), json!(format!("{base:#x}")));
                }
                out.push(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the last access it saw.
    #[derive(Default)]
    struct Probe {
        last: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last = Some((offset, data.to_vec()));
        }
    }

    fn probe() -> (Arc<Mutex<Probe>>, SharedBusDevice) {
        let p = Arc::new(Mutex::new(Probe::default()));
        let shared: SharedBusDevice = p.clone();
        (p, shared)
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        bus.insert(probe().1, 0x100, 0x10).unwrap();
        for (base, len) in [(0x100, 0x10), (0xf8, 0x10), (0x10f, 1), (0x0, 0x1000)] {
            assert!(matches!(
                bus.insert(probe().1, base, len),
                Err(BusError::Overlap { other: 0x100, .. })
            ));
        }
        assert_eq!(
            bus.insert(probe().1, 0x200, 0),
            Err(BusError::InvalidRange {
                base: 0x200,
                len: 0
            })
        );
        assert!(matches!(
            bus.insert(probe().1, u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
        // Adjacent ranges on either side are fine.
        bus.insert(probe().1, 0xf0, 0x10).unwrap();
        bus.insert(probe().1, 0x110, 0x10).unwrap();
    }

    #[test]
    fn dispatches_with_offsets() {
        let mut bus = Bus::new();
        let (a, shared_a) = probe();
        let (b, shared_b) = probe();
        bus.insert(shared_a, 0x3f8, 8).unwrap();
        bus.insert(shared_b, 0xd000_0000, 0x1000).unwrap();

        assert!(bus.write(0x3fb, &[0x80]));
        assert_eq!(a.lock().unwrap().last, Some((3, vec![0x80])));
        assert!(bus.write(0xd000_0050, &[1, 0, 0, 0]));
        assert_eq!(b.lock().unwrap().last, Some((0x50, vec![1, 0, 0, 0])));

        let mut data = [0u8; 2];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5, 5]);
    }

    /// Reports the last write it saw.
    struct Reporter(u8);

    impl BusDevice for Reporter {
        fn read(&mut self, _: u64, _: &mut [u8]) {}
        fn write(&mut self, _: u64, data: &[u8]) {
            self.0 = data[0];
        }
        fn report(&self) -> Option<serde_json::Value> {
            Some(json!({ "last": self.0 }))
        }
    }

    #[test]
    fn reports_skip_silent_devices_and_never_wait_on_a_held_lock() {
        let mut bus = Bus::new();
        bus.insert(probe().1, 0x10, 1).unwrap();
        let a = Arc::new(Mutex::new(Reporter(0)));
        let b = Arc::new(Mutex::new(Reporter(0)));
        bus.insert(a.clone(), 0x2000, 0x1000).unwrap();
        bus.insert(b.clone(), 0x1000, 0x1000).unwrap();
        assert!(bus.write(0x2000, &[7]));
        let r = bus.reports(Duration::from_millis(10));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], json!({ "base": "0x1000", "last": 0 }));
        assert_eq!(r[1], json!({ "base": "0x2000", "last": 7 }));
        let _held = a.lock().unwrap();
        let started = Instant::now();
        let r = bus.reports(Duration::from_millis(20));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(r[1]["base"], "0x2000");
        assert!(r[1]["error"].as_str().unwrap().starts_with("busy"), "{r:?}");
    }

    #[test]
    fn unmapped_and_straddling_accesses_miss() {
        let mut bus = Bus::new();
        bus.insert(probe().1, 0x60, 1).unwrap();
        let mut data = [0u8; 1];
        assert!(!bus.read(0x5f, &mut data));
        assert!(!bus.read(0x61, &mut data));
        // A 2-byte access at the last byte runs past the device's range.
        assert!(!bus.write(0x60, &[0, 0]));
        assert!(!bus.read(u64::MAX, &mut data));
    }
}
