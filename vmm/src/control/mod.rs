//! Control of a running VM from the host: the control API (`--api`), pause
//! and resume, the graceful shutdown request (ctrl-alt-del), VM-exit
//! counters, the post-mortem dump, the boot timeline, and the signals.
//! See `docs/vmm-api.md`.

pub mod console_tail;
pub mod counters;
pub mod pause;
pub mod protocol;
pub mod server;
pub mod signals;
pub mod timeline;
pub mod vcpu_probe;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::boot::cmdline::VirtioMmioArg;
use crate::boot::layout::{I8042_PORT_BASE, KEYBOARD_IRQ, SERIAL_IRQ, SERIAL_PORT_BASE};
use crate::bus::Bus;
use crate::devices::legacy::i8042::{I8042Error, SharedCtrlAltDel};
use crate::devices::virtio::balloon::BalloonCounters;
use crate::devices::virtio::net::counters::NetCounters;
use crate::devices::virtio::vsock::VsockBytes;
use crate::exit::{ExitLatch, ExitReason};
use crate::vcpu::kick;
use console_tail::ConsoleTail;
use counters::ExitCounters;
use pause::PauseControl;
use timeline::{ms, Phase};
use vcpu_probe::VcpuProbes;

/// How long pause and resume wait for every vCPU thread.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Offset of the DeviceID register in a virtio-mmio window.
const VIRTIO_MMIO_DEVICE_ID: u64 = 0x008;

/// How long a post-mortem waits for each vCPU thread's snapshot.
pub const POSTMORTEM_VCPU_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a post-mortem waits for a device a vCPU is using.
const POSTMORTEM_DEVICE_WAIT: Duration = Duration::from_millis(200);

/// Records when the process started; call first thing in `main`.
pub fn mark_process_start() {
    timeline::mark(Phase::ProcessStart);
}

fn process_start() -> Instant {
    let t = timeline::global();
    t.mark(Phase::ProcessStart);
    t.at(Phase::ProcessStart).unwrap_or_else(Instant::now)
}

/// The VM's configuration as `info` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfo {
    /// vCPUs.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// The pages behind guest RAM (hugetlb, transparent huge, or 4 KiB and why).
    pub memory_backing: String,
    /// Kernel image path.
    pub kernel: PathBuf,
    /// Initramfs path, if any.
    pub initramfs: Option<PathBuf>,
    /// The full guest kernel command line.
    pub cmdline: String,
}

/// One device as `info` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// `serial`, `i8042`, or `virtio-<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// First I/O port (legacy devices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u64>,
    /// Base of the 4 KiB virtio-mmio window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmio_base: Option<u64>,
    /// IO-APIC pin, if the device interrupts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irq: Option<u32>,
}

/// A virtio device type's name (`virtio-vsock`, ...).
pub fn virtio_name(id: u32) -> String {
    match id {
        1 => "virtio-net".into(),
        2 => "virtio-blk".into(),
        3 => "virtio-console".into(),
        4 => "virtio-rng".into(),
        5 => "virtio-balloon".into(),
        19 => "virtio-vsock".into(),
        26 => "virtio-fs".into(),
        other => format!("virtio-{other}"),
    }
}

/// The devices of a VM: the legacy ones, then each virtio-mmio device named
/// by the DeviceID its transport reports (so new devices need no change here).
pub fn describe_devices(mmio: &Bus, virtio: &[VirtioMmioArg]) -> Vec<DeviceInfo> {
    let mut out = vec![
        DeviceInfo {
            kind: "serial".into(),
            port: Some(SERIAL_PORT_BASE),
            mmio_base: None,
            irq: Some(SERIAL_IRQ),
        },
        DeviceInfo {
            kind: "i8042".into(),
            port: Some(I8042_PORT_BASE),
            mmio_base: None,
            irq: Some(KEYBOARD_IRQ),
        },
    ];
    for dev in virtio {
        let mut id = [0u8; 4];
        mmio.read(dev.base + VIRTIO_MMIO_DEVICE_ID, &mut id);
        out.push(DeviceInfo {
            kind: virtio_name(u32::from_le_bytes(id)),
            port: None,
            mmio_base: Some(dev.base),
            irq: Some(dev.irq),
        });
    }
    out
}

