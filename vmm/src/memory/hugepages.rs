//! The host's pool of 2 MiB hugepages, checked before guest RAM is put on it.

use std::path::Path;

/// Size of one hugepage the VMM uses.
pub const HUGEPAGE_SIZE: u64 = 2 << 20;

/// Where the kernel reports the 2 MiB pool.
const POOL_DIR: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// Why guest RAM cannot go on hugepages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HugepageError {
    /// The memory size is not a whole number of hugepages.
    #[error("--memory {0} MiB: with --hugepages it must be a multiple of 2 MiB")]
    Size(u64),
    /// The host has no 2 MiB pool (no hugetlbfs support).
    #[error("--hugepages: this host has no 2 MiB hugepage pool ({POOL_DIR} is missing)")]
    NoPool,
    /// Too few free pages in the pool.
    #[error(
        "--hugepages: {needed} free 2 MiB hugepages needed, the host has {available}; \
         raise /proc/sys/vm/nr_hugepages (e.g. `echo {suggest} > /proc/sys/vm/nr_hugepages`)"
    )]
    TooFew {
        /// Pages the guest needs.
        needed: u64,
        /// Free, unreserved pages in the pool.
        available: u64,
        /// A pool size that would do.
        suggest: u64,
    },
}

/// Pages of the 2 MiB pool: total, free, and reserved (promised to
/// mappings but not yet faulted in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// nr_hugepages.
    pub total: u64,
    /// free_hugepages.
    pub free: u64,
    /// resv_hugepages.
    pub reserved: u64,
}

impl Pool {
    /// Reads the host's 2 MiB pool; None if the host has none.
    pub fn read() -> Option<Pool> {
        Self::read_from(Path::new(POOL_DIR))
    }

    fn read_from(dir: &Path) -> Option<Pool> {
        let read = |name: &str| -> Option<u64> {
            std::fs::read_to_string(dir.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        Some(Pool {
            total: read("nr_hugepages")?,
            free: read("free_hugepages")?,
            reserved: read("resv_hugepages")?,
        })
    }

    /// Pages a new mapping can still reserve.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

/// Checks that `bytes` of guest RAM fit in whole hugepages and that `pool`
/// (None: the host has no pool) has that many pages free.
pub fn check(bytes: u64, pool: Option<Pool>) -> Result<(), HugepageError> {
    if !bytes.is_multiple_of(HUGEPAGE_SIZE) {
        return Err(HugepageError::Size(bytes >> 20));
    }
    let pool = pool.ok_or(HugepageError::NoPool)?;
    let needed = bytes / HUGEPAGE_SIZE;
    let available = pool.available();
    if available < needed {
        return Err(HugepageError::TooFew {
            needed,
            available,
            suggest: pool.total + (needed - available),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_must_be_whole_pages() {
        let pool = Some(Pool {
            total: 512,
            free: 512,
            reserved: 0,
        });
        assert_eq!(check(255 << 20, pool), Err(HugepageError::Size(255)));
        assert!(check(256 << 20, pool).is_ok());
        assert!(check(1024 << 20, pool).is_ok());
    }

    #[test]
    fn too_few_free_pages_names_nr_hugepages() {
        let pool = Some(Pool {
            total: 100,
            free: 90,
            reserved: 20,
        });
        let err = check(256 << 20, pool).unwrap_err();
        assert_eq!(
            err,
            HugepageError::TooFew {
                needed: 128,
                available: 70,
                suggest: 158
            }
        );
        assert!(err.to_string().contains("/proc/sys/vm/nr_hugepages"));
        assert_eq!(check(256 << 20, None), Err(HugepageError::NoPool));
    }

    #[test]
    fn reads_a_pool_directory() {
        let dir = std::env::temp_dir().join(format!("vessel-hugepool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, v) in [
            ("nr_hugepages", "8\n"),
            ("free_hugepages", "6\n"),
            ("resv_hugepages", "1\n"),
        ] {
            std::fs::write(dir.join(name), v).unwrap();
        }
        let pool = Pool::read_from(&dir).unwrap();
        assert_eq!(pool.available(), 5);
        std::fs::write(dir.join("free_hugepages"), "x").unwrap();
        assert_eq!(Pool::read_from(&dir), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
