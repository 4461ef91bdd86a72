//! Network configurations: finding the first one in the conf dir and parsing
//! it into a plugin chain, as libcni and containerd's go-cni do.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::CniError;

/// The file name endings of network configurations, as libcni's `ConfFiles`
/// takes them: a `.conflist` is a plugin chain, a `.conf` or `.json` a
/// single plugin.
pub const CONF_EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// A configuration file is read whole; anything bigger is refused.
const MAX_CONF_BYTES: u64 = 1 << 20;

/// The spec versions whose results vessel reads (the 0.3+ result format).
const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A network: its name, spec version and plugin chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// The network's name (`name`).
    pub name: String,
    /// The spec version the plugins are asked to speak.
    pub cni_version: String,
    /// `disableCheck`: CHECK does nothing.
    pub disable_check: bool,
    /// The chain, in ADD order.
    pub plugins: Vec<PluginConf>,
    /// The file it came from.
    pub source: PathBuf,
    /// The whole list as JSON (kept in the result cache, so that DEL runs the
    /// chain ADD ran even if the conf dir changed since).
    pub(super) raw: Value,
}

/// One plugin of a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// The plugin's `type`: the name of its binary.
    pub plugin_type: String,
    /// `capabilities`: which runtime arguments the plugin takes.
    pub capabilities: BTreeMap<String, bool>,
    /// The plugin's whole configuration object, passed on as is.
    pub(super) conf: Map<String, Value>,
}

impl PluginConf {
    /// Whether the plugin declares the capability `name` (e.g. `portMappings`).
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.get(name).copied().unwrap_or(false)
    }
}

/// The network of the node: the first configuration file by name in `dir`
/// (`*.conflist`, `*.conf`, `*.json`). As in containerd, a first file that
/// cannot be used is an error naming it, not skipped.
pub fn load_network(dir: &Path) -> Result<NetworkList, CniError> {
    let files = conf_files(dir)?;
    let Some(first) = files.first() else {
        return Err(CniError::NoConfig {
            dir: dir.to_path_buf(),
        });
    };
    let text = read_bounded(first)?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| CniError::BadConfig {
        path: first.clone(),
        why: format!("not JSON: {e}"),
    })?;
    let is_list = first.extension().is_some_and(|e| e == "conflist");
    let list_value = if is_list {
        value
    } else {
        single_plugin_as_list(value).map_err(|why| CniError::BadConfig {
            path: first.clone(),
            why,
        })?
    };
    NetworkList::from_value(list_value, first)
}

/// The configuration files of `dir`, sorted by name (byte order, as Go's
/// `sort.Strings`).
fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, CniError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CniError::NoConfig {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(CniError::io(format!("reading {}", dir.display()), e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CniError::io(format!("reading {}", dir.display()), e))?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| CONF_EXTENSIONS.contains(&e));
        // Like libcni: anything but a directory (symlinks followed).
        if wanted && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

pub(super) fn read_bounded(path: &Path) -> Result<Vec<u8>, CniError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CniError::io(format!("opening {}", path.display()), e))?;
    let mut text = Vec::new();
    file.take(MAX_CONF_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| CniError::io(format!("reading {}", path.display()), e))?;
    if text.len() as u64 > MAX_CONF_BYTES {
        return Err(CniError::BadConfig {
            path: path.to_path_buf(),
            why: "larger than 1 MiB".into(),
        });
    }
    Ok(text)
}

/// Wraps a single-plugin `.conf` as a list of one, as libcni's
/// `ConfListFromConf` does.
fn single_plugin_as_list(conf: Value) -> Result<Value, String> {
    let Value::Object(obj) = &conf else {
        return Err("not a JSON object".into());
    };
    if obj.contains_key("plugins") {
        return Err("has a \"plugins\" list: name the file *.conflist".into());
    }
    // Missing keys stay missing, so the error names them.
    let mut list = Map::new();
    for key in ["name", "cniVersion"] {
        if let Some(value) = obj.get(key) {
            list.insert(key.to_string(), value.clone());
        }
    }
    list.insert("plugins".into(), Value::Array(vec![conf]));
    Ok(Value::Object(list))
}

/// The top of a network list; plugin objects stay JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListHead {
    name: String,
    cni_version: String,
    /// CNI 1.1: the versions the list may be used with; the highest we speak wins.
    #[serde(default)]
    cni_versions: Vec<String>,
    #[serde(default)]
    disable_check: bool,
    plugins: Vec<Map<String, Value>>,
}

