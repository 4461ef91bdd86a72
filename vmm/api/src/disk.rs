//! A virtio-blk disk: `--disk PATH[,ro][,serial=ID]` or a `disks` entry.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::kv::{self, SpecError};

/// Length of the virtio-blk GET_ID answer (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;

const FLAG: &str = "--disk";

/// One disk, not yet opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Raw image file or block device.
    pub path: PathBuf,
    /// Whether the guest may only read.
    #[serde(default)]
    pub read_only: bool,
    /// What the guest reads as the disk's serial; by default the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

impl DiskSpec {
    /// Checks what needs no file system: a path, a usable serial.
    pub fn check(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("no path given (use PATH[,ro][,serial=ID])".into());
        }
        if self.path.to_string_lossy().contains(',') {
            return Err("a disk path cannot hold a comma".into());
        }
        match &self.serial {
            Some(s) if !valid_serial(s) => Err(format!(
                "serial {s:?} must be 1 to {ID_BYTES} printable ASCII characters"
            )),
            _ => Ok(()),
        }
    }
}

fn valid_serial(s: &str) -> bool {
    (1..=ID_BYTES).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

impl FromStr for DiskSpec {
    type Err = SpecError;

    /// Parses `PATH[,ro|,rw][,serial=ID]`: the path is everything before
    /// the first comma.
    fn from_str(arg: &str) -> Result<DiskSpec, SpecError> {
        let (path, rest) = match arg.split_once(',') {
            Some((p, r)) => (p, Some(r)),
            None => (arg, None),
        };
        let mut spec = DiskSpec {
            path: PathBuf::from(path),
            read_only: false,
            serial: None,
        };
        if let Some(rest) = rest {
            let mut pairs = kv::split(FLAG, arg, rest)?;
            // The last of `ro`/`rw` wins.
            pairs.retain(|&(k, v)| match (k, v) {
                ("ro" | "rw", None) => {
                    spec.read_only = k == "ro";
                    false
                }
                _ => true,
            });
            spec.serial = kv::take(FLAG, arg, &mut pairs, "serial")?.map(str::to_string);
            kv::no_leftovers(FLAG, arg, &pairs, "ro, rw, serial=ID")?;
        }
        spec.check().map_err(|r| SpecError::new(FLAG, arg, r))?;
        Ok(spec)
    }
}

impl fmt::Display for DiskSpec {
    /// The flag form, which [`DiskSpec::from_str`] parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.read_only {
            write!(f, ",ro")?;
        }
        if let Some(s) = &self.serial {
            write!(f, ",serial={s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_the_forms() {
        let s: DiskSpec = "/a/b.img".parse().unwrap();
        assert_eq!(
            (s.path.to_str(), s.read_only, s.serial),
            (Some("/a/b.img"), false, None)
        );
        let s: DiskSpec = "b.img,ro,serial=abc".parse().unwrap();
        assert!(s.read_only);
        assert_eq!(s.serial.as_deref(), Some("abc"));
        assert_eq!(s.to_string(), "b.img,ro,serial=abc");
        assert_eq!(s.to_string().parse::<DiskSpec>().unwrap(), s);
        assert!(!"b.img,ro,rw".parse::<DiskSpec>().unwrap().read_only);
        assert!("b.img,rw,ro".parse::<DiskSpec>().unwrap().read_only);
    }

    #[test]
    fn rejects_bad_values_naming_flag_and_value() {
        let err = |a: &str| a.parse::<DiskSpec>().unwrap_err().to_string();
        assert!(err("").starts_with("--disk : no path given"));
        assert!(err(",ro").contains("no path given"));
        assert_eq!(
            err("b.img,readonly"),
            "--disk b.img,readonly: unknown option \"readonly\" (known: ro, rw, serial=ID)"
        );
        for bad in [
            "serial=",
            "serial=has space",
            "serial=123456789012345678901",
        ] {
            assert!(
                err(&format!("b.img,{bad}")).contains("must be 1 to 20"),
                "{bad}"
            );
        }
        assert!(err("b.img,serial").contains("serial needs a value"));
        assert!(err("b.img,ro,ro").contains("ro given twice"));
    }
}
