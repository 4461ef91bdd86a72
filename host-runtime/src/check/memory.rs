//! Huge pages for guest RAM (issue 15): a pod's guest RAM is a memfd that
//! gets transparent huge pages only when the host's shmem THP mode allows
//! them; the hugetlb pool is used only by `vessel-vmm --hugepages`.

use std::path::Path;

use super::CheckResult;

/// The sysfs file of the shmem THP mode, under `/sys`.
const SHMEM_ENABLED: &str = "kernel/mm/transparent_hugepage/shmem_enabled";

/// The modes in which vessel-vmm's `MADV_HUGEPAGE` on guest RAM takes effect.
const HUGE_MODES: [&str; 4] = ["advise", "within_size", "always", "force"];

/// The shmem THP mode: the selected word (`[advise]`) of `shmem_enabled`.
pub fn shmem_thp(sys_dir: &Path) -> CheckResult {
    const NAME: &str = "shmem huge pages";
    let path = sys_dir.join(SHMEM_ENABLED);
    let fix = format!(
        "`echo advise > {}` (as root; persist it with sysfs.conf or a boot-time unit)",
        Path::new("/sys").join(SHMEM_ENABLED).display()
    );
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return CheckResult::warn(
                NAME,
                format!(
                    "cannot read {}: {e}; guest RAM gets 4 KiB pages (slower boots)",
                    path.display()
                ),
                "use a kernel with CONFIG_TRANSPARENT_HUGEPAGE",
            )
        }
    };
    let selected = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')));
    match selected {
        Some(mode) if HUGE_MODES.contains(&mode) => CheckResult::ok(
            NAME,
            format!("shmem THP mode {mode}: guest RAM (a memfd) gets 2 MiB pages"),
        ),
        Some(mode) => CheckResult::warn(
            NAME,
            format!(
                "shmem THP mode {mode}: guest RAM (a memfd) gets 4 KiB pages, every one a \
                 fault of its own (boots about 1.5x slower, issue 15)"
            ),
            fix,
        ),
        None => CheckResult::warn(
            NAME,
            format!("no selected mode in {}: {:?}", path.display(), text.trim()),
            fix,
        ),
    }
}

/// The hugetlb pool (`HugePages_Total`/`Free` in `/proc/meminfo`): INFO,
/// since pods use transparent huge pages and only `vessel-vmm
/// --hugepages` reserves from this pool.
pub fn hugetlb_pool(proc_dir: &Path) -> CheckResult {
    const NAME: &str = "hugetlb pool";
    let path = proc_dir.join("meminfo");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return CheckResult::info(NAME, format!("cannot read {}: {e}", path.display()));
        }
    };
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.split_whitespace().next()?.parse::<u64>().ok())?
        })
    };
    match (
        field("HugePages_Total"),
        field("HugePages_Free"),
        field("Hugepagesize"),
    ) {
        (Some(total), Some(free), Some(size_kib)) => CheckResult::info(
            NAME,
            format!(
                "{free} of {total} {} MiB pages free ({} MiB); pods do not use it (only \
                 vessel-vmm --hugepages does: `echo N > /proc/sys/vm/nr_hugepages`)",
                size_kib / 1024,
                free * size_kib / 1024
            ),
        ),
        _ => CheckResult::info(
            NAME,
            format!("no HugePages_* lines in {} (no hugetlbfs)", path.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    fn sys_with(mode_line: &str) -> tempfile::TempDir {
        let sys = tempfile::tempdir().unwrap();
        let path = sys.path().join(SHMEM_ENABLED);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, mode_line).unwrap();
        sys
    }

    #[test]
    fn shmem_thp_needs_advise_or_more() {
        let never = shmem_thp(sys_with("always within_size advise [never] deny force\n").path());
        assert_eq!(never.status, Status::Warn);
        assert!(never.detail.contains("mode never"));
        assert!(never
            .fix
            .contains("echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled"));
        for line in [
            "always within_size [advise] never deny force",
            "[always] within_size advise never deny force",
            "always [within_size] advise never deny force",
        ] {
            assert_eq!(
                shmem_thp(sys_with(line).path()).status,
                Status::Ok,
                "{line}"
            );
        }
        let deny = shmem_thp(sys_with("always within_size advise never [deny] force").path());
        assert_eq!(deny.status, Status::Warn);
        let none = tempfile::tempdir().unwrap();
        assert_eq!(shmem_thp(none.path()).status, Status::Warn);
    }

    #[test]
    fn the_hugetlb_pool_is_reported() {
        let proc_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            proc_dir.path().join("meminfo"),
            "MemTotal: 1000 kB\nHugePages_Total:     512\nHugePages_Free:      256\n\
             HugePages_Rsvd:        0\nHugepagesize:       2048 kB\n",
        )
        .unwrap();
        let r = hugetlb_pool(proc_dir.path());
        assert_eq!(r.status, Status::Info);
        assert!(
            r.detail
                .starts_with("256 of 512 2 MiB pages free (512 MiB)"),
            "{r:?}"
        );
    }
}
