//! virtiofsd, the vhost-user daemon that serves a host directory to a pod VM
//! over virtio-fs: one per shared directory, started before the VM.
//!
//! vesseld binds the vhost-user socket itself and hands it over (`--fd`), so
//! the socket exists before virtiofsd runs and nothing waits for it to appear.
//! virtiofsd runs in its own session (and the pod's cgroup), sandboxed in
//! its own namespaces, without CAP_MKNOD (a guest cannot make device nodes
//! in a host directory), translating the guest's uids and gids to the pod's
//! own unprivileged host ids, and is supervised through a pidfd.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup::PodCgroup;
use crate::process::{Exit, Output, ProcessError, ProcessRecord, SpawnSpec, Supervised};

/// The descriptor number virtiofsd finds its listening socket at.
const SOCKET_FD: i32 = 3;

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
    /// The uid (and gid) translation between guest and host, as
    /// `--translate-uid` values ([`crate::pod::ids::PodIds::translation`]);
    /// `None` serves guest ids as host ids.
    pub translation: Option<[String; 2]>,
}

impl VirtiofsdConfig {
    /// virtiofsd's arguments: the inherited socket, the directory,
    /// host-page-cache friendly caching, its own mount/pid namespace
    /// sandbox, no CAP_MKNOD or CAP_SETFCAP, and the id translation if any.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--fd".into(),
            SOCKET_FD.to_string().into(),
            "--shared-dir".into(),
            self.shared_dir.clone().into(),
            "--cache".into(),
            "auto".into(),
            "--sandbox".into(),
            "namespace".into(),
            // No device nodes; no file capabilities (no xattrs are served).
            "--modcaps=-mknod:-setfcap".into(),
        ];
        // virtiofsd's own translation, not a user namespace: the share holds
        // image layers owned by host ids the pod's slot does not cover.
        for map in self.translation.iter().flatten() {
            for flag in ["--translate-uid", "--translate-gid"] {
                args.push(flag.into());
                args.push(map.into());
            }
        }
        args
    }

    /// Where its process record is kept.
    pub fn record_path(&self) -> PathBuf {
        record_path(&self.socket)
    }
}

