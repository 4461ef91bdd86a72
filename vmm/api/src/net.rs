//! A virtio-net NIC: `--net tap=NAME[,netns=PATH][,mac=MAC]` or
//! `--net fd=N[,mac=MAC]`, or a `nets` entry.

use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::kv::{self, SpecError};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

const FLAG: &str = "--net";
const KNOWN: &str = "tap=NAME, fd=N, mac=MAC, netns=PATH";

/// A unicast MAC address; in JSON and flags `aa:bb:cc:dd:ee:ff`.
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

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|r| serde::de::Error::custom(format!("bad MAC {s:?}: {r}")))
    }
}

/// Where the tap comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TapSource {
    /// Open (or create) the tap `name`, inside the network namespace file
    /// `netns` (e.g. `/var/run/netns/X`) if given.
    Tap {
        /// Interface name.
        name: String,
        /// Network namespace file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<PathBuf>,
    },
    /// An open tap descriptor inherited from the parent (opened with
    /// IFF_TAP, IFF_NO_PI and IFF_VNET_HDR).
    Fd(RawFd),
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// The tap.
    pub source: TapSource,
    /// The guest's MAC; without it the guest driver picks a random one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// Checks an interface name the way the kernel's dev_valid_name does.
fn check_ifname(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_IFNAME {
        "longer than 15 bytes"
    } else if name == "." || name == ".." {
        "reserved name"
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == b',' || !b.is_ascii_graphic())
    {
        "only printable ASCII without '/', ':', ',' or spaces"
    } else {
        return Ok(());
    };
    Err(format!("bad tap name {name:?}: {reason}"))
}

impl NetSpec {
    /// Checks the interface name, the netns path and the fd.
    pub fn check(&self) -> Result<(), String> {
        match &self.source {
            TapSource::Tap { name, netns } => {
                check_ifname(name)?;
                if let Some(ns) = netns {
                    if ns.as_os_str().is_empty() {
                        return Err("netns= needs a path".into());
                    }
                    if ns.to_string_lossy().contains(',') {
                        return Err("a netns path cannot hold a comma".into());
                    }
                }
                Ok(())
            }
            TapSource::Fd(fd) if *fd <= 2 => Err(format!(
                "bad fd \"{fd}\": must be a number above 2 (an open tap inherited from the parent)"
            )),
            TapSource::Fd(_) => Ok(()),
        }
    }
}

impl FromStr for NetSpec {
    type Err = SpecError;

    /// Parses `tap=NAME[,mac=MAC][,netns=PATH]` or `fd=N[,mac=MAC]`.
    fn from_str(arg: &str) -> Result<NetSpec, SpecError> {
        let err = |r: String| SpecError::new(FLAG, arg, r);
        let mut pairs = kv::split(FLAG, arg, arg)?;
        let name = kv::take(FLAG, arg, &mut pairs, "tap")?;
        let fd = kv::take(FLAG, arg, &mut pairs, "fd")?;
        let mac = kv::take(FLAG, arg, &mut pairs, "mac")?;
        let netns = kv::take(FLAG, arg, &mut pairs, "netns")?;
        kv::no_leftovers(FLAG, arg, &pairs, KNOWN)?;
        let mac = mac
            .map(|m| m.parse().map_err(|r| err(format!("bad MAC {m:?}: {r}"))))
            .transpose()?;
        let source = match (name, fd) {
            (Some(_), Some(_)) => return Err(err("give tap=NAME or fd=N, not both".into())),
            (None, None) => return Err(err("give tap=NAME or fd=N".into())),
            (Some(name), None) => TapSource::Tap {
                name: name.to_string(),
                netns: netns.map(PathBuf::from),
            },
            (None, Some(n)) => {
                if netns.is_some() {
                    return Err(err(
                        "netns= cannot go with fd= (an open tap already lives in its namespace)"
                            .into(),
                    ));
                }
                TapSource::Fd(n.parse().map_err(|_| {
                    err(format!(
                        "bad fd {n:?}: must be a number above 2 (an open tap inherited from the parent)"
                    ))
                })?)
            }
        };
        let spec = NetSpec { source, mac };
        spec.check().map_err(err)?;
        Ok(spec)
    }
}

impl fmt::Display for NetSpec {
    /// The flag form, which [`NetSpec::from_str`] parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            TapSource::Tap { name, netns } => {
                write!(f, "tap={name}")?;
                if let Some(ns) = netns {
                    write!(f, ",netns={}", ns.display())?;
                }
            }
            TapSource::Fd(fd) => write!(f, "fd={fd}")?,
        }
        if let Some(mac) = &self.mac {
            write!(f, ",mac={mac}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tap_with_options() {
        let s: NetSpec = "tap=tap0,mac=52:54:00:12:34:56,netns=/var/run/netns/p"
            .parse()
            .unwrap();
        assert_eq!(
            s.source,
            TapSource::Tap {
                name: "tap0".into(),
                netns: Some("/var/run/netns/p".into())
            }
        );
        assert_eq!(s.mac, Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        assert_eq!(s.to_string().parse::<NetSpec>().unwrap(), s);
        let s: NetSpec = "fd=7".parse().unwrap();
        assert_eq!((s.source, s.mac), (TapSource::Fd(7), None));
        let json =
            serde_json::to_string(&"tap=t0,mac=02:00:00:00:00:01".parse::<NetSpec>().unwrap())
                .unwrap();
        assert_eq!(
            json,
            r#"{"source":{"tap":{"name":"t0"}},"mac":"02:00:00:00:00:01"}"#
        );
        let bad: Result<NetSpec, _> =
            serde_json::from_str(r#"{"source":{"fd":5},"mac":"01:00:00:00:00:01"}"#);
        assert!(bad.unwrap_err().to_string().contains("multicast"));
    }

    #[test]
    fn rejects_bad_values_naming_the_flag() {
        let err = |a: &str| a.parse::<NetSpec>().unwrap_err().to_string();
        assert_eq!(
            err("mac=52:54:00:12:34:56"),
            "--net mac=52:54:00:12:34:56: give tap=NAME or fd=N"
        );
        assert!(err("tap=t0,mtu=9000").contains("unknown option \"mtu=9000\""));
        assert!(err("tap=t0,tap=t1").contains("tap given twice"));
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
