//! Address-space dispatch: maps PIO and MMIO ranges to emulated devices.

use std::sync::{Arc, Mutex};

/// A device that answers guest reads and writes within the range it is mapped at.
///
/// `offset` is relative to the start of the device's range. Implementations
/// must never panic on any offset or length: the guest chooses both.
pub trait BusDevice: Send {
    /// Fills `data` with what the guest reads at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the vCPU threads that may touch it.
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;