impl NetworkList {
    /// Parses and checks a network list (from `source`).
    pub(super) fn from_value(raw: Value, source: &Path) -> Result<Self, CniError> {
        let bad = |why: String| CniError::BadConfig {
            path: source.to_path_buf(),
            why,
        };
        let head = ListHead::deserialize(&raw).map_err(|e| bad(e.to_string()))?;
        check_network_name(&head.name).map_err(|why| bad(format!("name: {why}")))?;
        let cni_version = pick_version(&head.cni_version, &head.cni_versions).ok_or_else(|| {
            bad(format!(
                "cniVersion {:?} is not one vessel speaks ({})",
                head.cni_version,
                SUPPORTED_VERSIONS.join(", ")
            ))
        })?;
        if head.plugins.is_empty() {
            return Err(bad("no plugins".into()));
        }
        let mut plugins = Vec::with_capacity(head.plugins.len());
        for (i, conf) in head.plugins.into_iter().enumerate() {
            let plugin_type = match conf.get("type") {
                Some(Value::String(t)) => t.clone(),
                _ => return Err(bad(format!("plugins[{i}]: no \"type\" string"))),
            };
            check_plugin_type(&plugin_type)
                .map_err(|why| bad(format!("plugins[{i}].type {plugin_type:?}: {why}")))?;
            let capabilities = match conf.get("capabilities") {
                None => BTreeMap::new(),
                Some(caps) => BTreeMap::<String, bool>::deserialize(caps)
                    .map_err(|e| bad(format!("plugins[{i}].capabilities: {e}")))?,
            };
            plugins.push(PluginConf {
                plugin_type,
                capabilities,
                conf,
            });
        }
        Ok(Self {
            name: head.name,
            cni_version,
            disable_check: head.disable_check,
            plugins,
            source: source.to_path_buf(),
            raw,
        })
    }

    /// Whether the list's version has CHECK (0.4.0 and later).
    pub fn supports_check(&self) -> bool {
        !self.cni_version.starts_with("0.3.")
    }
}

/// `cniVersions`' highest supported entry if given, else `cniVersion` if supported.
fn pick_version(version: &str, versions: &[String]) -> Option<String> {
    if !versions.is_empty() {
        if let Some(best) = SUPPORTED_VERSIONS
            .iter()
            .rev()
            .find(|v| versions.iter().any(|given| given == **v))
        {
            return Some((*best).to_string());
        }
    }
    SUPPORTED_VERSIONS
        .contains(&version)
        .then(|| version.to_string())
}

/// The spec: alphanumerics, `-`, `_` and `.`; it also names cache files.
fn check_network_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.len() > 253 {
        return Err("longer than 253 bytes".into());
    }
    if name
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
        || name.starts_with('.')
    {
        return Err(format!(
            "{name:?} has characters other than letters, digits, '-', '_', '.' or starts with '.'"
        ));
    }
    Ok(())
}

/// A plugin type names a binary in a bin dir: one plain file name.
fn check_plugin_type(plugin: &str) -> Result<(), String> {
    if plugin.is_empty()
        || plugin.starts_with('.')
        || plugin
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
    {
        return Err("not a plain file name of letters, digits, '-', '_', '.'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"pods","plugins":[
        {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local"}},
        {"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn the_first_file_by_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "20-b.conflist", LIST);
        write(
            dir.path(),
            "10-a.conf",
            r#"{"cniVersion":"0.4.0","name":"single","type":"ptp"}"#,
        );
        write(dir.path(), "00-ignored.txt", "not a config");
        std::fs::create_dir(dir.path().join("05-dir.conf")).unwrap();
        let list = load_network(dir.path()).unwrap();
        assert_eq!(list.name, "single");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type, "ptp");
        assert_eq!(list.source, dir.path().join("10-a.conf"));

        std::fs::remove_file(dir.path().join("10-a.conf")).unwrap();
        let list = load_network(dir.path()).unwrap();
        assert_eq!(list.name, "pods");
        assert_eq!(list.plugins.len(), 2);
        assert!(!list.plugins[0].has_capability("portMappings"));
        assert!(list.plugins[1].has_capability("portMappings"));
        assert_eq!(list.plugins[0].conf["bridge"], "cni0");
    }

    #[test]
    fn no_config_and_bad_configs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_network(dir.path()),
            Err(CniError::NoConfig { .. })
        ));
        assert!(matches!(
            load_network(&dir.path().join("missing")),
            Err(CniError::NoConfig { .. })
        ));
        for (text, needle) in [
            ("{", "not JSON"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "no plugins",
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"x"}]}"#,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"a/b","plugins":[{"type":"x"}]}"#,
                "name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#,
                "plugins[0].type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
                "plugins[0]",
            ),
            (r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#, "name"),
        ] {
            write(dir.path(), "10.conflist", text);
            match load_network(dir.path()) {
                Err(CniError::BadConfig { path, why }) => {
                    assert!(path.ends_with("10.conflist"));
                    assert!(why.contains(needle), "{text}: {why}");
                }
                other => panic!("{text}: unexpected {other:?}"),
            }
        }
        write(dir.path(), "10.conflist", LIST);
        write(
            dir.path(),
            "07.conf",
            r#"{"cniVersion":"1.0.0","type":"ptp"}"#,
        );
        let err = load_network(dir.path()).unwrap_err();
        assert!(err.to_string().contains("missing field `name`"), "{err}");
        std::fs::remove_file(dir.path().join("07.conf")).unwrap();
        write(dir.path(), "05.conf", LIST);
        let err = load_network(dir.path()).unwrap_err();
        assert!(err.to_string().contains("*.conflist"), "{err}");
    }

    #[test]
    fn cni_versions_picks_the_highest_spoken() {
        assert_eq!(
            pick_version("0.4.0", &["0.4.0".into(), "1.0.0".into(), "9.9.9".into()]),
            Some("1.0.0".into())
        );
        assert_eq!(pick_version("0.4.0", &[]), Some("0.4.0".into()));
        assert_eq!(pick_version("0.1.0", &[]), None);
    }
}
