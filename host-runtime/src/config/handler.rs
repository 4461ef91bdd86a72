//! Runtime handlers: what a pod VM of a given RuntimeClass is made of.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// The handler a RuntimeClass names to get a vessel pod, and vesseld's default.
pub const DEFAULT_HANDLER: &str = "vessel";

/// `[runtime_handlers.NAME]`: the pieces and default size of a pod VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandler {
    /// Guest kernel (uncompressed vmlinux).
    pub kernel: PathBuf,
    /// Guest initramfs (vessel-agent as /init).
    pub initramfs: PathBuf,
    /// The vessel-vmm binary.
    pub vmm: PathBuf,
    /// The virtiofsd binary.
    pub virtiofsd: PathBuf,
    /// vCPUs of a pod that sets no CPU limit.
    pub default_vcpus: u32,
    /// Guest MiB of a pod that sets no memory limit.
    pub default_memory_mib: u32,
    /// Kernel arguments appended to the VMM's defaults.
    pub kernel_args: String,
}

impl Default for RuntimeHandler {
    fn default() -> Self {
        Self {
            kernel: "/usr/share/vessel/vmlinux".into(),
            initramfs: "/usr/share/vessel/initramfs.cpio.lz4".into(),
            vmm: "/usr/local/bin/vessel-vmm".into(),
            virtiofsd: "/usr/libexec/virtiofsd".into(),
            default_vcpus: 1,
            default_memory_mib: 256,
            kernel_args: String::new(),
        }
    }
}

/// vessel-vmm's limits (`docs/configuration.md`, `vessel-vmm`).
const MAX_VCPUS: u32 = 32;
const MIN_MEMORY_MIB: u32 = 64;
const MAX_MEMORY_MIB: u32 = 65_536;

impl RuntimeHandler {
    /// Checks the values; on error, the field at fault and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, path) in [
            ("kernel", &self.kernel),
            ("initramfs", &self.initramfs),
            ("vmm", &self.vmm),
            ("virtiofsd", &self.virtiofsd),
        ] {
            if !Path::new(path).is_absolute() {
                return Err((field, format!("{} is not an absolute path", path.display())));
            }
        }
        if !(1..=MAX_VCPUS).contains(&self.default_vcpus) {
            return Err((
                "default_vcpus",
                format!("{} is not between 1 and {MAX_VCPUS}", self.default_vcpus),
            ));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.default_memory_mib) {
            return Err((
                "default_memory_mib",
                format!(
                    "{} is not between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}",
                    self.default_memory_mib
                ),
            ));
        }
        if self.kernel_args.contains(['\0', '\n']) {
            return Err(("kernel_args", "contains a NUL or a newline".to_string()));
        }
        Ok(())
    }
}

/// A handler is named by a RuntimeClass's `handler`, a DNS label.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let label = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if label {
        Ok(())
    } else {
        Err("a handler name must be a DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'".into())
    }
}

/// The handlers of a configuration without `[runtime_handlers]`.
pub(super) fn default_handlers() -> BTreeMap<String, RuntimeHandler> {
    BTreeMap::from([(DEFAULT_HANDLER.to_string(), RuntimeHandler::default())])
}

/// The file's handlers on top of the built-in `vessel` one, so that adding
/// a handler does not drop the default.
pub(super) fn deserialize_handlers<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, RuntimeHandler>, D::Error> {
    let mut handlers = default_handlers();
    handlers.extend(BTreeMap::<String, RuntimeHandler>::deserialize(
        deserializer,
    )?);
    Ok(handlers)
}
