//! The remotecommand subprotocol versions and their negotiation.

/// A remotecommand subprotocol version (`X-Stream-Protocol-Version` over SPDY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// `channel.k8s.io`: the first version (also what a client that names none gets).
    V1,
    /// `v2.channel.k8s.io`: error stream carries text.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON `metav1.Status` with the exit code.
    V4,
}

impl Protocol {
    /// Versions offered over SPDY, most preferred first.
    pub const SPDY: [Protocol; 4] = [Protocol::V4, Protocol::V3, Protocol::V2, Protocol::V1];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V1 => "channel.k8s.io",
            Protocol::V2 => "v2.channel.k8s.io",
            Protocol::V3 => "v3.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
        }
    }

    /// Whether this version has a resize stream.
    pub fn supports_resize(self) -> bool {
        self >= Protocol::V3
    }

    /// Whether the error stream carries JSON status (with the exit code).
    pub fn status_is_json(self) -> bool {
        self >= Protocol::V4
    }
}

/// Splits header values the way Go's `http.Header` users write them: repeated headers and
/// comma-separated lists.
pub fn header_tokens<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    values
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// Picks the server's most preferred version that the client offers, as the kubelet does.
///
/// `Ok(None)` means the client named no version (the kubelet then serves the first one);
/// `Err` lists what we support, for the 403 the kubelet sends.
pub fn negotiate<T: Copy>(
    offered: &[&str],
    supported: &[(T, &str)],
) -> Result<Option<(T, String)>, String> {
    if offered.is_empty() {
        return Ok(None);
    }
    for (value, name) in supported {
        if offered.contains(name) {
            return Ok(Some((*value, (*name).to_owned())));
        }
    }
    let names: Vec<&str> = supported.iter().map(|(_, n)| *n).collect();
    Err(format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {names:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spdy() -> Vec<(Protocol, &'static str)> {
        Protocol::SPDY.iter().map(|p| (*p, p.name())).collect()
    }

    #[test]
    fn prefers_the_newest_version_the_client_offers() {
        let offered =
            header_tokens(["v2.channel.k8s.io, v4.channel.k8s.io", "channel.k8s.io"].into_iter());
        assert_eq!(
            negotiate(&offered, &spdy()).unwrap().unwrap().0,
            Protocol::V4
        );
        let offered = header_tokens(["v3.channel.k8s.io", "v2.channel.k8s.io"].into_iter());
        assert_eq!(
            negotiate(&offered, &spdy()).unwrap().unwrap().0,
            Protocol::V3
        );
    }

    #[test]
    fn no_offer_and_unknown_offers() {
        assert_eq!(negotiate::<Protocol>(&[], &spdy()), Ok(None));
        let err = negotiate(&["v9.channel.k8s.io"], &spdy()).unwrap_err();
        assert!(
            err.contains("v9.channel.k8s.io") && err.contains("v4.channel.k8s.io"),
            "{err}"
        );
    }

    #[test]
    fn capabilities_by_version() {
        assert!(!Protocol::V2.supports_resize() && Protocol::V3.supports_resize());
        assert!(!Protocol::V3.status_is_json() && Protocol::V4.status_is_json());
    }
}
