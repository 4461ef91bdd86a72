//! crictl's verbs over a [`Cri`](crate::Cri) connection. Each writes what
//! crictl would print to the writer it is given, so that the binary and the
//! tests share one implementation.

mod containers;
mod cpu;
mod images;
mod logs;
mod pods;
mod run;
mod runtime;
mod stats;
mod streaming;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::error::ClientError;

pub use containers::{
    create, exec_sync, inspect, list_containers, ps, rm, start, stop, CreateOptions, PsOptions,
    RmOptions,
};
pub use images::{
    export, imagefsinfo, images, import, inspecti, pull, rmi, ImagesOptions, PullOptions,
};
pub use logs::{logs, LogsOptions};
pub use pods::{inspectp, list_pods, pods, rmp, runp, stopp, PodsOptions};
pub use run::{run, RunOptions};
pub use runtime::{info, version};
pub use stats::{stats, statsp, StatsOptions};
pub use streaming::{attach, exec_stream, port_forward, PortPair, StreamOptions};

/// How a listing or status is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// crictl's aligned table.
    #[default]
    Table,
    /// protojson, indented.
    Json,
    /// The JSON document as YAML.
    Yaml,
}

impl std::str::FromStr for Format {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            _ => Err(ClientError::Usage(format!(
                "unknown output format {s:?} (json, yaml or table)"
            ))),
        }
    }
}

/// Deadlines for the calls a verb makes (`None`: no deadline).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Listing, status and other quick calls (crictl's `--timeout`, 2 s by default).
    pub quick: Option<Duration>,
    /// Calls that do real work: run a pod, create, start, stop, remove, pull.
    pub long: Option<Duration>,
}

impl Default for Deadlines {
    /// crictl's 2 s for quick calls; the kubelet's 4 minutes for RunPodSandbox for the rest.
    fn default() -> Self {
        Deadlines {
            quick: Some(Duration::from_secs(2)),
            long: Some(Duration::from_secs(4 * 60)),
        }
    }
}

/// Parses crictl's `--label key=value` arguments.
pub fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>, ClientError> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.contains('=') => Ok((k.to_string(), v.to_string())),
            _ => Err(ClientError::Usage(format!(
                "incorrectly specified label {l:?}: expected key=value"
            ))),
        })
        .collect()
}

fn output_error(source: std::io::Error) -> ClientError {
    ClientError::Io {
        path: PathBuf::from("<output>"),
        error: source,
    }
}

/// Writes text to the verb's output.
fn emit(out: &mut dyn Write, text: &str) -> Result<(), ClientError> {
    out.write_all(text.as_bytes()).map_err(output_error)
}

/// Writes a JSON document as JSON (2-space indent, as crictl) or YAML.
fn emit_value(out: &mut dyn Write, value: &Value, format: Format) -> Result<(), ClientError> {
    let text = match format {
        Format::Yaml => {
            serde_norway::to_string(value).map_err(|e| ClientError::BadReply(e.to_string()))?
        }
        Format::Json | Format::Table => {
            let mut s = serde_json::to_string_pretty(value)
                .map_err(|e| ClientError::BadReply(e.to_string()))?;
            s.push('\n');
            s
        }
    };
    emit(out, &text)
}

/// A compiled `--name`/`--namespace` regular expression (crictl's filters).
fn compile(pattern: &Option<String>, flag: &str) -> Result<Option<regex::Regex>, ClientError> {
    pattern
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| {
            regex::Regex::new(p)
                .map_err(|e| ClientError::Usage(format!("{flag}: invalid regular expression: {e}")))
        })
        .transpose()
}

fn matches(re: &Option<regex::Regex>, text: &str) -> bool {
    re.as_ref().is_none_or(|re| re.is_match(text))
}

/// Keeps the newest `last` items (or the newest one with `latest`), newest first.
fn newest<T>(mut items: Vec<T>, created: impl Fn(&T) -> i64, latest: bool, last: usize) -> Vec<T> {
    items.sort_by_key(|i| std::cmp::Reverse(created(i)));
    let keep = if last > 0 {
        last
    } else if latest {
        1
    } else {
        items.len()
    };
    items.truncate(keep);
    items
}
