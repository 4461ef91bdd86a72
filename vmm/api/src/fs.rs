//! A virtio-fs share: `--fs tag=TAG,socket=PATH[,queue-size=N]` or a
//! `shares` entry.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::kv::{self, SpecError};

/// Longest mount tag (the virtio-fs config space holds 36 bytes).
pub const TAG_LEN: usize = 36;
/// Queue size when none is given (Cloud Hypervisor's default too).
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;
/// Largest virtqueue size (virtio 1.2 §2.7, split rings).
pub const MAX_QUEUE_SIZE: u16 = 32768;

const FLAG: &str = "--fs";
const KNOWN: &str = "tag=TAG, socket=PATH, queue-size=N";

fn default_queue_size() -> u16 {
    DEFAULT_QUEUE_SIZE
}

/// One share served by a running virtiofsd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsSpec {
    /// Mount tag the guest uses (`mount -t virtiofs TAG /mnt`).
    pub tag: String,
    /// virtiofsd's vhost-user socket.
    pub socket: PathBuf,
    /// Size of each of the two virtqueues.
    #[serde(default = "default_queue_size")]
    pub queue_size: u16,
}

impl FsSpec {
    /// Checks the tag, the socket path's presence and the queue size.
    pub fn check(&self) -> Result<(), String> {
        let tag_ok = !self.tag.is_empty()
            && self.tag.len() <= TAG_LEN
            && self.tag.bytes().all(|b| b.is_ascii_graphic() && b != b',');
        if !tag_ok {
            return Err(format!(
                "tag {:?}: a tag is 1 to {TAG_LEN} bytes of printable ASCII without spaces or commas",
                self.tag
            ));
        }
        if self.socket.as_os_str().is_empty() {
            return Err(format!("socket= is required (use {KNOWN})"));
        }
        if !(2..=MAX_QUEUE_SIZE).contains(&self.queue_size) || !self.queue_size.is_power_of_two() {
            return Err(format!(
                "queue-size {} must be a power of two from 2 to {MAX_QUEUE_SIZE}",
                self.queue_size
            ));
        }
        Ok(())
    }
}

impl FromStr for FsSpec {
    type Err = SpecError;

    /// Parses `tag=TAG,socket=PATH[,queue-size=N]` in any order.
    fn from_str(arg: &str) -> Result<FsSpec, SpecError> {
        let err = |r: String| SpecError::new(FLAG, arg, r);
        let mut pairs = kv::split(FLAG, arg, arg)?;
        let tag = kv::take(FLAG, arg, &mut pairs, "tag")?;
        let socket = kv::take(FLAG, arg, &mut pairs, "socket")?;
        let queue = kv::take(FLAG, arg, &mut pairs, "queue-size")?;
        kv::no_leftovers(FLAG, arg, &pairs, KNOWN)?;
        let tag = tag.ok_or_else(|| err(format!("tag= is required (use {KNOWN})")))?;
        let socket = socket.ok_or_else(|| err(format!("socket= is required (use {KNOWN})")))?;
        let queue_size = match queue {
            None => DEFAULT_QUEUE_SIZE,
            Some(v) => v.parse().map_err(|_| {
                err(format!(
                    "queue-size {v:?} must be a power of two from 2 to {MAX_QUEUE_SIZE}"
                ))
            })?,
        };
        let spec = FsSpec {
            tag: tag.to_string(),
            socket: PathBuf::from(socket),
            queue_size,
        };
        spec.check().map_err(err)?;
        Ok(spec)
    }
}

impl fmt::Display for FsSpec {
    /// The flag form, which [`FsSpec::from_str`] parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tag={},socket={}", self.tag, self.socket.display())?;
        if self.queue_size != DEFAULT_QUEUE_SIZE {
            write!(f, ",queue-size={}", self.queue_size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        let s: FsSpec = "tag=shared,socket=/run/v.sock".parse().unwrap();
        assert_eq!(s.tag, "shared");
        assert_eq!(s.socket, PathBuf::from("/run/v.sock"));
        assert_eq!(s.queue_size, DEFAULT_QUEUE_SIZE);
        let s: FsSpec = "socket=/s,queue-size=256,tag=a".parse().unwrap();
        assert_eq!((s.tag.as_str(), s.queue_size), ("a", 256));
        assert_eq!(s.to_string(), "tag=a,socket=/s,queue-size=256");
        assert_eq!(s.to_string().parse::<FsSpec>().unwrap(), s);
    }

    #[test]
    fn rejects_bad_values() {
        let e = |a: &str| a.parse::<FsSpec>().unwrap_err().to_string();
        assert!(e("tag=a").contains("socket= is required"));
        assert!(e("socket=/s").contains("tag= is required"));
        assert!(e("tag=a,socket=").contains("socket= is required"));
        assert!(e("tag=a,socket=/s,ro").contains("unknown option \"ro\""));
        assert!(e("tag=a,socket=/s,cache=x").contains("unknown option \"cache=x\""));
        assert!(e("tag=a,tag=b,socket=/s").contains("tag given twice"));
        for bad in ["", "a b", "caf\u{e9}", &"x".repeat(TAG_LEN + 1)] {
            assert!(
                e(&format!("tag={bad},socket=/s")).contains("a tag is 1 to 36"),
                "{bad}"
            );
        }
        assert!(format!("tag={},socket=/s", "x".repeat(TAG_LEN))
            .parse::<FsSpec>()
            .is_ok());
        for q in ["0", "1", "100", "65536", "-2", "x"] {
            assert!(
                e(&format!("tag=a,socket=/s,queue-size={q}")).contains("power of two"),
                "{q}"
            );
        }
        assert!(e("tag=a,socket=/s,queue-size=3")
            .starts_with("--fs tag=a,socket=/s,queue-size=3: queue-size"));
    }
}
