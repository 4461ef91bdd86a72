//! vCPUs: setup (CPUID, MSRs, LAPIC, boot registers) and the run loop that
//! dispatches PIO/MMIO exits to the buses and reports why the VM stops.

pub mod cpuid;
pub mod kick;
pub mod msrs;
pub mod regs;

use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::{
    CpuId, KVM_INTERNAL_ERROR_EMULATION, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::boot::BootEntry;
use crate::bus::Bus;
use crate::control::counters::{ExitKind, VcpuCounters};
use crate::control::vcpu_probe::{RunState, VcpuSnapshot, VcpuStatus};
use crate::control::VmControl;
use crate::exit::{ExitLatch, ExitReason};

/// What every vCPU thread shares: the buses and the exit latch.
pub struct VcpuContext {
    /// Port I/O devices.
    pub pio: Bus,
    /// MMIO devices.
    pub mmio: Bus,
    /// Where the first exit reason is recorded.
    pub exit: Arc<ExitLatch>,
    /// Pause state, exit counters and boot timing.
    pub control: Arc<VmControl>,
}

/// Error setting up or starting a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM ioctl failed.
    #[error("vCPU {index}: {what} failed: {source}")]
    Kvm {
        /// vCPU index.
        index: u8,
        /// The operation.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// KVM refused some of the boot MSRs.
    #[error("vCPU {index}: KVM set only {written} of {total} boot MSRs")]
    Msrs {
        /// vCPU index.
        index: u8,
        /// How many KVM accepted.
        written: usize,
        /// How many were asked for.
        total: usize,
    },
    /// The MSR list could not be built.
    #[error("vCPU {0}: cannot build the MSR list")]
    MsrList(u8),
    /// The thread could not be started.
    #[error("vCPU {index}: cannot start thread: {source}")]
    Spawn {
        /// vCPU index.
        index: u8,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A configured vCPU, ready to run on its own thread.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    ctx: Arc<VcpuContext>,
}

/// What the run loop does after one exit.
enum Step {
    Continue,
    Interrupted,
    InternalError,
    Stop(ExitReason),
}

impl Vcpu {
    /// Creates vCPU `index` of `count` and sets its CPUID, MSRs and LAPIC;
    /// the boot vCPU (`boot` is Some) also gets its entry registers. The
    /// others wait for INIT/SIPI from the guest, which resets their registers.
    pub fn new(
        vm: &VmFd,
        index: u8,
        count: u8,
        supported_cpuid: &CpuId,
        tsc_deadline: bool,
        boot: Option<BootEntry>,
        ctx: Arc<VcpuContext>,
    ) -> Result<Self, VcpuError> {
        let kvm_err = |what| {
            move |source| VcpuError::Kvm {
                index,
                what,
                source,
            }
        };
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;

        let mut cpuid = supported_cpuid.clone();
        cpuid::patch(&mut cpuid, index, count, tsc_deadline);
        fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;

        let msrs = msrs::boot_msrs().map_err(|_| VcpuError::MsrList(index))?;
        let total = msrs.as_slice().len();
        let written = fd.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        if written != total {
            return Err(VcpuError::Msrs {
                index,
                written,
                total,
            });
        }

        let lapic = fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
        fd.set_lapic(&regs::boot_lapic(lapic))
            .map_err(kvm_err("KVM_SET_LAPIC"))?;

        if let Some(boot) = boot {
            regs::setup_boot_cpu(&fd, boot).map_err(kvm_err("setting boot registers"))?;
        }
        Ok(Vcpu { index, fd, ctx })
    }

    /// Starts the run loop on a thread named `vcpuN`.
    pub fn spawn(self) -> Result<JoinHandle<()>, VcpuError> {
        let index = self.index;
        crate::threads::builder(format!("vcpu{index}"))
            .spawn(move || self.run())
            .map_err(|source| VcpuError::Spawn { index, source })
    }

    /// Runs the vCPU until it or another thread records an exit reason.
    fn run(mut self) {
        let index = self.index;
        // Before the first KVM_RUN; on failure the VM is already stopping.
        if crate::seccomp::enter(crate::seccomp::Role::Vcpu).is_err() {
            return;
        }
        let ctx = self.ctx;
        let mut fd = kick::Registration::new(&mut self.fd);
        let no_counters = VcpuCounters::default();
        let counters = ctx
            .control
            .exits
            .vcpu(usize::from(index))
            .unwrap_or(&no_counters);
        let pause = &ctx.control.pause;
        let probes = &ctx.control.probes;
        let no_status = VcpuStatus::default();
        let status = probes.status(usize::from(index)).unwrap_or(&no_status);
        // The last post-mortem request this thread answered.
        let mut seen = 0;
        let _kickable = pause.register();
        if index == 0 {
            ctx.control.note_first_entry();
        }
        let reason = loop {
            // Checked before every entry: a kick that arrived while this
            // thread was handling an exit must not be lost.
            if ctx.exit.is_set() {
                break None;
            }
            if pause.is_requested() {
                status.set_state(RunState::Parked);
                pause.park(|| {
                    probes.serve(usize::from(index), &mut seen, || VcpuSnapshot::capture(&fd))
                });
                continue;
            }
            // KVM reads a vCPU's registers only on its own thread, between runs.
            probes.serve(usize::from(index), &mut seen, || VcpuSnapshot::capture(&fd));
            status.set_state(RunState::InGuest);
            let result = fd.run();
            status.set_state(RunState::InVmm);
            let step = match result {
                Ok(exit) => {
                    let kind = ExitKind::of(&exit);
                    counters.count(kind);
                    // Kicks (pause, post-mortem, stop) are not the guest's doing.
                    if kind != ExitKind::Intr {
                        status.set_last_exit(kind);
                    }
                    handle_exit(&ctx, index, exit)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    counters.count(ExitKind::Intr);
                    Step::Interrupted
                }
                Err(e) => Step::Stop(ExitReason::VmmError(format!(
                    "vCPU {index}: KVM_RUN failed: {e}"
                ))),
            };
            match step {
                Step::Continue => {}
                Step::Interrupted => fd.set_kvm_immediate_exit(0),
                Step::InternalError => {
                    // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR, so
                    // the kernel filled the `internal` member of the union.
                    let sub = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    let what = if sub == KVM_INTERNAL_ERROR_EMULATION {
                        " (instruction emulation failed)"
                    } else {
                        ""
                    };
                    break Some(ExitReason::GuestCrash(format!(
                        "vCPU {index}: KVM internal error, suberror {sub}{what}"
                    )));
                }
                Step::Stop(ExitReason::GuestCrash(why)) => {
                    break Some(ExitReason::GuestCrash(format!(
                        "{why}; {}",
                        crash_state(&fd)
                    )))
                }
                Step::Stop(reason) => break Some(reason),
            }
        };
        status.set_state(RunState::Exited);
        if let Some(reason) = reason {
            tracing::debug!("vCPU {index} stops: {reason}");
            ctx.exit.set(reason);
        }
    }
}

/// The vCPU state worth reading after a guest crash: where it was and in
/// which mode, so a rare crash can be diagnosed from the VMM's one-line reason.
fn crash_state(fd: &kvm_ioctls::VcpuFd) -> String {
    match (fd.get_regs(), fd.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "rip={:#x} rsp={:#x} rflags={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x} idt={:#x}/{:#x}",
            r.rip, r.rsp, r.rflags, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.idt.base, s.idt.limit
        ),
        (Err(e), _) | (_, Err(e)) => format!("registers unreadable: {e}"),
    }
}

/// Handles one VM exit.
fn handle_exit(ctx: &VcpuContext, index: u8, exit: VcpuExit<'_>) -> Step {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !ctx.pio.read(u64::from(port), data) {
                // Nothing there: read as zero (no stale kvm_run bytes).
                data.fill(0);
            }
        }
        VcpuExit::IoOut(port, data) => {
            ctx.pio.write(u64::from(port), data);
        }
        VcpuExit::MmioRead(addr, data) => {
            if !ctx.mmio.read(addr, data) {
                tracing::trace!("unmapped MMIO read at {addr:#x}");
                data.fill(0);
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !ctx.mmio.write(addr, data) {
                tracing::trace!("unmapped MMIO write at {addr:#x}");
            }
        }
        VcpuExit::Intr => return Step::Interrupted,
        VcpuExit::Shutdown => {
            return Step::Stop(ExitReason::GuestCrash(format!(
                "vCPU {index}: triple fault (KVM_EXIT_SHUTDOWN)"
            )))
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return Step::Stop(ExitReason::GuestCrash(format!(
                "vCPU {index}: VM entry failed (KVM_EXIT_FAIL_ENTRY), hardware reason {reason:#x} on host CPU {cpu}"
            )))
        }
        VcpuExit::InternalError => return Step::InternalError,
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => {
                return Step::Stop(ExitReason::GuestReset)
            }
            KVM_SYSTEM_EVENT_CRASH => {
                return Step::Stop(ExitReason::GuestCrash(format!(
                    "vCPU {index}: guest reported a crash (KVM_SYSTEM_EVENT_CRASH)"
                )))
            }
            other => crate::guest_warn!("vCPU {index}: ignoring system event {other}"),
        },
        VcpuExit::Hlt => {
            // The in-kernel LAPIC handles HLT; seeing it here means the vCPU
            // halted for good.
            return Step::Stop(ExitReason::GuestCrash(format!(
                "vCPU {index}: halted (KVM_EXIT_HLT)"
            )));
        }
        other => {
            return Step::Stop(ExitReason::GuestCrash(format!(
                "vCPU {index}: unexpected exit {other:?}"
            )))
        }
    }
    Step::Continue
}
