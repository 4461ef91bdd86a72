//! QEMU microvm, the peer VMM of the benchmarks: same kernel, same initramfs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vessel_agent_api::client::{self, Channel};
use vessel_agent_api::proto::{health_client::HealthClient, CheckRequest};
use vessel_host_runtime::vm::AGENT_VSOCK_PORT;

/// The guest command line vessel-vmm uses by default, so both boot alike.
pub const BASE_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 quiet i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// How to start one QEMU guest.
#[derive(Debug, Clone, Default)]
pub struct QemuConfig {
    /// vsock guest CID (vhost-vsock).
    pub cid: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs (0: one).
    pub cpus: u32,
    /// Words appended to [`BASE_CMDLINE`].
    pub extra_cmdline: String,
    /// Extra QEMU arguments (devices).
    pub extra_args: Vec<String>,
    /// Run QEMU inside this `ip netns` (for a tap there).
    pub netns: Option<String>,
    /// Where the serial console goes.
    pub console: PathBuf,
}

/// A running QEMU; killed on drop.
#[derive(Debug)]
pub struct QemuVm {
    child: Child,
    config: QemuConfig,
    started: Instant,
}

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run through tests/bench or tests/e2e"))
}

impl QemuVm {
    /// Starts QEMU microvm with KVM.
    pub fn spawn(config: QemuConfig) -> Self {
        let mut cmd = match &config.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        // acpi=off: our kernel has no ACPI, and only then does QEMU announce
        // its virtio-mmio devices on the kernel command line.
        cmd.args([
            "-M",
            "microvm,acpi=off,x-option-roms=off,rtc=off,isa-serial=on",
        ])
        .args(["-accel", "kvm", "-cpu", "host"])
        .args(["-smp", &config.cpus.max(1).to_string()])
        .args(["-m", &config.memory_mib.to_string()])
        .args(["-nodefaults", "-no-user-config", "-nographic"])
        // A file, not stdio: QEMU's serial into a pipe stalls in the nested host.
        .args(["-serial", &format!("file:{}", config.console.display())])
        .arg("-kernel")
        .arg(env_path("VESSEL_KERNEL"))
        .arg("-initrd")
        .arg(env_path("VESSEL_INITRAMFS"))
        .args([
            "-append",
            &format!("{BASE_CMDLINE} {}", config.extra_cmdline),
        ])
        .args([
            "-device",
            &format!("vhost-vsock-device,guest-cid={}", config.cid),
        ])
        .args(&config.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let started = Instant::now();
        let child = cmd.spawn().expect("qemu-system-x86_64 starts");
        Self {
            child,
            config,
            started,
        }
    }

    /// Waits until the agent answers a health check over AF_VSOCK; returns
    /// the channel and the time since spawn.
    pub async fn wait_agent(&mut self, timeout: Duration) -> (Channel, Duration) {
        self.try_wait_agent(timeout)
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Self::wait_agent`], or why the guest did not become ready.
    pub async fn try_wait_agent(
        &mut self,
        timeout: Duration,
    ) -> Result<(Channel, Duration), String> {
        let deadline = self.started + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "qemu exited early ({status}): {}",
                    self.console_text()
                ));
            }
            if let Ok(channel) = client::connect_vsock(self.config.cid, AGENT_VSOCK_PORT).await {
                if HealthClient::new(channel.clone())
                    .check(CheckRequest {})
                    .await
                    .is_ok()
                {
                    return Ok((channel, self.started.elapsed()));
                }
            }
            if Instant::now() >= deadline {
                return Err("QEMU guest not ready in time".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How QEMU exited, if it has (with `-no-reboot`, a guest reset or
    /// triple fault ends it).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The QEMU process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The guest's vsock CID.
    pub fn cid(&self) -> u32 {
        self.config.cid
    }

    /// Kills QEMU and reaps it (again is harmless).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The console log so far.
    pub fn console_text(&self) -> String {
        std::fs::read_to_string(&self.config.console).unwrap_or_default()
    }

    fn console(&self) -> &Path {
        &self.config.console
    }
}

impl Drop for QemuVm {
    // QEMU microvm does not exit on the guest's i8042 reset in the nested
    // host, so it is always killed.
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.console());
    }
}
