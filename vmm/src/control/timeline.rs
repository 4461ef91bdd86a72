//! The VMM's part of the boot timeline: when each phase of a boot was first
//! reached, in milliseconds from the process start (monotonic clock).
//! Reported by the control API (`info`, `timeline`) and logged once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// A boot phase, in the order a boot reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `main` started.
    ProcessStart = 0,
    /// KVM_CREATE_VM returned (with its irqchip and PIT).
    VmCreated,
    /// Guest RAM allocated and registered with KVM.
    MemoryReady,
    /// Kernel and initramfs loaded, boot data written.
    GuestLoaded,
    /// The boot vCPU's first KVM_RUN.
    FirstVcpuRun,
    /// The guest's first byte on the serial console.
    FirstConsoleByte,
    /// The guest kernel ran `/init` (the agent's first boot mark).
    GuestInitStarted,
    /// The agent has its root filesystem (boot mark).
    AgentRootReady,
    /// The agent's PID 1 setup is done (boot mark).
    AgentSetupDone,
    /// The agent listens on vsock (boot mark).
    AgentListening,
    /// The host's first connection through the hybrid vsock socket that
    /// the guest accepted (its RESPONSE: something listened on the port).
    FirstVsockConnection,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 11] = [
        Phase::ProcessStart,
        Phase::VmCreated,
        Phase::MemoryReady,
        Phase::GuestLoaded,
        Phase::FirstVcpuRun,
        Phase::FirstConsoleByte,
        Phase::GuestInitStarted,
        Phase::AgentRootReady,
        Phase::AgentSetupDone,
        Phase::AgentListening,
        Phase::FirstVsockConnection,
    ];

    /// The phase's key in the API's JSON and the log.
    pub fn name(self) -> &'static str {
        match self {
            Phase::ProcessStart => "process_start",
            Phase::VmCreated => "kvm_vm_created",
            Phase::MemoryReady => "guest_memory_ready",
            Phase::GuestLoaded => "kernel_and_initramfs_loaded",
            Phase::FirstVcpuRun => "first_vcpu_run",
            Phase::FirstConsoleByte => "first_console_byte",
            Phase::GuestInitStarted => "guest_init_started",
            Phase::AgentRootReady => "agent_root_ready",
            Phase::AgentSetupDone => "agent_setup_done",
            Phase::AgentListening => "agent_listening",
            Phase::FirstVsockConnection => "first_vsock_connection",
        }
    }
}

/// When each phase was first reached.
#[derive(Default)]
pub struct Timeline {
    marks: [OnceLock<Instant>; Phase::ALL.len()],
    logged: AtomicBool,
}

impl Timeline {
    /// Records `phase` now, unless it was recorded before.
    pub fn mark(&self, phase: Phase) {
        self.marks[phase as usize].get_or_init(Instant::now);
    }

    /// When `phase` was reached, if it was.
    pub fn at(&self, phase: Phase) -> Option<Instant> {
        self.marks[phase as usize].get().copied()
    }

    /// Time from the process start to `phase`, if both were reached.
    pub fn since_start(&self, phase: Phase) -> Option<Duration> {
        let start = self.at(Phase::ProcessStart)?;
        Some(self.at(phase)?.saturating_duration_since(start))
    }

    /// `{phase: ms from process start or null}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for p in Phase::ALL {
            let v = self.since_start(p).map_or(Value::Null, |d| ms(d).into());
            m.insert(p.name().into(), v);
        }
        Value::Object(m)
    }

    /// One log line with the timeline, the first time this is called.
    pub fn log_once(&self) {
        if !self.logged.swap(true, Ordering::SeqCst) {
            tracing::info!(timeline = %self.to_json(), "boot timeline (ms from process start)");
        }
    }
}

/// Milliseconds with microsecond resolution.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// The process's timeline.
pub fn global() -> &'static Timeline {
    static GLOBAL: OnceLock<Timeline> = OnceLock::new();
    GLOBAL.get_or_init(Timeline::default)
}

/// Records `phase` in the process's timeline; the last phase (the host's
/// first vsock connection) also logs the whole timeline once.
pub fn mark(phase: Phase) {
    let t = global();
    t.mark(phase);
    if phase == Phase::FirstVsockConnection {
        t.log_once();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_reported_in_order_from_the_start() {
        let t = Timeline::default();
        assert_eq!(t.to_json()["process_start"], Value::Null);
        t.mark(Phase::ProcessStart);
        std::thread::sleep(Duration::from_millis(2));
        t.mark(Phase::VmCreated);
        let first = t.at(Phase::VmCreated).unwrap();
        t.mark(Phase::VmCreated);
        assert_eq!(t.at(Phase::VmCreated), Some(first), "first mark wins");
        let v = t.to_json();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), Phase::ALL.len());
        assert_eq!(v["process_start"], 0.0);
        assert!(v["kvm_vm_created"].as_f64().unwrap() >= 2.0);
        assert_eq!(v["first_vsock_connection"], Value::Null);
        assert_eq!(v["kernel_and_initramfs_loaded"], Value::Null);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Phase::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Phase::ALL.len());
    }
}
