//! SPDY/3 header blocks: the name/value layout and its zlib compression.
//!
//! Each direction of a session shares one zlib stream primed with the SPDY/3 dictionary;
//! every header block ends on a sync flush. Inflation is capped: a block that inflates past
//! the cap (a zlib bomb) is an error that drops the session.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::spdy3_dictionary;

/// Why a header block cannot be used. Each one drops the session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderBlockError {
    /// zlib refused the compressed bytes.
    #[error("header block does not inflate: {0}")]
    Inflate(String),
    /// The peer's zlib stream asks for a dictionary other than SPDY/3's.
    #[error("header block uses an unknown zlib dictionary {0:#010x}")]
    WrongDictionary(u32),
    /// The block inflates past the cap.
    #[error("header block inflates to more than {0} bytes")]
    TooLarge(usize),
    /// The inflated bytes are not a valid name/value block.
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
    /// zlib refused to compress (should not happen).
    #[error("header block does not deflate: {0}")]
    Deflate(String),
}

/// The name/value pairs of one header block, names lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// An empty header block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header; the name is lowercased as SPDY/3 requires.
    pub fn insert(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
    }

    /// The first value of a header (values may hold several, separated by NUL).
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }

    /// All pairs.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The uncompressed wire layout.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u32(self.0.len() as u32);
        for (name, value) in &self.0 {
            out.put_u32(name.len() as u32);
            out.put_slice(name.as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out
    }

    /// Parses the uncompressed wire layout.
    pub fn parse(mut bytes: &[u8]) -> Result<Self, HeaderBlockError> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], HeaderBlockError> {
            if bytes.len() < n {
                return Err(HeaderBlockError::Malformed("truncated"));
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Ok(head)
        }
        fn take_u32(bytes: &mut &[u8]) -> Result<usize, HeaderBlockError> {
            let b = take(bytes, 4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        let count = take_u32(&mut bytes)?;
        // Each pair takes at least 8 bytes: a count beyond that is a lie, refused before
        // anything is allocated from it.
        if count > bytes.len() / 8 {
            return Err(HeaderBlockError::Malformed("pair count exceeds the block"));
        }
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(count);
        for _ in 0..count {
            let len = take_u32(&mut bytes)?;
            let name = std::str::from_utf8(take(&mut bytes, len)?)
                .map_err(|_| HeaderBlockError::Malformed("name is not UTF-8"))?;
            if name.is_empty() {
                return Err(HeaderBlockError::Malformed("empty name"));
            }
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(HeaderBlockError::Malformed("name is not lowercase"));
            }
            if pairs.iter().any(|(n, _)| n == name) {
                return Err(HeaderBlockError::Malformed("duplicate name"));
            }
            let len = take_u32(&mut bytes)?;
            let value = std::str::from_utf8(take(&mut bytes, len)?)
                .map_err(|_| HeaderBlockError::Malformed("value is not UTF-8"))?;
            pairs.push((name.to_owned(), value.to_owned()));
        }
        if !bytes.is_empty() {
            return Err(HeaderBlockError::Malformed("trailing bytes"));
        }
        Ok(Self(pairs))
    }
}

/// The sending side's zlib context.
pub struct HeaderEncoder {
    zlib: Compress,
}

impl HeaderEncoder {
    /// A fresh context primed with the SPDY/3 dictionary.
    pub fn new() -> Result<Self, HeaderBlockError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&spdy3_dictionary())
            .map_err(|e| HeaderBlockError::Deflate(e.to_string()))?;
        Ok(Self { zlib })
    }

    /// Compresses one header block (ends on a sync flush, as SPDY/3 requires).
    pub fn encode(&mut self, headers: &Headers) -> Result<Bytes, HeaderBlockError> {
        let input = headers.serialize();
        let mut out = BytesMut::zeroed(input.len() + 64);
        let mut used = 0;
        let start_in = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start_in) as usize;
            let before = self.zlib.total_out();
            self.zlib
                .compress(&input[consumed..], &mut out[used..], FlushCompress::Sync)
                .map_err(|e| HeaderBlockError::Deflate(e.to_string()))?;
            used += (self.zlib.total_out() - before) as usize;
            let consumed = (self.zlib.total_in() - start_in) as usize;
            if consumed == input.len() && used < out.len() {
                break;
            }
            out.resize(out.len() * 2, 0);
        }
        out.truncate(used);
        Ok(out.freeze())
    }
}

/// The receiving side's zlib context, with a cap on each block's inflated size.
pub struct HeaderDecoder {
    zlib: Decompress,
    max_inflated: usize,
}

impl HeaderDecoder {
    /// A fresh context; blocks inflating past `max_inflated` bytes are refused.
    pub fn new(max_inflated: usize) -> Self {
        Self {
            zlib: Decompress::new(true),
            max_inflated,
        }
    }

