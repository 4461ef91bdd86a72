//! `vesseld`: the CRI runtime daemon of vessel (`vesseld` or `vesseld
//! serve`), and its tools: `check` (the host doctor), `config`, `sweep`,
//! and the developer paths `run-pod` (one pod end to end through the agent
//! API, without the CRI) and `boot-vm`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use vessel_agent_api::proto::{agent_client::AgentClient, health_client::HealthClient};
use vessel_agent_api::proto::{CheckRequest, ShutdownRequest, VersionRequest};
use vessel_host_runtime::net::{PodAddressing, DEFAULT_SUBNET};
use vessel_host_runtime::pod::{
    agent_call, guest_text, leftovers, ContainerExit, ContainerRun, Phase, Pod, PodConfig, Step,
    AGENT_CALL_TIMEOUT, GUEST_NIC,
};
use vessel_host_runtime::vm::{VmConfig, VmExit, VmProcess};

/// vesseld: runs Kubernetes pods in KVM microVMs.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// With no subcommand, `serve`'s flags (`vesseld --config PATH`).
    #[command(flatten)]
    serve: Serve,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The CRI daemon (also what `vesseld` with no subcommand runs):
    /// RuntimeService and ImageService on the configured socket.
    Serve(Serve),
    /// Boots one pod VM, checks its agent over vsock, and shuts it down.
    BootVm(BootVm),
    /// Runs one pod end to end: netns and tap, virtiofsd, VM, sandbox setup,
    /// one container with streamed output, then stops it all and checks
    /// nothing is left. Exits with the container's status.
    RunPod(RunPod),
    /// The configuration file: print the defaults, or check one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Removes what dead vesselds left: every pod under RUN_DIR/pods whose
    /// owner no longer runs (its VMM and virtiofsd, share mount, netns,
    /// cgroup, state dir). Exits 1 if something could not be removed.
    Sweep(Sweep),
    /// Checks whether this host can run vessel pods (KVM, tun, CNI, the
    /// handlers' files, cgroups, huge pages, dirs, root, ids, the socket):
    /// OK / INFO / WARN / FAIL with the fix. Exits 1 on any FAIL.
    Check(vessel_host_runtime::check::CheckArgs),
}

/// `vesseld config ...`.
#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Prints the full default configuration (every key, as TOML).
    Default,
    /// Reads the configuration file (missing: the defaults), applies the
    /// environment and flags, and prints the result, or the error naming
    /// the key and line.
    Check {
        /// The configuration file.
        #[arg(long, default_value = "/etc/vessel/config.toml")]
        config: PathBuf,
        #[command(flatten)]
        flags: vessel_host_runtime::config::FlagOverrides,
    },
}

/// Arguments of `vesseld serve`.
#[derive(Parser, Debug, Default)]
struct Serve {
    /// The configuration file (missing: the defaults).
    #[arg(long, default_value = vessel_host_runtime::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(flatten)]
    flags: vessel_host_runtime::config::FlagOverrides,
}

/// Arguments of `vesseld sweep`.
#[derive(Parser, Debug)]
struct Sweep {
    /// vesseld's runtime directory (pods live in RUN_DIR/pods).
    #[arg(long, env = "VESSEL_RUN_DIR", default_value = "/run/vessel")]
    run_dir: PathBuf,
    /// vesseld's state directory (pods' logs live in STATE_DIR/pods).
    #[arg(long, env = "VESSEL_STATE_DIR", default_value = "/var/lib/vessel")]
    state_dir: PathBuf,
}