fn kick_thread(tid: libc::pthread_t) {
    // SAFETY: PauseControl only passes threads that are registered, and a
    // thread unregisters (under the same lock) before it exits.
    let rc = unsafe { libc::pthread_kill(tid, kick::kick_signal()) };
    if rc != 0 {
        tracing::warn!("cannot kick a vCPU thread: errno {rc}");
    }
}

/// Why the guest could not be asked to shut down.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The VM is already stopping.
    #[error("the VM is stopping")]
    Stopping,
    /// The VM has no keyboard controller to type on.
    #[error("the VM has no i8042")]
    NoKeyboard,
    /// The i8042 refused the keys.
    #[error("cannot send ctrl-alt-del: {0}")]
    Keyboard(#[from] I8042Error),
}

/// What the control API and the vCPU threads share.
pub struct VmControl {
    /// Pause state.
    pub pause: PauseControl,
    /// Per-vCPU exit counters.
    pub exits: ExitCounters,
    /// Per-vCPU run state and register snapshots for the post-mortem.
    pub probes: VcpuProbes,
    exit: Arc<ExitLatch>,
    config: ConfigInfo,
    devices: Vec<DeviceInfo>,
    vsock_bytes: Option<Arc<VsockBytes>>,
    nets: Vec<(String, Arc<NetCounters>)>,
    balloon: Option<Arc<BalloonCounters>>,
    keyboard: Option<SharedCtrlAltDel>,
    shutdown_requested: AtomicBool,
    first_entry: OnceLock<Instant>,
    // Released by the main thread before it drops the devices, which must
    // happen there (the vsock device unlinks its socket on drop, which
    // other threads' seccomp filters forbid); a dump holds the lock.
    mmio: Mutex<Option<Bus>>,
    console: Option<Arc<ConsoleTail>>,
}

impl VmControl {
    /// Control state for a VM built with `config` and `devices`.
    pub fn new(
        config: ConfigInfo,
        devices: Vec<DeviceInfo>,
        vsock_bytes: Option<Arc<VsockBytes>>,
        exit: Arc<ExitLatch>,
    ) -> Self {
        let cpus = usize::from(config.cpus);
        VmControl {
            pause: PauseControl::new(cpus, kick_thread),
            exits: ExitCounters::new(cpus),
            probes: VcpuProbes::new(cpus),
            exit,
            config,
            devices,
            vsock_bytes,
            nets: Vec::new(),
            balloon: None,
            keyboard: None,
            shutdown_requested: AtomicBool::new(false),
            first_entry: OnceLock::new(),
            mmio: Mutex::new(None),
            console: None,
        }
    }

    /// Adds the MMIO bus, whose virtio transports the post-mortem reports.
    pub fn with_mmio(self, mmio: Bus) -> Self {
        *self.mmio.lock().unwrap_or_else(PoisonError::into_inner) = Some(mmio);
        self
    }

    /// Drops the control's references to the devices (waiting for a dump
    /// in progress); call on the main thread before dropping the devices.
    pub fn release_devices(&self) {
        let bus = self
            .mmio
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(bus);
    }

    /// Adds the console's tail, which the post-mortem includes.
    pub fn with_console_tail(mut self, tail: Arc<ConsoleTail>) -> Self {
        self.console = Some(tail);
        self
    }

    /// Adds the NICs' counters, as `(tap name, counters)` in guest order.
    pub fn with_net_counters(mut self, nets: Vec<(String, Arc<NetCounters>)>) -> Self {
        self.nets = nets;
        self
    }

    /// Adds the balloon's counters (memory given back to the host).
    pub fn with_balloon_counters(mut self, balloon: Option<Arc<BalloonCounters>>) -> Self {
        self.balloon = balloon;
        self
    }

    /// Adds the i8042 that graceful shutdown requests type ctrl-alt-del on.
    pub fn with_keyboard(mut self, keyboard: SharedCtrlAltDel) -> Self {
        self.keyboard = Some(keyboard);
        self
    }

