//! A real `vesseld serve` for host-side tests (no VM needed: images, status
//! and runtime config work on any host), on a config of its own in a temp dir.

// Each test uses what it needs of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_cri::v1::ListImagesRequest;
use vessel_client::{connect_with_timeout, Cri};

/// vesseld, killed on drop even when the test fails.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts vesseld with its socket, state, run and CNI conf dirs under
    /// `dir`, plus `extra_cni` lines in its `[cni]` table; waits for the
    /// socket and connects.
    pub async fn start(dir: &Path, extra_cni: &str) -> (Daemon, Cri) {
        let socket = dir.join("vessel.sock");
        std::fs::create_dir_all(dir.join("cni")).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "socket = \"{}\"\nstate_dir = \"{}\"\nrun_dir = \"{}\"\n[cni]\nconf_dir = \"{}\"\n{extra_cni}\n",
                socket.display(),
                dir.join("state").display(),
                dir.join("run").display(),
                dir.join("cni").display()
            ),
        )
        .unwrap();
        let log = dir.join("vesseld.log");
        let child = Command::new(env!("CARGO_BIN_EXE_vesseld"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("vesseld serve");
        let mut daemon = Daemon { child, log };
        // Connectable, not just present: after a kill -9 the old socket file
        // stays until the new vesseld replaces it.
        for _ in 0..300 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("vesseld exited ({status}):\n{}", daemon.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let endpoint = format!("unix://{}", socket.display());
        let cri = connect_with_timeout(&endpoint, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
        (daemon, cri)
    }

    /// Kills vesseld with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// vesseld's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The repo tags of every image vesseld lists, sorted.
pub async fn listed_tags(cri: &mut Cri) -> Vec<String> {
    let images = cri
        .image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let mut tags: Vec<String> = images.into_iter().flat_map(|i| i.repo_tags).collect();
    tags.sort();
    tags
}
