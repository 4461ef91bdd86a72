//! The virtio-fs configuration space (virtio 1.2 §5.11.4): the mount tag
//! and the number of request queues.

/// Bytes of the tag field; a tag of exactly this length has no NUL.
pub const TAG_LEN: usize = 36;
/// Size of the whole config space: tag, then `num_request_queues` (le32).
pub const CONFIG_LEN: usize = TAG_LEN + 4;

/// Builds the config space for `tag` (already checked: at most `TAG_LEN`
/// bytes) and `request_queues`.
pub fn build(tag: &str, request_queues: u32) -> [u8; CONFIG_LEN] {
    let mut config = [0u8; CONFIG_LEN];
    let bytes = tag.as_bytes();
    let n = bytes.len().min(TAG_LEN);
    config[..n].copy_from_slice(&bytes[..n]);
    config[TAG_LEN..].copy_from_slice(&request_queues.to_le_bytes());
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::read_config_space;

    #[test]
    fn layout_is_tag_then_queue_count() {
        let config = build("shared", 1);
        assert_eq!(&config[..6], b"shared");
        assert!(config[6..TAG_LEN].iter().all(|&b| b == 0));
        assert_eq!(&config[TAG_LEN..], &1u32.to_le_bytes());

        let full = "t".repeat(TAG_LEN);
        let config = build(&full, 1);
        assert_eq!(&config[..TAG_LEN], full.as_bytes());
    }

    #[test]
    fn guest_reads_are_bounded() {
        let config = build("shared", 1);
        let mut four = [0xffu8; 4];
        read_config_space(&config, TAG_LEN as u64, &mut four);
        assert_eq!(u32::from_le_bytes(four), 1);
        // Past the end reads zero; a huge offset does not overflow.
        read_config_space(&config, CONFIG_LEN as u64 - 2, &mut four);
        assert_eq!(four, [0, 0, 0, 0]);
        read_config_space(&config, u64::MAX, &mut four);
        assert_eq!(four, [0, 0, 0, 0]);
    }
}
