//! Legacy PC devices on the PIO bus: the 16550 serial console, the i8042
//! and vessel's boot-mark port.

pub mod boot_mark;
pub mod i8042;
pub mod serial;

use std::io;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// A vm-superio interrupt/event trigger that signals an eventfd (registered
/// as an irqfd for interrupts, so KVM injects them without a VM exit).
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Creates a trigger with a fresh non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self(EventFd::new(libc::EFD_NONBLOCK)?))
    }

    /// The eventfd behind the trigger (e.g. to register as an irqfd).
    pub fn event_fd(&self) -> &EventFd {
        &self.0
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}