    /// Asks the guest to shut down: types ctrl-alt-del on its i8042 (its
    /// kernel then signals init, or restarts). Returns at once; the VM stops
    /// when the guest resets. A paused VM stays paused: the keys wait in the
    /// controller until it is resumed.
    pub fn request_shutdown(&self) -> Result<(), ShutdownError> {
        if self.exit.is_set() {
            return Err(ShutdownError::Stopping);
        }
        let keyboard = self.keyboard.as_ref().ok_or(ShutdownError::NoKeyboard)?;
        // The bus's own device lock, held by a vCPU for one port access at most.
        keyboard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ctrl_alt_del()?;
        self.shutdown_requested.store(true, Ordering::SeqCst);
        tracing::info!(
            paused = self.pause.is_paused(),
            "asked the guest to shut down (ctrl-alt-del)"
        );
        Ok(())
    }

    /// Records the first vCPU entry into the guest (later calls do nothing).
    pub fn note_first_entry(&self) {
        self.first_entry.get_or_init(Instant::now);
        timeline::mark(Phase::FirstVcpuRun);
    }

    fn state(&self) -> &'static str {
        if self.exit.is_set() {
            "stopping"
        } else if self.pause.is_paused() {
            "paused"
        } else if self.shutdown_requested.load(Ordering::SeqCst) {
            "shutting_down"
        } else {
            "running"
        }
    }

    /// The post-mortem: every vCPU's state (registers from its own thread,
    /// or "did not answer" after [`POSTMORTEM_VCPU_TIMEOUT`]), the virtio
    /// transports, the exit counters, the boot timeline and the console's
    /// tail. Never hangs on a stuck vCPU or device.
    pub fn postmortem(&self) -> Value {
        let reports = self.probes.collect(POSTMORTEM_VCPU_TIMEOUT, || {
            self.pause.kick_all();
            self.pause.wake_parked();
        });
        let per_vcpu = self.exits.per_vcpu();
        let vcpus: Vec<Value> = reports
            .into_iter()
            .map(|r| {
                let counts = per_vcpu.get(r.index).copied();
                let mut v = json!(r);
                if let Some(counts) = counts {
                    v["exits"] = json!(counts);
                }
                v
            })
            .collect();
        let devices = self
            .mmio
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|bus| bus.reports(POSTMORTEM_DEVICE_WAIT))
            .unwrap_or_default();
        let console = self.console.as_ref().map(|t| {
            let (bytes, total) = t.snapshot();
            json!({
                "bytes_total": total,
                "tail": console_tail::escape(&bytes),
            })
        });
        json!({
            "uptime_ms": ms(process_start().elapsed()),
            "state": self.state(),
            "vcpus": vcpus,
            "exits": self.exits.totals(),
            "devices": devices,
            "device_counters": protocol::Controller::counters(self)["devices"],
            "timeline": timeline::global().to_json(),
            "console": console,
        })
    }

    /// Writes a post-mortem to the VMM's log (one line, at warn level so
    /// the default filter keeps it); `why` says what asked for it.
    pub fn log_postmortem(&self, why: &str) {
        let dump = self.postmortem();
        tracing::warn!(target: "vessel_vmm::postmortem", "post-mortem ({why}): {dump}");
    }

    /// Process start to first vCPU entry, once the guest has run.
    pub fn boot_time(&self) -> Option<Duration> {
        self.first_entry
            .get()
            .map(|t| t.saturating_duration_since(process_start()))
    }
}

impl protocol::Controller for VmControl {
    fn info(&self) -> Value {
        json!({
            "config": self.config,
            "devices": self.devices,
            "state": self.state(),
            "boot_time_ms": self.boot_time().map(ms),
            "uptime_ms": ms(process_start().elapsed()),
            "timeline": timeline::global().to_json(),
        })
    }

    fn postmortem(&self) -> Value {
        tracing::info!("control API: post-mortem requested");
        VmControl::postmortem(self)
    }

    fn pause(&self) -> Result<Value, String> {
        self.pause
            .pause(PAUSE_TIMEOUT)
            .map(|()| json!({ "state": "paused" }))
            .map_err(|e| e.to_string())
    }

    fn resume(&self) -> Result<Value, String> {
        self.pause
            .resume(PAUSE_TIMEOUT)
            .map(|()| json!({ "state": "running" }))
            .map_err(|e| e.to_string())
    }