/// Arguments of `vesseld run-pod`.
#[derive(Parser, Debug)]
struct RunPod {
    /// The pod's name: its hostname, and the root of its netns and state dir names.
    #[arg(long, default_value = "demo")]
    name: String,
    /// Host directory with the container's root filesystem (shared over virtio-fs).
    #[arg(long)]
    rootfs: PathBuf,
    #[command(flatten)]
    vm: VmArgs,
    /// The virtiofsd binary.
    #[arg(long, env = "VESSEL_VIRTIOFSD")]
    virtiofsd: PathBuf,
    /// vesseld's runtime directory; the pod's sockets and logs go to RUN_DIR/pods/NAME
    /// (it must hold Unix sockets: a tmpfs, not 9p or NFS).
    #[arg(long, env = "VESSEL_RUN_DIR", default_value = "/run/vessel")]
    run_dir: PathBuf,
    /// vesseld's state directory on disk; the pod's logs go to STATE_DIR/pods/NAME.
    #[arg(long, env = "VESSEL_STATE_DIR", default_value = "/var/lib/vessel")]
    state_dir: PathBuf,
    /// The pod's IPv4 subnet: the tap gets its first address, the guest the second.
    #[arg(long, default_value = DEFAULT_SUBNET)]
    subnet: PodAddressing,
    /// How long the container may run before it is killed (seconds; 0: no limit).
    #[arg(long, default_value = "0", value_parser = parse_secs)]
    container_timeout: Duration,
    /// The container's command (default: greet, show the hostname and eth0, ping the tap).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

/// Arguments of `vesseld boot-vm`.
#[derive(Parser, Debug)]
struct BootVm {
    #[command(flatten)]
    vm: VmArgs,
    /// Directory for the VM's sockets and logs (default: a fresh temp dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

/// The pod VM's flags, the same for every subcommand that boots one.
#[derive(clap::Args, Debug)]
struct VmArgs {
    /// The vessel-vmm binary.
    #[arg(long, env = "VESSEL_VMM")]
    vmm: PathBuf,
    /// Guest kernel (vmlinux with a PVH entry).
    #[arg(long, env = "VESSEL_KERNEL")]
    kernel: PathBuf,
    /// Guest initramfs (vessel-agent as /init).
    #[arg(long, env = "VESSEL_INITRAMFS")]
    initramfs: PathBuf,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// How long to wait for the agent after starting the VMM.
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    timeout: Duration,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("expected whole seconds: {e}"))
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    if let Command::Serve(args) = command {
        return serve(args).await;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match command {
        Command::Serve(_) => unreachable!("served above"),
        Command::BootVm(args) => boot_vm(args).await.map(|()| ExitCode::SUCCESS),
        Command::RunPod(args) => run_pod(args).await,
        Command::Sweep(args) => sweep(args).await,
        Command::Config(c) => config_command(c),
        Command::Check(args) => Ok(vessel_host_runtime::check::main(&args)),
    }
}

/// The container's command when none is given: it shows the pod's hostname
/// and NIC, and reaches the host through the tap.
fn default_command(addressing: &PodAddressing) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo hello from a vessel pod; hostname; ip addr show {GUEST_NIC}; ping -c 1 -W 5 {}",
            addressing.host_ip
        ),
    ]
}

