//! `vessel-vmm`: boots one microVM and exits with a code that says why it stopped
//! (see `vessel_vmm::exit`).

use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use vessel_vmm::cli::{Cli, CliError};
use vessel_vmm::config::VmConfig;
use vessel_vmm::control::server::ApiSocket;
use vessel_vmm::control::{self, signals};
use vessel_vmm::exit::{ExitReason, EXIT_VMM_ERROR};
use vessel_vmm::jail::{self, JailSpec};
use vessel_vmm::logging::{CappedFile, SharedCappedFile};
use vessel_vmm::seccomp::{Filters, Mode};
use vessel_vmm_api::{LaunchConfig, SeccompMode};

/// What the jail keeps: the kernel and initramfs read-only, and the
/// directories of the vsock and API sockets; the ids and the file-size
/// bound.
fn jail_spec(launch: &LaunchConfig, vm: &VmConfig) -> Result<Option<JailSpec>, jail::JailError> {
    let Some(cfg) = &launch.jail else {
        return Ok(None);
    };
    let mut spec = JailSpec::new(Some(cfg.dir.clone()));
    spec.keep_file_ro(&launch.kernel)?;
    if let Some(initramfs) = &launch.initramfs {
        spec.keep_file_ro(initramfs)?;
    }
    for socket in [&launch.vsock, &launch.api].into_iter().flatten() {
        spec.keep_socket_dir(socket)?;
    }
    spec.ids = cfg.uid.zip(cfg.gid);
    spec.max_file_size = max_file_size(launch, vm);
    Ok(Some(spec))
}

/// The largest file the VMM writes: its biggest disk or log cap, and at
/// least the default log cap, which then also bounds a stderr its parent
/// pointed at a file.
fn max_file_size(launch: &LaunchConfig, vm: &VmConfig) -> u64 {
    let disks = vm.disks.iter().map(|d| d.sectors.saturating_mul(512));
    let console = match &launch.console {
        vessel_vmm_api::Console::File(f) => f.max_bytes,
        _ => 0,
    };
    let log = launch.log.as_ref().map_or(0, |l| l.max_bytes);
    disks
        .chain([console, log, vessel_vmm_api::DEFAULT_LOG_MAX_BYTES])
        .max()
        .unwrap_or(vessel_vmm_api::DEFAULT_LOG_MAX_BYTES)
}

fn seccomp_mode(mode: SeccompMode) -> Mode {
    match mode {
        SeccompMode::Kill => Mode::Kill,
        SeccompMode::Log => Mode::Log,
        SeccompMode::Off => Mode::Off,
    }
}

fn run(launch: LaunchConfig, log_fd: Option<RawFd>) -> anyhow::Result<ExitReason> {
    let grace = Duration::from_millis(launch.shutdown_grace_ms);
    // Before any thread starts: every thread inherits the blocked mask.
    let signals = signals::block().context("cannot block SIGTERM/SIGINT")?;
    // Bound early so a busy path fails before any KVM setup.
    let api = launch
        .api
        .as_deref()
        .map(ApiSocket::bind)
        .transpose()
        .context("cannot create the control API socket")?;
    let config = VmConfig::from_launch(&launch).context("invalid configuration")?;
    let jail = jail_spec(&launch, &config).context("invalid jail")?;
    let mut log_fds: Vec<RawFd> = log_fd.into_iter().collect();
    if let vessel_vmm::config::Console::File(f) = &config.console {
        log_fds.push(f.as_raw_fd());
    }
    vessel_vmm::seccomp::set_log_fds(&log_fds);
    let filters = Filters::compile(seccomp_mode(launch.seccomp))
        .context("cannot build the seccomp filters")?;
    let vm = vessel_vmm::vm::Vm::build(config).context("cannot set up the VM")?;
    // Everything from the host is open now and no other thread runs yet.
    if let Some(spec) = &jail {
        jail::enter(spec).context("cannot enter the jail")?;
    }
    if let Some(filters) = filters {
        filters
            .activate(vm.exit_latch())
            .context("cannot start the seccomp filters")?;
    }
    signals
        .watch(vm.exit_latch(), vm.control(), grace)
        .context("cannot start the signal thread")?;
    // Kept until the VM stops; dropping it removes the socket file.
    let _api = match api {
        Some(sock) => Some(
            sock.serve(vm.control())
                .context("cannot start the control API")?,
        ),
        None => None,
    };
    Ok(vm.run())
}

/// Squeezes clap's multi-line error (message, usage, hint) into one line:
/// the message paragraph only, without its `error:` prefix.
fn one_line(rendered: &str) -> String {
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    let joined = message.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

/// Sends the VMM's tracing output to the configured log file (capped), or
/// to stderr without one or when the file cannot be created (said on
/// stderr, the only place left). Returns the log file's descriptor.
fn init_logging(launch: &LaunchConfig) -> Option<RawFd> {
    let filter =
        || EnvFilter::try_from_env("VESSEL_VMM_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    if let Some(log) = &launch.log {
        match CappedFile::create(&log.path, log.max_bytes) {
            Ok(file) => {
                let fd = file.as_raw_fd();
                tracing_subscriber::fmt()
                    .with_env_filter(filter())
                    .with_ansi(false)
                    .with_writer(SharedCappedFile(Arc::new(Mutex::new(file))))
                    .init();
                return Some(fd);
            }
            Err(e) => eprintln!(
                "vessel-vmm: log {}: cannot create: {e}; logging to stderr",
                log.path.display()
            ),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .init();
    None
}

fn main() -> ExitCode {
    control::mark_process_start();
    // Parse errors exit 1 like every other bad input (clap's own code, 2,
    // would read as "guest crashed"); --help and --version exit 0.
    let launch = match Cli::launch_config(std::env::args_os()) {
        Ok(launch) => launch,
        Err(CliError::Clap(e)) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(CliError::Clap(e)) => {
            eprintln!("vessel-vmm: {}", one_line(&e.render().to_string()));
            return ExitCode::from(EXIT_VMM_ERROR);
        }
        Err(e) => {
            eprintln!("vessel-vmm: {e}");
            return ExitCode::from(EXIT_VMM_ERROR);
        }
    };
    let log_fd = init_logging(&launch);
    // With a log file, the final line goes there too (stderr has it anyway).
    let to_log = log_fd.is_some();

    match run(launch, log_fd) {
        Ok(reason) => {
            let code = reason.code();
            if code != 0 {
                eprintln!("vessel-vmm: {reason}");
                if to_log {
                    tracing::warn!("{reason}");
                }
            }
            ExitCode::from(code)
        }
        Err(e) => {
            // One line: the context, then our error, whose text already names
            // the flag or path and embeds its own cause (so stop there).
            let line = match e.chain().nth(1) {
                Some(cause) => format!("{e}: {cause}"),
                None => format!("{e}"),
            };
            eprintln!("vessel-vmm: {line}");
            if to_log {
                tracing::error!("{line}");
            }
            ExitCode::from(EXIT_VMM_ERROR)
        }
    }
}
