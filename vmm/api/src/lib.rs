//! vessel-vmm's typed contracts, shared by `vessel-vmm` (which parses them)
//! and vesseld (which builds them): the launch configuration
//! ([`LaunchConfig`], given as JSON with `--config` or built from the
//! human flags), the `key=value` device specs, and the control API client.

pub mod boot_mark;
pub mod client;
pub mod disk;
pub mod fs;
pub mod kv;
pub mod launch;
pub mod net;

pub use boot_mark::{BootMark, BOOT_MARK_PORT};
pub use client::{ApiClient, ApiError, Request};
pub use disk::DiskSpec;
pub use fs::FsSpec;
pub use kv::SpecError;
pub use launch::{
    Console, JailConfig, LaunchConfig, LaunchError, LogFile, SeccompMode, DEFAULT_LOG_MAX_BYTES,
};
pub use net::{MacAddr, NetSpec, TapSource};
