//! The i8042 keyboard controller at 0x60/0x64. It has two jobs:
//!
//! - The CPU reset line: the guest's `reboot` (with `reboot=k`) writes 0xFE
//!   to port 0x64, which vm-superio's `I8042Device` turns into a trigger, and
//!   the VMM exits on it.
//! - Ctrl-alt-del: the host asks the guest to shut down by typing it
//!   ([`I8042::ctrl_alt_del`]); the keys arrive on IRQ 1 like a PS/2
//!   keyboard's, and the guest kernel's keyboard handler signals its init.
//!
//! vm-superio's device reads back 0 for everything and has no keyboard, which
//! makes Linux's i8042 driver wait out its command timeouts at boot (~0.5 s
//! per probe). So this wrapper also answers the handful of controller
//! commands Linux sends (self-test, config byte read/write, port
//! enable/disable) and carries the keyboard's bytes, as Firecracker's i8042
//! does. The keyboard itself is "dumb" (the VMM passes `i8042.dumbkbd`):
//! Linux never sends it commands, and if it does they are merely acknowledged.

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::{Arc, Mutex};

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

/// Ctrl, Alt, Delete: the make codes of scancode set 2, which Linux's AT
/// keyboard driver expects from an untranslated port (the config byte has no
/// XLATE bit, so Linux runs the port untranslated). Only presses: the guest
/// reacts to the Delete press while Ctrl and Alt are down.
const CTRL_ALT_DEL: [u8; 4] = [0x14, 0x11, 0xe0, 0x71];

// The guest can push replies faster than it reads them; keep the buffer small.
const OUTPUT_CAPACITY: usize = 16;

/// Why ctrl-alt-del could not be typed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum I8042Error {
    /// The guest has not enabled the keyboard interrupt: no keyboard driver
    /// listens (yet), so the keys would never be read.
    #[error("the guest's keyboard driver is not listening (keyboard interrupt disabled)")]
    KeyboardInterruptDisabled,
    /// The output buffer lacks room for the whole key sequence (the guest is
    /// not reading it).
    #[error("the keyboard buffer is full (the guest is not reading it)")]
    BufferFull,
    /// The keys are queued but the interrupt could not be raised.
    #[error("cannot raise the keyboard interrupt: {0}")]
    Interrupt(String),
}

/// A keyboard controller the host can type ctrl-alt-del on.
pub trait CtrlAltDel: Send {
    /// Queues the ctrl-alt-del key presses and interrupts the guest.
    fn ctrl_alt_del(&mut self) -> Result<(), I8042Error>;
}

/// The i8042 as the control API holds it: the same mutex the PIO bus locks
/// for each guest access, so it is only ever held for one port access.
pub type SharedCtrlAltDel = Arc<Mutex<dyn CtrlAltDel>>;

/// The i8042 controller; `R` fires on a CPU reset request, `K` raises the
/// keyboard interrupt (IRQ 1).
pub struct I8042<R: Trigger, K: Trigger> {
    reset: I8042Device<R>,
    kbd_irq: K,
    ctr: u8,
    output: VecDeque<u8>,
    // A command waiting for its data byte on port 0x60.
    pending: Option<u8>,
    last_was_command: bool,
}

