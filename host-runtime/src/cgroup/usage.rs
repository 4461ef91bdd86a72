//! What a pod's host cgroup has used: the CPU time and memory of its VMM and
//! virtiofsd, guest RAM the VMM has touched included. This is the pod's cost
//! to the node, which the CRI pod stats report (as containerd does for a VM
//! runtime whose sandbox cgroup holds the VMM).

use std::collections::HashMap;
use std::path::PathBuf;

use super::{PodCgroup, Version};

/// A cgroup's memory use, in bytes (faults are counts).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// All memory charged to the cgroup.
    pub usage: u64,
    /// Usage minus inactive file pages (the kubelet's working set).
    pub working_set: u64,
    /// Anonymous memory.
    pub rss: u64,
    /// Page cache.
    pub cache: u64,
    /// Page faults.
    pub page_faults: u64,
    /// Major page faults.
    pub major_page_faults: u64,
    /// The limit; 0 when unlimited or unknown.
    pub limit: u64,
}

/// A cgroup's usage; a part is absent when its controller is not there.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// CPU time, microseconds.
    pub cpu_usec: Option<u64>,
    /// Memory.
    pub memory: Option<MemoryUsage>,
}

/// `key value` lines (cpu.stat, memory.stat); unparsable lines are skipped.
fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// The file `name` of the first directory that has it.
fn read(dirs: &[PathBuf], name: &str) -> Option<String> {
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
}

fn value(dirs: &[PathBuf], name: &str) -> Option<u64> {
    read(dirs, name)?.trim().parse().ok()
}

/// The names of a version's files and `memory.stat` keys.
struct Files {
    usage: &'static str,
    limit: &'static str,
    inactive_file: &'static str,
    rss: &'static str,
    cache: &'static str,
    page_faults: &'static str,
    major_page_faults: &'static str,
}

const V2: Files = Files {
    usage: "memory.current",
    limit: "memory.max",
    inactive_file: "inactive_file",
    rss: "anon",
    cache: "file",
    page_faults: "pgfault",
    major_page_faults: "pgmajfault",
};

// v1's hierarchical totals: the pod cgroup has no children, but say what we mean.
const V1: Files = Files {
    usage: "memory.usage_in_bytes",
    limit: "memory.limit_in_bytes",
    inactive_file: "total_inactive_file",
    rss: "total_rss",
    cache: "total_cache",
    page_faults: "total_pgfault",
    major_page_faults: "total_pgmajfault",
};

impl PodCgroup {
    /// What the cgroup has used so far.
    pub fn usage(&self) -> Usage {
        usage_of(self.version, &self.dirs)
    }
}

fn usage_of(version: Version, dirs: &[PathBuf]) -> Usage {
    let (files, cpu_usec) = match version {
        Version::V2 => (
            &V2,
            read(dirs, "cpu.stat").and_then(|t| flat_keyed(&t).get("usage_usec").copied()),
        ),
        // cpuacct shares the cpu hierarchy ("cpu,cpuacct") on the hosts we know.
        Version::V1 => (&V1, value(dirs, "cpuacct.usage").map(|ns| ns / 1000)),
    };
    let memory = value(dirs, files.usage).map(|usage| {
        let text = read(dirs, "memory.stat").unwrap_or_default();
        let stat = flat_keyed(&text);
        let get = |k: &str| stat.get(k).copied().unwrap_or(0);
        MemoryUsage {
            usage,
            working_set: usage.saturating_sub(get(files.inactive_file)),
            rss: get(files.rss),
            cache: get(files.cache),
            page_faults: get(files.page_faults),
            major_page_faults: get(files.major_page_faults),
            // "max" (v2) does not parse: unlimited. v1's unlimited is a huge number.
            limit: value(dirs, files.limit)
                .filter(|l| *l < (1 << 62))
                .unwrap_or(0),
        }
    });
    Usage { cpu_usec, memory }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn usage_in(version: Version, dirs: &[&Path]) -> Usage {
        let dirs: Vec<_> = dirs.iter().map(|d| d.to_path_buf()).collect();
        usage_of(version, &dirs)
    }

    #[test]
    fn reads_a_v2_cgroup() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(d.path().join(n), t).unwrap();
        w(
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        );
        w("memory.current", "10000\n");
        w("memory.max", "max\n");
        w(
            "memory.stat",
            "anon 4000\nfile 5000\ninactive_file 3000\npgfault 77\npgmajfault 2\n",
        );
        let u = usage_in(Version::V2, &[d.path()]);
        assert_eq!(u.cpu_usec, Some(1500));
        assert_eq!(
            u.memory,
            Some(MemoryUsage {
                usage: 10000,
                working_set: 7000,
                rss: 4000,
                cache: 5000,
                page_faults: 77,
                major_page_faults: 2,
                limit: 0,
            })
        );
    }

    #[test]
    fn reads_v1_hierarchies() {
        let mem = tempfile::tempdir().unwrap();
        let cpu = tempfile::tempdir().unwrap();
        std::fs::write(cpu.path().join("cpuacct.usage"), "2500000\n").unwrap();
        std::fs::write(mem.path().join("memory.usage_in_bytes"), "8192\n").unwrap();
        std::fs::write(
            mem.path().join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(
            mem.path().join("memory.stat"),
            "cache 1\ntotal_cache 4096\ntotal_rss 2048\ntotal_inactive_file 1024\n",
        )
        .unwrap();
        let u = usage_in(Version::V1, &[mem.path(), cpu.path()]);
        assert_eq!(u.cpu_usec, Some(2500));
        let m = u.memory.unwrap();
        assert_eq!(
            (m.usage, m.working_set, m.rss, m.cache, m.limit),
            (8192, 7168, 2048, 4096, 0)
        );
    }

    #[test]
    fn missing_controllers_leave_parts_out() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(usage_in(Version::V2, &[d.path()]), Usage::default());
    }
}
