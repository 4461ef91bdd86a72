//! `logs`: a container's CRI log file, printed or followed.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use k8s_cri::v1::ContainerState;

use super::containers::container_status;
use super::{output_error, Deadlines};
use crate::connect::Cri;
use crate::error::ClientError;
use crate::logs::{print_log, write_line, LogFile, LogOptions};
use crate::resolve::resolve_container;

/// What `logs` prints.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// Keep printing as the container writes, until it stops running.
    pub follow: bool,
    /// Print only the last N lines (None: all).
    pub tail: Option<usize>,
    /// Prefix lines with their timestamps.
    pub timestamps: bool,
}

/// How often `logs -f` looks for new output, and how often it asks whether the container still runs.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const FOLLOW_STATUS_EVERY: u32 = 5;

/// `logs`: prints a container's log (stdout lines to `stdout`, stderr lines to `stderr`).
pub async fn logs(
    cri: &mut Cri,
    id: &str,
    o: &LogsOptions,
    deadlines: Deadlines,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), ClientError> {
    let id = resolve_container(cri, id, deadlines.quick).await?;
    let status = container_status(cri, &id, false, deadlines)
        .await?
        .status
        .unwrap_or_default();
    if status.log_path.is_empty() {
        return Err(ClientError::BadReply(format!(
            "container {id} has no log path"
        )));
    }
    let mut log = LogFile::open(Path::new(&status.log_path))?;
    let options = LogOptions {
        tail: o.tail,
        timestamps: o.timestamps,
    };
    print_log(&mut log, &options, stdout, stderr)?;
    let mut running = status.state == ContainerState::ContainerRunning as i32;
    let mut polls = 0u32;
    while o.follow && running {
        stdout.flush().map_err(output_error)?;
        stderr.flush().map_err(output_error)?;
        tokio::time::sleep(FOLLOW_POLL).await;
        polls += 1;
        if polls.is_multiple_of(FOLLOW_STATUS_EVERY) {
            let state = container_status(cri, &id, false, deadlines)
                .await?
                .status
                .unwrap_or_default()
                .state;
            running = state == ContainerState::ContainerRunning as i32;
        }
        log.read_new(&mut |line| write_line(&line, o.timestamps, stdout, stderr))?;
        if !running {
            // The runtime may write the last lines just after the exit shows:
            // one more read a moment later.
            tokio::time::sleep(FOLLOW_POLL).await;
            log.read_new(&mut |line| write_line(&line, o.timestamps, stdout, stderr))?;
        }
    }
    for line in log.flush() {
        write_line(&line, o.timestamps, stdout, stderr).map_err(output_error)?;
    }
    stdout.flush().map_err(output_error)?;
    stderr.flush().map_err(output_error)
}
