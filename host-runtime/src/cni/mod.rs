//! The pod network through the node's CNI plugins (CNI spec 1.0), as libcni
//! drives them: the first network configuration of the conf dir, its plugin
//! chain run with ADD / CHECK / DEL, and the ADD result cached on disk so DEL
//! works after vesseld restarts.
//!
//! The types are our own serde structs: the `cni-plugin` crate is written for
//! plugins, not runtimes; it has no network list type, and its result type
//! requires a `sandbox` on every interface, which the bridge plugin's host
//! interfaces do not have, so it cannot parse real results.

mod cache;
mod conf;
mod exec;
mod network;
mod result;
mod template;

use std::path::PathBuf;

pub use conf::{load_network, NetworkList, PluginConf, CONF_EXTENSIONS};
pub use exec::{PluginLimits, PLUGIN_TIMEOUT};
pub use network::{Cni, PodNetwork, PortMapping, Protocol};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use template::{parse_pod_cidrs, write_from_template, RENDERED_NAME};

/// The CNI command a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the pod to the network.
    Add,
    /// Check the pod's attachment is as ADD made it.
    Check,
    /// Detach the pod and release what ADD took.
    Del,
}

impl Command {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Check => "CHECK",
            Command::Del => "DEL",
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Setting up, checking or tearing down a pod network failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The conf dir has no network configuration.
    #[error("no CNI network configuration (*.conflist, *.conf, *.json) in {dir}")]
    NoConfig {
        /// The conf dir.
        dir: PathBuf,
    },
    /// A configuration file cannot be used.
    #[error("CNI configuration {path}: {why}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// No bin dir holds the plugin.
    #[error("CNI plugin {plugin:?} not found in {}", join_paths(.bin_dirs))]
    PluginNotFound {
        /// The plugin's `type`.
        plugin: String,
        /// Where it was searched.
        bin_dirs: Vec<PathBuf>,
    },
    /// The plugin reported an error (its error JSON).
    #[error("CNI plugin {plugin} {command} failed: code {code}: {msg}{}", details_suffix(.details))]
    Plugin {
        /// The plugin's `type`.
        plugin: String,
        /// The command it ran.
        command: Command,
        /// The CNI error code.
        code: u32,
        /// Its message.
        msg: String,
        /// Its details (may be empty).
        details: String,
    },
    /// The plugin failed without a readable error JSON.
    #[error("CNI plugin {plugin} {command} failed ({status}): {output}")]
    PluginCrashed {
        /// The plugin's `type`.
        plugin: String,
        /// The command it ran.
        command: Command,
        /// How it exited.
        status: String,
        /// The start of its stdout and stderr.
        output: String,
    },
    /// The plugin did not finish in time and was killed.
    #[error("CNI plugin {plugin} {command} did not finish within {secs} s (killed)")]
    Timeout {
        /// The plugin's `type`.
        plugin: String,
        /// The command it ran.
        command: Command,
        /// The limit.
        secs: u64,
    },
    /// The plugin wrote more than the limit.
    #[error("CNI plugin {plugin} {command} wrote more than {limit} bytes")]
    OutputTooBig {
        /// The plugin's `type`.
        plugin: String,
        /// The command it ran.
        command: Command,
        /// The limit.
        limit: usize,
    },
    /// The plugin's result is not a CNI result.
    #[error("CNI plugin {plugin} {command} returned an unreadable result: {why}")]
    BadResult {
        /// The plugin's `type`.
        plugin: String,
        /// The command it ran.
        command: Command,
        /// What is wrong with it.
        why: String,
    },
    /// A request field cannot be used.
    #[error("invalid {field}: {why}")]
    InvalidRequest {
        /// The field.
        field: &'static str,
        /// Why.
        why: String,
    },
    /// Reading or writing a file, or running a plugin, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl CniError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CniError::Io {
            what: what.into(),
            source,
        }
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}
