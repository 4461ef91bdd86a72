//! Who vesseld runs as, and the host ids its pods' processes get.

use std::path::Path;

use super::CheckResult;
use crate::config::IdRange;

/// vesseld needs root: namespaces, mounts, taps, cgroups, other uids.
pub fn root(is_root: bool) -> CheckResult {
    const NAME: &str = "root";
    if is_root {
        CheckResult::ok(NAME, "running as root (uid 0)")
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "running as uid {}: vesseld makes network namespaces, taps, mounts and \
                 cgroups and runs each pod as its own uid",
                nix::unistd::geteuid()
            ),
            "run vesseld (and this check) as root: `sudo vesseld check`",
        )
    }
}

/// One id in use on the host that falls in the pod id block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Clash {
    what: String,
    first: u64,
    last: u64,
}

/// The pod id block (`[pod_ids]`) does not overlap users or groups of
/// `/etc/passwd` and `/etc/group`, nor the subordinate id ranges of
/// `/etc/subuid` and `/etc/subgid` (other user namespaces): a pod's
/// processes would share an identity with them. A WARN.
pub fn pod_ids(range: &IdRange, etc_dir: &Path) -> CheckResult {
    const NAME: &str = "pod ids";
    let first = u64::from(range.start);
    let last = first + u64::from(range.count) - 1;
    let mut clashes = Vec::new();
    let mut highest = 0u64;
    for (file, kind) in [("passwd", "user"), ("group", "group")] {
        for (name, id) in id_entries(&etc_dir.join(file)) {
            highest = highest.max(id);
            if (first..=last).contains(&id) {
                clashes.push(Clash {
                    what: format!("{kind} {name}"),
                    first: id,
                    last: id,
                });
            }
        }
    }
    for file in ["subuid", "subgid"] {
        for (name, start, count) in sub_ranges(&etc_dir.join(file)) {
            let end = start + count.max(1) - 1;
            highest = highest.max(end);
            if start <= last && end >= first {
                clashes.push(Clash {
                    what: format!("{file} range of {name}"),
                    first: start,
                    last: end,
                });
            }
        }
    }
    let block = format!("{first}-{last}");
    if clashes.is_empty() {
        return CheckResult::ok(
            NAME,
            format!(
                "{block} is used by no user or group and no subordinate id range in {}",
                etc_dir.display()
            ),
        );
    }
    let shown: Vec<String> = clashes
        .iter()
        .take(5)
        .map(|c| {
            if c.first == c.last {
                format!("{} ({})", c.what, c.first)
            } else {
                format!("{} ({}-{})", c.what, c.first, c.last)
            }
        })
        .collect();
    let more = clashes.len().saturating_sub(shown.len());
    let mut detail = format!("{block} overlaps {}", shown.join(", "));
    if more > 0 {
        detail.push_str(&format!(" and {more} more"));
    }
    detail.push_str(": pods' host processes would share their ids");
    // The next 64Ki-aligned block above every id in use.
    let suggested = (highest + 1).div_ceil(65_536) * 65_536;
    let fix = if suggested + u64::from(range.count) - 1 <= u64::from(u32::MAX) {
        format!(
            "set [pod_ids] start = {suggested} (above every id in use), or remove those entries"
        )
    } else {
        "set [pod_ids] start and count to a block no user, group or subordinate range uses"
            .to_string()
    };
    CheckResult::warn(NAME, detail, fix)
}

/// `(name, id)` of each line of a passwd or group file (third field).
fn id_entries(path: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.trim().parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect()
}

/// `(name, start, count)` of each line of a subuid or subgid file.
fn sub_ranges(path: &Path) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let start = fields.next()?.trim().parse().ok()?;
            let count = fields.next()?.trim().parse().ok()?;
            Some((name.to_string(), start, count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn root_is_required() {
        assert_eq!(root(true).status, Status::Ok);
        let r = root(false);
        assert_eq!(r.status, Status::Fail);
        assert!(r.fix.contains("sudo"));
    }

    #[test]
    fn ids_in_the_pod_block_are_a_warning_with_a_free_start() {
        let etc = tempfile::tempdir().unwrap();
        let e = etc.path();
        std::fs::write(
            e.join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(e.join("group"), "root:x:0:\n").unwrap();
        let range = IdRange {
            start: 200_000,
            count: 65_536,
            ..IdRange::default()
        };
        let ok = pod_ids(&range, e);
        assert_eq!(ok.status, Status::Ok, "{ok:?}");
        assert!(ok.detail.starts_with("200000-265535"));

        std::fs::write(
            e.join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nbuild:x:200123:100::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(e.join("subuid"), "alice:100000:65536\nbob:165536:65536\n").unwrap();
        let r = pod_ids(&range, e);
        assert_eq!(r.status, Status::Warn);
        assert!(r.detail.contains("user build (200123)"), "{r:?}");
        assert!(
            r.detail.contains("subuid range of bob (165536-231071)"),
            "{r:?}"
        );
        assert!(!r.detail.contains("alice"));
        assert!(r.fix.contains("start = 262144"), "{r:?}");
    }
}
