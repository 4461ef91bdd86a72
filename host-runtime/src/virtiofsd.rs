//! virtiofsd, the vhost-user daemon that serves a host directory to a pod VM
//! over virtio-fs: one per shared directory, started before the VM.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How often to look at virtiofsd while waiting for its socket or its exit.
const POLL: Duration = Duration::from_millis(20);

/// How to run one virtiofsd.
#[derive(Debug, Clone)]
pub struct VirtiofsdConfig {
    /// The virtiofsd binary.
    pub binary: PathBuf,
    /// The host directory it serves.
    pub shared_dir: PathBuf,
    /// Its vhost-user socket, which the VMM connects to.
    pub socket: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl VirtiofsdConfig {
    /// virtiofsd's arguments: the socket, the directory, host-page-cache
    /// friendly caching and its own mount/pid namespace sandbox.
    pub fn args(&self) -> Vec<OsString> {
        vec![
            "--socket-path".into(),
            self.socket.clone().into(),
            "--shared-dir".into(),
            self.shared_dir.clone().into(),
            "--cache".into(),
            "auto".into(),
            "--sandbox".into(),
            "namespace".into(),
        ]
    }
}

/// Starting or stopping virtiofsd failed.
#[derive(Debug, thiserror::Error)]
pub enum VirtiofsdError {
    /// The shared directory is not a directory.
    #[error("shared directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// A file it needs could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The binary could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It exited before its socket appeared.
    #[error("virtiofsd exited ({status}) before listening; its log:\n{log}")]
    ExitedEarly {
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its log.
        log: String,
    },
    /// Its socket did not appear in time.
    #[error("virtiofsd did not create {socket} within {waited:?}; its log:\n{log}")]
    NoSocket {
        /// The socket expected.
        socket: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// Its log.
        log: String,
    },
    /// Waiting for it or signalling it failed.
    #[error("cannot {what} virtiofsd: {source}")]
    Process {
        /// "wait for", "signal".
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// A running virtiofsd; killed on drop unless stopped.
#[derive(Debug)]
pub struct Virtiofsd {
    config: VirtiofsdConfig,
    child: Option<Child>,
}

impl Virtiofsd {
    /// Starts virtiofsd and waits up to `timeout` for its socket.
    pub async fn start(config: VirtiofsdConfig, timeout: Duration) -> Result<Self, VirtiofsdError> {
        if !config.shared_dir.is_dir() {
            return Err(VirtiofsdError::NotADirectory(config.shared_dir.clone()));
        }
        for dir in [config.socket.parent(), config.log.parent()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir).map_err(|source| VirtiofsdError::Prepare {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let log = File::create(&config.log).map_err(|source| VirtiofsdError::Prepare {
            path: config.log.clone(),
            source,
        })?;
        let child = Command::new(&config.binary)
            .args(config.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches vesseld,
            // which then stops the pod in order, not virtiofsd under the VM.
            .process_group(0)
            .spawn()
            .map_err(|source| VirtiofsdError::Spawn {
                binary: config.binary.clone(),
                source,
            })?;
        tracing::info!(pid = child.id(), socket = %config.socket.display(), "started virtiofsd");
        let mut this = Self {
            config,
            child: Some(child),
        };
        let deadline = Instant::now() + timeout;
        while !this.config.socket.exists() {
            if let Some(status) = this.try_wait()? {
                return Err(VirtiofsdError::ExitedEarly {
                    status,
                    log: this.log_text(),
                });
            }
            if Instant::now() >= deadline {
                return Err(VirtiofsdError::NoSocket {
                    socket: this.config.socket.clone(),
                    waited: timeout,
                    log: this.log_text(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(this)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its vhost-user socket.
    pub fn socket(&self) -> &PathBuf {
        &self.config.socket
    }

    /// Whether it still runs (it is reaped if it has exited).
    pub fn running(&mut self) -> Result<bool, VirtiofsdError> {
        let exited = self.try_wait()?.is_some();
        Ok(!exited && self.child.is_some())
    }

    /// Its log so far (for error messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.config.log).unwrap_or_default()
    }

    /// Stops it: it normally exits by itself once its VM is gone; if it still
    /// runs, SIGTERM, and SIGKILL after `grace`. Returns how it ended and
    /// removes its socket if it left one.
    pub async fn stop(
        &mut self,
        grace: Duration,
    ) -> Result<Option<std::process::ExitStatus>, VirtiofsdError> {
        let Some(pid) = self.pid() else {
            return Ok(None);
        };
        let mut status = self.try_wait()?;
        if status.is_none() {
            if let Ok(pid) = i32::try_from(pid) {
                // ESRCH: it exited since; try_wait below reaps it.
                match kill(Pid::from_raw(pid), Signal::SIGTERM) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => {
                        return Err(VirtiofsdError::Process {
                            what: "signal",
                            source: e.into(),
                        })
                    }
                }
            }
            let deadline = Instant::now() + grace;
            while status.is_none() && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
                status = self.try_wait()?;
            }
        }
        let status = match status {
            Some(status) => status,
            None => {
                tracing::warn!(pid, "virtiofsd ignored SIGTERM; killing it");
                self.kill()?.unwrap_or_default()
            }
        };
        match std::fs::remove_file(&self.config.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(VirtiofsdError::Prepare {
                    path: self.config.socket.clone(),
                    source,
                })
            }
        }
        Ok(Some(status))
    }

    fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>, VirtiofsdError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait().map_err(|source| VirtiofsdError::Process {
            what: "wait for",
            source,
        })?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    fn kill(&mut self) -> Result<Option<std::process::ExitStatus>, VirtiofsdError> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // An error means it already exited; wait() reaps it either way.
        let _ = child.kill();
        child
            .wait()
            .map(Some)
            .map_err(|source| VirtiofsdError::Process {
                what: "wait for",
                source,
            })
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::warn!(error = %e, "cannot kill virtiofsd");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, binary: &str) -> VirtiofsdConfig {
        VirtiofsdConfig {
            binary: binary.into(),
            shared_dir: dir.to_path_buf(),
            socket: dir.join("run/fs.sock"),
            log: dir.join("run/fs.log"),
        }
    }

    #[test]
    fn args_name_the_socket_and_the_directory() {
        let c = config(std::path::Path::new("/srv/pod"), "virtiofsd");
        let args: Vec<String> = c
            .args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "--socket-path /srv/pod/run/fs.sock --shared-dir /srv/pod --cache auto --sandbox namespace"
        );
    }

    #[tokio::test]
    async fn a_missing_directory_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), "/nonexistent/virtiofsd");
        c.shared_dir = dir.path().join("absent");
        let err = Virtiofsd::start(c, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, VirtiofsdError::NotADirectory(_)), "{err}");
        assert!(!dir.path().join("run").exists());
    }

    #[tokio::test]
    async fn a_daemon_that_dies_at_once_reports_its_log() {
        let dir = tempfile::tempdir().unwrap();
        // `false` exits 1 without a socket: the early exit is reported.
        let c = config(dir.path(), "false");
        let err = Virtiofsd::start(c, Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(matches!(err, VirtiofsdError::ExitedEarly { .. }), "{err}");
    }
}
