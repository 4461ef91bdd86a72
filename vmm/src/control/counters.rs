//! VM-exit counters: one set per vCPU, written only by its own thread with
//! relaxed load + store (no locked instruction on the hot path), summed on read.

use std::sync::atomic::{AtomicU64, Ordering};

use kvm_ioctls::VcpuExit;
use serde::Serialize;

/// Why a vCPU left KVM_RUN, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Port I/O read.
    IoIn = 0,
    /// Port I/O write.
    IoOut,
    /// MMIO read.
    MmioRead,
    /// MMIO write.
    MmioWrite,
    /// Interrupted: a kick or a signal (KVM_EXIT_INTR or EINTR).
    Intr,
    /// HLT reached userspace.
    Hlt,
    /// Triple fault.
    Shutdown,
    /// Reset, shutdown or crash event.
    SystemEvent,
    /// Any other exit (internal error, failed entry, unexpected).
    Other,
}

const KINDS: usize = ExitKind::Other as usize + 1;

impl ExitKind {
    /// Every kind, in the order of their numbers.
    pub const ALL: [ExitKind; KINDS] = [
        ExitKind::IoIn,
        ExitKind::IoOut,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Intr,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::SystemEvent,
        ExitKind::Other,
    ];

    /// The kind's name, as the counters' field names.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::IoIn => "io_in",
            ExitKind::IoOut => "io_out",
            ExitKind::MmioRead => "mmio_read",
            ExitKind::MmioWrite => "mmio_write",
            ExitKind::Intr => "intr",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::SystemEvent => "system_event",
            ExitKind::Other => "other",
        }
    }

    /// The kind of a KVM exit.
    pub fn of(exit: &VcpuExit<'_>) -> ExitKind {
        match exit {
            VcpuExit::IoIn(..) => ExitKind::IoIn,
            VcpuExit::IoOut(..) => ExitKind::IoOut,
            VcpuExit::MmioRead(..) => ExitKind::MmioRead,
            VcpuExit::MmioWrite(..) => ExitKind::MmioWrite,
            VcpuExit::Intr => ExitKind::Intr,
            VcpuExit::Hlt => ExitKind::Hlt,
            VcpuExit::Shutdown => ExitKind::Shutdown,
            VcpuExit::SystemEvent(..) => ExitKind::SystemEvent,
            _ => ExitKind::Other,
        }
    }
}

/// One vCPU's counters.
#[derive(Default)]
pub struct VcpuCounters([AtomicU64; KINDS]);

impl VcpuCounters {
    /// Counts one exit. Only the owning vCPU thread calls this, so a plain
    /// relaxed load and store cannot lose updates.
    #[inline]
    pub fn count(&self, kind: ExitKind) {
        let c = &self.0[kind as usize];
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    fn get(&self, kind: ExitKind) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }
}

/// Exits by reason, as the API reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitTotals {
    /// Port I/O reads.
    pub io_in: u64,
    /// Port I/O writes.
    pub io_out: u64,
    /// MMIO reads.
    pub mmio_read: u64,
    /// MMIO writes.
    pub mmio_write: u64,
    /// Kicks and signals.
    pub intr: u64,
    /// HLT exits.
    pub hlt: u64,
    /// Triple faults.
    pub shutdown: u64,
    /// System events.
    pub system_event: u64,
    /// Everything else.
    pub other: u64,
    /// Sum of all of the above.
    pub total: u64,
}

impl ExitTotals {
    fn add(&mut self, c: &VcpuCounters) {
        self.io_in += c.get(ExitKind::IoIn);
        self.io_out += c.get(ExitKind::IoOut);
        self.mmio_read += c.get(ExitKind::MmioRead);
        self.mmio_write += c.get(ExitKind::MmioWrite);
        self.intr += c.get(ExitKind::Intr);
        self.hlt += c.get(ExitKind::Hlt);
        self.shutdown += c.get(ExitKind::Shutdown);
        self.system_event += c.get(ExitKind::SystemEvent);
        self.other += c.get(ExitKind::Other);
        self.total = self.io_in
            + self.io_out
            + self.mmio_read
            + self.mmio_write
            + self.intr
            + self.hlt
            + self.shutdown
            + self.system_event
            + self.other;
    }
}

/// The counters of every vCPU.
pub struct ExitCounters(Vec<VcpuCounters>);

impl ExitCounters {
    /// Zeroed counters for `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> Self {
        ExitCounters((0..vcpus).map(|_| VcpuCounters::default()).collect())
    }

    /// vCPU `index`'s counters (None if out of range).
    pub fn vcpu(&self, index: usize) -> Option<&VcpuCounters> {
        self.0.get(index)
    }

    /// Each vCPU's own totals, in vCPU order.
    pub fn per_vcpu(&self) -> Vec<ExitTotals> {
        self.0
            .iter()
            .map(|c| {
                let mut t = ExitTotals::default();
                t.add(c);
                t
            })
            .collect()
    }

    /// The sum over all vCPUs.
    pub fn totals(&self) -> ExitTotals {
        let mut t = ExitTotals::default();
        for c in &self.0 {
            t.add(c);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_every_vcpu() {
        let c = ExitCounters::new(2);
        c.vcpu(0).unwrap().count(ExitKind::IoOut);
        c.vcpu(0).unwrap().count(ExitKind::IoOut);
        c.vcpu(1).unwrap().count(ExitKind::IoOut);
        c.vcpu(1).unwrap().count(ExitKind::MmioWrite);
        c.vcpu(1).unwrap().count(ExitKind::Other);
        assert!(c.vcpu(2).is_none());
        let t = c.totals();
        assert_eq!(t.io_out, 3);
        assert_eq!(t.mmio_write, 1);
        assert_eq!(t.other, 1);
        assert_eq!(t.total, 5);
    }

    #[test]
    fn kinds_are_numbered_in_order_and_named_like_the_totals() {
        for (i, k) in ExitKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        let c = ExitCounters::new(1);
        c.vcpu(0).unwrap().count(ExitKind::SystemEvent);
        let v = serde_json::to_value(c.per_vcpu()[0]).unwrap();
        for k in ExitKind::ALL {
            assert!(v.get(k.name()).is_some(), "{}", k.name());
        }
        assert_eq!(v[ExitKind::SystemEvent.name()], 1);
    }

    #[test]
    fn kinds_of_exits() {
        assert_eq!(ExitKind::of(&VcpuExit::Hlt), ExitKind::Hlt);
        assert_eq!(ExitKind::of(&VcpuExit::Intr), ExitKind::Intr);
        assert_eq!(ExitKind::of(&VcpuExit::IoOut(0x3f8, &[0])), ExitKind::IoOut);
        assert_eq!(
            ExitKind::of(&VcpuExit::Debug(Default::default())),
            ExitKind::Other
        );
    }
}
