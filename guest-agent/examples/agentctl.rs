//! Pokes an agent by hand: `cargo run -p vessel-agent --example agentctl -- --unix PATH version`.
//!
//! `--unix PATH` talks to an agent serving on a Unix socket; `--vmm PATH` goes
//! through a VMM's hybrid vsock socket, `--cid CID` through AF_VSOCK, to `--port`
//! (default 1024).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::time::Instant;
use vessel_agent::client::{self, Channel};
use vessel_agent::proto::agent_client::AgentClient;
use vessel_agent::proto::health_client::HealthClient;
use vessel_agent::proto::{CheckRequest, ShutdownRequest, VersionRequest};
use vessel_agent::AGENT_VSOCK_PORT;

#[derive(Parser)]
struct Args {
    /// Agent's Unix socket.
    #[arg(long, conflicts_with = "vmm")]
    unix: Option<PathBuf>,
    /// VMM's hybrid vsock socket.
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// AF_VSOCK context id of the guest (vhost-vsock VMMs such as QEMU).
    #[arg(long, conflicts_with_all = ["unix", "vmm"])]
    cid: Option<u32>,
    /// Guest vsock port (with --vmm or --cid).
    #[arg(long, default_value_t = AGENT_VSOCK_PORT)]
    port: u32,
    /// How long to wait for the agent to be ready, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    wait_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Health.Check
    Health,
    /// Agent.Version
    Version,
    /// Agent.Shutdown
    Shutdown,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let deadline = Instant::now() + Duration::from_millis(args.wait_ms);
    let started = Instant::now();
    let channel: Channel = match (&args.unix, &args.vmm, args.cid) {
        (Some(path), _, _) => client::wait_ready_unix(path, deadline).await?,
        (None, Some(path), _) => client::wait_ready(path, args.port, deadline).await?,
        (None, None, Some(cid)) => {
            let target = format!("vsock cid {cid} port {}", args.port);
            client::wait_ready_with(target, deadline, || client::connect_vsock(cid, args.port))
                .await?
        }
        (None, None, None) => anyhow::bail!("give --unix PATH, --vmm PATH or --cid CID"),
    };
    eprintln!("ready after {:?}", started.elapsed());
    match args.command {
        Command::Health => {
            let reply = HealthClient::new(channel).check(CheckRequest {}).await?;
            println!("{:?}", reply.into_inner().status());
        }
        Command::Version => {
            let reply = AgentClient::new(channel).version(VersionRequest {}).await?;
            println!("{:#?}", reply.into_inner());
        }
        Command::Shutdown => {
            AgentClient::new(channel)
                .shutdown(ShutdownRequest {})
                .await
                .context("Shutdown")?;
            println!("shutdown acknowledged");
        }
    }
    Ok(())
}
