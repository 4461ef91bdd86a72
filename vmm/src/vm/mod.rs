//! The KVM VM: creation, guest memory, devices, boot, vCPU threads, and
//! waiting for the reason it stops.

pub mod devices;

use std::io::{IsTerminal, LineWriter};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::signal::Killable;

use crate::boot::cmdline::{self, CmdlineError};
use crate::boot::layout::KVM_TSS_ADDRESS;
use crate::boot::{self, BootError};
use crate::bus::Bus;
use crate::config::{Console, VmConfig};
use crate::control::console_tail::{ConsoleTail, TailWriter};
use crate::control::timeline::{self, Phase};
use crate::control::{self, ConfigInfo, VmControl};
use crate::devices::legacy::serial::{ConsoleWriter, SerialDevice};
use crate::exit::{ExitLatch, ExitReason};
use crate::memory::{guest_memory, Backing, GuestMemory, MemoryError};
use crate::vcpu::{kick, Vcpu, VcpuContext, VcpuError};
use devices::DeviceError;

/// Error building the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM ioctl failed.
    #[error("{0} failed: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// The host's KVM lacks a capability the VMM needs.
    #[error("KVM lacks the {0} capability")]
    MissingCap(&'static str),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A device could not be attached.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The command line is invalid.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    /// Loading or configuring the guest failed.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// A vCPU could not be set up.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The vCPU kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
}

/// A VM ready to run.
pub struct Vm {
    // Field order is drop order: the VM fd goes before the memory it maps.
    _vm_fd: VmFd,
    _mem: GuestMemory,
    vcpus: Vec<Vcpu>,
    // Held so the device models are dropped here, on the main thread (the
    // vsock device removes its socket file then), not on whichever vCPU
    // thread exits last, whose seccomp filter does not allow that.
    devices: Arc<VcpuContext>,
    exit: Arc<ExitLatch>,
    serial: Arc<Mutex<SerialDevice>>,
    control: Arc<VmControl>,
}

/// The console's writer; every byte also goes to `tail` (the post-mortem's).
fn console_writer(console: Console, tail: Arc<ConsoleTail>) -> ConsoleWriter {
    match console {
        // A hostile guest must not drive the terminal of whoever watches.
        Console::Stdout if std::io::stdout().is_terminal() => Box::new(TailWriter::new(
            crate::logging::TerminalSafe(std::io::stdout()),
            tail,
        )),
        Console::Stdout => Box::new(TailWriter::new(std::io::stdout(), tail)),
        // Line-buffered: one write(2) per line, not per byte the guest prints.
        Console::File(file) => Box::new(TailWriter::new(LineWriter::new(file), tail)),
        Console::None => Box::new(TailWriter::new(std::io::sink(), tail)),
    }
}

fn register_memory(vm: &VmFd, mem: &GuestMemory) -> Result<(), VmError> {
    for (slot, region) in (0u32..).zip(mem.iter()) {
        let desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping of `region.len()` bytes owned
        // by `mem`, which the Vm keeps until after its vCPUs have stopped.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|e| VmError::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(())
}

/// How long to wait for vCPU threads to leave after the VM stops. They leave
/// within microseconds of a kick; the bound only guards against a thread
/// stuck outside KVM (e.g. blocked writing to a full console pipe), so the
/// process still exits (which ends any such thread).
const STOP_DEADLINE: Duration = Duration::from_secs(2);
/// Pause between checks (and re-kicks) while waiting for vCPU threads.
const STOP_POLL: Duration = Duration::from_micros(100);

/// Kicks every vCPU thread out of KVM_RUN and joins them, giving up on
/// stragglers after `STOP_DEADLINE`.
fn stop_threads(mut threads: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + STOP_DEADLINE;
    loop {
        // The exit latch is set, so a kicked thread leaves its loop at the
        // next check; the kick only gets it out of KVM_RUN (or keeps it out).
        for t in threads.iter().filter(|t| !t.is_finished()) {
            if let Err(e) = t.kill(kick::kick_signal()) {
                tracing::warn!("cannot kick a vCPU thread: {e}");
            }
        }
        let (done, running): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.is_finished());
        for t in done {
            if t.join().is_err() {
                tracing::error!("a vCPU thread panicked");
            }
        }
        threads = running;
        if threads.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::error!(
                "{} vCPU thread(s) did not stop; exiting without them",
                threads.len()
            );
            return;
        }
        std::thread::sleep(STOP_POLL);
    }
}

