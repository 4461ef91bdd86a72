//! vesseld's configuration file (`/etc/vessel/config.toml`).
//!
//! Every key is optional and has the default documented in
//! `docs/configuration.md` ("vesseld config.toml"); unknown keys are an error
//! naming the key and its line. Settings are applied in this order, each
//! overriding the one before: the built-in defaults, the file, the
//! environment ([`Config::apply_env`]: the default handler's binaries), the
//! command line flags ([`Config::apply_flags`]).

mod error;
mod handler;
mod overrides;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::ConfigError;
pub use handler::{RuntimeHandler, DEFAULT_HANDLER};
pub use overrides::{split_path_list, FlagOverrides, ENV_OVERRIDES};

/// Where vesseld looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vessel/config.toml";

/// The configuration file is read whole; anything bigger is refused.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// vesseld's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The CRI socket (RuntimeService and ImageService).
    pub socket: PathBuf,
    /// Persistent state: the state store, images.
    pub state_dir: PathBuf,
    /// Runtime state: per-pod sockets and logs (must hold Unix sockets).
    pub run_dir: PathBuf,
    /// The handler used when `RunPodSandbox` names none.
    pub default_runtime_handler: String,
    /// vesseld's own logging.
    pub log: LogConfig,
    /// The pod network's CNI configuration and plugins.
    pub cni: CniConfig,
    /// The Exec/Attach/PortForward streaming server.
    pub streaming: StreamingConfig,
    /// Limits of the image store.
    pub images: ImageLimits,
    /// Registries: the default one, mirrors, plain HTTP, CA files.
    pub registry: vessel_image::RegistryConfig,
    /// The host ids of the pods: their VMMs' uids and gids and their guests' ids on the share.
    pub pod_ids: IdRange,
    /// The host cgroup under which each pod's VMM and virtiofsd are placed.
    pub cgroup: CgroupConfig,
    /// Runtime handlers by name (`RuntimeClass.handler`); the built-in
    /// `vessel` handler stays unless the file redefines it.
    #[serde(deserialize_with = "handler::deserialize_handlers")]
    pub runtime_handlers: BTreeMap<String, RuntimeHandler>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: "/run/vessel/vessel.sock".into(),
            state_dir: "/var/lib/vessel".into(),
            run_dir: "/run/vessel".into(),
            default_runtime_handler: DEFAULT_HANDLER.to_string(),
            log: LogConfig::default(),
            cni: CniConfig::default(),
            streaming: StreamingConfig::default(),
            images: ImageLimits::default(),
            registry: vessel_image::RegistryConfig::default(),
            pod_ids: IdRange::default(),
            cgroup: CgroupConfig::default(),
            runtime_handlers: handler::default_handlers(),
        }
    }
}

/// How much vesseld logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Only problems.
    Warn,
    /// Only failures.
    Error,
}

impl LogLevel {
    /// The level as a `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// How vesseld's log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: vesseld's own logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// The level (`RUST_LOG`, when set, wins).
    pub level: LogLevel,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// Transport crates that log every frame at `debug`: capped at `info` so that
/// `log.level = "debug"` shows vessel's own detail, not a line per HTTP/2
/// frame on every agent connection (which slowed a streaming pod several
/// times over). `RUST_LOG` can still ask for them.
const CHATTY_CRATES: [&str; 6] = ["h2", "hyper", "hyper_util", "tower", "rustls", "reqwest"];

impl LogConfig {
    /// The `tracing` filter the level stands for.
    pub fn filter_directives(&self) -> String {
        let level = self.level.as_str();
        match self.level {
            LogLevel::Trace | LogLevel::Debug => std::iter::once(level.to_string())
                .chain(CHATTY_CRATES.iter().map(|c| format!("{c}=info")))
                .collect::<Vec<_>>()
                .join(","),
            _ => level.to_string(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

/// `[cni]`: where the pod network's configuration and plugins are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// The directory whose first conflist (by name) is the pod network.
    pub conf_dir: PathBuf,
    /// Where plugins are searched, in order (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// A network configuration list with `{{.PodCIDR}}` in it, written to
    /// `conf_dir` as `10-vessel-net.conflist` when the kubelet sends the
    /// node's pod CIDR (containerd's `conf_template`); unset: none.
    pub conf_template: Option<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            conf_template: None,
        }
    }
}

/// `[streaming]`: the server whose URLs Exec, Attach and PortForward return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// Listen address; port 0 picks a free port (containerd's default too).
    pub address: SocketAddr,
    /// Host put in the URLs instead of the bound address (required when
    /// `address` is unspecified, such as `0.0.0.0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_host: Option<String>,
    /// How long a URL returned by Exec/Attach/PortForward stays valid.
    pub token_ttl_secs: u64,
    /// A stream with no traffic for this long is closed (0: never).
    pub idle_timeout_secs: u64,
    /// A client that takes nothing for this long is dropped (its process's
    /// pipes break; other sessions go on).
    pub write_stall_timeout_secs: u64,
    /// How long a client may take to open its streams after connecting.
    pub stream_creation_timeout_secs: u64,
    /// Concurrent client connections at most; more are closed at once.
    pub max_connections: u32,
    /// Serve HTTPS with this certificate and key; absent: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            // The kubelet's streaming server keeps its tokens a minute.
            token_ttl_secs: 60,
            advertise_host: None,
            // containerd's stream_idle_timeout.
            idle_timeout_secs: 4 * 60 * 60,
            write_stall_timeout_secs: 30,
            // The kubelet's streamCreationTimeout.
            stream_creation_timeout_secs: 30,
            max_connections: 256,
            tls: None,
        }
    }
}

