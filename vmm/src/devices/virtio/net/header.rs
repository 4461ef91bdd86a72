//! The virtio-net header (`struct virtio_net_hdr_v1`, virtio 1.2 §5.1.6)
//! and the offload rules tied to the negotiated features.

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Size of the header in front of every frame (with `num_buffers`).
pub const HDR_LEN: usize = 12;
/// Largest frame after the header: a 64 KiB GSO packet plus an Ethernet
/// header with a VLAN tag (the most a TSO frame can carry).
pub const MAX_FRAME: usize = 65536 + 18;
/// Largest header + frame the device moves in either direction.
pub const MAX_BUFFER: usize = HDR_LEN + MAX_FRAME;
/// Shortest frame the tap accepts: an Ethernet header.
pub const MIN_FRAME: usize = 14;

const fn bit(b: u32) -> u64 {
    1u64 << b
}

/// Offered to every driver: modern device, EVENT_IDX notification
/// suppression, merged RX buffers (so MTU-sized buffers can carry 64 KiB
/// GSO frames) and the link status (always up).
pub const BASE_FEATURES: u64 = bit(VIRTIO_F_VERSION_1)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | bit(VIRTIO_NET_F_MRG_RXBUF)
    | bit(VIRTIO_NET_F_STATUS);
/// Offered when the tap takes TUNSETOFFLOAD: checksum offload and TSO both
/// ways. UFO (gone from Linux since 4.14), USO and ECN are left out: few
/// guests use them and each widens what the host must trust.
pub const OFFLOAD_FEATURES: u64 = bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6);

/// The features the device offers.
pub fn offered_features(offloads: bool, mac: bool) -> u64 {
    let mut f = BASE_FEATURES;
    if offloads {
        f |= OFFLOAD_FEATURES;
    }
    if mac {
        f |= bit(VIRTIO_NET_F_MAC);
    }
    f
}

/// Whether `feature` (a bit number) is among `acked`.
pub fn has(acked: u64, feature: u32) -> bool {
    acked & bit(feature) != 0
}

