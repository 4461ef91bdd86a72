//! The command line: crictl's verbs and flags, parsed by clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vessel_client::verbs::Format;

#[derive(Parser, Debug)]
#[command(
    name = "vessel",
    version,
    about = "A CRI client with crictl's verbs, for vesseld"
)]
pub struct Cli {
    /// CRI endpoint: unix:///path or /path [env: VESSEL_RUNTIME_ENDPOINT, then CONTAINER_RUNTIME_ENDPOINT]
    #[arg(short = 'r', long)]
    pub runtime_endpoint: Option<String>,
    /// Timeout for connecting and for quick calls (2s, 500ms, 1m; 0 for none)
    #[arg(short = 't', long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Deadline,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Display runtime version information
    Version,
    /// Display information of the container runtime
    Info {
        /// Output format: json or yaml
        #[arg(short, long, default_value = "json")]
        output: Format,
    },
    /// List pods
    Pods {
        /// Filter by pod ID (prefix)
        #[arg(long)]
        id: Option<String>,
        /// Filter by pod name regular expression
        #[arg(long)]
        name: Option<String>,
        /// Filter by pod namespace regular expression
        #[arg(long)]
        namespace: Option<String>,
        /// Filter by pod state: ready or notready
        #[arg(short, long)]
        state: Option<String>,
        /// Filter by key=value label (repeatable)
        #[arg(long)]
        label: Vec<String>,
        /// List only pod IDs
        #[arg(short, long)]
        quiet: bool,
        /// Output format: json, yaml or table
        #[arg(short, long, default_value = "table")]
        output: Format,
        /// Show output without truncating the ID
        #[arg(long)]
        no_trunc: bool,
        /// Show the most recently created pod
        #[arg(short, long)]
        latest: bool,
        /// Show the last n recently created pods (0: all)
        #[arg(short = 'n', long, default_value_t = 0)]
        last: usize,
    },
    /// List containers
    Ps {
        /// Show all containers (default: running only)
        #[arg(short, long)]
        all: bool,
        /// Filter by container ID (prefix)
        #[arg(long)]
        id: Option<String>,
        /// Filter by pod ID (prefix)
        #[arg(short, long)]
        pod: Option<String>,
        /// Filter by container name regular expression
        #[arg(long)]
        name: Option<String>,
        /// Filter by state: created, running, exited or unknown
        #[arg(short, long)]
        state: Option<String>,
        /// Filter by key=value label (repeatable)
        #[arg(long)]
        label: Vec<String>,
        /// List only container IDs
        #[arg(short, long)]
        quiet: bool,
        /// Output format: json, yaml or table
        #[arg(short, long, default_value = "table")]
        output: Format,
        /// Show output without truncating IDs
        #[arg(long)]
        no_trunc: bool,
        /// Show the most recently created container (any state)
        #[arg(short, long)]
        latest: bool,
        /// Show the last n recently created containers (any state; 0: all)
        #[arg(short = 'n', long, default_value_t = 0)]
        last: usize,
    },
    /// List images
    Images {
        /// Only this image
        image: Option<String>,
        /// Only show image IDs
        #[arg(short, long)]
        quiet: bool,
        /// Output format: json, yaml or table
        #[arg(short, long, default_value = "table")]
        output: Format,
        /// Show output without truncating the ID
        #[arg(long)]
        no_trunc: bool,
    },
    /// Pull an image from a registry
    Pull {
        /// The image reference
        image: String,
        /// Registry credentials USERNAME[:PASSWORD]
        #[arg(long)]
        creds: Option<String>,
        /// Registry auth: base64 of USERNAME:PASSWORD
        #[arg(long)]
        auth: Option<String>,
        /// Maximum time for the pull (0 for none)
        #[arg(long = "pull-timeout", visible_alias = "pt", value_parser = parse_duration)]
        pull_timeout: Option<Deadline>,
    },
    /// Remove one or more images
    Rmi {
        /// Image references or IDs
        images: Vec<String>,
        /// Remove all images
        #[arg(short, long)]
        all: bool,
    },
    /// Display the status of one or more images
    Inspecti {
        /// Image references or IDs
        #[arg(required = true)]
        images: Vec<String>,
        /// Output format: json or yaml
        #[arg(short, long, default_value = "json")]
        output: Format,
    },
    /// Display the image and container filesystems' usage
    Imagefsinfo {
        /// Output format: json or yaml
        #[arg(short, long, default_value = "json")]
        output: Format,
    },
    /// Import or export image archives through vesseld (vessel's own verbs)
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Run a new pod
    Runp {
        /// The pod config file (JSON, or YAML by extension)
        config: PathBuf,
        /// Runtime handler to use
        #[arg(short, long, default_value = "")]
        runtime: String,
        /// Time to wait for the pod before cancelling (0 for none)
        #[arg(short = 'T', long, value_parser = parse_duration)]
        cancel_timeout: Option<Deadline>,
    },
    /// Create a new container in a pod
    Create {
        /// The pod's ID (or unique prefix)
        pod: String,
        /// The container config file
        container_config: PathBuf,
        /// The pod config file
        pod_config: PathBuf,
        /// Pull the image first
        #[arg(long)]
        with_pull: bool,
        /// Registry credentials USERNAME[:PASSWORD] for --with-pull
        #[arg(long)]
        creds: Option<String>,
        /// Registry auth (base64 of USERNAME:PASSWORD) for --with-pull
        #[arg(long)]
        auth: Option<String>,
        /// Time to wait for the container before cancelling (0 for none)
        #[arg(short = 'T', long, value_parser = parse_duration)]
        cancel_timeout: Option<Deadline>,
    },
    /// Start one or more created containers
    Start {
        /// Container IDs (or unique prefixes)
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop one or more running containers
    Stop {
        /// Seconds to wait before killing the container
        #[arg(short, long, default_value_t = 0)]
        timeout: i64,
        /// Container IDs (or unique prefixes)
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove one or more containers
    Rm {
        /// Container IDs (or unique prefixes)
        ids: Vec<String>,
        /// Stop a running container first
        #[arg(short, long)]
        force: bool,
        /// Remove all containers
        #[arg(short, long)]
        all: bool,
        /// Keep the container's log files
        #[arg(short, long)]
        keep_logs: bool,
    },
    /// Stop one or more running pods
    Stopp {
        /// Pod IDs (or unique prefixes)
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove one or more pods
    Rmp {
        /// Pod IDs (or unique prefixes)
        ids: Vec<String>,
        /// Stop a ready pod first
        #[arg(short, long)]
        force: bool,
        /// Remove all pods
        #[arg(short, long)]
        all: bool,
    },
    /// Fetch the logs of a container
    Logs {
        /// Container ID (or unique prefix)
        id: String,
        /// Follow the log until the container stops
        #[arg(short, long)]
        follow: bool,
        /// Number of lines to show from the end (-1: all)
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        tail: i64,
        /// Show timestamps
        #[arg(short, long)]
        timestamps: bool,
    },
    /// Display the status of one or more containers
    Inspect {
        /// Container IDs (or unique prefixes)
        #[arg(required = true)]
        ids: Vec<String>,
        /// Output format: json or yaml
        #[arg(short, long, default_value = "json")]
        output: Format,
    },
    /// Display the status of one or more pods
    Inspectp {
        /// Pod IDs (or unique prefixes)
        #[arg(required = true)]
        ids: Vec<String>,
        /// Output format: json or yaml
        #[arg(short, long, default_value = "json")]
        output: Format,
    },
    /// Run a command in a running container (ExecSync; with -i or -t, streamed)
    Exec {
        /// Timeout in seconds for the command (0: none; ExecSync only)
        #[arg(long, default_value_t = 0)]
        timeout: i64,
        /// Run synchronously through ExecSync (the default without -i/-t)
        #[arg(short, long, conflicts_with_all = ["interactive", "tty"])]
        sync: bool,
        /// Send stdin to the command (streamed through the streaming server)
        #[arg(short, long)]
        interactive: bool,
        /// Run the command on a terminal (streamed; stderr is part of stdout)
        #[arg(short, long)]
        tty: bool,
        /// Container ID (or unique prefix)
        id: String,
        /// The command and its arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Attach to a running container's stdio (detach: end vessel, e.g. Ctrl-C)
    Attach {
        /// Send stdin to the container (it must have been created with stdin)
        #[arg(short = 'i', long = "stdin")]
        stdin: bool,
        /// The container runs on a terminal
        #[arg(short, long)]
        tty: bool,
        /// Container ID (or unique prefix)
        id: String,
    },
    /// Forward local ports to ports in a pod (until stopped)
    PortForward {
        /// Local address to listen on
        #[arg(long, default_value = "127.0.0.1")]
        address: std::net::IpAddr,
        /// Pod ID (or unique prefix)
        pod: String,
        /// LOCAL:REMOTE, or PORT for the same on both sides
        #[arg(required = true)]
        ports: Vec<crate::verbs::PortPair>,
    },
    /// List container resource usage statistics
    Stats {
        /// Container ID (or unique prefix)
        id: Option<String>,
        /// Filter by pod ID (or unique prefix)
        #[arg(short, long)]
        pod: Option<String>,
        /// Filter by key=value label (repeatable)
        #[arg(long)]
        label: Vec<String>,
        /// Output format: json, yaml or table
        #[arg(short, long, default_value = "table")]
        output: Format,
    },
    /// List pod resource usage statistics
    Statsp {
        /// Pod ID (or unique prefix)
        id: Option<String>,
        /// Filter by key=value label (repeatable)
        #[arg(long)]
        label: Vec<String>,
        /// Output format: json, yaml or table
        #[arg(short, long, default_value = "table")]
        output: Format,
    },
    /// Run a new container inside a new pod (pulling its image if missing)
    Run {
        /// The container config file
        container_config: PathBuf,
        /// The pod config file
        pod_config: PathBuf,
        /// Runtime handler to use
        #[arg(short, long, default_value = "")]
        runtime: String,
        /// Do not pull the image
        #[arg(long)]
        no_pull: bool,
        /// Registry credentials USERNAME[:PASSWORD]
        #[arg(long)]
        creds: Option<String>,
        /// Registry auth (base64 of USERNAME:PASSWORD)
        #[arg(long)]
        auth: Option<String>,
        /// Time to wait for each step before cancelling (0 for none)
        #[arg(short = 'T', long, value_parser = parse_duration)]
        cancel_timeout: Option<Deadline>,
    },
}

/// `vessel image ...`: archives for nodes without a registry.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import every image of an OCI layout (directory or tar) or a `docker save` tarball
    Import {
        /// The archive (read by vesseld, on its host)
        file: PathBuf,
        /// Maximum time for the import (0 for none)
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Deadline>,
    },
    /// Write an image as an OCI layout tarball
    Export {
        /// Image reference or ID
        image: String,
        /// The tarball to write (by vesseld, on its host; replaced if it exists)
        file: PathBuf,
        /// Maximum time for the export (0 for none)
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Deadline>,
    },
}

impl Command {
    /// The verb's name, for error messages.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Version => "version",
            Command::Info { .. } => "info",
            Command::Pods { .. } => "pods",
            Command::Ps { .. } => "ps",
            Command::Images { .. } => "images",
            Command::Pull { .. } => "pull",
            Command::Rmi { .. } => "rmi",
            Command::Inspecti { .. } => "inspecti",
            Command::Imagefsinfo { .. } => "imagefsinfo",
            Command::Image {
                command: ImageCommand::Import { .. },
            } => "image import",
            Command::Image {
                command: ImageCommand::Export { .. },
            } => "image export",
            Command::Runp { .. } => "runp",
            Command::Create { .. } => "create",
            Command::Start { .. } => "start",
            Command::Stop { .. } => "stop",
            Command::Rm { .. } => "rm",
            Command::Stopp { .. } => "stopp",
            Command::Rmp { .. } => "rmp",
            Command::Logs { .. } => "logs",
            Command::Inspect { .. } => "inspect",
            Command::Inspectp { .. } => "inspectp",
            Command::Exec { .. } => "exec",
            Command::Attach { .. } => "attach",
            Command::PortForward { .. } => "port-forward",
            Command::Stats { .. } => "stats",
            Command::Statsp { .. } => "statsp",
            Command::Run { .. } => "run",
        }
    }
}

/// A deadline flag's value: `None` when given as 0 ("no deadline").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Option<Duration>);

/// Parses `2s`, `500ms`, `4m`, `1h` or a bare number of seconds; zero means "no deadline".
pub fn parse_duration(text: &str) -> Result<Deadline, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 2s, 500ms, 4m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(Deadline((!duration.is_zero()).then_some(duration)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_crictl_flags() {
        assert_eq!(
            parse_duration("2s").unwrap().0,
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_duration("500ms").unwrap().0,
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("4m").unwrap().0,
            Some(Duration::from_secs(240))
        );
        assert_eq!(
            parse_duration("10").unwrap().0,
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_duration("0").unwrap().0, None);
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn command_line_parses() {
        let cli = Cli::try_parse_from([
            "vessel",
            "-r",
            "/tmp/s.sock",
            "exec",
            "--timeout",
            "5",
            "abc",
            "sh",
            "-c",
            "echo hi",
        ])
        .unwrap();
        match cli.command {
            Command::Exec {
                timeout, id, cmd, ..
            } => {
                assert_eq!((timeout, id.as_str()), (5, "abc"));
                assert_eq!(cmd, ["sh", "-c", "echo hi"]);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["vessel", "stop", "-t", "10", "a", "b"]).unwrap();
        assert!(matches!(cli.command, Command::Stop { timeout: 10, ref ids } if ids.len() == 2));
        let cli = Cli::try_parse_from(["vessel", "logs", "--tail", "-1", "x"]).unwrap();
        assert!(matches!(cli.command, Command::Logs { tail: -1, .. }));
        assert!(Cli::try_parse_from(["vessel", "pods", "-o", "xml"]).is_err());
        let cli = Cli::try_parse_from(["vessel", "exec", "-it", "abc", "sh"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Exec {
                interactive: true,
                tty: true,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["vessel", "exec", "-s", "-i", "abc", "sh"]).is_err());
        let cli = Cli::try_parse_from(["vessel", "attach", "-i", "abc"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Attach {
                stdin: true,
                tty: false,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["vessel", "port-forward", "p", "8080:80", "9000"]).unwrap();
        match cli.command {
            Command::PortForward { pod, ports, .. } => {
                assert_eq!(pod, "p");
                assert_eq!((ports[0].local, ports[0].remote), (8080, 80));
                assert_eq!((ports[1].local, ports[1].remote), (9000, 9000));
            }
            other => panic!("{other:?}"),
        }
    }
}
