//! vessel-agent: PID 1 of the pod VM, or an ordinary process serving on a Unix
//! socket (`--unix PATH`) for tests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use vessel_agent::cgroup;
use vessel_agent::container::{self, Engine};
use vessel_agent::reaper::Reaper;
use vessel_agent::server::{self, Listen, Workloads};
use vessel_agent::shutdown::ShutdownSignal;
use vessel_agent::{init, logging, sandbox, AGENT_VERSION, AGENT_VSOCK_PORT};
use vessel_vmm_api::BootMark;

/// Command line of the agent.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "vessel guest agent: serves the agent API on vsock (or a Unix socket)"
)]
struct Args {
    /// vsock port to listen on.
    #[arg(long, default_value_t = AGENT_VSOCK_PORT)]
    vsock_port: u32,
    /// Listen on this Unix socket instead of vsock (running as a host process).
    #[arg(long, value_name = "PATH", conflicts_with = "vsock_port")]
    unix: Option<PathBuf>,
    /// cgroup v2 hierarchy the pod's cgroups go under (tests point it at a delegated subtree).
    #[arg(long, value_name = "PATH", default_value = cgroup::DEFAULT_ROOT)]
    cgroup_root: PathBuf,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            vsock_port: AGENT_VSOCK_PORT,
            unix: None,
            cgroup_root: PathBuf::from(cgroup::DEFAULT_ROOT),
        }
    }
}

fn main() -> ExitCode {
    // The container init stage: a re-exec of this binary, never the agent itself.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == container::INIT_ARG)
    {
        container::init::main();
    }
    // The pod's pid-namespace holder: PID 1 of its namespace, but never the guest's init.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == sandbox::pause::PAUSE_ARG)
    {
        sandbox::pause::main();
    }
    if !init::is_pid1() {
        return host_main(Args::parse());
    }
    init::boot_mark::mark(BootMark::InitStarted);
    init::fill_standard_fds();
    logging::init();
    // First line on the serial console: proves the kernel reached init.
    tracing::info!(version = %AGENT_VERSION, pid1 = true, "vessel-agent starting");
    init::install_panic_hook();
    let switched = init::switch_root::leave_initramfs();
    tracing::debug!(switched_root = switched, "root mount ready");
    init::boot_mark::mark(BootMark::RootReady);
    // Before the runtime: setup changes the environment, which is unsound with threads.
    init::setup();
    init::boot_mark::mark(BootMark::SetupDone);
    let reason = match run(pid1_args(), true) {
        Ok(()) => "shutdown",
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "agent failed");
            "agent failed"
        }
    };
    init::reboot(reason)
}

/// The agent as an ordinary process: errors end it with status 1.
fn host_main(args: Args) -> ExitCode {
    logging::init();
    tracing::info!(version = %AGENT_VERSION, pid1 = false, "vessel-agent starting");
    match run(args, false) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "agent failed");
            ExitCode::FAILURE
        }
    }
}

/// Arguments for PID 1, where the kernel passes leftover command line words:
/// anything unparsable there must not stop init, so it falls back to defaults.
fn pid1_args() -> Args {
    Args::try_parse().unwrap_or_else(|err| {
        let first_line = err
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        tracing::warn!(error = first_line, "ignoring init arguments");
        Args::default()
    })
}

fn run(args: Args, pid1: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?;
    runtime.block_on(serve(args, pid1))
}

async fn serve(args: Args, pid1: bool) -> anyhow::Result<()> {
    // Not dumpable: no process of a container (which shares the guest with the
    // agent) may ptrace it or open its /proc/<pid>/mem, fd or environ, whatever
    // capabilities it holds in its own namespaces.
    nix::sys::prctl::set_dumpable(false).context("cannot clear PR_SET_DUMPABLE")?;
    if !pid1 {
        // Container inits are reparented to the agent when their parent exits; as PID 1
        // that is automatic, as an ordinary process it needs the subreaper flag.
        nix::sys::prctl::set_child_subreaper(true).context("cannot become a child subreaper")?;
    }
    if pid1 {
        // Before any container exists: they all get their own score.
        if let Err(error) = vessel_agent::container::protect_agent() {
            tracing::warn!(%error, "cannot protect the agent from the OOM killer");
        }
    }
    let reaper = Reaper::start()?;
    let engine = Engine::new(reaper).with_cgroup_root(args.cgroup_root.clone());
    // Set up while the agent starts serving; what needs cgroups waits for it.
    let setup = engine.clone();
    tokio::spawn(async move { setup.cgroups().await });
    let workloads = Workloads::new(engine);
    let shutdown = ShutdownSignal::new();
    shutdown_on_signals(&shutdown)?;
    if pid1 {
        // Only now: before the handler exists, the kernel's immediate restart
        // is the better answer to ctrl-alt-del (init would ignore the signal).
        init::ctrl_alt_del_signals_init();
    }
    if pid1 && vessel_agent::diag::enabled() {
        vessel_agent::diag::spawn();
    }
    let listen = match args.unix {
        Some(path) => Listen::Unix(path),
        None => Listen::Vsock(args.vsock_port),
    };
    let served = server::serve_with(&listen, shutdown, pid1, Some(workloads.clone())).await;
    // Containers and the sandbox go whether serving ended well or not.
    workloads.sandbox.teardown().await;
    served.with_context(|| format!("serving on {listen}"))?;
    tracing::info!("server stopped");
    Ok(())
}

/// SIGTERM and SIGINT start the same graceful shutdown as the `Shutdown` RPC.
fn shutdown_on_signals(shutdown: &ShutdownSignal) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        shutdown.trigger();
    });
    Ok(())
}
