//! The result cache: what ADD ran and returned, one file per pod attachment
//! (like libcni's `/var/lib/cni/results`), so that CHECK and DEL after a
//! restart of vesseld run the same chain with the same arguments.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::network::PortMapping;
use super::CniError;

/// Marks our format, in case it ever changes.
pub(super) const KIND: &str = "vesselCniCacheV1";

/// A cache entry is small; anything bigger is not ours.
const MAX_ENTRY_BYTES: u64 = 4 << 20;

/// One cached ADD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    /// Always [`KIND`].
    pub kind: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// `CNI_ARGS`.
    pub cni_args: String,
    /// The `portMappings` capability's arguments.
    pub port_mappings: Vec<PortMapping>,
    /// The network list ADD ran.
    pub config: Value,
    /// The file the list came from (for messages).
    pub config_source: PathBuf,
    /// The chain's final result.
    pub result: Value,
}

/// The cache file of one attachment (ids and names were checked to be plain).
pub(super) fn path(dir: &Path, container_id: &str, if_name: &str) -> PathBuf {
    dir.join(format!("{container_id}-{if_name}.json"))
}

/// The entry at `path`, or `None` if there is none.
pub(super) fn read(path: &Path) -> Result<Option<Entry>, CniError> {
    let text = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CniError::io(format!("reading {}", path.display()), e)),
        Ok(meta) if meta.len() > MAX_ENTRY_BYTES => {
            return Err(CniError::io(
                format!("reading {}", path.display()),
                std::io::Error::other("larger than 4 MiB"),
            ))
        }
        Ok(_) => std::fs::read(path)
            .map_err(|e| CniError::io(format!("reading {}", path.display()), e))?,
    };
    let entry: Entry = serde_json::from_slice(&text).map_err(|e| {
        CniError::io(
            format!("reading {}", path.display()),
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    if entry.kind != KIND {
        return Err(CniError::io(
            format!("reading {}", path.display()),
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("kind {:?}, expected {KIND:?}", entry.kind),
            ),
        ));
    }
    Ok(Some(entry))
}

/// Writes `entry` to `path` atomically and durably: a temp file, fsync,
/// rename, fsync of the directory; a crash leaves the old file or the new.
pub(super) fn write(path: &Path, entry: &Entry) -> Result<(), CniError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |what: &str, e| CniError::io(format!("{what} {}", path.display()), e);
    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    let text = serde_json::to_vec(entry).map_err(|e| io("encoding", std::io::Error::other(e)))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("writing", e))?;
    tmp.write_all(&text)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io("writing", e))?;
    // On error the temp file is removed when `tmp` drops.
    tmp.persist(path).map_err(|e| io("writing", e.error))?;
    sync_dir(dir).map_err(|e| io("syncing the directory of", e))
}

/// Removes the entry; one that is already gone is fine.
pub(super) fn remove(path: &Path) -> Result<(), CniError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                sync_dir(dir).map_err(|e| CniError::io(format!("syncing {}", dir.display()), e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::io(format!("removing {}", path.display()), e)),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(&dir.path().join("results"), "abc", "eth0");
        assert_eq!(read(&file).unwrap(), None);
        let entry = Entry {
            kind: KIND.into(),
            container_id: "abc".into(),
            if_name: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            cni_args: "IgnoreUnknown=1".into(),
            port_mappings: vec![],
            config: serde_json::json!({"name": "n"}),
            config_source: "/etc/cni/net.d/10.conflist".into(),
            result: serde_json::json!({"cniVersion": "1.0.0"}),
        };
        write(&file, &entry).unwrap();
        assert_eq!(read(&file).unwrap(), Some(entry));
        remove(&file).unwrap();
        remove(&file).unwrap();
        assert_eq!(read(&file).unwrap(), None);
        // No temp files left behind.
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_foreign_file_is_an_error_not_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "abc", "eth0");
        std::fs::write(&file, br#"{"kind":"cniCacheV1"}"#).unwrap();
        assert!(read(&file).is_err());
    }
}
