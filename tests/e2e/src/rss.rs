//! Resident memory of a VMM process, excluding its guest's RAM, and the
//! guest RAM it holds.

/// RSS in KiB of the mappings of `pid` that are not guest RAM.
///
/// Guest RAM is recognised as any mapping at least `guest_bytes` long: no
/// VMM maps anything else that large, and both vessel-vmm and QEMU map guest
/// RAM in one piece below 3 GiB.
pub fn rss_excluding_guest_kib(pid: u32, guest_bytes: u64) -> std::io::Result<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    Ok(parse_smaps(&smaps, guest_bytes, "Rss:"))
}

/// KiB of that RSS on anonymous transparent huge pages (`AnonHugePages`):
/// where the host's THP mode is `always`, one touched byte of a 2 MiB
/// aligned heap or stack region costs 2 MiB.
pub fn anon_huge_excluding_guest_kib(pid: u32, guest_bytes: u64) -> std::io::Result<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    Ok(parse_smaps(&smaps, guest_bytes, "AnonHugePages:"))
}

/// Bytes of guest RAM the host holds for VMM `pid`: the allocated size of
/// its memfd named `vessel-guest-ram` (shared with virtiofsd, so counted
/// once here and never in either process's RSS figure above). Holes the
/// balloon punched are not counted.
pub fn guest_ram_held_bytes(pid: u32) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let fds = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&fds)? {
        let path = entry?.path();
        let Ok(target) = std::fs::read_link(&path) else {
            continue; // closed meanwhile
        };
        if target
            .to_string_lossy()
            .starts_with("/memfd:vessel-guest-ram")
        {
            // stat through the magic link: the memfd itself.
            return Ok(std::fs::metadata(&path)?.blocks() * 512);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no vessel-guest-ram memfd among {fds}"),
    ))
}

/// The sum of `field` (in kB) over the mappings smaller than guest RAM.
fn parse_smaps(smaps: &str, guest_bytes: u64, field: &str) -> u64 {
    let mut total = 0;
    let mut in_guest_ram = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) {
                in_guest_ram = e.saturating_sub(s) >= guest_bytes;
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix(field) {
            if !in_guest_ram {
                total += rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    #[test]
    fn guest_ram_mapping_is_excluded() {
        let smaps = "\
55d0a000-55d0b000 r-xp 00000000 08:01 1 /usr/bin/vmm
Size:                  4 kB
Rss:                   4 kB
7f0000000000-7f0010000000 rw-s 00000000 00:01 2 /memfd:guest (deleted)
Size:             262144 kB
Rss:               20000 kB
7f0010000000-7f0010100000 rw-p 00000000 00:00 0
Rss:                 100 kB
AnonHugePages:         0 kB
7f0020000000-7f0020400000 rw-p 00000000 00:00 0
Rss:                2048 kB
AnonHugePages:      2048 kB
";
        assert_eq!(super::parse_smaps(smaps, 256 << 20, "Rss:"), 2152);
        assert_eq!(super::parse_smaps(smaps, 256 << 20, "AnonHugePages:"), 2048);
    }
}
