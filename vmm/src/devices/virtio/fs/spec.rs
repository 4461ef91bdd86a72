//! `--fs tag=TAG,socket=PATH[,queue-size=N]`: parsing and checking the flag.
//!
//! Every error names the flag and is found before any KVM setup.

use std::collections::HashSet;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::config_space::TAG_LEN;

/// Queue size when the flag gives none (Cloud Hypervisor's default too).
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;
/// Largest virtqueue size (virtio 1.2 §2.7, split rings).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Error from `--fs` flags; the message names the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FsSpecError {
    /// An item is not `key=value` or the key is unknown.
    #[error("--fs {arg}: unknown option {item:?} (use tag=TAG,socket=PATH[,queue-size=N])")]
    UnknownOption {
        /// The whole flag value.
        arg: String,
        /// The item at fault.
        item: String,
    },
    /// A key is given twice.
    #[error("--fs {arg}: {key} given twice")]
    Duplicate {
        /// The whole flag value.
        arg: String,
        /// The key.
        key: &'static str,
    },
    /// `tag=` or `socket=` is missing.
    #[error("--fs {arg}: {key}= is required (use tag=TAG,socket=PATH[,queue-size=N])")]
    Missing {
        /// The whole flag value.
        arg: String,
        /// The missing key.
        key: &'static str,
    },
    /// The tag is empty, too long or has bytes a mount tag cannot hold.
    #[error(
        "--fs tag={0:?}: a tag is 1 to {TAG_LEN} bytes of printable ASCII without spaces or commas"
    )]
    BadTag(String),
    /// Two flags use one tag: the guest could mount only one of them.
    #[error("--fs tag={0}: the tag is used twice")]
    DuplicateTag(String),
    /// `queue-size=` is not a power of two in range.
    #[error("--fs {arg}: queue-size {value:?} must be a power of two from 2 to {MAX_QUEUE_SIZE}")]
    QueueSize {
        /// The whole flag value.
        arg: String,
        /// The value given.
        value: String,
    },
    /// The socket path does not exist or is not a socket.
    #[error("--fs tag={tag}: socket {}: {reason} (is virtiofsd running? see docs/operations.md)", path.display())]
    Socket {
        /// The share's tag.
        tag: String,
        /// The socket path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// One checked `--fs` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsSpec {
    /// Mount tag the guest uses (`mount -t virtiofs TAG /mnt`).
    pub tag: String,
    /// virtiofsd's vhost-user socket.
    pub socket: PathBuf,
    /// Size of each of the two virtqueues.
    pub queue_size: u16,
}

impl FsSpec {
    /// Parses one flag value; the socket is not looked at here.
    pub fn parse(arg: &str) -> Result<FsSpec, FsSpecError> {
        let (mut tag, mut socket, mut queue_size) = (None, None, None);
        for item in arg.split(',') {
            let unknown = || FsSpecError::UnknownOption {
                arg: arg.to_string(),
                item: item.to_string(),
            };
            let (key, value) = item.split_once('=').ok_or_else(unknown)?;
            let (name, slot): (&'static str, &mut Option<&str>) = match key {
                "tag" => ("tag", &mut tag),
                "socket" => ("socket", &mut socket),
                "queue-size" => ("queue-size", &mut queue_size),
                _ => return Err(unknown()),
            };
            if slot.replace(value).is_some() {
                return Err(FsSpecError::Duplicate {
                    arg: arg.to_string(),
                    key: name,
                });
            }
        }
        let missing = |key| FsSpecError::Missing {
            arg: arg.to_string(),
            key,
        };
        let tag = tag.ok_or_else(|| missing("tag"))?;
        let socket = socket
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("socket"))?;
        check_tag(tag)?;
        let queue_size = match queue_size {
            None => DEFAULT_QUEUE_SIZE,
            Some(v) => parse_queue_size(v).ok_or_else(|| FsSpecError::QueueSize {
                arg: arg.to_string(),
                value: v.to_string(),
            })?,
        };
        Ok(FsSpec {
            tag: tag.to_string(),
            socket: PathBuf::from(socket),
            queue_size,
        })
    }

    /// Parses every flag, then checks tags are unique and sockets exist.
    pub fn parse_all(args: &[String]) -> Result<Vec<FsSpec>, FsSpecError> {
        let specs = args
            .iter()
            .map(|a| FsSpec::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = HashSet::new();
        for spec in &specs {
            if !seen.insert(spec.tag.as_str()) {
                return Err(FsSpecError::DuplicateTag(spec.tag.clone()));
            }
        }
        for spec in &specs {
            check_socket(&spec.tag, &spec.socket)?;
        }
        Ok(specs)
    }
}