/// The tap offloads (`TUN_F_*`) matching what the guest can receive.
/// TSO needs checksum offload in both the spec and the tap.
pub fn tap_offloads(acked: u64) -> u32 {
    if !has(acked, VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(acked, VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(acked, VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    flags
}

/// `struct virtio_net_hdr_v1`, fields in host order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetHeader {
    /// NEEDS_CSUM / DATA_VALID.
    pub flags: u8,
    /// GSO type, with the ECN bit.
    pub gso_type: u8,
    /// Length of the headers to copy per segment.
    pub hdr_len: u16,
    /// Segment size.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Number of merged RX buffers the frame spans.
    pub num_buffers: u16,
}

impl NetHeader {
    /// Decodes the little-endian wire form.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> NetHeader {
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        NetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
            num_buffers: le(10),
        }
    }

    /// Encodes the little-endian wire form.
    pub fn to_bytes(self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Checks a guest's TX header against what it acked (§5.1.6.2): only
    /// NEEDS_CSUM may be set, and only with CSUM; GSO only of an acked kind.
    pub fn check_tx(&self, acked: u64) -> Result<(), &'static str> {
        if u32::from(self.flags) & !VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            return Err("TX header flags other than NEEDS_CSUM");
        }
        if self.flags != 0 && !has(acked, VIRTIO_NET_F_CSUM) {
            return Err("NEEDS_CSUM without the CSUM feature");
        }
        let gso_ok = match u32::from(self.gso_type) {
            VIRTIO_NET_HDR_GSO_NONE => return Ok(()),
            VIRTIO_NET_HDR_GSO_TCPV4 => has(acked, VIRTIO_NET_F_HOST_TSO4),
            VIRTIO_NET_HDR_GSO_TCPV6 => has(acked, VIRTIO_NET_F_HOST_TSO6),
            _ => false,
        };
        if !gso_ok {
            return Err("GSO type not negotiated");
        }
        if self.gso_size == 0 {
            return Err("GSO with a zero segment size");
        }
        Ok(())
    }

    /// Checks the header's offsets against the frame of `frame_len` bytes
    /// it comes with, before the tap (and the host kernel's GSO and
    /// checksum code) sees them: the checksum field lies inside the frame,
    /// GSO comes with NEEDS_CSUM (§5.1.6.2) and its header length fits.
    pub fn check_frame(&self, frame_len: usize) -> Result<(), &'static str> {
        let needs_csum = u32::from(self.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0;
        if needs_csum {
            let end = usize::from(self.csum_start) + usize::from(self.csum_offset) + 2;
            if end > frame_len {
                return Err("csum_start + csum_offset past the end of the frame");
            }
        }
        if u32::from(self.gso_type) != VIRTIO_NET_HDR_GSO_NONE {
            if !needs_csum {
                return Err("GSO without NEEDS_CSUM");
            }
            if usize::from(self.hdr_len) > frame_len {
                return Err("GSO hdr_len past the end of the frame");
            }
        }
        Ok(())
    }

    /// Fits a header the tap wrote to what the guest acked (§5.1.6.3):
    /// flags and GSO only with GUEST_CSUM / GUEST_TSO*, `num_buffers` set.
    /// None if the frame cannot be given to this guest (the tap sent GSO it
    /// did not ack, which the offload settings should prevent).
    pub fn fit_rx(mut self, acked: u64, num_buffers: u16) -> Option<NetHeader> {
        self.num_buffers = num_buffers;
        if !has(acked, VIRTIO_NET_F_GUEST_CSUM) {
            if self.gso_type != 0 || u32::from(self.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                return None;
            }
            return Some(NetHeader {
                num_buffers,
                ..NetHeader::default()
            });
        }
        self.flags &= (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) as u8;
        let gso_ok = match u32::from(self.gso_type) {
            VIRTIO_NET_HDR_GSO_NONE => true,
            VIRTIO_NET_HDR_GSO_TCPV4 => has(acked, VIRTIO_NET_F_GUEST_TSO4),
            VIRTIO_NET_HDR_GSO_TCPV6 => has(acked, VIRTIO_NET_F_GUEST_TSO6),
            _ => false,
        };
        gso_ok.then_some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = NetHeader {
            flags: 1,
            gso_type: 4,
            hdr_len: 0x1234,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..4], &[1, 4, 0x34, 0x12]);
        assert_eq!(NetHeader::from_bytes(&b), h);
    }

    #[test]
    fn offloads_follow_acked_features() {
        assert_eq!(tap_offloads(0), 0);
        // TSO without GUEST_CSUM is not something the tap can do.
        assert_eq!(tap_offloads(bit(VIRTIO_NET_F_GUEST_TSO4)), 0);
        let all = OFFLOAD_FEATURES;
        assert_eq!(
            tap_offloads(all),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
        );
        assert_eq!(offered_features(false, false), BASE_FEATURES);
        assert!(has(offered_features(true, true), VIRTIO_NET_F_MAC));
        assert!(has(offered_features(true, false), VIRTIO_NET_F_HOST_TSO6));
    }

    #[test]
    fn tx_header_checks() {
        let h = |flags, gso_type, gso_size| NetHeader {
            flags,
            gso_type,
            gso_size,
            ..NetHeader::default()
        };
        let all = OFFLOAD_FEATURES;
        assert!(h(0, 0, 0).check_tx(0).is_ok());
        assert!(h(1, 0, 0).check_tx(0).is_err());
        assert!(h(1, 0, 0).check_tx(all).is_ok());
        assert!(h(2, 0, 0).check_tx(all).is_err(), "DATA_VALID is RX only");
        assert!(h(1, 1, 1448).check_tx(all).is_ok());
        assert!(h(1, 1, 0).check_tx(all).is_err());
        assert!(h(1, 4, 1448).check_tx(bit(VIRTIO_NET_F_CSUM)).is_err());
        assert!(h(1, 3, 1448).check_tx(all).is_err(), "UFO is not offered");
        assert!(
            h(1, 0x81, 1448).check_tx(all).is_err(),
            "ECN is not offered"
        );
    }

    #[test]
    fn rx_header_fitting() {
        let gso = NetHeader {
            flags: 1,
            gso_type: 1,
            gso_size: 1448,
            ..NetHeader::default()
        };
        assert_eq!(gso.fit_rx(0, 1), None);
        let plain = NetHeader {
            flags: 2,
            num_buffers: 77,
            ..NetHeader::default()
        };
        let fitted = plain.fit_rx(0, 1).unwrap();
        assert_eq!((fitted.flags, fitted.num_buffers), (0, 1));
        let fitted = gso.fit_rx(OFFLOAD_FEATURES, 4).unwrap();
        assert_eq!((fitted.gso_type, fitted.num_buffers), (1, 4));
        let csum_only = bit(VIRTIO_NET_F_GUEST_CSUM);
        assert_eq!(gso.fit_rx(csum_only, 1), None);
    }

    #[test]
    fn tx_offsets_must_lie_in_the_frame() {
        let hdr = |flags: u8, gso_type: u8, hdr_len: u16, start: u16, off: u16| NetHeader {
            flags,
            gso_type,
            hdr_len,
            gso_size: 1448,
            csum_start: start,
            csum_offset: off,
            num_buffers: 0,
        };
        // TCP over IPv4: checksum at 34 + 16, frame of 54 bytes.
        assert!(hdr(1, 0, 0, 34, 16).check_frame(54).is_ok());
        assert!(hdr(1, 0, 0, 34, 16).check_frame(51).is_err());
        assert!(hdr(1, 0, 0, u16::MAX, u16::MAX).check_frame(65536).is_err());
        // Without NEEDS_CSUM the offsets mean nothing.
        assert!(hdr(0, 0, 0, u16::MAX, u16::MAX).check_frame(60).is_ok());
        assert!(hdr(1, 1, 66, 34, 16).check_frame(1514).is_ok());
        assert!(hdr(1, 1, 2000, 34, 16).check_frame(1514).is_err());
        assert!(
            hdr(0, 1, 66, 34, 16).check_frame(1514).is_err(),
            "GSO needs NEEDS_CSUM"
        );
    }
}
