//! What the post-mortem learns about each vCPU. Two parts:
//!
//! - what the vCPU thread publishes as it runs, with plain relaxed stores
//!   (where it is: in the guest, handling an exit, parked; its last exit);
//!   readable at any time, even when the thread is stuck;
//! - a snapshot of its registers and pending events, which KVM only lets
//!   the vCPU's own thread take (its ioctls on a running vCPU wait for
//!   KVM_RUN to return). A requester raises a generation number and kicks
//!   the threads; each one takes its snapshot before its next KVM_RUN (or
//!   while parked) and hands it back. A thread that does not answer within
//!   the requester's timeout is reported as such: it is stuck, which is a
//!   finding in itself, and the dump never waits on it.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_MP_STATE_AP_RESET_HOLD, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED,
    KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_SIPI_RECEIVED, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::VcpuFd;
use serde::Serialize;
use serde_json::{json, Value};

use super::counters::ExitKind;

/// Where a vCPU thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    /// Its thread has not started the run loop.
    NotStarted = 0,
    /// In KVM_RUN: the guest runs (or halts inside KVM).
    InGuest,
    /// Back from KVM_RUN, handling an exit in the VMM (a device access).
    InVmm,
    /// Parked by a pause.
    Parked,
    /// The thread left its run loop.
    Exited,
}

impl RunState {
    fn from_u8(v: u8) -> RunState {
        match v {
            1 => RunState::InGuest,
            2 => RunState::InVmm,
            3 => RunState::Parked,
            4 => RunState::Exited,
            _ => RunState::NotStarted,
        }
    }

    /// The state's name in the post-mortem.
    pub fn name(self) -> &'static str {
        match self {
            RunState::NotStarted => "not_started",
            RunState::InGuest => "in_guest",
            RunState::InVmm => "in_vmm",
            RunState::Parked => "parked",
            RunState::Exited => "exited",
        }
    }
}

/// What one vCPU thread publishes as it runs.
pub struct VcpuStatus {
    state: AtomicU8,
    /// `ExitKind as u8 + 1`; 0 before the first exit.
    last_exit: AtomicU8,
}

impl Default for VcpuStatus {
    fn default() -> Self {
        VcpuStatus {
            state: AtomicU8::new(RunState::NotStarted as u8),
            last_exit: AtomicU8::new(0),
        }
    }
}

