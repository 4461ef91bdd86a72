//! `vesseld`: the CRI runtime daemon of vessel.
//!
//! The CRI services arrive with later work; today it can boot one pod VM and
//! talk to its agent (`vesseld boot-vm`), which is what `make run` shows.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use vessel_agent::proto::{agent_client::AgentClient, health_client::HealthClient};
use vessel_agent::proto::{CheckRequest, ShutdownRequest, VersionRequest};
use vessel_host_runtime::vm::{VmConfig, VmExit, VmProcess};

/// vesseld: runs Kubernetes pods in KVM microVMs.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boots one pod VM, checks its agent over vsock, and shuts it down.
    BootVm(BootVm),
}

/// Arguments of `vesseld boot-vm`.
#[derive(Parser, Debug)]
struct BootVm {
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
    /// Directory for the VM's sockets and logs (default: a fresh temp dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// How long to wait for the agent.
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    timeout: Duration,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("expected whole seconds: {e}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::BootVm(args) => boot_vm(args).await,
    }
}

async fn boot_vm(args: BootVm) -> Result<()> {
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("vessel-boot-{}", std::process::id())),
    };
    let config = VmConfig {
        vmm: args.vmm,
        kernel: args.kernel,
        initramfs: args.initramfs,
        cpus: args.cpus,
        memory_mib: args.memory,
        extra_cmdline: None,
        state_dir: state_dir.clone(),
        api_socket: false,
        nets: Vec::new(),
        shares: Vec::new(),
        extra_vmm_args: Vec::new(),
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
        .connect_agent(args.timeout)
        .await
        .context("reaching the guest agent")?;
    let ready = vm.started().elapsed();
    let health = HealthClient::new(channel.clone())
        .check(CheckRequest {})
        .await
        .context("Health.Check")?
        .into_inner();
    println!(
        "agent ready after {} ms: health {:?}",
        ready.as_millis(),
        health.status()
    );
    let version = AgentClient::new(channel.clone())
        .version(VersionRequest {})
        .await
        .context("Agent.Version")?
        .into_inner();
    println!(
        "agent {} (API v{}), guest kernel {}, pid 1: {}",
        version.agent_version, version.api_version, version.kernel_release, version.pid1
    );

    let asked = Instant::now();
    AgentClient::new(channel)
        .shutdown(ShutdownRequest {})
        .await
        .context("Agent.Shutdown")?;
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
