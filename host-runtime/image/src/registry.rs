//! Registry configuration, in the spirit of containerd's `hosts.toml`: per
//! registry, mirrors tried in order before the registry itself, plain-HTTP and
//! skip-verify hosts, extra CA files, and the registry short names go to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};
use crate::reference::DOCKER_HUB;

/// How vessel names itself to registries.
const USER_AGENT: &str = "vessel-image/0.1";
/// How long a registry may take to accept a connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How to reach one host: a registry or one of its mirrors.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// `host[:port]` (no scheme); for a registry's own entry it may be omitted.
    #[serde(default)]
    pub host: String,
    /// Speak plain HTTP to this host.
    #[serde(default)]
    pub plain_http: bool,
    /// Accept any TLS certificate from this host.
    #[serde(default)]
    pub skip_verify: bool,
    /// PEM files with extra CA certificates for this host.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
}

/// Settings of one registry (keyed by its name, e.g. `registry.k8s.io`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryHosts {
    /// Mirrors tried in order before the registry itself.
    #[serde(default)]
    pub mirrors: Vec<HostConfig>,
    /// Plain HTTP for the registry itself.
    #[serde(default)]
    pub plain_http: bool,
    /// Skip TLS verification for the registry itself.
    #[serde(default)]
    pub skip_verify: bool,
    /// Extra CA files for the registry itself.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    /// Never fall back to the registry itself (air-gapped nodes).
    #[serde(default)]
    pub skip_upstream: bool,
}

/// The whole registry configuration (the `[registry]` table of vesseld's config).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Where references without a registry go (`docker.io`).
    #[serde(default = "default_registry")]
    pub default_registry: String,
    /// Per-registry settings.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryHosts>,
}

fn default_registry() -> String {
    DOCKER_HUB.to_string()
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            default_registry: default_registry(),
            registries: BTreeMap::new(),
        }
    }
}

/// One host to try, resolved from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    /// Whether this is a mirror (not the registry itself).
    pub mirror: bool,
    /// Plain HTTP.
    pub plain_http: bool,
    /// Skip TLS verification.
    pub skip_verify: bool,
    /// Extra CA files.
    pub ca_files: Vec<PathBuf>,
}

impl RegistryConfig {
    /// Parses a TOML document.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: RegistryConfig = toml::from_str(text).map_err(|e| ImageError::Config {
            path: origin.display().to_string(),
            detail: e.to_string(),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ImageError::io("read", path, e))?;
        Self::from_toml(&text, path)
    }

    /// Checks hosts and combinations; `origin` names the file in errors.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |detail: String| ImageError::Config {
            path: origin.display().to_string(),
            detail,
        };
        let host_ok = |h: &str| {
            !h.is_empty()
                && !h.contains("://")
                && !h.contains('/')
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        };
        if !host_ok(&self.default_registry) {
            return Err(bad(format!(
                "default_registry {:?} is not a host",
                self.default_registry
            )));
        }
        for (name, r) in &self.registries {
            if !host_ok(name) {
                return Err(bad(format!("registries.{name:?}: not a host[:port]")));
            }
            for (i, m) in r.mirrors.iter().enumerate() {
                if !host_ok(&m.host) {
                    return Err(bad(format!(
                        "registries.{name:?}.mirrors[{i}].host {:?}: not a host[:port] (no scheme)",
                        m.host
                    )));
                }
            }
            if r.skip_upstream && r.mirrors.is_empty() {
                return Err(bad(format!(
                    "registries.{name:?}: skip_upstream without mirrors"
                )));
            }
        }
        Ok(())
    }

    /// The hosts to try for `registry`, in order: its mirrors, then itself.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let Some(r) = self.registries.get(registry) else {
            return vec![Endpoint {
                host: upstream_host(registry),
                mirror: false,
                plain_http: false,
                skip_verify: false,
                ca_files: vec![],
            }];
        };
        let mut out: Vec<Endpoint> = r
            .mirrors
            .iter()
            .map(|m| Endpoint {
                host: m.host.clone(),
                mirror: true,
                plain_http: m.plain_http,
                skip_verify: m.skip_verify,
                ca_files: m.ca_files.clone(),
            })
            .collect();
        if !r.skip_upstream {
            out.push(Endpoint {
                host: upstream_host(registry),
                mirror: false,
                plain_http: r.plain_http,
                skip_verify: r.skip_verify,
                ca_files: r.ca_files.clone(),
            });
        }
        out
    }
}

