//! vessel-vmm: the per-pod microVM monitor.
pub mod boot;
pub mod bus;
pub mod cli;
pub mod config;
pub mod control;
pub mod devices;
pub mod exit;
/// For the fuzz targets in `vmm/fuzz/` only; not a stable API.
#[doc(hidden)]
pub mod fuzzing;
pub mod jail;
pub mod logging;
pub mod memory;
pub mod seccomp;
#[cfg(test)]
mod test_sockets;
pub mod threads;
pub mod vcpu;
pub mod vm;