impl VcpuStatus {
    /// Records where the thread is (only its own thread calls this).
    #[inline]
    pub fn set_state(&self, s: RunState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Records the exit KVM_RUN just returned with.
    #[inline]
    pub fn set_last_exit(&self, kind: ExitKind) {
        self.last_exit.store(kind as u8 + 1, Ordering::Relaxed);
    }

    /// Where the thread is.
    pub fn state(&self) -> RunState {
        RunState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// The last exit, if there was one.
    pub fn last_exit(&self) -> Option<ExitKind> {
        match self.last_exit.load(Ordering::Relaxed) {
            0 => None,
            v => ExitKind::ALL.get(usize::from(v - 1)).copied(),
        }
    }
}

/// A register as the post-mortem shows it: hexadecimal.
fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// The vectors whose bit is set in a LAPIC 256-bit register (IRR, ISR),
/// which the LAPIC page stores as eight 32-bit words 16 bytes apart.
fn lapic_vectors(regs: &[u8], offset: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for word in 0..8 {
        let at = offset + word * 16;
        let Some(bytes) = regs.get(at..at + 4) else {
            break;
        };
        let bits = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        for bit in 0..32 {
            if bits & (1 << bit) != 0 {
                out.push((word * 32 + bit) as u8);
            }
        }
    }
    out
}

fn mp_state_name(v: u32) -> String {
    match v {
        KVM_MP_STATE_RUNNABLE => "runnable".into(),
        KVM_MP_STATE_UNINITIALIZED => "uninitialized".into(),
        KVM_MP_STATE_INIT_RECEIVED => "init_received".into(),
        KVM_MP_STATE_HALTED => "halted".into(),
        KVM_MP_STATE_SIPI_RECEIVED => "sipi_received".into(),
        KVM_MP_STATE_AP_RESET_HOLD => "ap_reset_hold".into(),
        other => format!("mp_state_{other}"),
    }
}

/// A vCPU's registers and pending events, as its thread read them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VcpuSnapshot {
    /// RIP, RSP, RFLAGS, CR0/2/3/4, EFER, CS (hex strings), or why unreadable.
    pub regs: Value,
    /// KVM_GET_MP_STATE: runnable, halted, ... (null if unreadable).
    pub mp_state: Option<String>,
    /// Whether the vCPU is halted (waiting for an interrupt).
    pub halted: Option<bool>,
    /// KVM_GET_VCPU_EVENTS: exception, interrupt and NMI being injected or pending.
    pub events: Value,
    /// Local APIC: pending (IRR) and in-service (ISR) vectors, TPR.
    pub lapic: Value,
}

impl VcpuSnapshot {
    /// Reads the vCPU's state; only its own thread may call this.
    pub fn capture(fd: &VcpuFd) -> VcpuSnapshot {
        let regs = match (fd.get_regs(), fd.get_sregs()) {
            (Ok(r), Ok(s)) => json!({
                "rip": hex(r.rip),
                "rsp": hex(r.rsp),
                "rflags": hex(r.rflags),
                "cr0": hex(s.cr0),
                "cr2": hex(s.cr2),
                "cr3": hex(s.cr3),
                "cr4": hex(s.cr4),
                "efer": hex(s.efer),
                "cs": hex(u64::from(s.cs.selector)),
            }),
            (Err(e), _) | (_, Err(e)) => json!({ "error": e.to_string() }),
        };
        let (mp_state, halted) = match fd.get_mp_state() {
            Ok(m) => (
                Some(mp_state_name(m.mp_state)),
                Some(m.mp_state == KVM_MP_STATE_HALTED),
            ),
            Err(_) => (None, None),
        };
        let events = match fd.get_vcpu_events() {
            Ok(e) => json!({
                "exception": {
                    "injected": e.exception.injected != 0,
                    "pending": e.exception.pending != 0,
                    "nr": e.exception.nr,
                    "error_code": (e.exception.has_error_code != 0).then_some(e.exception.error_code),
                },
                "interrupt": {
                    "injected": e.interrupt.injected != 0,
                    "nr": e.interrupt.nr,
                    "shadow": e.interrupt.shadow,
                },
                "nmi": {
                    "injected": e.nmi.injected != 0,
                    "pending": e.nmi.pending != 0,
                    "masked": e.nmi.masked != 0,
                },
            }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        let lapic = match fd.get_lapic() {
            Ok(l) => {
                // SAFETY: `regs` is a plain byte array ([c_char; 1024]);
                // viewing it as bytes of the same length is sound.
                let bytes: &[u8] = unsafe {
                    std::slice::from_raw_parts(l.regs.as_ptr().cast::<u8>(), l.regs.len())
                };
                let tpr = bytes.get(0x80).copied().unwrap_or(0);
                json!({
                    "irr": lapic_vectors(bytes, 0x200),
                    "isr": lapic_vectors(bytes, 0x100),
                    "tpr": tpr,
                })
            }
            Err(e) => json!({ "error": e.to_string() }),
        };
        VcpuSnapshot {
            regs,
            mp_state,
            halted,
            events,
            lapic,
        }
    }
}

/// The snapshot requests of every vCPU and their answers.
pub struct VcpuProbes {
    status: Vec<VcpuStatus>,
    /// The generation of the latest request; read before every KVM_RUN.
    requested: AtomicU64,
    answers: Mutex<Vec<Option<(u64, VcpuSnapshot)>>>,
    answered: Condvar,
    // One dump at a time (two clients must not steal each other's answers).
    op: Mutex<()>,
}

/// One vCPU in a post-mortem.
#[derive(Debug, Clone, Serialize)]
pub struct VcpuReport {
    /// vCPU index.
    pub index: usize,
    /// Where its thread was when the dump was asked for.
    pub run_state: &'static str,
    /// The last exit before the dump (the dump's own kick is not counted).
    pub last_exit: Option<&'static str>,
    /// Whether its thread answered in time.
    pub answered: bool,
    /// Why there is no snapshot, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Registers and events, when it answered.
    #[serde(flatten)]
    pub snapshot: Option<VcpuSnapshot>,
}

impl VcpuProbes {
    /// Probes for `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> Self {
        VcpuProbes {
            status: (0..vcpus).map(|_| VcpuStatus::default()).collect(),
            requested: AtomicU64::new(0),
            answers: Mutex::new(vec![None; vcpus]),
            answered: Condvar::new(),
            op: Mutex::new(()),
        }
    }

    fn answers(&self) -> MutexGuard<'_, Vec<Option<(u64, VcpuSnapshot)>>> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// vCPU `index`'s status (None if out of range).
    pub fn status(&self, index: usize) -> Option<&VcpuStatus> {
        self.status.get(index)
    }

    /// The generation a vCPU thread must answer, if it differs from `seen`
    /// (the last one it answered). One atomic load: the run loop's check.
    #[inline]
    pub fn pending(&self, seen: u64) -> Option<u64> {
        let g = self.requested.load(Ordering::Acquire);
        (g != seen).then_some(g)
    }

    /// Called by vCPU `index`'s thread: answers a pending request with
    /// `capture()`; keeps `seen` up to date.
    pub fn serve(&self, index: usize, seen: &mut u64, capture: impl FnOnce() -> VcpuSnapshot) {
        let Some(generation) = self.pending(*seen) else {
            return;
        };
        *seen = generation;
        let snap = capture();
        if let Some(slot) = self.answers().get_mut(index) {
            *slot = Some((generation, snap));
        }
        self.answered.notify_all();
    }

    /// Asks every vCPU for a snapshot: `kick` must get the threads out of
    /// KVM_RUN (and wake parked ones); waits at most `timeout` for the
    /// threads that are running. Returns one report per vCPU.
    pub fn collect(&self, timeout: Duration, kick: impl FnOnce()) -> Vec<VcpuReport> {
        let _op = self.op.lock().unwrap_or_else(PoisonError::into_inner);
        // What the threads were doing before the kick changes it.
        let before: Vec<(RunState, Option<ExitKind>)> = self
            .status
            .iter()
            .map(|s| (s.state(), s.last_exit()))
            .collect();
        let generation = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        kick();
        let deadline = Instant::now() + timeout;
        let mut answers = self.answers();
        loop {
            let waiting = (0..self.status.len()).any(|i| {
                let live = !matches!(
                    self.status[i].state(),
                    RunState::NotStarted | RunState::Exited
                );
                let got = matches!(answers.get(i), Some(Some((g, _))) if *g == generation);
                live && !got
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if !waiting || left.is_zero() {
                break;
            }
            answers = self
                .answered
                .wait_timeout(answers, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        before
            .into_iter()
            .enumerate()
            .map(|(index, (state, last))| {
                let snap = match answers.get(index) {
                    Some(Some((g, s))) if *g == generation => Some(s.clone()),
                    _ => None,
                };
                let error = match (&snap, state) {
                    (Some(_), _) => None,
                    (None, RunState::NotStarted) => Some("its thread has not started".into()),
                    (None, RunState::Exited) => Some("its thread has exited".into()),
                    (None, _) => Some(format!(
                        "did not answer within {} ms (stuck in {})",
                        timeout.as_millis(),
                        if state == RunState::InGuest {
                            "KVM_RUN"
                        } else {
                            "the VMM"
                        }
                    )),
                };
                VcpuReport {
                    index,
                    run_state: state.name(),
                    last_exit: last.map(ExitKind::name),
                    answered: snap.is_some(),
                    error,
                    snapshot: snap,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn fake_snapshot(rip: u64) -> VcpuSnapshot {
        VcpuSnapshot {
            regs: json!({ "rip": hex(rip) }),
            mp_state: Some("halted".into()),
            halted: Some(true),
            events: json!({}),
            lapic: json!({}),
        }
    }

    #[test]
    fn status_round_trips() {
        let s = VcpuStatus::default();
        assert_eq!(s.state(), RunState::NotStarted);
        assert_eq!(s.last_exit(), None);
        s.set_state(RunState::InGuest);
        s.set_last_exit(ExitKind::MmioWrite);
        assert_eq!(s.state(), RunState::InGuest);
        assert_eq!(s.last_exit(), Some(ExitKind::MmioWrite));
        s.set_last_exit(ExitKind::Other);
        assert_eq!(s.last_exit(), Some(ExitKind::Other));
    }

    #[test]
    fn running_threads_answer_and_stuck_ones_are_reported() {
        let probes = Arc::new(VcpuProbes::new(3));
        // vCPU 0 serves requests like the run loop; vCPU 1 is "in KVM_RUN"
        // and never answers; vCPU 2 never started.
        probes.status(0).unwrap().set_state(RunState::InGuest);
        probes.status(0).unwrap().set_last_exit(ExitKind::IoOut);
        probes.status(1).unwrap().set_state(RunState::InGuest);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (probes, stop) = (probes.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::SeqCst) {
                    probes.serve(0, &mut seen, || fake_snapshot(0x1000));
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let started = Instant::now();
        // Long enough for a loaded machine to schedule the answering thread.
        let reports = probes.collect(Duration::from_millis(1000), || {});
        assert!(started.elapsed() >= Duration::from_millis(1000));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(reports.len(), 3);
        assert!(reports[0].answered);
        assert_eq!(reports[0].last_exit, Some("io_out"));
        assert_eq!(reports[0].snapshot.as_ref().unwrap().regs["rip"], "0x1000");
        assert!(!reports[1].answered);
        assert_eq!(reports[1].run_state, "in_guest");
        assert_eq!(
            reports[1].error.as_deref(),
            Some("did not answer within 1000 ms (stuck in KVM_RUN)")
        );
        assert_eq!(reports[2].run_state, "not_started");
        // A second dump gets fresh answers, not the first one's.
        probes.status(1).unwrap().set_state(RunState::Exited);
        let again = probes.collect(Duration::from_secs(5), || {});
        assert!(again[0].answered);
        assert_eq!(
            again[1].error.as_deref(),
            Some("its thread has exited"),
            "exited threads are not waited for"
        );
        stop.store(true, Ordering::SeqCst);
        worker.join().unwrap();
    }

    #[test]
    fn report_json_shape() {
        let r = VcpuReport {
            index: 0,
            run_state: "in_guest",
            last_exit: Some("hlt"),
            answered: true,
            error: None,
            snapshot: Some(fake_snapshot(0xfff0)),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["index"], 0);
        assert_eq!(v["regs"]["rip"], "0xfff0");
        assert_eq!(v["halted"], true);
        assert_eq!(v["mp_state"], "halted");
        assert!(v.get("error").is_none());
    }

    #[test]
    fn lapic_vectors_decode_the_bitmap() {
        let mut regs = vec![0u8; 1024];
        // Vector 0x30 (word 1, bit 16) and 0xec (word 7, bit 12) pending.
        regs[0x200 + 16 + 2] = 0x01;
        regs[0x200 + 7 * 16 + 1] = 0x10;
        assert_eq!(lapic_vectors(&regs, 0x200), vec![0x30, 0xec]);
        assert!(lapic_vectors(&regs, 0x100).is_empty());
        assert!(lapic_vectors(&regs[..0x210], 0x200).is_empty());
    }

    #[test]
    fn mp_state_names() {
        assert_eq!(mp_state_name(KVM_MP_STATE_HALTED), "halted");
        assert_eq!(mp_state_name(99), "mp_state_99");
    }
}
