//! The host side of a pod's network: a named network namespace holding a tap
//! device, which the VMM opens by name inside it (`--net tap=NAME,netns=PATH`).

mod addressing;
pub mod netns;
pub mod tap;
pub mod tc;

use std::path::PathBuf;

pub use addressing::{PodAddressing, DEFAULT_SUBNET};
pub use netns::{exists as netns_exists, Netns, NETNS_DIR};
pub use tap::TapCounters;

/// Creating, configuring or removing a pod's network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A name cannot be used for a namespace or a link.
    #[error("invalid {what} name {name:?}: {why}")]
    InvalidName {
        /// "netns" or "tap".
        what: &'static str,
        /// The name given.
        name: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// A network namespace of that name already exists.
    #[error(
        "network namespace {path} already exists (a leftover of an earlier run? `ip netns del` it)"
    )]
    NetnsExists {
        /// Its path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// An rtnetlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: rtnetlink::Error,
    },
    /// A link that should exist does not.
    #[error("no link {name} in network namespace {netns}")]
    NoLink {
        /// The link's name.
        name: String,
        /// The namespace's path.
        netns: PathBuf,
    },
    /// The helper thread that works inside a namespace panicked.
    #[error("the thread working in network namespace {0} panicked")]
    ThreadPanicked(PathBuf),
}

impl NetError {
    /// `Ok` if a name check found no broken rule (`why` is `None`), else
    /// the error naming the rule.
    fn check_name(what: &'static str, name: &str, why: Option<&'static str>) -> Result<(), Self> {
        match why {
            Some(why) => Err(NetError::InvalidName {
                what,
                name: name.to_string(),
                why,
            }),
            None => Ok(()),
        }
    }

    /// A failed system call, with what it was for.
    fn sys(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        NetError::Sys {
            what: what.into(),
            source: source.into(),
        }
    }
}
