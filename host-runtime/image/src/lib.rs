//! vessel's image store: references normalized as containerd does, pulls from
//! registries (mirrors, auth, platform selection, verification), a
//! content-addressed blob store, metadata in redb, layers unpacked once per
//! chain id, per-container overlayfs rootfs, and garbage collection.

pub mod archive;
pub mod content;
pub mod digest;
pub mod error;
pub mod fsat;
pub mod gc;
pub mod layers;
pub mod manifest;
mod manifest_fetch;
pub mod metadata;
mod oauth;
pub mod pinned;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod store;
pub mod unpack;
pub mod usage;

pub use error::{ImageError, Result};
pub use pull::Credentials;
pub use reference::ImageRef;
pub use registry::RegistryConfig;
pub use store::{FsUsage, ImageInfo, ImageStore, Limits, PulledImage, StoreConfig, StoreSettings};

#[cfg(test)]
mod unpack_tests;
