//! `--net` flag values: `tap=NAME[,mac=MAC][,netns=PATH]` or
//! `fd=N[,mac=MAC]`, parsed (not opened) so a typo fails before anything
//! is touched.

use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Error in a `--net` value; the message names the flag and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetSpecError {
    /// Neither `tap=` nor `fd=` was given.
    #[error("--net {0}: give tap=NAME or fd=N")]
    NoTap(String),
    /// An option is not one we know, or is given twice.
    #[error("--net {arg}: unknown or repeated option {option:?} (known: tap=NAME, fd=N, mac=MAC, netns=PATH)")]
    UnknownOption {
        /// The whole value.
        arg: String,
        /// The option as given.
        option: String,
    },
    /// The interface name is not one Linux accepts.
    #[error("--net {arg}: bad tap name {name:?}: {reason}")]
    BadName {
        /// The whole value.
        arg: String,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `mac=` is not a usable unicast MAC address.
    #[error("--net {arg}: bad MAC {mac:?}: {reason}")]
    BadMac {
        /// The whole value.
        arg: String,
        /// The MAC as given.
        mac: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `fd=` is not a descriptor number above 2.
    #[error("--net {arg}: bad fd {fd:?}: must be a number above 2 (an open tap inherited from the parent)")]
    BadFd {
        /// The whole value.
        arg: String,
        /// The fd as given.
        fd: String,
    },
    /// Options that cannot go together.
    #[error("--net {arg}: {reason}")]
    Conflict {
        /// The whole value.
        arg: String,
        /// Why.
        reason: &'static str,
    },
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = &'static str;

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`); rejects multicast and zero.
    fn from_str(s: &str) -> Result<MacAddr, &'static str> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next().ok_or("need 6 octets like 52:54:00:12:34:56")?;
            if p.len() != 2 {
                return Err("need 6 two-digit hex octets like 52:54:00:12:34:56");
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| "octets must be hexadecimal")?;
        }
        if parts.next().is_some() {
            return Err("more than 6 octets");
        }
        if out[0] & 1 != 0 {
            return Err("multicast address (lowest bit of the first octet set)");
        }
        if out == [0; 6] {
            return Err("all-zero address");
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Where the tap comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapSource {
    /// Open (or create) the tap `name`, inside `netns` if given.
    Name {
        /// Interface name.
        name: String,
        /// Network namespace file (e.g. `/var/run/netns/X`).
        netns: Option<PathBuf>,
    },
    /// An open tap descriptor inherited from the parent (vesseld).
    Fd(RawFd),
}

/// A parsed `--net` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// The value as given, for error messages.
    pub arg: String,
    /// The tap.
    pub source: TapSource,
    /// The guest's MAC; without it the guest driver picks a random one.
    pub mac: Option<MacAddr>,
}

/// Checks an interface name the way the kernel's dev_valid_name does.
fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_IFNAME {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("reserved name");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
    {
        return Err("only printable ASCII without '/', ':' or spaces");
    }
    Ok(())
}

impl NetSpec {
    /// Parses `tap=NAME[,mac=MAC][,netns=PATH]` or `fd=N[,mac=MAC]`.
    pub fn parse(arg: &str) -> Result<NetSpec, NetSpecError> {
        let unknown = |option: &str| NetSpecError::UnknownOption {
            arg: arg.to_string(),
            option: option.to_string(),
        };
        let (mut name, mut fd, mut mac, mut netns) = (None, None, None, None);
        for option in arg.split(',') {
            let (key, value) = option.split_once('=').ok_or_else(|| unknown(option))?;
            let slot = match key {
                "tap" => &mut name,
                "fd" => &mut fd,
                "mac" => &mut mac,
                "netns" => &mut netns,
                _ => return Err(unknown(option)),
            };
            if slot.replace(value).is_some() {
                return Err(unknown(option));
            }
        }
        let mac = mac
            .map(|m| {
                m.parse().map_err(|reason| NetSpecError::BadMac {
                    arg: arg.to_string(),
                    mac: m.to_string(),
                    reason,
                })
            })
            .transpose()?;
        let source = match (name, fd) {
            (Some(_), Some(_)) => {
                return Err(NetSpecError::Conflict {
                    arg: arg.to_string(),
                    reason: "give tap=NAME or fd=N, not both",
                })
            }
            (None, None) => return Err(NetSpecError::NoTap(arg.to_string())),
            (Some(name), None) => {
                check_ifname(name).map_err(|reason| NetSpecError::BadName {
                    arg: arg.to_string(),
                    name: name.to_string(),
                    reason,
                })?;
                if netns == Some("") {
                    return Err(NetSpecError::Conflict {
                        arg: arg.to_string(),
                        reason: "netns= needs a path",
                    });
                }
                TapSource::Name {
                    name: name.to_string(),
                    netns: netns.map(PathBuf::from),
                }
            }
            (None, Some(n)) => {
                if netns.is_some() {
                    return Err(NetSpecError::Conflict {
                        arg: arg.to_string(),
                        reason:
                            "netns= cannot go with fd= (an open tap already lives in its namespace)",
                    });
                }
                match n.parse::<RawFd>() {
                    Ok(v) if v > 2 => TapSource::Fd(v),
                    _ => {
                        return Err(NetSpecError::BadFd {
                            arg: arg.to_string(),
                            fd: n.to_string(),
                        })
                    }
                }
            }
        };
        Ok(NetSpec {
            arg: arg.to_string(),
            source,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tap_with_options() {
        let s = NetSpec::parse("tap=tap0,mac=52:54:00:12:34:56,netns=/var/run/netns/p").unwrap();
        assert_eq!(
            s.source,
            TapSource::Name {
                name: "tap0".into(),
                netns: Some("/var/run/netns/p".into())
            }
        );
        assert_eq!(s.mac, Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        assert_eq!(s.mac.unwrap().to_string(), "52:54:00:12:34:56");
        let s = NetSpec::parse("fd=7").unwrap();
        assert_eq!(s.source, TapSource::Fd(7));
        assert_eq!(s.mac, None);
    }

    #[test]
    fn rejects_bad_values_naming_the_flag() {
        let err = |a: &str| NetSpec::parse(a).unwrap_err().to_string();
        assert_eq!(
            err("mac=52:54:00:12:34:56"),
            "--net mac=52:54:00:12:34:56: give tap=NAME or fd=N"
        );
        assert!(err("tap=t0,mtu=9000").contains("unknown or repeated option \"mtu=9000\""));
        assert!(err("tap=t0,tap=t1").contains("repeated option \"tap=t1\""));
        assert!(err("tap=t0,ro").contains("option \"ro\""));
        assert!(err("tap=").contains("bad tap name \"\": empty"));
        assert!(err("tap=averyveryverylongname").contains("longer than 15 bytes"));
        assert!(err("tap=a/b").contains("without '/'"));
        assert!(err("tap=t0,mac=01:00:5e:00:00:01").contains("multicast"));
        assert!(err("tap=t0,mac=00:00:00:00:00:00").contains("all-zero"));
        assert!(err("tap=t0,mac=52:54:00:12:34").contains("need 6 octets"));
        assert!(err("tap=t0,mac=52:54:00:12:34:56:78").contains("more than 6"));
        assert!(err("tap=t0,mac=52:54:00:12:34:zz").contains("hexadecimal"));
        assert!(err("tap=t0,mac=5:54:00:12:34:56").contains("two-digit"));
        assert!(err("fd=2").contains("bad fd \"2\""));
        assert!(err("fd=x").contains("bad fd"));
        assert!(err("fd=5,netns=/x").contains("netns= cannot go with fd="));
        assert!(err("tap=t0,fd=5").contains("not both"));
        assert!(err("tap=t0,netns=").contains("netns= needs a path"));
    }
}

/// Most `--net` flags (leaves virtio-mmio slots for the other devices).
pub const MAX_NETS: usize = 4;

/// Error from the `--net` flags as a whole.
#[derive(Debug, thiserror::Error)]
pub enum NetConfigError {
    /// A value is malformed.
    #[error(transparent)]
    Spec(#[from] NetSpecError),
    /// A tap cannot be opened.
    #[error(transparent)]
    Tap(#[from] super::tap::TapError),
    /// Too many flags.
    #[error("--net: {0} given, at most {MAX_NETS} are supported")]
    TooMany(usize),
    /// The same tap or fd twice.
    #[error("--net {0}: the same tap is given twice")]
    Duplicate(String),
}

/// A NIC ready to attach: its open tap and the guest's MAC.
#[derive(Debug)]
pub struct NetConfig {
    /// The open tap.
    pub tap: super::tap::Tap,
    /// The guest's MAC, if given.
    pub mac: Option<MacAddr>,
}

/// Parses every `--net` first, then opens the taps in order (the guest
/// sees them as eth0, eth1, ...), so a typo in a later flag is reported
/// before any tap is touched.
pub fn open_all(args: &[String]) -> Result<Vec<NetConfig>, NetConfigError> {
    if args.len() > MAX_NETS {
        return Err(NetConfigError::TooMany(args.len()));
    }
    let specs = args
        .iter()
        .map(|a| NetSpec::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|p| p.source == s.source) {
            return Err(NetConfigError::Duplicate(s.arg.clone()));
        }
    }
    specs
        .iter()
        .map(|s| {
            Ok(NetConfig {
                tap: super::tap::Tap::open(s)?,
                mac: s.mac,
            })
        })
        .collect()
}
