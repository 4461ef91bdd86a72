//! The 16550 UART at COM1 (0x3f8, IRQ 4), on vm-superio's `Serial`: the guest
//! console. Output goes to a writer; guest input is not wired up yet.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// Where console bytes go.
pub type ConsoleWriter = Box<dyn Write + Send>;

/// Number of registers of a 16550.
const SERIAL_REGS: u64 = 8;

/// The serial console device.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, ConsoleWriter>,
}

impl SerialDevice {
    /// Creates the UART; `irq` fires its interrupt, output goes to `out`.
    pub fn new(irq: EventFdTrigger, out: ConsoleWriter) -> Self {
        Self {
            serial: Serial::new(irq, out),
        }
    }

    /// Flushes buffered console output (at VM exit).
    pub fn flush(&mut self) {
        if let Err(e) = self.serial.writer_mut().flush() {
            crate::guest_warn!("cannot flush the serial console: {e}");
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Registers are bytes; a wider or out-of-range access reads as zero.
        data.fill(0);
        if let ([byte], true) = (data, offset < SERIAL_REGS) {
            *byte = self.serial.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let ([byte], true) = (data, offset < SERIAL_REGS) {
            // A failed console write must not stop the guest: log and go on.
            if let Err(e) = self.serial.write(offset as u8, *byte) {
                tracing::debug!("serial write failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_reach_the_output() {
        let out = Shared::default();
        let irq = EventFdTrigger::new().unwrap();
        let mut dev = SerialDevice::new(irq, Box::new(out.clone()));
        for b in b"hello\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello\n");
    }

    #[test]
    fn thr_empty_interrupt_fires() {
        let irq = EventFdTrigger::new().unwrap();
        let evt = irq.event_fd().try_clone().unwrap();
        let mut dev = SerialDevice::new(irq, Box::new(std::io::sink()));
        // IER: enable the THR-empty interrupt, which is raised right away.
        dev.write(1, &[0x02]);
        assert_eq!(evt.read().unwrap(), 1);
        // LSR reports THR empty.
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }

    #[test]
    fn odd_accesses_are_ignored() {
        let out = Shared::default();
        let mut dev = SerialDevice::new(EventFdTrigger::new().unwrap(), Box::new(out.clone()));
        dev.write(0, b"ab");
        dev.write(100, b"c");
        let mut data = [0xffu8; 4];
        dev.read(0, &mut data);
        assert_eq!(data, [0; 4]);
        dev.read(9, &mut data[..1]);
        assert!(out.0.lock().unwrap().is_empty());
    }
}
