//! The process's capabilities: containerd's default set, the CRI's add/drop
//! lists (with `ALL`), ambient capabilities, and every capability for a
//! privileged container.

use std::collections::HashSet;

use k8s_cri::v1::Capability as CriCapabilities;
use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use super::SpecError;

/// The capabilities containerd gives a container by default (its
/// `defaultUnixCaps`; NET_RAW among them, so `ping` works).
pub const DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability of Linux 6.1 (the guest kernel): what `ALL` and a
/// privileged container get.
pub const ALL: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

const FIELD: &str = "linux.security_context.capabilities";

/// The capability sets, as containerd's `WithCapabilities` builds them:
/// bounding = effective = permitted = the default set, then `ALL` in the add
/// list gives every capability and `ALL` in the drop list none, then the
/// named ones are added and dropped (so `add: [ALL], drop: [CHOWN]` is all
/// but CHOWN). Inheritable stays empty (the fix of CVE-2022-24769).
/// `add_ambient_capabilities` go into the ambient and inheritable sets (and
/// the others, since an ambient capability must be permitted). Names may
/// carry the `CAP_` prefix or not, in any case.
pub fn build(
    requested: Option<&CriCapabilities>,
    privileged: bool,
) -> Result<LinuxCapabilities, SpecError> {
    let mut set: HashSet<Capability> = if privileged {
        ALL.into_iter().collect()
    } else {
        DEFAULT.into_iter().collect()
    };
    let mut ambient = HashSet::new();
    if let (Some(caps), false) = (requested, privileged) {
        let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
        if caps.add_capabilities.iter().any(is_all) {
            set = ALL.into_iter().collect();
        }
        if caps.drop_capabilities.iter().any(is_all) {
            set.clear();
        }
        for (i, name) in caps.add_capabilities.iter().enumerate() {
            if !is_all(name) {
                set.insert(parse(name, &format!("{FIELD}.add_capabilities[{i}]"))?);
            }
        }
        for (i, name) in caps.drop_capabilities.iter().enumerate() {
            if !is_all(name) {
                set.remove(&parse(name, &format!("{FIELD}.drop_capabilities[{i}]"))?);
            }
        }
        for (i, name) in caps.add_ambient_capabilities.iter().enumerate() {
            let cap = parse(name, &format!("{FIELD}.add_ambient_capabilities[{i}]"))?;
            set.insert(cap);
            ambient.insert(cap);
        }
    }
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(ambient.clone())
        .ambient(ambient)
        .build()?)
}

/// A CRI capability name (`NET_ADMIN`, `CAP_NET_ADMIN`, `net_admin`).
fn parse(name: &str, field: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full))
        .map_err(|_| SpecError::invalid(field, format!("unknown capability {name:?}")))
}
