//! The virtio-balloon device's numbers (virtio 1.2 §5.5; Linux
//! include/uapi/linux/virtio_balloon.h), for the part vessel implements.

/// VIRTIO_BALLOON_F_STATS_VQ: a statistics queue (not offered).
pub const F_STATS_VQ: u32 = 1;
/// VIRTIO_BALLOON_F_DEFLATE_ON_OOM: the guest may deflate when it runs out
/// of memory (not offered: the host never asks it to inflate).
pub const F_DEFLATE_ON_OOM: u32 = 2;
/// VIRTIO_BALLOON_F_FREE_PAGE_HINT (not offered).
pub const F_FREE_PAGE_HINT: u32 = 3;
/// VIRTIO_BALLOON_F_PAGE_POISON: the driver tells the content of its free
/// pages in `poison_val`.
pub const F_PAGE_POISON: u32 = 4;
/// VIRTIO_BALLOON_F_REPORTING (the spec's F_PAGE_REPORTING): the guest
/// reports free pages on a queue of their own.
pub const F_REPORTING: u32 = 5;

/// Index of the inflate queue (always present).
pub const INFLATE_QUEUE: usize = 0;
/// Index of the deflate queue (always present).
pub const DEFLATE_QUEUE: usize = 1;
/// Index of the reporting queue. The spec lists statsq (2) and
/// free_page_vq (3) before it; a queue whose feature is not negotiated is
/// absent and Linux (drivers/virtio/virtio_mmio.c, `vm_find_vqs`) gives the
/// next present one its index, so with neither offered the reporting
/// queue is the third.
pub const REPORTING_QUEUE: usize = 2;

/// Byte offset of `num_pages` (the host's target, in 4 KiB pages) in the
/// config space.
pub const CONFIG_NUM_PAGES: usize = 0;
/// Byte offset of `actual` (the pages the driver holds in the balloon).
pub const CONFIG_ACTUAL: usize = 4;
/// Byte offset of `poison_val` (with F_PAGE_POISON: what free guest pages hold).
pub const CONFIG_POISON_VAL: usize = 12;
/// Size of the config space: num_pages, actual, free_page_hint_cmd_id,
/// poison_val, each a le32.
pub const CONFIG_SIZE: usize = 16;

/// The balloon's page size: PFNs on the inflate/deflate queues count 4 KiB
/// pages whatever the guest's page size (§5.5.6).
pub const PAGE_SIZE: u64 = 4096;
