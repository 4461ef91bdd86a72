//! CRI devices: device nodes in the container and the device cgroup rules
//! that let it use them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use k8s_cri::v1::Device;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::SpecError;

/// Device nodes and cgroup rules for the container.
#[derive(Debug, Default)]
pub struct Devices {
    /// `linux.devices`.
    pub nodes: Vec<LinuxDevice>,
    /// `linux.resources.devices`: deny everything, then allow each node
    /// (containerd's default and `WithDevices`), or allow everything for a
    /// privileged container. Empty when the container has neither.
    pub rules: Vec<LinuxDeviceCgroup>,
}

/// The CRI devices, as containerd's `WithDevices` makes them: the host
/// device's type, numbers, mode and owner (symlinks resolved), at the
/// container path, with the requested permissions (`rwm`, default all).
/// The node is created in the guest with the host's numbers, so a device
/// works when the guest kernel has its driver (`/dev/fuse`, `/dev/net/tun`).
/// A privileged container gets a rule allowing every device.
pub fn build(devices: &[Device], privileged: bool) -> Result<Devices, SpecError> {
    let mut out = Devices::default();
    if privileged {
        out.rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rwm")
                .build()?,
        );
    } else if !devices.is_empty() {
        out.rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()?,
        );
    }
    for (i, device) in devices.iter().enumerate() {
        let field = |name: &str| format!("devices[{i}].{name}");
        if !device.container_path.starts_with('/')
            || device.container_path.contains("..")
            || device.container_path.contains('\0')
        {
            return Err(SpecError::invalid(
                field("container_path"),
                format!(
                    "{:?} is not an absolute path without \"..\"",
                    device.container_path
                ),
            ));
        }
        let access = if device.permissions.is_empty() {
            "rwm".to_string()
        } else {
            device.permissions.clone()
        };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(SpecError::invalid(
                field("permissions"),
                format!("{:?} is not made of r, w and m", device.permissions),
            ));
        }
        let host = Path::new(&device.host_path);
        if !host.is_absolute() {
            return Err(SpecError::invalid(
                field("host_path"),
                format!("{:?} is not an absolute path", device.host_path),
            ));
        }
        // Follows symlinks (/dev/disk/by-id/...), as containerd does.
        let meta = std::fs::metadata(host).map_err(|e| {
            SpecError::invalid(field("host_path"), format!("{:?}: {e}", device.host_path))
        })?;
        let typ = if meta.file_type().is_char_device() {
            LinuxDeviceType::C
        } else if meta.file_type().is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(SpecError::invalid(
                field("host_path"),
                format!("{:?} is not a device", device.host_path),
            ));
        };
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
        out.nodes.push(
            LinuxDeviceBuilder::default()
                .path(&device.container_path)
                .typ(typ)
                .major(major)
                .minor(minor)
                .file_mode(meta.mode() & 0o7777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build()?,
        );
        out.rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(major)
                .minor(minor)
                .access(access)
                .build()?,
        );
    }
    Ok(out)
}
