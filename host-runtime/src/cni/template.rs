//! The pod network from a template and the node's pod CIDR, as containerd's
//! `conf_template`: when the kubelet sends the CIDR (`UpdateRuntimeConfig`),
//! `{{.PodCIDR}}` in the template becomes it and the result is written as
//! the conf dir's network, so a node whose CIDR the control plane assigns
//! needs no hand-written conflist.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::conf::{read_bounded, NetworkList};
use super::CniError;

/// The file vesseld writes (named like containerd's `10-containerd-net.conflist`).
pub const RENDERED_NAME: &str = "10-vessel-net.conflist";

/// The one placeholder substituted. containerd's templates are Go templates;
/// the range loops some use (`.PodCIDRRanges`, `.Routes`) are not supported,
/// and a template that has them is refused by name rather than half-filled.
const POD_CIDR: &str = "{{.PodCIDR}}";

/// Checks a pod CIDR list as the kubelet sends it (`10.88.0.0/16`, dual
/// stack comma-separated); returns the CIDRs.
pub fn parse_pod_cidrs(text: &str) -> Result<Vec<String>, String> {
    let cidrs: Vec<String> = text.split(',').map(|c| c.trim().to_string()).collect();
    for c in &cidrs {
        let (addr, prefix) = c
            .split_once('/')
            .ok_or_else(|| format!("{c:?} is not a CIDR (no /prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{c:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => {}
            _ => return Err(format!("{c:?}: the prefix must be 0..={max}")),
        }
    }
    Ok(cidrs)
}

/// The template with `{{.PodCIDR}}` replaced by `cidr`, checked to be a
/// network configuration list vesseld can use.
pub fn render(template: &str, cidr: &str, source: &Path) -> Result<String, CniError> {
    let bad = |why: String| CniError::BadConfig {
        path: source.to_path_buf(),
        why,
    };
    let text = template.replace(POD_CIDR, cidr);
    if let Some(at) = text.find("{{") {
        let rest: String = text[at..].chars().take(40).collect();
        return Err(bad(format!(
            "template action {rest:?} is not supported (only {POD_CIDR})"
        )));
    }
    let value: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("rendered, not JSON: {e}")))?;
    NetworkList::from_value(value, source)?;
    Ok(text)
}

/// Renders `template_path` with `cidr` into `<conf_dir>/10-vessel-net.conflist`
/// (written to a temporary file and renamed, so the CNI loader never reads
/// half of it); returns the file.
pub fn write_from_template(
    conf_dir: &Path,
    template_path: &Path,
    cidr: &str,
) -> Result<PathBuf, CniError> {
    let template = read_bounded(template_path)?;
    let template = String::from_utf8(template).map_err(|_| CniError::BadConfig {
        path: template_path.to_path_buf(),
        why: "not UTF-8".into(),
    })?;
    let text = render(&template, cidr, template_path)?;
    std::fs::create_dir_all(conf_dir)
        .map_err(|e| CniError::io(format!("creating {}", conf_dir.display()), e))?;
    let path = conf_dir.join(RENDERED_NAME);
    let tmp = conf_dir.join(format!(".{RENDERED_NAME}.tmp"));
    std::fs::write(&tmp, text.as_bytes())
        .map_err(|e| CniError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| CniError::io(format!("renaming to {}", path.display()), e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"{
      "cniVersion": "1.0.0", "name": "pods",
      "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "{{.PodCIDR}}"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}}
      ]}"#;

    #[test]
    fn pod_cidrs_are_checked() {
        assert_eq!(parse_pod_cidrs("10.88.0.0/16").unwrap(), ["10.88.0.0/16"]);
        assert_eq!(
            parse_pod_cidrs("10.88.0.0/16, fd00::/64").unwrap(),
            ["10.88.0.0/16", "fd00::/64"]
        );
        for bad in [
            "",
            "10.88.0.0",
            "10.88.0/16",
            "10.88.0.0/33",
            "fd00::/129",
            "x/8",
        ] {
            assert!(parse_pod_cidrs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_template_is_rendered_and_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template.json");
        std::fs::write(&template, TEMPLATE).unwrap();
        let conf = dir.path().join("net.d");
        let path = write_from_template(&conf, &template, "10.88.0.0/16").unwrap();
        assert_eq!(path, conf.join(RENDERED_NAME));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""subnet": "10.88.0.0/16""#), "{text}");
        let names: Vec<_> = std::fs::read_dir(&conf)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            [std::ffi::OsString::from(RENDERED_NAME)],
            "no temp file left"
        );
        let network = super::super::load_network(&conf).unwrap();
        assert_eq!(network.plugins.len(), 2);
    }

    #[test]
    fn unsupported_actions_and_bad_results_are_refused() {
        let p = Path::new("/t.json");
        let ranged = TEMPLATE.replace("{{.PodCIDR}}", "{{range .PodCIDRRanges}}");
        let e = render(&ranged, "10.88.0.0/16", p).unwrap_err().to_string();
        assert!(e.contains("not supported") && e.contains("/t.json"), "{e}");
        let e = render("{\"name\": 1}", "10.88.0.0/16", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/t.json"), "{e}");
        let e = render("not json {{.PodCIDR}}", "10.88.0.0/16", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not JSON"), "{e}");
    }
}