    /// Inflates and parses one header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, HeaderBlockError> {
        let mut out: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        let start_in = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start_in) as usize;
            let rest = block.get(consumed..).unwrap_or(&[]);
            let before = self.zlib.total_out();
            match self
                .zlib
                .decompress(rest, &mut chunk, FlushDecompress::Sync)
            {
                Ok(status) => {
                    let produced = (self.zlib.total_out() - before) as usize;
                    if out.len() + produced > self.max_inflated {
                        return Err(HeaderBlockError::TooLarge(self.max_inflated));
                    }
                    out.extend_from_slice(&chunk[..produced]);
                    let consumed = (self.zlib.total_in() - start_in) as usize;
                    let done = consumed >= block.len() && produced < chunk.len();
                    if done || status == Status::StreamEnd {
                        break;
                    }
                    if produced == 0 && status == Status::BufError {
                        return Err(HeaderBlockError::Inflate("no progress".into()));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(0xe3c6_a7c2) => self
                        .zlib
                        .set_dictionary(&spdy3_dictionary())
                        .map(drop)
                        .map_err(|e| HeaderBlockError::Inflate(e.to_string()))?,
                    Some(other) => return Err(HeaderBlockError::WrongDictionary(other)),
                    None => return Err(HeaderBlockError::Inflate(e.to_string())),
                },
            }
        }
        Headers::parse(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k8s_headers(stream_type: &str) -> Headers {
        let mut h = Headers::new();
        h.insert("streamType", stream_type);
        h.insert("port", "8080");
        h
    }

    #[test]
    fn blocks_round_trip_through_one_shared_context() {
        let mut enc = HeaderEncoder::new().unwrap();
        let mut dec = HeaderDecoder::new(64 * 1024);
        for kind in ["error", "stdin", "stdout", "stderr", "resize"] {
            let block = enc.encode(&k8s_headers(kind)).unwrap();
            let headers = dec.decode(&block).unwrap();
            assert_eq!(headers.get("streamtype"), Some(kind));
            assert_eq!(headers.get("StreamType"), Some(kind));
            assert_eq!(headers.get("port"), Some("8080"));
        }
    }

    #[test]
    fn the_first_block_asks_for_the_spdy3_dictionary() {
        let block = HeaderEncoder::new()
            .unwrap()
            .encode(&k8s_headers("data"))
            .unwrap();
        // zlib header with FDICT, then the dictionary id, as in every SPDY/3 client's frames.
        assert_eq!(block[0], 0x78);
        assert_eq!(block[1] & 0x20, 0x20);
        assert_eq!(&block[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
    }

    #[test]
    fn a_zlib_bomb_is_refused() {
        // One header whose value is 1 MiB of zeros compresses to about 1 KiB.
        let mut h = Headers::new();
        h.insert("bomb", &"\0".repeat(1 << 20));
        let block = HeaderEncoder::new().unwrap().encode(&h).unwrap();
        assert!(block.len() < 8 * 1024, "{} bytes", block.len());
        let err = HeaderDecoder::new(64 * 1024).decode(&block).unwrap_err();
        assert_eq!(err, HeaderBlockError::TooLarge(64 * 1024));
    }

    #[test]
    fn garbage_and_foreign_dictionaries_are_refused() {
        assert!(matches!(
            HeaderDecoder::new(1024).decode(b"not zlib at all"),
            Err(HeaderBlockError::Inflate(_))
        ));
        // A zlib stream with FDICT and another dictionary id.
        let foreign = [0x78, 0xbb, 0x00, 0x00, 0x00, 0x01, 0x03, 0x00];
        assert_eq!(
            HeaderDecoder::new(1024).decode(&foreign),
            Err(HeaderBlockError::WrongDictionary(1))
        );
    }

    #[test]
    fn malformed_layouts_are_refused() {
        let parse = |b: &[u8]| Headers::parse(b).unwrap_err();
        assert_eq!(parse(&[0, 0]), HeaderBlockError::Malformed("truncated"));
        assert_eq!(
            parse(&[0xff, 0xff, 0xff, 0xff]),
            HeaderBlockError::Malformed("pair count exceeds the block")
        );
        let upper = [0, 0, 0, 1, 0, 0, 0, 1, b'A', 0, 0, 0, 0];
        assert_eq!(
            parse(&upper),
            HeaderBlockError::Malformed("name is not lowercase")
        );
        let long_value = [0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 9, b'x'];
        assert_eq!(parse(&long_value), HeaderBlockError::Malformed("truncated"));
        let dup = [
            0, 0, 0, 2, 0, 0, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 0, 0,
        ];
        assert_eq!(parse(&dup), HeaderBlockError::Malformed("duplicate name"));
        assert_eq!(
            parse(&[0, 0, 0, 0, 1]),
            HeaderBlockError::Malformed("trailing bytes")
        );
        assert_eq!(Headers::parse(&[0, 0, 0, 0]), Ok(Headers::new()));
    }

    #[test]
    fn multi_valued_headers_yield_their_first_value() {
        let mut h = Headers::new();
        h.insert(
            "x-stream-protocol-version",
            "v4.channel.k8s.io\0v3.channel.k8s.io",
        );
        let parsed = Headers::parse(&h.serialize()).unwrap();
        assert_eq!(
            parsed.get("x-stream-protocol-version"),
            Some("v4.channel.k8s.io")
        );
    }

    #[test]
    fn mutated_blocks_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = HeaderEncoder::new()
            .unwrap()
            .encode(&k8s_headers("stdout"))
            .unwrap();
        let layout = k8s_headers("stdout").serialize();
        for _ in 0..5_000 {
            let mut block = valid.to_vec();
            let at = (next() as usize) % block.len();
            block[at] = next() as u8;
            let _ = HeaderDecoder::new(64 * 1024).decode(&block);
            let mut raw = layout.clone();
            let at = (next() as usize) % raw.len();
            raw[at] = next() as u8;
            let _ = Headers::parse(&raw);
        }
    }
}
