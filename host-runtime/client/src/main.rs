//! `vessel`: a CRI client with crictl's verbs and output, for vesseld (or any
//! CRI runtime on a Unix socket).

mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vessel_client::verbs::{self, Deadlines};
use vessel_client::{connect_with_timeout, ClientError, DEFAULT_ENDPOINT};

use cli::{Cli, Command, Deadline, ImageCommand};

/// Long calls: the kubelet gives RunPodSandbox twice its 2-minute runtime request timeout.
const RUN_POD_TIMEOUT: Duration = Duration::from_secs(4 * 60);
/// Create, start, stop, remove: the kubelet's runtime request timeout.
const LONG_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// Pulls: crictl has none by default; a bound keeps a stuck pull from hanging scripts.
const PULL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The endpoint: the flag, else $VESSEL_RUNTIME_ENDPOINT, else crictl's $CONTAINER_RUNTIME_ENDPOINT.
fn endpoint(flag: Option<String>) -> String {
    flag.or_else(|| {
        std::env::var("VESSEL_RUNTIME_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty())
    })
    .or_else(|| {
        std::env::var("CONTAINER_RUNTIME_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty())
    })
    .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
}

/// A long-call deadline: the verb's `-T` if given (0: none), else its default.
fn long(flag: Option<Deadline>, default: Duration) -> Option<Duration> {
    flag.map_or(Some(default), |d| d.0)
}

/// Whether writing our output failed because its reader is gone.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let io = match cause.downcast_ref::<ClientError>() {
            Some(ClientError::Io { error, .. }) => Some(error),
            _ => cause.downcast_ref::<std::io::Error>(),
        };
        io.is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Maps an exit status onto a process exit code without turning a failure into 0.
fn exit_code(code: i32) -> ExitCode {
    match u8::try_from(code) {
        Ok(c) => ExitCode::from(c),
        Err(_) => ExitCode::FAILURE,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let verb = cli.command.verb();
    match run(cli).await.with_context(|| verb) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => {
            // A reader that went away (`vessel ps | head -1`): quiet, like a
            // process killed by SIGPIPE.
            ExitCode::from(141)
        }
        Err(err) => {
            let _ = std::io::stdout().flush();
            eprintln!("vessel: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let endpoint = endpoint(cli.runtime_endpoint);
    let quick = cli.timeout.0;
    let mut deadlines = Deadlines {
        quick,
        long: Some(LONG_TIMEOUT),
    };
    let command = cli.command;
    let mut cri = connect_with_timeout(
        &endpoint,
        quick.unwrap_or(vessel_client::DEFAULT_CONNECT_TIMEOUT),
    )
    .await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match command {
        Command::Version => verbs::version(&mut cri, deadlines, &mut out).await?,
        Command::Info { output } => verbs::info(&mut cri, output, deadlines, &mut out).await?,
        Command::Pods {
            id,
            name,
            namespace,
            state,
            label,
            quiet,
            output,
            no_trunc,
            latest,
            last,
        } => {
            let o = verbs::PodsOptions {
                id,
                name,
                namespace,
                state,
                labels: label,
                quiet,
                output,
                no_trunc,
                latest,
                last,
            };
            verbs::pods(&mut cri, &o, deadlines, &mut out).await?
        }
        Command::Ps {
            all,
            id,
            pod,
            name,
            state,
            label,
            quiet,
            output,
            no_trunc,
            latest,
            last,
        } => {
            let o = verbs::PsOptions {
                all,
                id,
                pod,
                name,
                state,
                labels: label,
                quiet,
                output,
                no_trunc,
                latest,
                last,
            };
            verbs::ps(&mut cri, &o, deadlines, &mut out).await?
        }
        Command::Images {
            image,
            quiet,
            output,
            no_trunc,
        } => {
            let o = verbs::ImagesOptions {
                image,
                quiet,
                output,
                no_trunc,
            };
            verbs::images(&mut cri, &o, deadlines, &mut out).await?
        }
        Command::Pull {
            image,
            creds,
            auth,
            pull_timeout,
        } => {
            deadlines.long = long(pull_timeout, PULL_TIMEOUT);
            let o = verbs::PullOptions { creds, auth };
            verbs::pull(&mut cri, &image, &o, deadlines, &mut out).await?;
        }
        Command::Rmi { images, all } => {
            if images.is_empty() && !all {
                return Err(
                    ClientError::Usage("rmi needs image references or --all".into()).into(),
                );
            }
            verbs::rmi(&mut cri, &images, all, deadlines, &mut out).await?
        }
        Command::Inspecti { images, output } => {
            verbs::inspecti(&mut cri, &images, output, deadlines, &mut out).await?
        }
        Command::Image {
            command: ImageCommand::Import { file, timeout },
        } => {
            deadlines.long = long(timeout, PULL_TIMEOUT);
            verbs::import(&mut cri, &file, deadlines, &mut out).await?
        }
        Command::Image {
            command:
                ImageCommand::Export {
                    image,
                    file,
                    timeout,
                },
        } => {
            deadlines.long = long(timeout, PULL_TIMEOUT);
            verbs::export(&mut cri, &image, &file, deadlines).await?
        }
        Command::Imagefsinfo { output } => {
            verbs::imagefsinfo(&mut cri, output, deadlines, &mut out).await?
        }
        Command::Runp {
            config,
            runtime,
            cancel_timeout,
        } => {
            deadlines.long = long(cancel_timeout, RUN_POD_TIMEOUT);
            verbs::runp(&mut cri, &config, &runtime, deadlines, &mut out).await?;
        }
        Command::Create {
            pod,
            container_config,
            pod_config,
            with_pull,
            creds,
            auth,
            cancel_timeout,
        } => {
            deadlines.long = long(cancel_timeout, LONG_TIMEOUT);
            let o = verbs::CreateOptions {
                pod,
                container_config,
                pod_config,
                with_pull,
                creds,
                auth,
            };
            verbs::create(&mut cri, &o, deadlines, &mut out).await?;
        }
        Command::Start { ids } => verbs::start(&mut cri, &ids, deadlines, &mut out).await?,
        Command::Stop { timeout, ids } => {
            verbs::stop(&mut cri, &ids, timeout, deadlines, &mut out).await?
        }
        Command::Rm {
            ids,
            force,
            all,
            keep_logs,
        } => {
            if ids.is_empty() && !all {
                return Err(ClientError::Usage("rm needs container IDs or --all".into()).into());
            }
            let mut err = std::io::stderr();
            let o = verbs::RmOptions {
                force,
                all,
                keep_logs,
            };
            verbs::rm(&mut cri, &ids, o, deadlines, &mut out, &mut err).await?
        }
        Command::Stopp { ids } => verbs::stopp(&mut cri, &ids, deadlines, &mut out).await?,
        Command::Rmp { ids, force, all } => {
            if ids.is_empty() && !all {
                return Err(ClientError::Usage("rmp needs pod IDs or --all".into()).into());
            }
            verbs::rmp(&mut cri, &ids, force, all, deadlines, &mut out).await?
        }
        Command::Logs {
            id,
            follow,
            tail,
            timestamps,
        } => {
            let o = verbs::LogsOptions {
                follow,
                tail: usize::try_from(tail).ok(),
                timestamps,
            };
            let mut err = std::io::stderr();
            verbs::logs(&mut cri, &id, &o, deadlines, &mut out, &mut err).await?
        }
        Command::Inspect { ids, output } => {
            verbs::inspect(&mut cri, &ids, output, deadlines, &mut out).await?
        }
        Command::Inspectp { ids, output } => {
            verbs::inspectp(&mut cri, &ids, output, deadlines, &mut out).await?
        }
        Command::Exec {
            interactive,
            tty,
            id,
            cmd,
            ..
        } if interactive || tty => {
            drop(out);
            let o = verbs::StreamOptions {
                stdin: interactive,
                tty,
            };
            let code = verbs::exec_stream(&mut cri, &id, &cmd, o, deadlines).await?;
            return Ok(exit_code(code));
        }
        Command::Attach { stdin, tty, id } => {
            drop(out);
            let o = verbs::StreamOptions { stdin, tty };
            let code = verbs::attach(&mut cri, &id, o, deadlines).await?;
            return Ok(exit_code(code));
        }
        Command::PortForward {
            address,
            pod,
            ports,
        } => verbs::port_forward(&mut cri, &pod, address, &ports, deadlines, &mut out).await?,
        Command::Exec {
            timeout, id, cmd, ..
        } => {
            let reply = verbs::exec_sync(&mut cri, &id, &cmd, timeout, deadlines).await?;
            out.write_all(&reply.stdout)?;
            out.flush()?;
            let mut err = std::io::stderr();
            err.write_all(&reply.stderr)?;
            err.flush()?;
            return Ok(exit_code(reply.exit_code));
        }
        Command::Stats {
            id,
            pod,
            label,
            output,
        } => {
            let o = verbs::StatsOptions {
                id,
                pod,
                labels: label,
                output,
            };
            verbs::stats(&mut cri, &o, deadlines, &mut out).await?
        }
        Command::Statsp { id, label, output } => {
            verbs::statsp(&mut cri, id.as_deref(), &label, output, deadlines, &mut out).await?
        }
        Command::Run {
            container_config,
            pod_config,
            runtime,
            no_pull,
            creds,
            auth,
            cancel_timeout,
        } => {
            deadlines.long = long(cancel_timeout, RUN_POD_TIMEOUT);
            let o = verbs::RunOptions {
                container_config,
                pod_config,
                runtime_handler: runtime,
                no_pull,
                creds,
                auth,
            };
            verbs::run(&mut cri, &o, deadlines, &mut out).await?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
