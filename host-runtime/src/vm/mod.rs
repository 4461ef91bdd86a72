//! Pod VMs as seen from the host: how to start a `vessel-vmm` process, reach
//! its agent over the hybrid vsock socket, and stop it.

mod config;
mod process;

pub use config::{FsShare, JailConfig, NetDevice, VmConfig, VmConfigError};
pub use process::{
    last_log_line, vmm_record_path, Isolation, VmError, VmExit, VmProcess, AGENT_VSOCK_PORT,
};
