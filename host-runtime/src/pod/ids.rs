//! The host ids a pod owns: a 64Ki slot of `[pod_ids]`, so that neither its
//! VMM nor the files its guest writes share an identity with the host's
//! users or another pod.
//!
//! Guest uid/gid `g` in 0–65534 is host id `base + g` on the share
//! (virtiofsd translates both ways), and the VMM runs as `base + 65535`, an
//! id no guest file can have. Guest ids from 65535 up are refused: a slot
//! has no room for them, and sharing one would make two guest users one.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::IdRange;

use super::{PodError, VM_DIR};

/// Host ids one pod takes from `[pod_ids]`.
pub const IDS_PER_POD: u32 = 65_536;

/// Guest ids a pod's share translates (0 up to this, exclusive).
pub const GUEST_IDS: u32 = IDS_PER_POD - 1;

/// One pod's slot of host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodIds {
    base: u32,
}

impl PodIds {
    /// The slot starting at `base` (one of `[pod_ids]`'s).
    pub fn at(base: u32) -> Self {
        Self { base }
    }

    /// The slot whose VMM runs as `vmm` (read back from a running pod).
    pub fn of_vmm(vmm: u32) -> Option<Self> {
        vmm.checked_sub(GUEST_IDS).map(Self::at)
    }

    /// The host id of guest id 0 (root) on the share.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// The uid and gid the pod's VMM runs as.
    pub fn vmm(&self) -> u32 {
        self.base + GUEST_IDS
    }

    /// virtiofsd's `--translate-uid`/`--translate-gid` values: guest ids
    /// 0–65534 to and from this slot, every higher guest id refused.
    pub fn translation(&self) -> [String; 2] {
        [
            format!("map:0:{}:{GUEST_IDS}", self.base),
            format!("forbid-guest:{GUEST_IDS}:{}", u32::MAX - GUEST_IDS),
        ]
    }
}

/// Held from choosing a slot until the VMM directory that claims it is
/// chowned, so two pods this process makes at once never get one slot.
pub(crate) static ALLOCATING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The first slot of `range` no pod under `pods` holds, so no two pods share
/// an id. A pod holds the slot ending at its VMM directory's owner, which
/// may not be one of `range`'s if the block changed while it ran: a slot
/// overlapping it is taken too. Call with [`ALLOCATING`] held.
pub fn allocate(pods: &Path, range: IdRange) -> Result<PodIds, PodError> {
    let vmms: Vec<u64> = std::fs::read_dir(pods)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path().join(VM_DIR)).ok())
        .map(|m| u64::from(m.uid()))
        .collect();
    let overlaps = |ids: &PodIds| {
        // Slot [b, b + 65535] and a pod's [v - 65535, v] overlap.
        let b = u64::from(ids.base());
        vmms.iter()
            .any(|&v| v >= b && v <= b + 2 * u64::from(GUEST_IDS))
    };
    (0..range.count / IDS_PER_POD)
        .map(|slot| PodIds::at(range.start + slot * IDS_PER_POD))
        .find(|ids| !overlaps(ids))
        .ok_or(PodError::NoFreeId {
            start: range.start,
            count: range.count,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_maps_guest_ids_below_its_vmm_id_and_refuses_the_rest() {
        let ids = PodIds::at(300_000);
        assert_eq!(ids.vmm(), 365_535);
        assert_eq!(PodIds::of_vmm(ids.vmm()), Some(ids));
        assert_eq!(
            ids.translation(),
            [
                "map:0:300000:65535".to_string(),
                "forbid-guest:65535:4294901760".to_string()
            ]
        );
    }

    #[test]
    fn pod_slots_are_never_shared() {
        use std::os::unix::fs::chown;
        let pods = tempfile::tempdir().unwrap();
        let range = IdRange {
            start: 300_000,
            count: 2 * IDS_PER_POD,
            ..IdRange::default()
        };
        let hold = |pod: &str, ids: PodIds| {
            let vm = pods.path().join(pod).join(VM_DIR);
            std::fs::create_dir_all(&vm).unwrap();
            chown(&vm, Some(ids.vmm()), Some(ids.vmm())).unwrap();
        };
        let first = allocate(pods.path(), range).unwrap();
        assert_eq!(first.base(), 300_000);
        hold("a", first);
        let second = allocate(pods.path(), range).unwrap();
        assert_eq!(second.base(), 300_000 + IDS_PER_POD);
        hold("b", second);
        assert!(matches!(
            allocate(pods.path(), range),
            Err(PodError::NoFreeId {
                start: 300_000,
                count: 131_072
            })
        ));
        std::fs::remove_dir_all(pods.path().join("a")).unwrap();
        assert_eq!(allocate(pods.path(), range).unwrap(), first);
        // A pod of an older block whose slot straddles the first slot's
        // end holds that slot too.
        hold("old", PodIds::at(300_000 + 100));
        assert!(allocate(pods.path(), range).is_err());
    }
}
