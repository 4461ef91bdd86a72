//! Settings from the environment and the command line, over the file's.
//!
//! Order (later wins): defaults < file < environment < flags.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// The environment variables that set the default handler's binaries (as
/// `vesseld run-pod` reads them), with the handler field each sets.
pub const ENV_OVERRIDES: [(&str, &str); 4] = [
    ("VESSEL_KERNEL", "kernel"),
    ("VESSEL_INITRAMFS", "initramfs"),
    ("VESSEL_VMM", "vmm"),
    ("VESSEL_VIRTIOFSD", "virtiofsd"),
];

/// The command line flags that override the file (`None`: not given). A
/// `clap::Args` group: the daemon's parser flattens it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct FlagOverrides {
    /// The CRI socket (overrides `socket` of the config file).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Persistent state directory (overrides `state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Runtime directory (overrides `run_dir`).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// CNI configuration directory (overrides `cni.conf_dir`).
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directories, colon-separated like `CNI_PATH`, or repeated
    /// (overrides `cni.bin_dirs`).
    #[arg(
        long = "cni-bin-dir",
        value_name = "DIR[:DIR...]",
        value_delimiter = ':'
    )]
    pub cni_bin_dirs: Option<Vec<PathBuf>>,
}

/// Splits a colon-separated directory list (`/opt/cni/bin:/usr/lib/cni`),
/// dropping empty entries.
pub fn split_path_list(list: &str) -> Vec<PathBuf> {
    list.split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

impl Config {
    /// Applies `VESSEL_KERNEL`, `VESSEL_INITRAMFS`, `VESSEL_VMM` and
    /// `VESSEL_VIRTIOFSD` from the process environment to the default handler.
    pub fn apply_process_env(&mut self) -> Result<(), ConfigError> {
        self.apply_env(|name| std::env::var_os(name))
    }

    /// Applies the variables of [`ENV_OVERRIDES`], looked up with `get`, to
    /// the default handler; unset or empty variables change nothing.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<OsString>) -> Result<(), ConfigError> {
        let name = self.default_runtime_handler.clone();
        let Some(handler) = self.runtime_handlers.get_mut(&name) else {
            return Err(ConfigError::Override {
                source_name: "default_runtime_handler".into(),
                why: format!("no handler {name:?}"),
            });
        };
        for (var, field) in ENV_OVERRIDES {
            let Some(value) = get(var).filter(|v| !v.is_empty()) else {
                continue;
            };
            let path = PathBuf::from(value);
            check_absolute(var, &path)?;
            let slot = match field {
                "kernel" => &mut handler.kernel,
                "initramfs" => &mut handler.initramfs,
                "vmm" => &mut handler.vmm,
                _ => &mut handler.virtiofsd,
            };
            *slot = path;
        }
        Ok(())
    }

    /// Applies the flags that were given.
    pub fn apply_flags(&mut self, flags: &FlagOverrides) -> Result<(), ConfigError> {
        let paths = [
            ("--socket", &flags.socket, &mut self.socket),
            ("--state-dir", &flags.state_dir, &mut self.state_dir),
            ("--run-dir", &flags.run_dir, &mut self.run_dir),
            (
                "--cni-conf-dir",
                &flags.cni_conf_dir,
                &mut self.cni.conf_dir,
            ),
        ];
        for (flag, given, slot) in paths {
            if let Some(path) = given {
                check_absolute(flag, path)?;
                *slot = path.clone();
            }
        }
        if let Some(dirs) = &flags.cni_bin_dirs {
            if dirs.is_empty() {
                return Err(ConfigError::Override {
                    source_name: "--cni-bin-dir".into(),
                    why: "no directory given".into(),
                });
            }
            for dir in dirs {
                check_absolute("--cni-bin-dir", dir)?;
            }
            self.cni.bin_dirs = dirs.clone();
        }
        Ok(())
    }
}

fn check_absolute(source: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ConfigError::Override {
            source_name: source.to_string(),
            why: format!("{} is not an absolute path", path.display()),
        })
    }
}