    fn counters(&self) -> Value {
        let mut devices = serde_json::Map::new();
        if let Some(b) = &self.vsock_bytes {
            devices.insert(
                "vsock".into(),
                json!({
                    "host_to_guest_bytes": b.host_to_guest.load(Ordering::Relaxed),
                    "guest_to_host_bytes": b.guest_to_host.load(Ordering::Relaxed),
                }),
            );
        }
        if !self.nets.is_empty() {
            let nets: Vec<Value> = self
                .nets
                .iter()
                .map(|(tap, c)| {
                    let mut v = json!(c.snapshot());
                    v["tap"] = json!(tap);
                    v
                })
                .collect();
            devices.insert("net".into(), Value::Array(nets));
        }
        if let Some(b) = &self.balloon {
            devices.insert(
                "balloon".into(),
                json!({
                    "reported_bytes": b.reported_bytes.load(Ordering::Relaxed),
                    "refused_ranges": b.refused_ranges.load(Ordering::Relaxed),
                }),
            );
        }
        json!({ "exits": self.exits.totals(), "devices": devices })
    }

    fn shutdown(&self) -> Result<Value, String> {
        tracing::info!("control API: graceful shutdown requested");
        self.request_shutdown()
            .map(|()| json!({ "state": "shutting_down" }))
            .map_err(|e| e.to_string())
    }