/// Where the record of the virtiofsd serving `socket` is kept (beside it).
pub fn record_path(socket: &std::path::Path) -> PathBuf {
    socket.with_extension("process.json")
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
    /// Starting, watching or signalling the process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The pod cgroup's files could not be opened.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

/// A running virtiofsd.
#[derive(Debug)]
pub struct Virtiofsd {
    config: VirtiofsdConfig,
    process: Option<Supervised>,
    keep_on_drop: bool,
}

impl Virtiofsd {
    /// Starts virtiofsd on a socket bound here; it is killed when the handle
    /// is dropped (tests and tools).
    pub fn start(config: VirtiofsdConfig) -> Result<Self, VirtiofsdError> {
        Self::start_in(config, None, false)
    }

    /// Starts virtiofsd in `cgroup`; with `keep_on_drop` it outlives its
    /// handle (a daemon's pods outlive the daemon), and is recorded next to
    /// its socket for a later vesseld to adopt.
    pub fn start_in(
        config: VirtiofsdConfig,
        cgroup: Option<&PodCgroup>,
        keep_on_drop: bool,
    ) -> Result<Self, VirtiofsdError> {
        if !config.shared_dir.is_dir() {
            return Err(VirtiofsdError::NotADirectory(config.shared_dir.clone()));
        }
        let prepare = |path: &PathBuf| {
            let path = path.clone();
            move |source| VirtiofsdError::Prepare { path, source }
        };
        for dir in [config.socket.parent(), config.log.parent()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir).map_err(prepare(&dir.to_path_buf()))?;
        }
        let log = File::create(&config.log).map_err(prepare(&config.log))?;
        // A stale socket file of a dead virtiofsd would make bind fail.
        match std::fs::remove_file(&config.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(prepare(&config.socket)(e)),
        }
        let listener = UnixListener::bind(&config.socket).map_err(prepare(&config.socket))?;
        std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(prepare(&config.socket))?;
        let socket: OwnedFd = listener.into();
        let cgroup_procs = match cgroup {
            Some(cg) => cg.procs_files()?,
            None => Vec::new(),
        };
        let process = SpawnSpec {
            role: "virtiofsd",
            program: config.binary.clone(),
            args: config.args(),
            output: Output::File(log),
            fds: vec![(socket, SOCKET_FD)],
            namespaces: 0,
            cgroup_procs,
        }
        .spawn()?;
        tracing::info!(pid = process.pid(), socket = %config.socket.display(), "started virtiofsd");
        if keep_on_drop {
            process
                .record(vec![config.socket.clone()])
                .save(&config.record_path())?;
        }
        Ok(Self {
            config,
            process: Some(process),
            keep_on_drop,
        })
    }

    /// Takes over the virtiofsd recorded for `config`, if it still runs.
    pub fn adopt(config: VirtiofsdConfig) -> Result<Option<Self>, VirtiofsdError> {
        let Some(record) = ProcessRecord::load(&config.record_path())? else {
            return Ok(None);
        };
        Ok(Supervised::adopt(&record)?.map(|process| Self {
            config,
            process: Some(process),
            keep_on_drop: true,
        }))
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Its vhost-user socket.
    pub fn socket(&self) -> &PathBuf {
        &self.config.socket
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> Result<bool, VirtiofsdError> {
        let Some(p) = self.process.as_mut() else {
            return Ok(false);
        };
        Ok(p.try_exit()?.is_none())
    }

    /// Its log so far (for error messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.config.log).unwrap_or_default()
    }

    /// Stops it: it normally exits by itself once its VM is gone; if it
    /// still runs, SIGTERM, and SIGKILL after `grace`. Returns how it ended
    /// and removes its socket and record.
    pub async fn stop(&mut self, grace: Duration) -> Result<Option<Exit>, VirtiofsdError> {
        let Some(p) = self.process.as_mut() else {
            return Ok(None);
        };
        let exit = p.stop(grace).await?;
        self.process = None;
        for path in [&self.config.socket, &self.config.record_path()] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(VirtiofsdError::Prepare {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(Some(exit))
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        if self.keep_on_drop {
            return;
        }
        if let Some(mut p) = self.process.take() {
            p.kill_blocking();
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
            translation: None,
        }
    }

    fn args_of(c: &VirtiofsdConfig) -> Vec<String> {
        c.args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn args_name_the_socket_fd_the_directory_and_drop_mknod_and_setfcap() {
        let c = config(std::path::Path::new("/srv/pod"), "virtiofsd");
        assert_eq!(
            args_of(&c).join(" "),
            "--fd 3 --shared-dir /srv/pod --cache auto --sandbox namespace --modcaps=-mknod:-setfcap"
        );
    }

    #[test]
    fn a_pods_translation_covers_uids_and_gids() {
        let mut c = config(std::path::Path::new("/srv/pod"), "virtiofsd");
        c.translation = Some(crate::pod::ids::PodIds::at(300_000).translation());
        assert_eq!(
            args_of(&c)[9..].join(" "),
            "--translate-uid map:0:300000:65535 --translate-gid map:0:300000:65535 \
             --translate-uid forbid-guest:65535:4294901760 \
             --translate-gid forbid-guest:65535:4294901760"
        );
    }

    #[test]
    fn a_missing_directory_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), "/nonexistent/virtiofsd");
        c.shared_dir = dir.path().join("absent");
        let err = Virtiofsd::start(c).unwrap_err();
        assert!(matches!(err, VirtiofsdError::NotADirectory(_)), "{err}");
        assert!(!dir.path().join("run").exists());
    }

    #[tokio::test]
    async fn it_gets_its_socket_at_fd_3_and_stop_removes_socket_and_record() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in daemon that checks it was handed a socket.
        let fake = dir.path().join("fake-virtiofsd");
        std::fs::write(
            &fake,
            "#!/bin/sh\n[ -S /proc/self/fd/3 ] || exit 9\nexec sleep 30\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = config(dir.path(), fake.to_str().unwrap());
        let mut fs = Virtiofsd::start_in(c.clone(), None, true).unwrap();
        assert!(c.socket.exists() && c.record_path().exists());
        assert!(fs.running().unwrap(), "{}", fs.log_text());
        let adopted = Virtiofsd::adopt(c.clone())
            .unwrap()
            .expect("recorded and running");
        assert_eq!(adopted.pid(), fs.pid());
        let exit = fs.stop(Duration::from_secs(5)).await.unwrap();
        assert_eq!(exit, Some(Exit::Signal(libc::SIGTERM)));
        assert!(!c.socket.exists() && !c.record_path().exists());
        assert!(Virtiofsd::adopt(c).unwrap().is_none());
    }

    #[test]
    fn a_binary_that_cannot_run_is_a_process_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Virtiofsd::start(config(dir.path(), "/nonexistent/virtiofsd")).unwrap_err();
        assert!(matches!(err, VirtiofsdError::Process(_)), "{err}");
    }
}