/// `[streaming.tls]`: the streaming server's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// `[images]`: what the image store accepts from a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLimits {
    /// Layers pulled at once per image (containerd's default: 3).
    pub max_concurrent_downloads: u32,
    /// Largest manifest or index, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest image config, in bytes.
    pub max_config_bytes: u64,
    /// Most layers in one image.
    pub max_layers: u64,
    /// A pull that moves no byte for this long is cancelled (containerd's
    /// `image_pull_progress_timeout`), in seconds.
    pub progress_timeout_secs: u64,
    /// Largest single layer (compressed), in bytes.
    pub max_layer_bytes: u64,
    /// Most bytes of file content one layer may unpack to (a tar bomb's cap).
    pub max_unpacked_bytes: u64,
    /// Most tar entries in one layer.
    pub max_entries: u64,
    /// Images reported as pinned, so that the kubelet's garbage collector
    /// keeps them: references (normalized as pulls are), image ids, or name
    /// prefixes ending in `*` (`registry.k8s.io/pause*`).
    pub pinned: Vec<String>,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: 3,
            // containerd refuses manifests over 4 MiB as well.
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 8 << 20,
            max_layers: 128,
            progress_timeout_secs: 300,
            max_layer_bytes: 10 << 30,
            max_unpacked_bytes: 32 << 30,
            max_entries: 1_000_000,
            pinned: Vec::new(),
        }
    }
}

/// `[pod_ids]`: a block of host ids for the pods, one 64Ki slot each (its
/// guest's ids on the share and its VMM's id), so that no pod shares an id
/// with the host's users or another pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdRange {
    /// The first uid (and gid) of the block.
    pub start: u32,
    /// How many ids the block holds (a multiple of 65536).
    pub count: u32,
    /// Whether virtiofsd translates the guest's ids into the pod's slot
    /// (off: guest ids are host ids on the share, as with runc).
    pub translate_share: bool,
}

impl Default for IdRange {
    fn default() -> Self {
        // Above systemd's container range (524288–1879048191) and below
        // its dynamic user namespace ranges (0x7FFE0000 up) and 2^31, which
        // some tools misread: room for 4094 pods.
        Self {
            start: 0x7000_0000,
            count: 4094 * crate::pod::ids::IDS_PER_POD,
            translate_share: true,
        }
    }
}

