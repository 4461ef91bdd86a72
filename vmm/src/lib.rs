//! vessel-vmm: the per-pod microVM monitor.
pub mod bus;
pub mod devices;
