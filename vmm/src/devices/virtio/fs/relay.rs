//! The thread between virtiofsd and the guest's interrupt line.
//!
//! Why a thread rather than handing the backend our irqfd (as Firecracker's
//! vhost-user-blk does): on virtio-mmio the guest's interrupt handler reads
//! InterruptStatus first and only scans its vrings if the VRING bit is set;
//! a backend writing the irqfd directly cannot set that bit, so the status
//! would have to stay stuck at VRING, which the transport does not do (and
//! which would make every config interrupt also a vring scan). Instead the
//! backend signals one call eventfd per vring; this thread sets the bit and
//! injects the IRQ through the transport's `Interrupt`, like every other
//! device. It costs one thread wake-up per interrupt batch. The same thread
//! watches the backend's socket, so a dying virtiofsd is noticed at once.
//!
//! The thread is started at the device's first activation through the
//! seccomp launcher (so it runs under the device filter, and the VMM is still
//! single-threaded when it enters its jail) and lives as long as the device;
//! later resets and activations only swap the interrupt line in or out.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::error;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::BackendLost;
use crate::devices::virtio::device_worker::WorkerHandle;
use crate::devices::virtio::Interrupt;

/// Token of the backend socket (vring call eventfds use their index).
const TOKEN_SOCKET: u64 = u64::MAX - 1;
/// Token of the stop eventfd.
const TOKEN_STOP: u64 = u64::MAX;

/// The guest's interrupt line while the device is active, None otherwise.
type Line = Arc<Mutex<Option<Arc<dyn Interrupt>>>>;

/// The running relay of one device.
pub struct RelayHandle {
    worker: WorkerHandle,
    line: Line,
}

impl RelayHandle {
    /// Routes the backend's calls to `interrupt` (guest DRIVER_OK).
    pub fn attach(&self, interrupt: Arc<dyn Interrupt>) {
        *self.line.lock().unwrap_or_else(PoisonError::into_inner) = Some(interrupt);
    }

    /// Drops the backend's calls from now on (guest reset).
    pub fn detach(&self) {
        *self.line.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Stops the thread and waits for it; false if it had panicked.
    pub fn stop(self) -> bool {
        self.worker.stop()
    }
}

/// Starts the relay for the device with `tag`: `calls` are the eventfds the
/// backend signals, `socket` its connection; `broken` is set and `on_lost`
/// called if it hangs up.
pub fn spawn(
    tag: &str,
    calls: Vec<EventFd>,
    socket: UnixStream,
    broken: Arc<AtomicBool>,
    on_lost: Option<BackendLost>,
) -> std::io::Result<RelayHandle> {
    let stop = EventFd::new(EFD_NONBLOCK)?;
    let epoll = Epoll::new()?;
    for (token, call) in (0u64..).zip(&calls) {
        epoll.ctl(
            ControlOperation::Add,
            call.as_raw_fd(),
            EpollEvent::new(EventSet::IN, token),
        )?;
    }
    // Only the hang-up matters: replies are read by the vCPU thread.
    epoll.ctl(
        ControlOperation::Add,
        socket.as_raw_fd(),
        EpollEvent::new(EventSet::READ_HANG_UP, TOKEN_SOCKET),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, TOKEN_STOP),
    )?;
    let line: Line = Arc::new(Mutex::new(None));
    let relay = Relay {
        tag: tag.to_string(),
        calls,
        socket,
        line: line.clone(),
        broken,
        on_lost,
        epoll,
    };
    Ok(RelayHandle {
        worker: WorkerHandle::spawn("virtio-fs", stop, move || relay.run())?,
        line,
    })
}

struct Relay {
    tag: String,
    calls: Vec<EventFd>,
    socket: UnixStream,
    line: Line,
    broken: Arc<AtomicBool>,
    on_lost: Option<BackendLost>,
    epoll: Epoll,
}

impl Relay {
    fn run(self) {
        let mut events = vec![EpollEvent::default(); self.calls.len() + 2];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!(tag = %self.tag, "virtio-fs: epoll_wait failed, relay exits: {e}");
                    return;
                }
            };
            let mut used = false;
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => return,
                    TOKEN_SOCKET => self.backend_gone(),
                    i => {
                        if let Some(call) = usize::try_from(i).ok().and_then(|i| self.calls.get(i))
                        {
                            // Non-blocking: EAGAIN only means it is drained already.
                            let _ = call.read();
                            used = true;
                        }
                    }
                }
            }
            // One interrupt for every vring signalled in this batch.
            if let (true, Some(irq)) = (used, self.interrupt()) {
                if let Err(e) = irq.trigger(VIRTIO_MMIO_INT_VRING) {
                    crate::guest_warn!(tag = %self.tag, "virtio-fs: cannot interrupt the guest: {e}");
                }
            }
        }
    }

    fn interrupt(&self) -> Option<Arc<dyn Interrupt>> {
        self.line
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// virtiofsd closed its end (it exited or crashed): the share is gone
    /// for this VM. Tell the guest (DEVICE_NEEDS_RESET, which Linux does not
    /// act on: its requests in flight would wait forever), tell `on_lost`
    /// (which stops the VM), and stop watching.
    fn backend_gone(&self) {
        error!(
            tag = %self.tag,
            "virtio-fs: virtiofsd disconnected; the share is unavailable"
        );
        self.broken.store(true, Ordering::SeqCst);
        // Not active: the next activation fails and sets needs-reset then.
        if let Some(irq) = self.interrupt() {
            if let Err(e) = irq.set_needs_reset() {
                crate::guest_warn!(tag = %self.tag, "virtio-fs: cannot signal the guest: {e}");
            }
        }
        if let Some(lost) = &self.on_lost {
            lost(&self.tag);
        }
        // Level-triggered: the hang-up would fire again at every wait.
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            self.socket.as_raw_fd(),
            EpollEvent::default(),
        );
    }
}
