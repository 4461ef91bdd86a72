//! Usage statistics: a cgroup's CPU, memory and pids from its interface
//! files, and per-interface network counters.

mod network;

use std::collections::HashMap;
use std::path::Path;

pub use network::interfaces;

use crate::cgroup::{files, CgroupError};
use crate::proto::{CgroupStats, CpuStats, MemoryStats, PidsStats};

fn get(map: &HashMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

/// The working set as cAdvisor (and so the kubelet) computes it: usage minus inactive file pages.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// Reads the usage of the cgroup at `dir`; `None` if the cgroup is gone.
pub fn cgroup_stats(dir: &Path) -> Result<Option<CgroupStats>, CgroupError> {
    let Some(cpu) = files::read_flat_keyed(&dir.join("cpu.stat"))? else {
        return Ok(None);
    };
    let cpu = CpuStats {
        usage_usec: get(&cpu, "usage_usec"),
        user_usec: get(&cpu, "user_usec"),
        system_usec: get(&cpu, "system_usec"),
        nr_periods: get(&cpu, "nr_periods"),
        nr_throttled: get(&cpu, "nr_throttled"),
        throttled_usec: get(&cpu, "throttled_usec"),
    };
    let memory = match files::read_value(&dir.join("memory.current"))? {
        Some(usage) => {
            let usage = usage.unwrap_or(0);
            let stat = files::read_flat_keyed(&dir.join("memory.stat"))?.unwrap_or_default();
            let events = files::read_flat_keyed(&dir.join("memory.events"))?.unwrap_or_default();
            let limit = files::read_value(&dir.join("memory.max"))?.flatten();
            let swap = files::read_value(&dir.join("memory.swap.current"))?.flatten();
            Some(MemoryStats {
                usage_bytes: usage,
                working_set_bytes: working_set(usage, get(&stat, "inactive_file")),
                rss_bytes: get(&stat, "anon"),
                cache_bytes: get(&stat, "file"),
                page_faults: get(&stat, "pgfault"),
                major_page_faults: get(&stat, "pgmajfault"),
                limit_bytes: limit.unwrap_or(0),
                swap_usage_bytes: swap.unwrap_or(0),
                oom_kills: get(&events, "oom_kill"),
            })
        }
        None => None,
    };
    let pids = match files::read_value(&dir.join("pids.current"))? {
        Some(current) => Some(PidsStats {
            current: current.unwrap_or(0),
            limit: files::read_value(&dir.join("pids.max"))?
                .flatten()
                .unwrap_or(0),
        }),
        None => None,
    };
    Ok(Some(CgroupStats {
        cpu: Some(cpu),
        memory,
        pids,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_cgroup_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let write = |name: &str, text: &str| std::fs::write(d.join(name), text).expect("write");
        write(
            "cpu.stat",
            "usage_usec 500\nuser_usec 300\nsystem_usec 200\n",
        );
        write("memory.current", "10000\n");
        write(
            "memory.stat",
            "anon 4000\nfile 5000\ninactive_file 3000\npgfault 77\npgmajfault 2\n",
        );
        write("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
        write("memory.max", "max\n");
        write("pids.current", "3\n");
        write("pids.max", "32\n");
        let stats = cgroup_stats(d).expect("read").expect("present");
        assert_eq!(
            stats.cpu.map(|c| (c.usage_usec, c.user_usec)),
            Some((500, 300))
        );
        let memory = stats.memory.expect("memory");
        assert_eq!(
            (
                memory.usage_bytes,
                memory.working_set_bytes,
                memory.rss_bytes
            ),
            (10000, 7000, 4000)
        );
        assert_eq!((memory.page_faults, memory.major_page_faults), (77, 2));
        assert_eq!((memory.limit_bytes, memory.oom_kills), (0, 1));
        assert_eq!(stats.pids.map(|p| (p.current, p.limit)), Some((3, 32)));
    }

    #[test]
    fn missing_controllers_leave_parts_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 1\n").expect("write");
        let stats = cgroup_stats(dir.path()).expect("read").expect("present");
        assert!(stats.memory.is_none() && stats.pids.is_none());
        assert!(cgroup_stats(&dir.path().join("gone"))
            .expect("read")
            .is_none());
    }

    #[test]
    fn working_set_never_underflows() {
        assert_eq!(working_set(100, 30), 70);
        assert_eq!(working_set(10, 30), 0);
    }
}
