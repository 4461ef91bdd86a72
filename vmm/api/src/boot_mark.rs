//! Boot marks: the guest agent tells the VMM when it reaches each of its boot
//! phases by writing the phase's code to one I/O port (one VM exit each), and
//! vessel-vmm records when each came in its boot timeline. So the guest's
//! phases and the VMM's are on one clock, the host's, with no clock sync.
//! A VMM without the device (QEMU) ignores the writes.

/// The I/O port the marks are written to. Not port 0x80, which Linux uses
/// for I/O delays with whatever value is in a register.
pub const BOOT_MARK_PORT: u16 = 0x440;

/// A guest boot phase, as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BootMark {
    /// The kernel ran `/init` (the agent's first instruction).
    InitStarted = 1,
    /// The agent's root filesystem is in place (left the initramfs).
    RootReady = 2,
    /// The agent's setup is done (mounts, hostname, network loopback).
    SetupDone = 3,
    /// The agent listens on its vsock port.
    Listening = 4,
}

impl BootMark {
    /// Every mark, in the order a boot reaches them.
    pub const ALL: [BootMark; 4] = [
        BootMark::InitStarted,
        BootMark::RootReady,
        BootMark::SetupDone,
        BootMark::Listening,
    ];

    /// The byte written to the port.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The mark a byte written to the port stands for, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_others_mean_nothing() {
        for m in BootMark::ALL {
            assert_eq!(BootMark::from_code(m.code()), Some(m));
        }
        assert_eq!(BootMark::from_code(0), None);
        assert_eq!(BootMark::from_code(0xff), None);
    }
}
