//! Proportional memory (PSS) of host processes, guest RAM left out, and
//! finding a pod's processes by their command line.

/// What the smaps of a process add up to, outside guest RAM, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size.
    pub rss_kib: u64,
    /// Proportional set size: each shared page divided among its sharers,
    /// so the figures of several processes add up.
    pub pss_kib: u64,
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, o: Memory) -> Memory {
        Memory {
            rss_kib: self.rss_kib + o.rss_kib,
            pss_kib: self.pss_kib + o.pss_kib,
        }
    }
}

/// The name under which vessel-vmm's guest RAM memfd shows in smaps (in the
/// VMM and in virtiofsd, which maps it too).
const GUEST_RAM: &str = "/memfd:vessel-guest-ram";

/// RSS and PSS of `pid` outside any mapping of vessel's guest RAM memfd.
pub fn outside_guest_ram(pid: u32) -> std::io::Result<Memory> {
    Ok(parse_smaps(&std::fs::read_to_string(format!(
        "/proc/{pid}/smaps"
    ))?))
}

fn parse_smaps(smaps: &str) -> Memory {
    let mut total = Memory::default();
    let mut guest_ram = false;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, perms, offset, dev, inode, [path].
            guest_ram = words.nth(4).is_some_and(|path| path.starts_with(GUEST_RAM));
            continue;
        }
        if guest_ram {
            continue;
        }
        let kib = || {
            words
                .clone()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Rss:" => total.rss_kib += kib(),
            "Pss:" => total.pss_kib += kib(),
            _ => {}
        }
    }
    total
}

/// Pids of the processes whose program (argv\[0\], its last path component)
/// is `program` and whose command line, arguments joined by spaces,
/// contains `needle`.
pub fn pids_of(program: &str, needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false; // gone meanwhile
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let name = args
                .first()
                .and_then(|a| a.rsplit('/').next())
                .unwrap_or("");
            name == program && args.join(" ").contains(needle)
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ram_is_left_out_and_the_rest_adds_up() {
        let smaps = "\
55d0a000-55d0b000 r-xp 00000000 08:01 1                 /usr/bin/vmm
Size:                  4 kB
Rss:                   4 kB
Pss:                   2 kB
7f0000000000-7f0010000000 rw-s 00000000 00:01 2         /memfd:vessel-guest-ram (deleted)
Size:             262144 kB
Rss:               20000 kB
Pss:               10000 kB
7f0010000000-7f0010100000 rw-p 00000000 00:00 0
Rss:                 100 kB
Pss:                 100 kB
";
        assert_eq!(
            parse_smaps(smaps),
            Memory {
                rss_kib: 104,
                pss_kib: 102
            }
        );
    }

    #[test]
    fn this_process_is_found_by_its_program_name() {
        let me = std::fs::read("/proc/self/cmdline").unwrap();
        let argv0 = String::from_utf8_lossy(me.split(|b| *b == 0).next().unwrap()).into_owned();
        let name = argv0.rsplit('/').next().unwrap().to_string();
        assert!(pids_of(&name, "").contains(&std::process::id()));
        assert!(!pids_of(&name, "no such argument anywhere").contains(&std::process::id()));
        let mine = outside_guest_ram(std::process::id()).unwrap();
        assert!(mine.pss_kib > 0 && mine.pss_kib <= mine.rss_kib, "{mine:?}");
    }
}
