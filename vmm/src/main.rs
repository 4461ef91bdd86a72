//! `vessel-vmm`: boots one microVM and exits with a code that says why it stopped
//! (see `vessel_vmm::exit`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use vessel_vmm::cli::Cli;
use vessel_vmm::config::VmConfig;
use vessel_vmm::control::server::ApiSocket;
use vessel_vmm::control::{self, signals};
use vessel_vmm::exit::{ExitReason, EXIT_VMM_ERROR};
use vessel_vmm::jail::{self, JailSpec};
use vessel_vmm::seccomp::Filters;
use vessel_vmm::vm::Vm;

/// What `--jail` keeps: the kernel and initramfs read-only, and the
/// directories of the vsock and API sockets.
fn jail_spec(cli: &Cli) -> Result<JailSpec, jail::JailError> {
    let mut spec = JailSpec::new(cli.jail_dir.clone());
    spec.keep_file_ro(&cli.kernel)?;
    if let Some(initramfs) = &cli.initramfs {
        spec.keep_file_ro(initramfs)?;
    }
    for socket in [&cli.vsock, &cli.api].into_iter().flatten() {
        spec.keep_socket_dir(socket)?;
    }
    Ok(spec)
}

fn run(cli: Cli) -> anyhow::Result<ExitReason> {
    let grace = Duration::from_millis(cli.shutdown_grace_ms);
    // Before any thread starts: every thread inherits the blocked mask.
    let signals = signals::block().context("cannot block SIGTERM/SIGINT")?;
    // Bound early so a busy path fails before any KVM setup.
    let api = cli
        .api
        .as_deref()
        .map(ApiSocket::bind)
        .transpose()
        .context("cannot create the control API socket")?;
    let jail = cli
        .jail
        .then(|| jail_spec(&cli))
        .transpose()
        .context("invalid jail")?;
    let filters = Filters::compile(cli.seccomp).context("cannot build the seccomp filters")?;
    let config = VmConfig::from_cli(cli).context("invalid configuration")?;
    let vm = Vm::build(config).context("cannot set up the VM")?;
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

fn main() -> ExitCode {
    control::mark_process_start();
    // Parse errors exit 1 like every other bad input (clap's own code, 2,
    // would read as "guest crashed"); --help and --version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vessel-vmm: {}", one_line(&e.render().to_string()));
            return ExitCode::from(EXIT_VMM_ERROR);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("VESSEL_VMM_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    match run(cli) {
        Ok(reason) => {
            let code = reason.code();
            if code != 0 {
                eprintln!("vessel-vmm: {reason}");
            }
            ExitCode::from(code)
        }
        Err(e) => {
            // One line: the context, then our error, whose text already names
            // the flag or path and embeds its own cause (so stop there).
            match e.chain().nth(1) {
                Some(cause) => eprintln!("vessel-vmm: {e}: {cause}"),
                None => eprintln!("vessel-vmm: {e}"),
            }
            ExitCode::from(EXIT_VMM_ERROR)
        }
    }
}