/// The configuration as the control API reports it.
fn control_config(
    cfg: &VmConfig,
    cmdline: &linux_loader::cmdline::Cmdline,
    backing: &Backing,
) -> ConfigInfo {
    ConfigInfo {
        cpus: cfg.cpus,
        memory_mib: cfg.memory_bytes >> 20,
        memory_backing: backing.to_string(),
        kernel: cfg.kernel.path.clone(),
        initramfs: cfg.initramfs.as_ref().map(|i| i.path.clone()),
        cmdline: cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

impl Vm {
    /// The control state the API serves (pause, counters, info).
    pub fn control(&self) -> Arc<VmControl> {
        self.control.clone()
    }

    /// The latch that records why the VM stops (signals set it too).
    pub fn exit_latch(&self) -> Arc<ExitLatch> {
        self.exit.clone()
    }

    /// Creates the VM from a validated configuration: KVM VM and irqchip,
    /// memory, devices, the loaded guest, and configured vCPUs.
    pub fn build(mut cfg: VmConfig) -> Result<Vm, VmError> {
        let started = Instant::now();
        let kvm = Kvm::new().map_err(|e| VmError::Kvm("opening /dev/kvm", e))?;
        if !kvm.check_extension(Cap::ImmediateExit) {
            return Err(VmError::MissingCap("KVM_CAP_IMMEDIATE_EXIT"));
        }
        let vm = kvm
            .create_vm()
            .map_err(|e| VmError::Kvm("KVM_CREATE_VM", e))?;
        vm.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(|e| VmError::Kvm("KVM_SET_TSS_ADDR", e))?;
        vm.create_irq_chip()
            .map_err(|e| VmError::Kvm("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit)
            .map_err(|e| VmError::Kvm("KVM_CREATE_PIT2", e))?;
        timeline::mark(Phase::VmCreated);

        let (mem, backing) = guest_memory(cfg.memory_bytes, cfg.hugepages)?;
        register_memory(&vm, &mem)?;
        timeline::mark(Phase::MemoryReady);
        tracing::debug!("KVM VM and memory ready at {:?}", started.elapsed());

        let exit = Arc::new(ExitLatch::new());
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let serial_console = !matches!(cfg.console, Console::None);
        let console = std::mem::replace(&mut cfg.console, Console::None);
        let console_tail = Arc::new(ConsoleTail::default());
        let serial =
            devices::attach_serial(&vm, &mut pio, console_writer(console, console_tail.clone()))?;
        let keyboard = devices::attach_i8042(&vm, &mut pio, exit.clone())?;
        devices::attach_boot_marks(&mut pio)?;
        let mut virtio = Vec::new();
        let mut vsock_bytes = None;
        if let Some(path) = &cfg.vsock {
            let slot = virtio.len() as u32;
            let (arg, bytes) = devices::attach_vsock(&vm, &mut mmio, &mem, path, slot)?;
            virtio.push(arg);
            vsock_bytes = Some(bytes);
        }
        let disks = std::mem::take(&mut cfg.disks);
        devices::attach_disks_and_rng(&vm, &mut mmio, &mem, disks, cfg.rng, &mut virtio)?;
        let nets = std::mem::take(&mut cfg.nets);
        let net_counters = devices::attach_nets(&vm, &mut mmio, &mem, nets, &mut virtio)?;
        devices::attach_shares(&vm, &mut mmio, &mem, &cfg.fs, &mut virtio, &exit)?;
        let mut balloon = None;
        if cfg.balloon && backing == Backing::Hugetlb {
            // A punched hugetlb page goes back to the host's pool with its
            // reservation, so the guest's next touch could find the pool
            // empty and kill the VM with SIGBUS: --hugepages promises the
            // pages for the VM's whole life instead.
            tracing::info!("virtio-balloon left out: guest RAM is on reserved hugetlb pages");
        } else if cfg.balloon {
            balloon = Some(devices::attach_balloon(&vm, &mut mmio, &mem, &mut virtio)?);
        }
        let cmdline = cmdline::build(serial_console, &virtio, cfg.cmdline_extra.as_deref())?;
        let control = Arc::new(
            VmControl::new(
                control_config(&cfg, &cmdline, &backing),
                control::describe_devices(&mmio, &virtio),
                vsock_bytes,
                exit.clone(),
            )
            .with_net_counters(net_counters)
            .with_balloon_counters(balloon)
            .with_keyboard(keyboard)
            .with_mmio(mmio.clone())
            .with_console_tail(console_tail),
        );

        tracing::debug!("devices ready at {:?}", started.elapsed());
        let kernel = boot::load_kernel(&mem, &mut cfg.kernel)?;
        tracing::debug!("kernel loaded at {:?}", started.elapsed());
        let initramfs = match cfg.initramfs.as_mut() {
            Some(img) => Some(boot::load_initramfs(
                &mem,
                img,
                kernel.end,
                cfg.memory_bytes,
            )?),
            None => None,
        };
        boot::configure(
            &mem,
            cfg.memory_bytes,
            kernel.boot.protocol,
            &cmdline,
            initramfs,
            cfg.cpus,
        )?;
        timeline::mark(Phase::GuestLoaded);
        tracing::debug!(
            "kernel entry {:#x} ({:?}), ends at {:#x}; initramfs {:?}",
            kernel.boot.entry,
            kernel.boot.protocol,
            kernel.end,
            initramfs
        );

        tracing::debug!("initramfs and boot data written at {:?}", started.elapsed());
        kick::install_handler().map_err(VmError::Signal)?;
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| VmError::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
        let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
        let ctx = Arc::new(VcpuContext {
            pio,
            mmio,
            exit: exit.clone(),
            control: control.clone(),
        });
        let vcpus = (0..cfg.cpus)
            .map(|i| {
                let boot = (i == 0).then_some(kernel.boot);
                Vcpu::new(
                    &vm,
                    i,
                    cfg.cpus,
                    &supported,
                    tsc_deadline,
                    boot,
                    ctx.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!("VM set up in {:?}", started.elapsed());

        Ok(Vm {
            _vm_fd: vm,
            _mem: mem,
            vcpus,
            devices: ctx,
            exit,
            serial,
            control,
        })
    }

    /// Runs the guest until something records an exit reason, then stops
    /// every vCPU thread, joins them, flushes the console and returns the reason.
    pub fn run(self) -> ExitReason {
        let mut threads = Vec::with_capacity(self.vcpus.len());
        for vcpu in self.vcpus {
            match vcpu.spawn() {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    self.exit.set(ExitReason::VmmError(e.to_string()));
                    break;
                }
            }
        }
        // Every thread that needs more than waiting and stopping runs now.
        // On failure the exit latch holds the error.
        let _ = crate::seccomp::enter(crate::seccomp::Role::Main);
        let reason = self.exit.wait();
        // Parked vCPUs wait on a condvar, which kicks do not interrupt.
        self.control.pause.stop();
        let stopping = Instant::now();
        stop_threads(threads);
        tracing::info!(
            "VM stopped ({reason}); vCPU threads stopped in {:?}",
            stopping.elapsed()
        );
        // A boot that never got its vsock connection still logs how far it came.
        timeline::global().log_once();
        // try_lock: a straggler may hold the console lock; then skip the flush.
        match self.serial.try_lock() {
            Ok(mut serial) => serial.flush(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().flush(),
            Err(TryLockError::WouldBlock) => tracing::warn!("console busy; not flushed"),
        }
        self.control.release_devices();
        drop(self.devices);
        reason
    }
}
