//! The boot-mark port: the guest agent writes one byte per boot phase it
//! reaches (`vessel_vmm_api::boot_mark`), and each known code marks its phase
//! in the boot timeline, first write wins. Anything else is ignored without
//! a log line, since a guest may write here in a loop.

use vessel_vmm_api::BootMark;

use crate::bus::BusDevice;
use crate::control::timeline::{self, Phase};

/// The device on [`vessel_vmm_api::BOOT_MARK_PORT`].
#[derive(Debug, Default)]
pub struct BootMarkPort;

/// The timeline phase a guest mark stands for.
pub fn phase_of(mark: BootMark) -> Phase {
    match mark {
        BootMark::InitStarted => Phase::GuestInitStarted,
        BootMark::RootReady => Phase::AgentRootReady,
        BootMark::SetupDone => Phase::AgentSetupDone,
        BootMark::Listening => Phase::AgentListening,
    }
}

impl BusDevice for BootMarkPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let [code] = data {
            if let Some(mark) = BootMark::from_code(*code) {
                timeline::mark(phase_of(mark));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mark_has_its_own_phase() {
        let mut phases: Vec<&str> = BootMark::ALL.iter().map(|m| phase_of(*m).name()).collect();
        phases.sort_unstable();
        phases.dedup();
        assert_eq!(phases.len(), BootMark::ALL.len());
    }

    #[test]
    fn a_known_code_marks_its_phase_and_others_do_nothing() {
        let mut port = BootMarkPort;
        port.write(0, &[0xee]);
        port.write(0, &[1, 2]);
        port.write(0, &[BootMark::SetupDone.code()]);
        assert!(timeline::global().at(Phase::AgentSetupDone).is_some());
        let mut read = [7u8];
        port.read(0, &mut read);
        assert_eq!(read, [0]);
    }
}