/// `[cgroup]`: where the pods' host processes are placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    /// The parent of every pod's cgroup: a systemd slice name
    /// (`vessel.slice`) or an absolute cgroupfs path (`/vessel`).
    pub parent: String,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            parent: "vessel.slice".into(),
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let io = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooBig {
                path: path.to_path_buf(),
                size,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(&text, path)
    }

    /// Reads `path` if it exists, else the defaults: vesseld starts without a
    /// configuration file.
    pub fn load_or_default(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            _ => Self::load(path),
        }
    }

    /// Parses and checks `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::parse(origin, text, &e))?;
        config
            .validate()
            .map_err(|(key, why)| ConfigError::Invalid {
                path: origin.to_path_buf(),
                key,
                why,
            })?;
        Ok(config)
    }

    /// The full default configuration as TOML (`vesseld config default`).
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Config::default())
            // Only plain strings, numbers, lists and tables: this cannot fail.
            .unwrap_or_else(|e| format!("# cannot render the defaults: {e}\n"));
        let mut out = String::from(
            "# vesseld configuration: every key is optional; these are the defaults.\n\
             # Reference: docs/configuration.md, section \"vesseld config.toml\".\n\n",
        );
        out.push_str(&body);
        out.push_str(
            "\n# Write the pod network from a template when the kubelet sends the\n\
             # node's pod CIDR ({{.PodCIDR}} in it; absent: none), under [cni]:\n\
             # conf_template = \"/etc/vessel/cni-template.conflist\"\n\
             \n# Serve the streaming server over TLS (absent: plain HTTP):\n\
             # [streaming.tls]\n\
             # cert_file = \"/etc/vessel/stream.crt\"\n\
             # key_file = \"/etc/vessel/stream.key\"\n",
        );
        out
    }

    /// The handler `name`, or the default handler when `name` is empty (as the
    /// kubelet sends it for pods without a RuntimeClass).
    pub fn handler(&self, name: &str) -> Option<&RuntimeHandler> {
        let name = if name.is_empty() {
            self.default_runtime_handler.as_str()
        } else {
            name
        };
        self.runtime_handlers.get(name)
    }

    /// Checks what serde cannot: the key at fault and why.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, why: String| Err((key.to_string(), why));
        for (key, path) in [
            ("socket", &self.socket),
            ("state_dir", &self.state_dir),
            ("run_dir", &self.run_dir),
            ("cni.conf_dir", &self.cni.conf_dir),
        ] {
            check_absolute(path).or_else(|why| bad(key, why))?;
        }
        // sun_path holds 108 bytes with the terminating NUL.
        if self.socket.as_os_str().len() > 107 {
            return bad(
                "socket",
                "longer than 107 bytes (a Unix socket path)".into(),
            );
        }
        if self.cni.bin_dirs.is_empty() {
            return bad("cni.bin_dirs", "empty: plugins could not be found".into());
        }
        for dir in &self.cni.bin_dirs {
            check_absolute(dir).or_else(|why| bad("cni.bin_dirs", why))?;
        }
        if let Some(t) = &self.cni.conf_template {
            check_absolute(t).or_else(|why| bad("cni.conf_template", why))?;
        }
        if let Some(tls) = &self.streaming.tls {
            check_absolute(&tls.cert_file).or_else(|why| bad("streaming.tls.cert_file", why))?;
            check_absolute(&tls.key_file).or_else(|why| bad("streaming.tls.key_file", why))?;
        }
        if self.streaming.token_ttl_secs == 0 {
            return bad("streaming.token_ttl_secs", "must be at least 1".into());
        }
        for (key, value) in [
            (
                "streaming.write_stall_timeout_secs",
                self.streaming.write_stall_timeout_secs,
            ),
            (
                "streaming.stream_creation_timeout_secs",
                self.streaming.stream_creation_timeout_secs,
            ),
            (
                "streaming.max_connections",
                self.streaming.max_connections.into(),
            ),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.streaming.address.ip().is_unspecified()
            && self
                .streaming
                .advertise_host
                .as_deref()
                .unwrap_or("")
                .is_empty()
        {
            return bad(
                "streaming.advertise_host",
                "required when streaming.address is unspecified (0.0.0.0 or ::)".into(),
            );
        }
        if let Err(e) = vessel_image::pinned::PinnedImages::new(
            &self.images.pinned,
            &self.registry.default_registry,
        ) {
            return bad("images.pinned", e.to_string());
        }
        if self.images.max_concurrent_downloads == 0 {
            return bad(
                "images.max_concurrent_downloads",
                "must be at least 1".into(),
            );
        }
        for (field, value) in [
            ("images.max_config_bytes", self.images.max_config_bytes),
            ("images.max_layers", self.images.max_layers),
            (
                "images.progress_timeout_secs",
                self.images.progress_timeout_secs,
            ),
            ("images.max_unpacked_bytes", self.images.max_unpacked_bytes),
            ("images.max_entries", self.images.max_entries),
        ] {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.pod_ids.start == 0 {
            return bad("pod_ids.start", "must not be 0 (root)".into());
        }
        let slot = crate::pod::ids::IDS_PER_POD;
        if self.pod_ids.count == 0 || !self.pod_ids.count.is_multiple_of(slot) {
            return bad(
                "pod_ids.count",
                format!("must be a positive multiple of {slot} (each pod takes {slot} ids)"),
            );
        }
        // The last id must stay below u32::MAX, which is -1 to chown and
        // setresuid ("leave unchanged").
        if self.pod_ids.start.checked_add(self.pod_ids.count).is_none() {
            return bad(
                "pod_ids.count",
                format!(
                    "start {} + count {} reaches {}, which is no id (-1)",
                    self.pod_ids.start,
                    self.pod_ids.count,
                    u32::MAX
                ),
            );
        }
        if let Err(e) = crate::cgroup::parent_path(&self.cgroup.parent) {
            return bad("cgroup.parent", e.to_string());
        }
        if !self
            .runtime_handlers
            .contains_key(&self.default_runtime_handler)
        {
            return bad(
                "default_runtime_handler",
                format!(
                    "{:?} is not in [runtime_handlers] (have: {})",
                    self.default_runtime_handler,
                    self.runtime_handlers
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        for (name, handler) in &self.runtime_handlers {
            handler::check_name(name)
                .or_else(|why| bad(&format!("runtime_handlers.{name:?}"), why))?;
            handler
                .validate()
                .or_else(|(field, why)| bad(&format!("runtime_handlers.{name}.{field}"), why))?;
        }
        Ok(())
    }
}

/// Paths in the configuration must not depend on vesseld's working directory.
fn check_absolute(path: &Path) -> Result<(), String> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(format!("{} is not an absolute path", path.display()))
    }
}

#[cfg(test)]
mod tests;
