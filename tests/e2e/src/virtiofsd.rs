//! A real virtiofsd serving one directory, as vesseld starts one per pod.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running virtiofsd; killed on drop.
#[derive(Debug)]
pub struct Virtiofsd {
    child: Child,
    /// Its vhost-user socket.
    pub socket: PathBuf,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Virtiofsd {
    /// Starts `$VESSEL_VIRTIOFSD` on `shared` with its socket and log in `dir`.
    pub fn start(shared: &Path, dir: &Path) -> Self {
        let binary = std::env::var_os("VESSEL_VIRTIOFSD").unwrap_or_else(|| {
            panic!("VESSEL_VIRTIOFSD is not set: tests/e2e/run.sh sets it from tests/tools/virtiofsd.sh")
        });
        std::fs::create_dir_all(dir).expect("virtiofsd state dir");
        let socket = dir.join("virtiofsd.sock");
        let log = dir.join("virtiofsd.log");
        let log_file = std::fs::File::create(&log).expect("virtiofsd log");
        let child = Command::new(binary)
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(shared)
            .args(["--cache", "auto", "--sandbox", "namespace"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("virtiofsd starts");
        let mut this = Self { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !this.socket.exists() {
            if let Ok(Some(status)) = this.child.try_wait() {
                panic!("virtiofsd exited ({status}): {}", this.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "virtiofsd did not create its socket: {}",
                this.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        this
    }

    /// Its log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
