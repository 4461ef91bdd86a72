//! The i8042 keyboard controller at 0x60/0x64. Its one real job is the CPU
//! reset line: the guest's `reboot` (with `reboot=k`) writes 0xFE to port
//! 0x64, which vm-superio's `I8042Device` turns into a trigger, and the VMM
//! exits on it.
//!
//! vm-superio's device reads back 0 for everything, which makes Linux's i8042
//! driver wait out its command timeouts at boot (~0.5 s per probe). So this
//! wrapper also answers the handful of controller commands Linux sends
//! (self-test, config byte read/write, port enable/disable) by hand, as
//! Firecracker's i8042 does. There is no keyboard behind it and it raises no
//! interrupts: with `i8042.dumbkbd` Linux never talks to the keyboard.

use std::collections::VecDeque;
use std::fmt::Display;

use vm_superio::{I8042Device, Trigger};

use crate::bus::BusDevice;

/// Offset of the data port (0x60) from the device base.
pub const DATA_OFFSET: u64 = 0;
/// Offset of the status/command port (0x64) from the device base.
pub const COMMAND_OFFSET: u64 = 4;
/// The command that pulses the CPU reset line.
pub const CMD_RESET_CPU: u8 = 0xfe;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_WRITE_OUTPUT: u8 = 0xd1;
const CMD_WRITE_KBD_BUF: u8 = 0xd2;
const CMD_WRITE_AUX_BUF: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;

const CTR_KBD_INT: u8 = 0x01;
const CTR_SYSTEM: u8 = 0x04;
const CTR_KBD_DISABLED: u8 = 0x10;
const CTR_AUX_DISABLED: u8 = 0x20;

const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
const KBD_ACK: u8 = 0xfa;

// The guest can push replies faster than it reads them; keep the buffer small.
const OUTPUT_CAPACITY: usize = 16;

/// The i8042 controller; `T` fires on a CPU reset request.
pub struct I8042<T: Trigger> {
    reset: I8042Device<T>,
    ctr: u8,
    output: VecDeque<u8>,
    // A command waiting for its data byte on port 0x60.
    pending: Option<u8>,
    last_was_command: bool,
}

impl<T: Trigger> I8042<T>
where
    T::E: Display,
{
    /// Creates the controller; `reset_trigger` fires when the guest asks for a reset.
    pub fn new(reset_trigger: T) -> Self {
        Self {
            reset: I8042Device::new(reset_trigger),
            ctr: CTR_KBD_INT | CTR_SYSTEM,
            output: VecDeque::with_capacity(OUTPUT_CAPACITY),
            pending: None,
            last_was_command: false,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.output.len() < OUTPUT_CAPACITY {
            self.output.push_back(byte);
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYSTEM;
        if !self.output.is_empty() {
            s |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            s |= STATUS_LAST_WAS_COMMAND;
        }
        s
    }

    fn command(&mut self, cmd: u8) {
        self.pending = None;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTPUT | CMD_WRITE_KBD_BUF | CMD_WRITE_AUX_BUF
            | CMD_WRITE_AUX => self.pending = Some(cmd),
            CMD_DISABLE_AUX => self.ctr |= CTR_AUX_DISABLED,
            CMD_ENABLE_AUX => self.ctr &= !CTR_AUX_DISABLED,
            CMD_DISABLE_KBD => self.ctr |= CTR_KBD_DISABLED,
            CMD_ENABLE_KBD => self.ctr &= !CTR_KBD_DISABLED,
            CMD_SELF_TEST => self.push(SELF_TEST_OK),
            CMD_TEST_KBD | CMD_TEST_AUX => self.push(PORT_TEST_OK),
            CMD_RESET_CPU => {
                if let Err(e) = self.reset.write(COMMAND_OFFSET as u8, cmd) {
                    tracing::error!("cannot report the guest's reset request: {e}");
                }
            }
            other => tracing::trace!("i8042: ignoring command {other:#x}"),
        }
    }

    fn data(&mut self, byte: u8) {
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => self.ctr = byte,
            Some(CMD_WRITE_KBD_BUF) => self.push(byte),
            // Output port and mouse writes: nothing is behind them.
            Some(_) => {}
            // A keyboard command: acknowledge it, as a keyboard would.
            None => self.push(KBD_ACK),
        }
    }
}

impl<T: Trigger + Send> BusDevice for I8042<T>
where
    T::E: Display,
{
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            DATA_OFFSET => self.output.pop_front().unwrap_or(0),
            COMMAND_OFFSET => self.status(),
            _ => return,
        };
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let [byte] = data else { return };
        match offset {
            DATA_OFFSET => {
                self.last_was_command = false;
                self.data(*byte);
            }
            COMMAND_OFFSET => {
                self.last_was_command = true;
                self.command(*byte);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::legacy::EventFdTrigger;

    fn dev() -> (I8042<EventFdTrigger>, vmm_sys_util::eventfd::EventFd) {
        let t = EventFdTrigger::new().unwrap();
        let evt = t.event_fd().try_clone().unwrap();
        (I8042::new(t), evt)
    }

    fn read(d: &mut I8042<EventFdTrigger>, offset: u64) -> u8 {
        let mut b = [0u8];
        d.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn reset_request_is_reported() {
        let (mut d, evt) = dev();
        assert!(evt.read().is_err(), "no reset yet");
        d.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(evt.read().unwrap(), 1);
    }

    #[test]
    fn other_writes_do_not_reset() {
        let (mut d, evt) = dev();
        d.write(DATA_OFFSET, &[CMD_RESET_CPU]);
        d.write(COMMAND_OFFSET, &[CMD_RESET_CPU - 1]);
        d.write(COMMAND_OFFSET, &[CMD_RESET_CPU, 0]);
        d.write(2, &[CMD_RESET_CPU]);
        assert!(evt.read().is_err());
    }

    #[test]
    fn answers_linux_probe_sequence() {
        let (mut d, _evt) = dev();
        assert_eq!(read(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        d.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_ne!(read(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(read(&mut d, DATA_OFFSET), SELF_TEST_OK);
        assert_eq!(read(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);

        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        let ctr = read(&mut d, DATA_OFFSET);
        assert_eq!(ctr, CTR_KBD_INT | CTR_SYSTEM);
        d.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        d.write(DATA_OFFSET, &[0x47]);
        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(&mut d, DATA_OFFSET), 0x47);
        d.write(COMMAND_OFFSET, &[CMD_DISABLE_KBD]);
        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(&mut d, DATA_OFFSET), 0x47 | CTR_KBD_DISABLED);
    }

    #[test]
    fn output_buffer_is_bounded() {
        let (mut d, _evt) = dev();
        for _ in 0..1000 {
            d.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        }
        let mut n = 0;
        while read(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL != 0 {
            read(&mut d, DATA_OFFSET);
            n += 1;
        }
        assert_eq!(n, OUTPUT_CAPACITY);
    }
}