impl<R: Trigger, K: Trigger> I8042<R, K>
where
    R::E: Display,
    K::E: Display,
{
    /// Creates the controller; `reset_trigger` fires when the guest asks for
    /// a reset, `kbd_irq` when keyboard data waits for it.
    pub fn new(reset_trigger: R, kbd_irq: K) -> Self {
        Self {
            reset: I8042Device::new(reset_trigger),
            kbd_irq,
            // Keyboard interrupt off until a driver turns it on (Linux does,
            // once it has its IRQ handler): so ctrl-alt-del can tell whether
            // anybody listens, and a guest without a driver gets a hard stop
            // at once instead of a grace period nobody uses.
            ctr: CTR_SYSTEM,
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

    fn kbd_interrupt_enabled(&self) -> bool {
        self.ctr & CTR_KBD_INT != 0
    }

    /// Raises IRQ 1 if data waits and the guest enabled the interrupt. Linux
    /// reads one byte per interrupt, so this runs again after each read.
    fn interrupt_if_data(&self) -> Result<(), I8042Error> {
        if self.output.is_empty() || !self.kbd_interrupt_enabled() {
            return Ok(());
        }
        self.kbd_irq
            .trigger()
            .map_err(|e| I8042Error::Interrupt(e.to_string()))
    }

    fn interrupt_or_log(&self) {
        if let Err(e) = self.interrupt_if_data() {
            tracing::error!("i8042: {e}");
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
            // Controller replies raise no interrupt: Linux polls for them.
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
            Some(CMD_WRITE_CTR) => {
                let was_enabled = self.kbd_interrupt_enabled();
                self.ctr = byte;
                // Keys typed while the driver had the interrupt off.
                if !was_enabled {
                    self.interrupt_or_log();
                }
            }
            Some(CMD_WRITE_KBD_BUF) => {
                self.push(byte);
                self.interrupt_or_log();
            }
            // Output port and mouse writes: nothing is behind them.
            Some(_) => {}
            // A keyboard command: acknowledge it, as a keyboard would.
            None => {
                self.push(KBD_ACK);
                self.interrupt_or_log();
            }
        }
    }
}

impl<R: Trigger + Send, K: Trigger + Send> CtrlAltDel for I8042<R, K>
where
    R::E: Display,
    K::E: Display,
{
    /// All four bytes or none: a partial sequence would leave keys pressed
    /// without the Delete that makes them mean anything.
    fn ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        if !self.kbd_interrupt_enabled() {
            return Err(I8042Error::KeyboardInterruptDisabled);
        }
        if OUTPUT_CAPACITY - self.output.len() < CTRL_ALT_DEL.len() {
            return Err(I8042Error::BufferFull);
        }
        self.output.extend(CTRL_ALT_DEL);
        self.interrupt_if_data()
    }
}

impl<R: Trigger + Send, K: Trigger + Send> BusDevice for I8042<R, K>
where
    R::E: Display,
    K::E: Display,
{
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            DATA_OFFSET => {
                let byte = self.output.pop_front().unwrap_or(0);
                self.interrupt_or_log();
                byte
            }
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
    use vmm_sys_util::eventfd::EventFd;

    type Dev = I8042<EventFdTrigger, EventFdTrigger>;

    struct Fixture {
        dev: Dev,
        reset: EventFd,
        irq: EventFd,
    }

    /// A controller whose keyboard interrupt the guest's driver has enabled.
    fn dev() -> Fixture {
        let mut f = fresh();
        f.dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        f.dev.write(DATA_OFFSET, &[CTR_SYSTEM | CTR_KBD_INT]);
        interrupts(&f.irq);
        f
    }

    /// A controller as the guest finds it at boot.
    fn fresh() -> Fixture {
        let reset = EventFdTrigger::new().unwrap();
        let irq = EventFdTrigger::new().unwrap();
        let reset_evt = reset.event_fd().try_clone().unwrap();
        let irq_evt = irq.event_fd().try_clone().unwrap();
        Fixture {
            dev: I8042::new(reset, irq),
            reset: reset_evt,
            irq: irq_evt,
        }
    }

    fn read(d: &mut Dev, offset: u64) -> u8 {
        let mut b = [0u8];
        d.read(offset, &mut b);
        b[0]
    }

    /// Reads the output buffer empty, as the guest would; how many bytes it held.
    fn drain(d: &mut Dev) -> usize {
        let mut n = 0;
        while read(d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL != 0 {
            read(d, DATA_OFFSET);
            n += 1;
        }
        n
    }

    /// How many interrupts were raised since the last call.
    fn interrupts(evt: &EventFd) -> u64 {
        evt.read().unwrap_or(0)
    }

    #[test]
    fn reset_request_is_reported() {
        let Fixture { mut dev, reset, .. } = dev();
        assert!(reset.read().is_err(), "no reset yet");
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(reset.read().unwrap(), 1);
    }

    #[test]
    fn other_writes_do_not_reset() {
        let Fixture { mut dev, reset, .. } = dev();
        dev.write(DATA_OFFSET, &[CMD_RESET_CPU]);
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU - 1]);
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU, 0]);
        dev.write(2, &[CMD_RESET_CPU]);
        assert!(reset.read().is_err());
    }

    #[test]
    fn answers_linux_probe_sequence() {
        let Fixture { mut dev, irq, .. } = fresh();
        let d = &mut dev;
        assert_eq!(read(d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        d.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_ne!(read(d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(read(d, DATA_OFFSET), SELF_TEST_OK);
        assert_eq!(read(d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);

        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        let ctr = read(d, DATA_OFFSET);
        assert_eq!(ctr, CTR_SYSTEM, "no keyboard interrupt before a driver");
        d.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        d.write(DATA_OFFSET, &[0x47]);
        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(d, DATA_OFFSET), 0x47);
        d.write(COMMAND_OFFSET, &[CMD_DISABLE_KBD]);
        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(d, DATA_OFFSET), 0x47 | CTR_KBD_DISABLED);
        // Linux polls for controller replies; they raise no interrupt.
        assert_eq!(interrupts(&irq), 0);
    }

    #[test]
    fn output_buffer_is_bounded() {
        let Fixture { mut dev, .. } = dev();
        for _ in 0..1000 {
            dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        }
        assert_eq!(drain(&mut dev), OUTPUT_CAPACITY);
    }

    #[test]
    fn ctrl_alt_del_types_set2_make_codes_one_interrupt_per_byte() {
        let Fixture { mut dev, irq, .. } = dev();
        dev.ctrl_alt_del().unwrap();
        assert_eq!(interrupts(&irq), 1);
        let mut got = Vec::new();
        // As Linux's handler does: one status check and one byte per interrupt.
        while read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL != 0 {
            got.push(read(&mut dev, DATA_OFFSET));
            let more = read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL != 0;
            assert_eq!(interrupts(&irq), u64::from(more), "after {got:x?}");
        }
        assert_eq!(got, [0x14, 0x11, 0xe0, 0x71]);
    }

    #[test]
    fn ctrl_alt_del_needs_room_for_all_four_bytes() {
        let Fixture { mut dev, irq, .. } = dev();
        // Four requests fill the 16-byte buffer exactly; a fifth does not fit.
        for _ in 0..OUTPUT_CAPACITY / CTRL_ALT_DEL.len() {
            dev.ctrl_alt_del().unwrap();
        }
        interrupts(&irq);
        assert_eq!(dev.ctrl_alt_del(), Err(I8042Error::BufferFull));
        assert_eq!(interrupts(&irq), 0, "a refused request raises nothing");
        // With 13 bytes queued (3 free), the next one is refused whole.
        for _ in 0..3 {
            read(&mut dev, DATA_OFFSET);
        }
        assert_eq!(dev.ctrl_alt_del(), Err(I8042Error::BufferFull));
        read(&mut dev, DATA_OFFSET);
        dev.ctrl_alt_del().unwrap();
        assert_eq!(drain(&mut dev), OUTPUT_CAPACITY);
    }

    #[test]
    fn ctrl_alt_del_is_refused_while_the_guest_has_the_interrupt_off() {
        let mut booting = fresh().dev;
        assert_eq!(
            booting.ctrl_alt_del(),
            Err(I8042Error::KeyboardInterruptDisabled),
            "no driver yet"
        );
        let Fixture { mut dev, irq, .. } = dev();
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        dev.write(DATA_OFFSET, &[CTR_SYSTEM]);
        assert_eq!(
            dev.ctrl_alt_del(),
            Err(I8042Error::KeyboardInterruptDisabled)
        );
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(interrupts(&irq), 0);
    }

    #[test]
    fn enabling_the_interrupt_delivers_waiting_data() {
        let Fixture { mut dev, irq, .. } = dev();
        dev.ctrl_alt_del().unwrap();
        // The driver turns the interrupt off (probe), then on again.
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        dev.write(DATA_OFFSET, &[CTR_SYSTEM]);
        interrupts(&irq);
        read(&mut dev, DATA_OFFSET);
        assert_eq!(interrupts(&irq), 0, "interrupt off: no re-raise");
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        dev.write(DATA_OFFSET, &[CTR_SYSTEM | CTR_KBD_INT]);
        assert_eq!(interrupts(&irq), 1);
    }

    #[test]
    fn keyboard_commands_are_acknowledged_with_an_interrupt() {
        let Fixture { mut dev, irq, .. } = dev();
        dev.write(DATA_OFFSET, &[0xed]); // set LEDs
        assert_eq!(interrupts(&irq), 1);
        assert_eq!(read(&mut dev, DATA_OFFSET), KBD_ACK);
        assert_eq!(interrupts(&irq), 0);
    }
}
