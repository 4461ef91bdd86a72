//! Reading and writing cgroupfs interface files.
//!
//! Written by hand rather than with `cgroups-rs`: the agent needs a handful of
//! cgroup v2 files (plus `cgroup.kill` and inotify on `memory.events`), while
//! that crate models v1 and v2 hierarchies and a systemd D-Bus manager the
//! guest has no use for. These files are small text; reads are bounded.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use super::error::CgroupError;

/// Largest interface file read (memory.stat is about 1.5 KiB; cgroup.procs grows with processes).
const MAX_READ: u64 = 1 << 20;

/// Reads an interface file, at most [`MAX_READ`] bytes.
pub fn read(path: &Path) -> Result<String, CgroupError> {
    let file = std::fs::File::open(path).map_err(|e| CgroupError::io("open", path, e))?;
    let mut text = String::new();
    file.take(MAX_READ)
        .read_to_string(&mut text)
        .map_err(|e| CgroupError::io("read", path, e))?;
    Ok(text)
}

/// Writes `value` to an interface file in one `write` (cgroupfs takes one value per write).
pub fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| CgroupError::io("open", path, e))?;
    file.write_all(value.as_bytes())
        .map_err(|e| CgroupError::io("write", path, e))
}

/// Parses a flat-keyed file (`cpu.stat`, `memory.stat`, `memory.events`): `key value` lines.
pub fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// Reads a flat-keyed file; `None` if it does not exist (its controller is off).
pub fn read_flat_keyed(path: &Path) -> Result<Option<HashMap<String, u64>>, CgroupError> {
    match read(path) {
        Ok(text) => Ok(Some(
            flat_keyed(&text)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )),
        Err(CgroupError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads a single-value file (`memory.current`, `pids.max`): `Some(None)` for `max`,
/// `None` if the file does not exist.
pub fn read_value(path: &Path) -> Result<Option<Option<u64>>, CgroupError> {
    match read(path) {
        Ok(text) => {
            let text = text.trim();
            if text == "max" {
                return Ok(Some(None));
            }
            text.parse().map(|v| Some(Some(v))).map_err(|_| {
                CgroupError::io(
                    "parse",
                    path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, text.to_owned()),
                )
            })
        }
        Err(CgroupError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Parses `cgroup.procs`: one pid per line.
pub fn pids(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_keyed_files() {
        let stat = flat_keyed("usage_usec 120\nuser_usec 100\nsystem_usec 20\nbad\nx y\n");
        assert_eq!(stat.get("usage_usec"), Some(&120));
        assert_eq!(stat.get("system_usec"), Some(&20));
        assert_eq!(stat.len(), 3);
    }

    #[test]
    fn parses_procs() {
        assert_eq!(pids("12\n345\n\n"), [12, 345]);
    }

    #[test]
    fn values_and_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), "max\n").expect("write");
        std::fs::write(dir.path().join("b"), "4096\n").expect("write");
        assert_eq!(read_value(&dir.path().join("a")).ok(), Some(Some(None)));
        assert_eq!(
            read_value(&dir.path().join("b")).ok(),
            Some(Some(Some(4096)))
        );
        assert_eq!(read_value(&dir.path().join("c")).ok(), Some(None));
    }
}