/// Prints one step: time since start, the step, how long it took.
fn print_step(clock: Instant, step: &Step<'_>) {
    let at = clock.elapsed().as_secs_f64();
    let took = step.took.as_millis();
    let mark = match step.phase {
        Phase::Start => "start",
        Phase::Run => "run  ",
        Phase::Stop => "stop ",
    };
    match step.error {
        None => println!("[{at:8.3}s] {mark} | {} ({took} ms)", step.what),
        Some(e) => println!(
            "[{at:8.3}s] {mark} | {} FAILED after {took} ms: {}",
            step.what,
            error_chain(e)
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Resolves once SIGINT or SIGTERM arrives; names it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        // Without signal handling the pod still runs; only Ctrl-C is rougher.
        _ => std::future::pending().await,
    }
}

async fn run_pod(args: RunPod) -> Result<ExitCode> {
    let clock = Instant::now();
    let rootfs = std::fs::canonicalize(&args.rootfs)
        .with_context(|| format!("container rootfs {}", args.rootfs.display()))?;
    let command = if args.command.is_empty() {
        default_command(&args.subnet)
    } else {
        args.command
    };
    let config = PodConfig {
        name: args.name,
        rootfs,
        run_dir: args.run_dir,
        state_root: args.state_dir,
        vmm: args.vm.vmm,
        kernel: args.vm.kernel,
        initramfs: args.vm.initramfs,
        virtiofsd: args.virtiofsd,
        cpus: args.vm.cpus,
        memory_mib: args.vm.memory,
        addressing: args.subnet,
        boot_timeout: args.vm.timeout,
        ids: None,
        kernel_args: String::new(),
        pod_ids: vessel_host_runtime::config::IdRange::default(),
        cgroup_parent: vessel_host_runtime::cgroup::DEFAULT_PARENT.into(),
        cri: None,
    };
    let mut pod = Pod::new(config.clone()).context("checking the pod's configuration")?;
    println!(
        "vesseld run-pod: pod {}, rootfs {}, command {:?}",
        config.name,
        config.rootfs.display(),
        command
    );
    let print = move |step: &Step<'_>| print_step(clock, step);

    let outcome: Result<ContainerExit> = tokio::select! {
        result = async {
            pod.start(&print).await.context("starting the pod")?;
            let run = ContainerRun {
                id: config.name.clone(),
                args: command,
                stdout: Box::new(std::io::stdout()),
                stderr: Box::new(std::io::stderr()),
                deadline: (!args.container_timeout.is_zero()).then_some(args.container_timeout),
            };
            pod.run_container(run, &print).await.context("running the container")
        } => result,
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
    };
    match (&outcome, pod.tap_counters()) {
        (Ok(_), Ok(c)) => println!(
            "[{:8.3}s] run   | host side of the pod's NIC: tap0 received {} packets from the guest, sent {}",
            clock.elapsed().as_secs_f64(),
            c.rx_packets,
            c.tx_packets
        ),
        (Ok(_), Err(e)) => tracing::warn!(error = %e, "cannot read the tap's counters"),
        (Err(_), _) => {
            let logs = config.run_dir.join("failed").join(&config.name);
            match pod.save_logs(&logs) {
                Ok(saved) if !saved.is_empty() => println!(
                    "[{:8.3}s] the pod failed; its logs are in {}",
                    clock.elapsed().as_secs_f64(),
                    logs.display()
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot save the pod's logs"),
            }
            println!(
                "[{:8.3}s] the pod failed; rolling back what was made",
                clock.elapsed().as_secs_f64()
            );
        }
    }
    let stopped = pod.stop(&print).await;
    let left = leftovers(&config, pod.pids());
    if left.is_empty() {
        println!(
            "[{:8.3}s] check | nothing of pod {} is left: no vessel-vmm or virtiofsd of it, no netns {}, no cgroup, no socket, no state dir",
            clock.elapsed().as_secs_f64(),
            config.name,
            config.netns_name()
        );
    }
    let exit = outcome?;
    stopped.context("stopping the pod")?;
    if !left.is_empty() {
        let list: Vec<String> = left.iter().map(ToString::to_string).collect();
        bail!(
            "pod {} left things behind: {}",
            config.name,
            list.join("; ")
        );
    }
    println!(
        "[{:8.3}s] done  | container exit status {}",
        clock.elapsed().as_secs_f64(),
        exit.exit_code
    );
    Ok(ExitCode::from(
        u8::try_from(exit.exit_code).unwrap_or(u8::MAX),
    ))
}

/// `vesseld serve`: the configuration, vesseld's own logging as it asks,
/// then the CRI daemon until SIGTERM.
async fn serve(args: Serve) -> Result<ExitCode> {
    use vessel_host_runtime::config::{Config, LogFormat};
    let mut config = Config::load_or_default(&args.config)?;
    config.apply_env(|name| std::env::var_os(name))?;
    config.apply_flags(&args.flags)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| config.log.filter_directives().into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    tracing::info!(config = %args.config.display(), "vesseld starting");
    vessel_host_runtime::daemon::serve(config)
        .await
        .context("serving CRI")?;
    Ok(ExitCode::SUCCESS)
}

fn config_command(command: ConfigCommand) -> Result<ExitCode> {
    use vessel_host_runtime::config::Config;
    match command {
        ConfigCommand::Default => print!("{}", Config::default_toml()),
        ConfigCommand::Check { config, flags } => {
            let mut c = Config::load_or_default(&config)?;
            c.apply_env(|name| std::env::var_os(name))?;
            c.apply_flags(&flags)?;
            print!(
                "{}",
                toml::to_string_pretty(&c).context("rendering the configuration")?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn sweep(args: Sweep) -> Result<ExitCode> {
    let swept = vessel_host_runtime::pod::sweep(&args.run_dir, &args.state_dir).await;
    let mut failed = false;
    for s in &swept {
        if let Some(owner) = s.owned_by {
            println!("pod {}: left alone, its vesseld (pid {owner}) runs", s.pod);
            continue;
        }
        for r in &s.removed {
            println!("pod {}: removed {r}", s.pod);
        }
        for e in &s.errors {
            println!("pod {}: FAILED: {e}", s.pod);
            failed = true;
        }
    }
    println!(
        "swept {} pod(s) under {}",
        swept.iter().filter(|s| s.owned_by.is_none()).count(),
        args.run_dir.join("pods").display()
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One agent call of `boot-vm`, bounded like every call vesseld makes.
async fn with_deadline<T>(
    call: &'static str,
    request: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    Ok(agent_call(call, AGENT_CALL_TIMEOUT, request).await?)
}

async fn boot_vm(args: BootVm) -> Result<()> {
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("vessel-boot-{}", std::process::id())),
    };
    let config = VmConfig {
        vmm: args.vm.vmm,
        kernel: args.vm.kernel,
        initramfs: args.vm.initramfs,
        cpus: args.vm.cpus,
        memory_mib: args.vm.memory,
        hugepages: false,
        extra_cmdline: None,
        serial_console: true,
        state_dir: state_dir.clone(),
        api_socket: false,
        nets: Vec::new(),
        shares: Vec::new(),
        jail: None,
        shutdown_grace_ms: None,
        log_dir: None,
    };
    println!(
        "booting a VM: {} vCPU(s), {} MiB, kernel {}, initramfs {}",
        config.cpus,
        config.memory_mib,
        config.kernel.display(),
        config.initramfs.display()
    );
    let mut vm = VmProcess::spawn(config).context("starting vessel-vmm")?;
    println!("vessel-vmm running as pid {}", vm.pid().unwrap_or(0));

    let channel = vm
        .connect_agent(args.vm.timeout)
        .await
        .context("reaching the guest agent")?;
    let ready = vm.started().elapsed();
    let health = with_deadline(
        "Health.Check",
        HealthClient::new(channel.clone()).check(CheckRequest {}),
    )
    .await?;
    println!(
        "agent ready after {} ms: health {:?}",
        ready.as_millis(),
        health.status()
    );
    let version = with_deadline(
        "Agent.Version",
        AgentClient::new(channel.clone()).version(VersionRequest {}),
    )
    .await?;
    println!(
        "agent {} (API v{}), guest kernel {}, pid 1: {}",
        guest_text(&version.agent_version),
        version.api_version,
        guest_text(&version.kernel_release),
        version.pid1
    );

    let asked = Instant::now();
    with_deadline(
        "Agent.Shutdown",
        AgentClient::new(channel).shutdown(ShutdownRequest {}),
    )
    .await?;
    let exit = vm.wait_exit(Duration::from_secs(30)).await?;
    println!(
        "guest shut down; vessel-vmm {} after {} ms",
        exit,
        asked.elapsed().as_millis()
    );
    if exit != VmExit::Code(0) {
        bail!(
            "vessel-vmm ended with {exit}; console log in {}",
            state_dir.display()
        );
    }
    std::fs::remove_dir_all(&state_dir)
        .with_context(|| format!("removing {}", state_dir.display()))?;
    println!("removed {}; nothing left behind", state_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Catches a field whose type does not match its value parser, which
        // clap otherwise reports only when the flag is read (a panic).
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "vesseld",
            "run-pod",
            "--rootfs",
            "/srv",
            "--vmm",
            "v",
            "--kernel",
            "k",
            "--initramfs",
            "i",
            "--virtiofsd",
            "f",
            "--container-timeout",
            "5",
        ])
        .unwrap();
        let Some(Command::RunPod(args)) = cli.command else {
            panic!("not run-pod")
        };
        assert_eq!(args.container_timeout, Duration::from_secs(5));
        assert_eq!(args.state_dir, PathBuf::from("/var/lib/vessel"));
        let cli =
            Cli::try_parse_from(["vesseld", "config", "check", "--socket", "/run/x.sock"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Config(ConfigCommand::Check { .. }))
        ));
        let cli = Cli::try_parse_from(["vesseld"]).unwrap();
        assert!(cli.command.is_none(), "no subcommand: serve");
        assert_eq!(
            cli.serve.config,
            PathBuf::from(vessel_host_runtime::config::DEFAULT_CONFIG_PATH)
        );
        let cli = Cli::try_parse_from(["vesseld", "--config", "/etc/v.toml"]).unwrap();
        assert!(cli.command.is_none(), "serve's flags alone: serve");
        assert_eq!(cli.serve.config, PathBuf::from("/etc/v.toml"));
        Cli::try_parse_from(["vesseld", "--config", "/etc/v.toml", "check"])
            .expect_err("serve's flags with another subcommand");
    }

    #[test]
    fn config_check_names_a_bad_key_and_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "# vessel\nno_such_key = 1\n").unwrap();
        let err = config_command(ConfigCommand::Check {
            config: file,
            flags: Default::default(),
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("no_such_key") && text.contains(":2:"),
            "{text}"
        );
    }
}