/// A tag goes NUL-padded into 36 config bytes and onto mount command lines:
/// printable ASCII, no spaces (mount options) and no commas (our flag syntax).
fn check_tag(tag: &str) -> Result<(), FsSpecError> {
    let ok = !tag.is_empty()
        && tag.len() <= TAG_LEN
        && tag.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if ok {
        Ok(())
    } else {
        Err(FsSpecError::BadTag(tag.to_string()))
    }
}

fn parse_queue_size(v: &str) -> Option<u16> {
    let n: u16 = v.parse().ok()?;
    ((2..=MAX_QUEUE_SIZE).contains(&n) && n.is_power_of_two()).then_some(n)
}

fn check_socket(tag: &str, path: &Path) -> Result<(), FsSpecError> {
    let err = |reason: String| FsSpecError::Socket {
        tag: tag.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.file_type().is_socket() {
        Ok(())
    } else {
        Err(err("not a Unix socket".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        let s = FsSpec::parse("tag=shared,socket=/run/v.sock").unwrap();
        assert_eq!(s.tag, "shared");
        assert_eq!(s.socket, PathBuf::from("/run/v.sock"));
        assert_eq!(s.queue_size, DEFAULT_QUEUE_SIZE);
        let s = FsSpec::parse("socket=/s,queue-size=256,tag=a").unwrap();
        assert_eq!((s.tag.as_str(), s.queue_size), ("a", 256));
    }

    #[test]
    fn rejects_bad_values() {
        let e = |a: &str| FsSpec::parse(a).unwrap_err();
        assert!(matches!(
            e("tag=a"),
            FsSpecError::Missing { key: "socket", .. }
        ));
        assert!(matches!(
            e("socket=/s"),
            FsSpecError::Missing { key: "tag", .. }
        ));
        assert!(matches!(
            e("tag=a,socket="),
            FsSpecError::Missing { key: "socket", .. }
        ));
        assert!(matches!(
            e("tag=a,socket=/s,ro"),
            FsSpecError::UnknownOption { .. }
        ));
        assert!(matches!(
            e("tag=a,socket=/s,cache=x"),
            FsSpecError::UnknownOption { .. }
        ));
        assert!(matches!(
            e("tag=a,tag=b,socket=/s"),
            FsSpecError::Duplicate { key: "tag", .. }
        ));
        assert_eq!(e("tag=,socket=/s"), FsSpecError::BadTag(String::new()));
        assert!(matches!(e("tag=a b,socket=/s"), FsSpecError::BadTag(_)));
        assert!(matches!(
            e("tag=caf\u{e9},socket=/s"),
            FsSpecError::BadTag(_)
        ));
        let long = "x".repeat(TAG_LEN + 1);
        assert!(matches!(
            e(&format!("tag={long},socket=/s")),
            FsSpecError::BadTag(_)
        ));
        let max = "x".repeat(TAG_LEN);
        assert!(FsSpec::parse(&format!("tag={max},socket=/s")).is_ok());
        for q in ["0", "1", "100", "65536", "-2", "x"] {
            assert!(
                matches!(
                    e(&format!("tag=a,socket=/s,queue-size={q}")),
                    FsSpecError::QueueSize { .. }
                ),
                "queue-size={q}"
            );
        }
        let msg = e("tag=a,socket=/s,queue-size=3").to_string();
        assert!(
            msg.starts_with("--fs tag=a,socket=/s,queue-size=3: queue-size"),
            "{msg}"
        );
    }

    #[test]
    fn tags_unique_and_sockets_real() {
        let dir = std::env::temp_dir().join(format!("vessel-fs-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("v.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"").unwrap();
        let arg = |tag: &str, p: &Path| format!("tag={tag},socket={}", p.display());

        let specs = FsSpec::parse_all(&[arg("a", &sock), arg("b", &sock)]).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            FsSpec::parse_all(&[arg("a", &sock), arg("a", &sock)]).unwrap_err(),
            FsSpecError::DuplicateTag("a".into())
        );
        let err = FsSpec::parse_all(&[arg("a", &file)]).unwrap_err();
        assert!(err.to_string().contains("not a Unix socket"), "{err}");
        let err = FsSpec::parse_all(&[arg("a", &dir.join("missing"))]).unwrap_err();
        assert!(err.to_string().starts_with("--fs tag=a: socket "), "{err}");
        assert!(err.to_string().contains("virtiofsd"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
