//! A NIC's tap, opened from its [`NetSpec`] (parsed and checked in the
//! `vessel-vmm-api` crate).

pub use vessel_vmm_api::launch::MAX_NETS;
pub use vessel_vmm_api::net::{MacAddr, NetSpec, TapSource, MAX_IFNAME};

/// Error from the `--net` flags as a whole.
#[derive(Debug, thiserror::Error)]
pub enum NetConfigError {
    /// A tap cannot be opened.
    #[error(transparent)]
    Tap(#[from] super::tap::TapError),
}

/// A NIC ready to attach: its open tap and the guest's MAC.
#[derive(Debug)]
pub struct NetConfig {
    /// The open tap.
    pub tap: super::tap::Tap,
    /// The guest's MAC, if given.
    pub mac: Option<MacAddr>,
}

/// Opens the taps in order (the guest sees them as eth0, eth1, ...); the
/// specs were checked by `LaunchConfig::validate` (count, duplicates).
pub fn open_all(specs: &[NetSpec]) -> Result<Vec<NetConfig>, NetConfigError> {
    specs
        .iter()
        .map(|s| {
            Ok(NetConfig {
                tap: super::tap::Tap::open(s)?,
                mac: s.mac,
            })
        })
        .collect()
}
