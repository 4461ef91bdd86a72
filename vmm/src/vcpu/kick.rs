//! Pulling a vCPU thread out of KVM_RUN: a real-time signal whose handler sets
//! `immediate_exit` in the thread's `kvm_run`.
//!
//! Setting the flag from the handler closes the race where the signal lands
//! just before the thread enters KVM_RUN: KVM then returns EINTR at once
//! instead of running (or halting) until the next unrelated exit.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::ptr;

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;
use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    // This thread's kvm_run mapping, or null when no vCPU runs here. A const
    // initialiser with a Drop-free type compiles to a plain TLS slot, which
    // is safe to read from a signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

/// The signal used to kick vCPU threads.
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is set by `Registration` to this thread's live
        // kvm_run mapping and cleared before the VcpuFd (and the mapping) is
        // dropped; a volatile byte store is async-signal-safe.
        unsafe { ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the kick handler (process-wide; call once before starting vCPUs).
pub fn install_handler() -> Result<(), vmm_sys_util::errno::Error> {
    register_signal_handler(kick_signal(), handle_kick)
}

/// A vCPU fd registered as the calling thread's kick target; derefs to the
/// fd. The borrow guarantees the kvm_run mapping outlives the registration.
pub struct Registration<'a> {
    fd: &'a mut VcpuFd,
}

impl<'a> Registration<'a> {
    /// Registers `fd`'s kvm_run for this thread until the value is dropped.
    pub fn new(fd: &'a mut VcpuFd) -> Self {
        let run: *mut kvm_run = fd.get_kvm_run();
        KVM_RUN.with(|slot| slot.set(run));
        Registration { fd }
    }
}

impl Deref for Registration<'_> {
    type Target = VcpuFd;
    fn deref(&self) -> &VcpuFd {
        self.fd
    }
}

impl DerefMut for Registration<'_> {
    fn deref_mut(&mut self) -> &mut VcpuFd {
        self.fd
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        KVM_RUN.with(|slot| slot.set(ptr::null_mut()));
    }
}
