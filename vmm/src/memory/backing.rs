//! Which pages back guest RAM. Huge pages by default, because every guest
//! page is also a page of the host's (or the nested host's) page tables: on
//! 4 KiB pages a booting guest takes one nested fault per 4 KiB it touches.
//! The RAM must stay a shareable memfd (virtiofsd maps it), so anonymous
//! THP is not an option; the choice is, in order:
//!
//! 1. `--hugepages`: a hugetlb memfd (2 MiB pages from the reserved pool);
//! 2. a plain memfd with `MADV_HUGEPAGE` when the host's shared-memory THP
//!    (`/sys/kernel/mm/transparent_hugepage/shmem_enabled`) is `advise`,
//!    `within_size`, `always` or `force`;
//! 3. otherwise 4 KiB pages, with one warning that says how to change it.

use std::fmt;
use std::path::Path;

/// Where the kernel reports (and takes) the shared-memory THP mode.
pub const SHMEM_THP_PATH: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// The host's shared-memory transparent huge page mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShmemThp {
    /// Huge pages whenever possible.
    Always,
    /// Huge pages within the file's size.
    WithinSize,
    /// Huge pages where the mapping asks with MADV_HUGEPAGE.
    Advise,
    /// No huge pages (Debian's default).
    Never,
    /// Emergency off, for all mounts.
    Deny,
    /// Forced on, for all mounts (testing).
    Force,
}

impl ShmemThp {
    /// The mode selected in the sysfs file's text, e.g. `always within_size
    /// advise [never] deny force` gives `Never`; None if nothing is selected
    /// or the selection is unknown.
    pub fn parse(text: &str) -> Option<ShmemThp> {
        let chosen = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))?;
        Some(match chosen {
            "always" => ShmemThp::Always,
            "within_size" => ShmemThp::WithinSize,
            "advise" => ShmemThp::Advise,
            "never" => ShmemThp::Never,
            "deny" => ShmemThp::Deny,
            "force" => ShmemThp::Force,
            _ => return None,
        })
    }

    /// Reads the host's mode; None if the kernel has no shmem THP (or the
    /// file cannot be read).
    pub fn read() -> Option<ShmemThp> {
        Self::read_from(Path::new(SHMEM_THP_PATH))
    }

    fn read_from(path: &Path) -> Option<ShmemThp> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// Whether a memfd mapping with MADV_HUGEPAGE gets huge pages.
    pub fn allows_madvise(self) -> bool {
        matches!(
            self,
            ShmemThp::Always | ShmemThp::WithinSize | ShmemThp::Advise | ShmemThp::Force
        )
    }

    /// The mode's name, as the sysfs file spells it.
    pub fn name(self) -> &'static str {
        match self {
            ShmemThp::Always => "always",
            ShmemThp::WithinSize => "within_size",
            ShmemThp::Advise => "advise",
            ShmemThp::Never => "never",
            ShmemThp::Deny => "deny",
            ShmemThp::Force => "force",
        }
    }
}

/// The pages guest RAM is put on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A hugetlb memfd: 2 MiB pages from the host's reserved pool.
    Hugetlb,
    /// A memfd advised to use transparent huge pages (the host's mode).
    TransparentHuge(ShmemThp),
    /// A plain memfd on 4 KiB pages; the text says why.
    SmallPages(String),
}

impl Backing {
    /// The backing for `--hugepages` (`hugetlb`) on a host whose shmem THP
    /// mode is `thp` (None: the kernel has none).
    pub fn choose(hugetlb: bool, thp: Option<ShmemThp>) -> Backing {
        if hugetlb {
            return Backing::Hugetlb;
        }
        match thp {
            Some(mode) if mode.allows_madvise() => Backing::TransparentHuge(mode),
            Some(mode) => Backing::SmallPages(format!(
                "the host's shared-memory THP is '{}' ({SHMEM_THP_PATH}); \
                 `echo advise > {SHMEM_THP_PATH}` enables huge pages, or reserve \
                 hugetlb pages and pass --hugepages",
                mode.name()
            )),
            None => Backing::SmallPages(format!(
                "the host kernel has no shared-memory THP ({SHMEM_THP_PATH} is unreadable); \
                 reserve hugetlb pages and pass --hugepages"
            )),
        }
    }
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Hugetlb => write!(f, "2 MiB hugetlb pages (--hugepages)"),
            Backing::TransparentHuge(mode) => write!(
                f,
                "transparent huge pages (MADV_HUGEPAGE; shmem THP '{}')",
                mode.name()
            ),
            Backing::SmallPages(why) => write!(f, "4 KiB pages: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_selected_mode() {
        let all = ["always", "within_size", "advise", "never", "deny", "force"];
        for chosen in all {
            let text: Vec<String> = all
                .iter()
                .map(|m| {
                    if *m == chosen {
                        format!("[{m}]")
                    } else {
                        m.to_string()
                    }
                })
                .collect();
            let mode = ShmemThp::parse(&format!("{}\n", text.join(" "))).unwrap();
            assert_eq!(mode.name(), chosen);
        }
        assert_eq!(ShmemThp::parse("always never"), None, "nothing selected");
        assert_eq!(ShmemThp::parse("[sometimes]"), None);
        assert_eq!(ShmemThp::parse(""), None);
    }

    #[test]
    fn reads_a_mode_file() {
        let path = std::env::temp_dir().join(format!("vessel-shmem-thp-{}", std::process::id()));
        std::fs::write(&path, "always within_size [advise] never deny force\n").unwrap();
        assert_eq!(ShmemThp::read_from(&path), Some(ShmemThp::Advise));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(ShmemThp::read_from(&path), None);
    }

    #[test]
    fn hugetlb_wins_then_thp_then_small_pages_with_a_reason() {
        assert_eq!(
            Backing::choose(true, Some(ShmemThp::Never)),
            Backing::Hugetlb
        );
        for mode in [
            ShmemThp::Advise,
            ShmemThp::WithinSize,
            ShmemThp::Always,
            ShmemThp::Force,
        ] {
            assert_eq!(
                Backing::choose(false, Some(mode)),
                Backing::TransparentHuge(mode)
            );
        }
        for mode in [ShmemThp::Never, ShmemThp::Deny] {
            let b = Backing::choose(false, Some(mode));
            let Backing::SmallPages(why) = &b else {
                panic!("{b:?}");
            };
            assert!(why.contains(&format!("'{}'", mode.name())), "{why}");
            assert!(why.contains("echo advise >"), "{why}");
        }
        let b = Backing::choose(false, None);
        assert!(b
            .to_string()
            .starts_with("4 KiB pages: the host kernel has no"));
    }
}
