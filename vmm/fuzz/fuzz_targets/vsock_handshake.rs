//! The hybrid-vsock `CONNECT <port>\n` line parser, fed arbitrary bytes in
//! arbitrary chunks. Besides never panicking, chunking must not change the
//! outcome: the same port at the same byte offset, or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vessel_vmm::fuzzing::HandshakeParser;

/// Outcome of a whole feed: `Ok(Some((port, offset_after_newline)))`,
/// `Ok(None)` if it needs more bytes, `Err(())` if rejected.
type Outcome = Result<Option<(u32, usize)>, ()>;

fn feed_chunks(data: &[u8], lens: &mut dyn Iterator<Item = usize>) -> Outcome {
    let mut p = HandshakeParser::new();
    let mut off = 0;
    while off < data.len() {
        let n = lens.next().unwrap_or(data.len()).clamp(1, data.len() - off);
        let chunk = &data[off..off + n];
        match p.feed(chunk) {
            Ok(Some((port, consumed))) => {
                assert!(consumed >= 1 && consumed <= chunk.len());
                assert_eq!(chunk[consumed - 1], b'\n');
                return Ok(Some((port, off + consumed)));
            }
            Ok(None) => off += n,
            Err(_) => return Err(()),
        }
    }
    Ok(None)
}

fuzz_target!(|input: &[u8]| {
    // First byte: chunking seed; the rest: the bytes from the socket.
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = feed_chunks(data, &mut std::iter::empty());
    let mut state = u32::from(seed) | 0x100;
    let mut lens = std::iter::from_fn(|| {
        // xorshift32: deterministic chunk sizes in 1..=8.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some((state % 8) as usize + 1)
    });
    let chunked = feed_chunks(data, &mut lens);
    let bytewise = feed_chunks(data, &mut std::iter::repeat(1));
    assert_eq!(whole, chunked);
    assert_eq!(whole, bytewise);
    if let Ok(Some((_, end))) = whole {
        assert!(end <= vessel_vmm::fuzzing::MAX_LINE);
    }
});