    fn stop(&self) {
        tracing::info!("control API: stop requested");
        self.exit.set(ExitReason::ApiStop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Controller;

    fn control() -> VmControl {
        let config = ConfigInfo {
            cpus: 2,
            memory_mib: 256,
            memory_backing: "4 KiB pages: test".into(),
            kernel: "/k".into(),
            initramfs: None,
            cmdline: "console=ttyS0".into(),
        };
        let bytes = Arc::new(VsockBytes::default());
        bytes.host_to_guest.store(5, Ordering::Relaxed);
        let net = Arc::new(NetCounters::default());
        net.tx_packets.store(2, Ordering::Relaxed);
        let balloon = Arc::new(BalloonCounters::default());
        balloon.reported_bytes.store(2 << 20, Ordering::Relaxed);
        VmControl::new(config, Vec::new(), Some(bytes), Arc::new(ExitLatch::new()))
            .with_net_counters(vec![("tap0".into(), net)])
            .with_balloon_counters(Some(balloon))
    }

    #[test]
    fn info_reports_config_state_and_timings() {
        let c = control();
        let info = c.info();
        assert_eq!(info["config"]["cpus"], 2);
        assert_eq!(info["config"]["memory_mib"], 256);
        assert_eq!(info["config"]["kernel"], "/k");
        assert_eq!(info["config"]["initramfs"], Value::Null);
        assert_eq!(info["state"], "running");
        assert_eq!(info["boot_time_ms"], Value::Null);
        c.note_first_entry();
        assert!(c.info()["boot_time_ms"].is_number());
        assert!(info["uptime_ms"].as_f64().unwrap() >= 0.0);
    }

    #[test]
    fn counters_include_exits_and_vsock_bytes() {
        let c = control();
        c.exits.vcpu(1).unwrap().count(counters::ExitKind::MmioRead);
        let v = c.counters();
        assert_eq!(v["exits"]["mmio_read"], 1);
        assert_eq!(v["exits"]["total"], 1);
        assert_eq!(v["devices"]["vsock"]["host_to_guest_bytes"], 5);
        assert_eq!(v["devices"]["vsock"]["guest_to_host_bytes"], 0);
        assert_eq!(v["devices"]["net"][0]["tap"], "tap0");
        assert_eq!(v["devices"]["net"][0]["tx_packets"], 2);
        assert_eq!(v["devices"]["net"][0]["rx_dropped"], 0);
        assert_eq!(v["devices"]["balloon"]["reported_bytes"], 2 << 20);
        assert_eq!(v["devices"]["balloon"]["refused_ranges"], 0);
    }

    #[test]
    fn stop_sets_the_exit_reason() {
        let c = control();
        c.stop();
        assert_eq!(c.exit.wait(), ExitReason::ApiStop);
        assert_eq!(c.info()["state"], "stopping");
    }

    /// Records ctrl-alt-del requests; refuses once `full` is set.
    #[derive(Default)]
    struct FakeKeyboard {
        typed: usize,
        full: bool,
    }

    impl crate::devices::legacy::i8042::CtrlAltDel for FakeKeyboard {
        fn ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
            if self.full {
                return Err(I8042Error::BufferFull);
            }
            self.typed += 1;
            Ok(())
        }
    }

    #[test]
    fn shutdown_types_ctrl_alt_del_and_reports_it() {
        let kbd = Arc::new(std::sync::Mutex::new(FakeKeyboard::default()));
        let c = control().with_keyboard(kbd.clone());
        assert_eq!(c.shutdown().unwrap()["state"], "shutting_down");
        assert_eq!(kbd.lock().unwrap().typed, 1);
        assert_eq!(c.info()["state"], "shutting_down");
        // A second request types it again (the guest may have missed the first).
        c.shutdown().unwrap();
        assert_eq!(kbd.lock().unwrap().typed, 2);
        kbd.lock().unwrap().full = true;
        let err = c.shutdown().unwrap_err();
        assert!(err.contains("keyboard buffer is full"), "{err}");
    }

    #[test]
    fn shutdown_fails_without_keyboard_or_when_stopping() {
        let c = control();
        assert_eq!(c.shutdown().unwrap_err(), "the VM has no i8042");
        let kbd = Arc::new(std::sync::Mutex::new(FakeKeyboard::default()));
        let c = control().with_keyboard(kbd.clone());
        c.stop();
        assert_eq!(c.shutdown().unwrap_err(), "the VM is stopping");
        assert_eq!(kbd.lock().unwrap().typed, 0);
    }

    #[test]
    fn postmortem_shape_without_running_vcpus() {
        use crate::devices::virtio::mmio::MmioTransport;
        use crate::devices::virtio::rng::Rng;
        use vmm_sys_util::eventfd::EventFd;

        let mem = crate::memory::create_guest_memory(4 << 20, false).unwrap();
        let transport =
            MmioTransport::new(Box::new(Rng::new()), mem, EventFd::new(0).unwrap()).unwrap();
        let mut bus = Bus::new();
        bus.insert(
            Arc::new(std::sync::Mutex::new(transport)),
            0xd000_0000,
            0x1000,
        )
        .unwrap();
        let tail = Arc::new(ConsoleTail::default());
        tail.push(b"Linux version 6.1\n\x1b[0m");
        let c = control().with_mmio(bus).with_console_tail(tail);
        c.exits.vcpu(0).unwrap().count(counters::ExitKind::Hlt);
        c.probes
            .status(1)
            .unwrap()
            .set_state(vcpu_probe::RunState::Exited);
        let started = Instant::now();
        let v = protocol::Controller::postmortem(&c);
        // Threads that never started or exited are not waited for.
        assert!(started.elapsed() < POSTMORTEM_VCPU_TIMEOUT);
        assert_eq!(v["state"], "running");
        let vcpus = v["vcpus"].as_array().unwrap();
        assert_eq!(vcpus.len(), 2);
        assert_eq!(vcpus[0]["run_state"], "not_started");
        assert_eq!(vcpus[0]["answered"], false);
        assert_eq!(vcpus[1]["error"], "its thread has exited");
        assert_eq!(v["exits"]["hlt"], 1);
        assert_eq!(vcpus[0]["exits"]["hlt"], 1);
        assert_eq!(vcpus[1]["exits"]["total"], 0);
        let dev = &v["devices"][0];
        assert_eq!(dev["type"], "virtio-rng");
        assert_eq!(dev["base"], "0xd0000000");
        assert_eq!(dev["status"], "0x0");
        assert_eq!(dev["activated"], false);
        assert_eq!(dev["queues"][0]["ready"], false);
        assert_eq!(v["device_counters"]["vsock"]["host_to_guest_bytes"], 5);
        assert_eq!(v["console"]["bytes_total"], 22);
        assert_eq!(v["console"]["tail"], "Linux version 6.1\n\\x1b[0m");
        assert!(v["timeline"].get("process_start").is_some());
        // Released devices are no longer reported.
        c.release_devices();
        assert_eq!(c.postmortem()["devices"], json!([]));
    }

    #[test]
    fn virtio_names() {
        assert_eq!(virtio_name(19), "virtio-vsock");
        assert_eq!(virtio_name(4), "virtio-rng");
        assert_eq!(virtio_name(99), "virtio-99");
    }
}
