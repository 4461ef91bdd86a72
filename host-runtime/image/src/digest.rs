//! Content digests: only `sha256:<64 lowercase hex>` is accepted, which also
//! makes a digest safe to use as a file name.

use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, Result};

/// Checks that `digest` is a well-formed sha256 digest and returns its hex part.
pub fn hex_of(digest: &str) -> Result<&str> {
    let bad = |reason: &str| ImageError::InvalidDigest {
        digest: digest.to_string(),
        reason: reason.to_string(),
    };
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| bad("only sha256 digests are supported"))?;
    if hex.len() != 64 {
        return Err(bad("a sha256 digest has 64 hex digits"));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad("not lowercase hex"));
    }
    Ok(hex)
}

/// The sha256 digest of `data`, as `sha256:<hex>`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A running sha256 that yields a `sha256:<hex>` digest.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The digest of everything fed.
    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

/// The chain id of a layer stack, as the OCI image spec defines it:
/// `chain(L0) = diff(L0)`, `chain(Ln) = sha256(chain(Ln-1) + " " + diff(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked() {
        let good = sha256(b"x");
        assert!(hex_of(&good).is_ok());
        assert!(hex_of("sha512:abcd").is_err());
        assert!(hex_of("sha256:../../etc").is_err());
        assert!(hex_of(&good.to_uppercase()).is_err());
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = sha256(b"a");
        let b = sha256(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256(format!("{a} {b}").as_bytes()));
    }
}
