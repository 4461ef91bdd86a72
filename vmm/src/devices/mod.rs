//! Emulated devices: legacy PIO devices and virtio-mmio devices.
pub mod legacy;
pub mod virtio;