/// Docker Hub's API lives at `registry-1.docker.io`, as containerd resolves it.
fn upstream_host(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "registry-1.docker.io".to_string()
    } else {
        registry.to_string()
    }
}

impl Endpoint {
    /// The oci-client configuration to talk to this host.
    pub fn client_config(&self, read_timeout: std::time::Duration) -> Result<ClientConfig> {
        let certs = self
            .ca_pems()?
            .into_iter()
            .map(|data| Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            })
            .collect();
        Ok(ClientConfig {
            protocol: if self.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: self.skip_verify,
            extra_root_certificates: certs,
            // Indexes are resolved by the store (platform with variant and
            // os.version), never by the client.
            platform_resolver: None,
            read_timeout: Some(read_timeout),
            connect_timeout: Some(CONNECT_TIMEOUT),
            user_agent: USER_AGENT,
            ..Default::default()
        })
    }

    /// An HTTP client with the same TLS trust, timeouts and user agent as
    /// [`Endpoint::client_config`]'s, for the requests vessel makes itself.
    pub fn http_client(&self, read_timeout: std::time::Duration) -> Result<reqwest::Client> {
        let certs = self
            .ca_pems()?
            .iter()
            .map(|pem| reqwest::Certificate::from_pem(pem))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| ImageError::Config {
                path: self.host.clone(),
                detail: format!("a CA file is not PEM: {e}"),
            })?;
        reqwest::Client::builder()
            .danger_accept_invalid_certs(self.skip_verify)
            .tls_certs_merge(certs)
            .read_timeout(read_timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| ImageError::Config {
                path: self.host.clone(),
                detail: format!("cannot build an HTTP client: {e}"),
            })
    }

    /// The PEM text of each configured CA file.
    fn ca_pems(&self) -> Result<Vec<Vec<u8>>> {
        self.ca_files
            .iter()
            .map(|f| std::fs::read(f).map_err(|e| ImageError::io("read CA file", f, e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
default_registry = "docker.io"

[registries."registry.k8s.io"]
mirrors = [
  { host = "127.0.0.1:5001", plain_http = true },
  { host = "mirror.example.com", ca_files = ["/etc/vessel/ca.pem"] },
]

[registries."10.0.0.1:5000"]
plain_http = true

[registries."airgap.example"]
mirrors = [{ host = "local:5000", skip_verify = true }]
skip_upstream = true
"#;

    #[test]
    fn mirrors_come_first_in_order_then_upstream() {
        let cfg = RegistryConfig::from_toml(EXAMPLE, Path::new("t.toml")).unwrap();
        let hosts: Vec<_> = cfg
            .endpoints("registry.k8s.io")
            .into_iter()
            .map(|e| (e.host, e.mirror, e.plain_http))
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("127.0.0.1:5001".to_string(), true, true),
                ("mirror.example.com".to_string(), true, false),
                ("registry.k8s.io".to_string(), false, false),
            ]
        );
        let e = cfg.endpoints("10.0.0.1:5000");
        assert_eq!(e.len(), 1);
        assert!(e[0].plain_http && !e[0].mirror);
        let e = cfg.endpoints("airgap.example");
        assert_eq!(e.len(), 1);
        assert!(e[0].mirror && e[0].skip_verify);
        assert_eq!(cfg.endpoints("docker.io")[0].host, "registry-1.docker.io");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = RegistryConfig::from_toml(
            "[registries.\"a\"]\nmirrors = [{ host = \"http://x\" }]\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("mirrors[0].host"), "{e}");
        let e = RegistryConfig::from_toml("bogus = 1\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("bogus"), "{e}");
    }
}
