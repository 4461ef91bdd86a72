//! `vesseld check`: a host doctor. Each check is a small function that looks
//! at one thing this node needs to run vessel pods (KVM, tun, CNI, the
//! runtime handlers' files, cgroups, huge pages, the state and run dirs,
//! root, the pod id range, the CRI socket) and returns a [`CheckResult`]
//! with the fix for anything that is not OK.
//!
//! The checks read the host through a [`Host`] (where `/proc`, `/sys`,
//! `/dev`, `/etc` and the cgroup root are), so tests can point them at fake
//! trees. They change nothing on the host: the probes that must make
//! something (a Unix socket, an overlay mount) remove it before returning.

mod cgroups;
mod dirs;
mod handlers;
mod identity;
mod kvm;
mod memory;
mod network;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::config::{Config, FlagOverrides};

pub use cgroups::cgroups;
pub use dirs::{overlay, run_dir, socket, state_dir};
pub use handlers::{handler_files, version_line};
pub use identity::{pod_ids, root};
pub use kvm::{cpu_virtualization, kvm_device, kvm_guests};
pub use memory::{hugetlb_pool, shmem_thp};
pub use network::{cni_network, cni_plugins, tun};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth knowing; needs nothing.
    Info,
    /// vessel runs, but something is degraded (slower, unaccounted, no pod
    /// network yet).
    Warn,
    /// vessel pods cannot run on this host until it is fixed.
    Fail,
}

impl Status {
    /// The word printed at the start of a line.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Info => "INFO",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// What was checked (`kvm device`, `cni plugins`, ...).
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (a command or a config key); empty when OK.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl CheckResult {
    /// An OK result.
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail, "")
    }

    /// An INFO result.
    pub fn info(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Info, detail, "")
    }

    /// A WARN result with its fix.
    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Warn, detail, fix)
    }

    /// A FAIL result with its fix.
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Fail, detail, fix)
    }

    fn new(
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// Where the checks read the host: the real paths, or a fake tree in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// procfs (`/proc`).
    pub proc_dir: PathBuf,
    /// sysfs (`/sys`).
    pub sys_dir: PathBuf,
    /// Device nodes (`/dev`).
    pub dev_dir: PathBuf,
    /// `/etc` (passwd, group).
    pub etc_dir: PathBuf,
    /// Where cgroup filesystems are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            proc_dir: "/proc".into(),
            sys_dir: "/sys".into(),
            dev_dir: "/dev".into(),
            etc_dir: "/etc".into(),
            cgroup_root: crate::cgroup::CGROUP_ROOT.into(),
        }
    }
}

/// Arguments of `vesseld check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The configuration file (missing: the defaults), read as `vesseld
    /// serve` reads it, with the environment and the flags applied.
    #[arg(long, default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Print the results as one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// The same overrides `vesseld serve` takes.
    #[command(flatten)]
    pub flags: FlagOverrides,
}

/// Every check, in the order they are printed.
pub fn run_all(config: &Config, host: &Host) -> Vec<CheckResult> {
    let is_root = nix::unistd::geteuid().is_root();
    let mut results = vec![
        root(is_root),
        kvm_device(&host.dev_dir.join("kvm")),
        kvm_guests(&host.sys_dir),
        cpu_virtualization(&host.proc_dir),
        tun(&host.dev_dir.join("net/tun")),
    ];
    let network = cni_network(&config.cni.conf_dir);
    results.push(network.result);
    if let Some(types) = network.plugin_types {
        results.push(cni_plugins(&types, &config.cni.bin_dirs));
    }
    let mut versions = handlers::VersionCache::default();
    for (name, handler) in &config.runtime_handlers {
        results.extend(handler_files(name, handler, &mut versions));
    }
    results.push(cgroups(&host.cgroup_root));
    results.push(shmem_thp(&host.sys_dir));
    results.push(hugetlb_pool(&host.proc_dir));
    results.push(state_dir(&config.state_dir));
    results.push(overlay(&config.state_dir.join(IMAGES_DIR), is_root));
    results.push(run_dir(&config.run_dir));
    results.push(pod_ids(&config.pod_ids, &host.etc_dir));
    results.push(socket(&config.socket));
    results
}

/// The image store's directory under `state_dir` (where overlayfs upper
/// dirs live).
pub const IMAGES_DIR: &str = "images";

/// Whether any result is a FAIL.
pub fn any_failed(results: &[CheckResult]) -> bool {
    results.iter().any(|r| r.status == Status::Fail)
}

/// The results as lines: `STATUS  name: detail`, then `fix: ...` under
/// each one that is not OK, then a summary.
pub fn render_text(config_line: &str, results: &[CheckResult]) -> String {
    let mut out = format!("vesseld check: {config_line}\n");
    for r in results {
        let _ = writeln!(out, "{:<4}  {}: {}", r.status.label(), r.name, r.detail);
        if !r.fix.is_empty() {
            let _ = writeln!(out, "      fix: {}", r.fix);
        }
    }
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let _ = writeln!(
        out,
        "{} OK, {} INFO, {} WARN, {} FAIL: {}",
        count(Status::Ok),
        count(Status::Info),
        count(Status::Warn),
        count(Status::Fail),
        if any_failed(results) {
            "this host cannot run vessel pods yet"
        } else {
            "this host can run vessel pods"
        }
    );
    out
}

/// The results as one JSON object: `{"config", "ok", "results": [...]}`.
pub fn render_json(config_path: &Path, results: &[CheckResult]) -> String {
    /// The document, fields in this order.
    #[derive(Serialize)]
    struct Report<'a> {
        config: String,
        ok: bool,
        results: &'a [CheckResult],
    }
    let report = Report {
        // Lossy: serde refuses a path that is not UTF-8.
        config: config_path.to_string_lossy().into_owned(),
        ok: !any_failed(results),
        results,
    };
    // Only strings and booleans: serializing cannot fail.
    serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
}

/// `vesseld check`: loads the configuration as the daemon does, runs every
/// check, prints them; exit status 1 on any FAIL (a configuration that does
/// not load is one).
pub fn main(args: &CheckArgs) -> ExitCode {
    let (config, config_line) = match load_config(args) {
        Ok(loaded) => loaded,
        Err(e) => {
            let result = CheckResult::fail(
                "config",
                e.to_string(),
                format!(
                    "correct {} (`vesseld config default` prints every key)",
                    args.config.display()
                ),
            );
            print_results(args, "cannot load the configuration", &[result]);
            return ExitCode::FAILURE;
        }
    };
    let results = run_all(&config, &Host::default());
    print_results(args, &config_line, &results);
    if any_failed(&results) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_results(args: &CheckArgs, config_line: &str, results: &[CheckResult]) {
    if args.json {
        print!("{}", render_json(&args.config, results));
    } else {
        print!("{}", render_text(config_line, results));
    }
}

/// The configuration exactly as `vesseld config check` builds it, and a
/// line that says where it came from.
fn load_config(args: &CheckArgs) -> Result<(Config, String), crate::config::ConfigError> {
    let mut config = Config::load_or_default(&args.config)?;
    config.apply_process_env()?;
    config.apply_flags(&args.flags)?;
    let line = if args.config.exists() {
        format!("config {}", args.config.display())
    } else {
        format!(
            "config {} is absent: the defaults (`vesseld config default`)",
            args.config.display()
        )
    };
    Ok((config, line))
}

/// The first line of `text`, trimmed and at most 200 characters: what a
/// result quotes of a file or a program's output.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

/// The nearest existing ancestor of `path` (itself if it exists).
fn existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

#[cfg(test)]
mod tests;
