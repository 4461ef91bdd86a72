//! What identifies a supervised process across a restart of vesseld: its
//! pid and start time (a recycled pid has another start time) and the
//! sockets it serves, written atomically into the pod's state dir.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ProcessError;

/// Largest record file read back (a record is a few hundred bytes).
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// A supervised process as recorded on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// What it is ("vessel-vmm", "virtiofsd").
    pub role: String,
    /// Its pid in vesseld's pid namespace.
    pub pid: u32,
    /// Its start time (clock ticks after boot, /proc/PID/stat field 22).
    pub start_time: u64,
    /// The sockets it serves.
    pub sockets: Vec<PathBuf>,
}

impl ProcessRecord {
    /// A record of a running process.
    pub fn new(role: &str, pid: u32, start_time: u64, sockets: Vec<PathBuf>) -> Self {
        Self {
            role: role.to_string(),
            pid,
            start_time,
            sockets,
        }
    }

    /// The role as one of the known names (records are read from disk).
    pub fn role(&self) -> &'static str {
        match self.role.as_str() {
            "vessel-vmm" => "vessel-vmm",
            "virtiofsd" => "virtiofsd",
            _ => "process",
        }
    }

    /// Writes the record to `path`: a temp file, fsynced, renamed over it.
    pub fn save(&self, path: &Path) -> Result<(), ProcessError> {
        let io = |source| ProcessError::Record {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|e| io(e.into()))?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a record; `Ok(None)` if there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, ProcessError> {
        let io = |source| ProcessError::Record {
            path: path.to_path_buf(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_RECORD_BYTES), &mut text)
            .map_err(io)?;
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    /// Removes a record; a missing one is fine.
    pub fn remove(path: &Path) -> Result<(), ProcessError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ProcessError::Record {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// The start time of process `pid` (clock ticks after boot), if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of /proc/PID/stat; the comm field may hold spaces and ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state): field 22 is the 20th word after ')'.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_comm() {
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("garbage"), None);
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn records_round_trip_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.process.json");
        assert_eq!(ProcessRecord::load(&path).unwrap(), None);
        let r = ProcessRecord::new("vessel-vmm", 7, 99, vec![dir.path().join("vsock.sock")]);
        r.save(&path).unwrap();
        assert_eq!(ProcessRecord::load(&path).unwrap(), Some(r.clone()));
        assert_eq!(r.role(), "vessel-vmm");
        ProcessRecord::remove(&path).unwrap();
        ProcessRecord::remove(&path).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        assert!(ProcessRecord::load(&path).is_err());
    }
}
