//! Platform selection from an image index, as containerd's default matcher
//! does: os and architecture must match; the variant must match where the
//! wanted one is known (with the usual defaults: amd64 -> v1, arm64 -> v8,
//! arm -> v7); an entry with a matching `os.version` is preferred.

use crate::manifest::{Descriptor, Platform};

/// The platform vesseld pulls for: the host's, which is linux/amd64 on the
/// machines vessel supports.
pub fn default_platform() -> Platform {
    Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        os_version: None,
        variant: None,
    }
}

fn normalized_variant(arch: &str, variant: Option<&str>) -> Option<String> {
    match (arch, variant) {
        (_, Some(v)) if !v.is_empty() => Some(v.to_string()),
        ("amd64", _) => Some("v1".into()),
        ("arm64", _) => Some("v8".into()),
        ("arm", _) => Some("v7".into()),
        _ => None,
    }
}

/// How well `have` serves `want`: None when it cannot run there, higher is better.
fn score(want: &Platform, have: &Platform) -> Option<u32> {
    if have.os != want.os || have.architecture != want.architecture {
        return None;
    }
    let mut s = 1;
    let wv = normalized_variant(&want.architecture, want.variant.as_deref());
    let hv = normalized_variant(&have.architecture, have.variant.as_deref());
    if wv != hv {
        return None;
    }
    if have.variant.is_some() && wv == hv {
        s += 1;
    }
    if let (Some(w), Some(h)) = (&want.os_version, &have.os_version) {
        if w == h {
            s += 2;
        }
    }
    Some(s)
}

/// The best manifest for `want` in an index, or None.
pub fn select<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let mut best: Option<(u32, &Descriptor)> = None;
    for m in manifests {
        let Some(p) = &m.platform else { continue };
        if let Some(s) = score(want, p) {
            // Keep the first of equally good entries, as containerd does.
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, m));
            }
        }
    }
    best.map(|(_, m)| m)
}

/// `os/arch[/variant]` for messages.
pub fn describe(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, os: &str, arch: &str, variant: Option<&str>, osv: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: crate::manifest::OCI_MANIFEST.into(),
            digest: crate::digest::sha256(&[n]),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                os_version: osv.map(Into::into),
                variant: variant.map(Into::into),
            }),
            annotations: None,
        }
    }

    #[test]
    fn picks_linux_amd64_by_default() {
        let idx = vec![
            entry(0, "linux", "arm64", Some("v8"), None),
            entry(1, "windows", "amd64", None, Some("10.0.17763")),
            entry(2, "linux", "amd64", None, None),
            entry(3, "unknown", "unknown", None, None),
        ];
        assert_eq!(
            select(&idx, &default_platform()).unwrap().digest,
            idx[2].digest
        );
    }

    #[test]
    fn variants_must_match() {
        let idx = vec![
            entry(0, "linux", "arm", Some("v6"), None),
            entry(1, "linux", "arm", Some("v7"), None),
        ];
        let want = |v: Option<&str>| Platform {
            architecture: "arm".into(),
            os: "linux".into(),
            os_version: None,
            variant: v.map(Into::into),
        };
        assert_eq!(
            select(&idx, &want(Some("v6"))).unwrap().digest,
            idx[0].digest
        );
        // arm without a variant means v7.
        assert_eq!(select(&idx, &want(None)).unwrap().digest, idx[1].digest);
        assert!(select(&idx, &want(Some("v5"))).is_none());
        // amd64 entries with variant v1 serve plain amd64; v3 does not.
        let idx = vec![
            entry(0, "linux", "amd64", Some("v3"), None),
            entry(1, "linux", "amd64", Some("v1"), None),
        ];
        assert_eq!(
            select(&idx, &default_platform()).unwrap().digest,
            idx[1].digest
        );
    }

    #[test]
    fn os_version_is_preferred() {
        let idx = vec![
            entry(0, "windows", "amd64", None, Some("10.0.17763.1")),
            entry(1, "windows", "amd64", None, Some("10.0.20348.1")),
        ];
        let want = Platform {
            architecture: "amd64".into(),
            os: "windows".into(),
            os_version: Some("10.0.20348.1".into()),
            variant: None,
        };
        assert_eq!(select(&idx, &want).unwrap().digest, idx[1].digest);
    }

    #[test]
    fn no_match_is_none() {
        let idx = vec![entry(0, "linux", "s390x", None, None)];
        assert!(select(&idx, &default_platform()).is_none());
    }
}
