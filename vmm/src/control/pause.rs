//! Pausing and resuming the vCPUs. A request raises a flag and kicks every
//! vCPU thread out of KVM_RUN; each thread sees the flag before its next
//! entry and parks on a condvar until the flag drops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Why a pause or resume request did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseError {
    /// The VM is stopping; its vCPUs will not run again.
    #[error("the VM is stopping")]
    Stopping,
    /// Some vCPU threads did not reach the requested state in time.
    #[error("timed out: {done} of {total} vCPUs {what} after {waited:?}")]
    Timeout {
        /// How many reached the state.
        done: usize,
        /// How many vCPU threads there are.
        total: usize,
        /// "parked" or "running".
        what: &'static str,
        /// How long we waited.
        waited: Duration,
    },
}

/// Sends the kick signal to one vCPU thread.
pub type Kicker = fn(libc::pthread_t);

struct Inner {
    paused: bool,
    stopping: bool,
    /// vCPU threads that have not exited yet (counted from the start, so a
    /// thread that has not registered yet still counts).
    alive: usize,
    parked: usize,
    /// Registered (running) vCPU threads: only these may be kicked, and a
    /// thread unregisters under the lock before it exits.
    threads: Vec<libc::pthread_t>,
}

/// The pause state shared by the API and the vCPU threads.
pub struct PauseControl {
    // Read before every KVM_RUN: one atomic load on the hot path.
    requested: AtomicBool,
    inner: Mutex<Inner>,
    cond: Condvar,
    // Serialises pause/resume from different clients.
    op: Mutex<()>,
    kick: Kicker,
}

/// A vCPU thread's registration; unregisters it when dropped.
pub struct VcpuRegistration<'a> {
    ctl: &'a PauseControl,
    tid: libc::pthread_t,
}

impl Drop for VcpuRegistration<'_> {
    fn drop(&mut self) {
        let mut inner = self.ctl.lock();
        inner.threads.retain(|t| *t != self.tid);
        inner.alive = inner.alive.saturating_sub(1);
        self.ctl.cond.notify_all();
    }
}

impl PauseControl {
    /// State for `vcpus` vCPU threads, kicked with `kick`.
    pub fn new(vcpus: usize, kick: Kicker) -> Self {
        PauseControl {
            requested: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                paused: false,
                stopping: false,
                alive: vcpus,
                parked: 0,
                threads: Vec::with_capacity(vcpus),
            }),
            cond: Condvar::new(),
            op: Mutex::new(()),
            kick,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the calling vCPU thread as a kick target; call it before
    /// the run loop's first check of [`PauseControl::is_requested`].
    pub fn register(&self) -> VcpuRegistration<'_> {
        // SAFETY: pthread_self has no preconditions.
        let tid = unsafe { libc::pthread_self() };
        self.lock().threads.push(tid);
        VcpuRegistration { ctl: self, tid }
    }

    /// Whether the vCPU threads should park (checked before each KVM_RUN).
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Whether the VM is paused (or being paused).
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Parks the calling vCPU thread until a resume or a stop. `serve` runs
    /// before each wait, under the lock: it answers the post-mortem's
    /// snapshot requests ([`PauseControl::wake_parked`] wakes it for them).
    pub fn park(&self, mut serve: impl FnMut()) {
        let mut inner = self.lock();
        inner.parked += 1;
        self.cond.notify_all();
        while inner.paused && !inner.stopping {
            serve();
            inner = self
                .cond
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
        inner.parked -= 1;
        self.cond.notify_all();
    }

    /// Pauses every vCPU and returns once all are parked (idempotent).
    pub fn pause(&self, timeout: Duration) -> Result<(), PauseError> {
        let _op = self.op.lock().unwrap_or_else(PoisonError::into_inner);
        let mut inner = self.lock();
        if inner.stopping {
            return Err(PauseError::Stopping);
        }
        inner.paused = true;
        self.requested.store(true, Ordering::Release);
        // A thread between its flag check and KVM_RUN gets immediate_exit
        // from the kick's handler, so one kick per thread is enough.
        for &tid in &inner.threads {
            (self.kick)(tid);
        }
        self.wait_for(inner, timeout, "parked", |i| i.parked >= i.alive)
    }

    /// Resumes every vCPU and returns once none is parked (idempotent).
    pub fn resume(&self, timeout: Duration) -> Result<(), PauseError> {
        let _op = self.op.lock().unwrap_or_else(PoisonError::into_inner);
        let mut inner = self.lock();
        if inner.stopping {
            return Err(PauseError::Stopping);
        }
        inner.paused = false;
        self.requested.store(false, Ordering::Release);
        self.cond.notify_all();
        self.wait_for(inner, timeout, "running", |i| i.parked == 0)
    }

    /// Kicks every running vCPU thread out of KVM_RUN once (they go on
    /// running unless something else asks them to stop or park).
    pub fn kick_all(&self) {
        let inner = self.lock();
        for &tid in &inner.threads {
            (self.kick)(tid);
        }
    }

    /// Wakes parked threads so that they run their `serve` step; they stay
    /// parked. Taking the lock orders this after a thread's last check.
    pub fn wake_parked(&self) {
        let _inner = self.lock();
        self.cond.notify_all();
    }

    /// Releases parked threads for good: the VM is stopping.
    pub fn stop(&self) {
        let mut inner = self.lock();
        inner.stopping = true;
        self.cond.notify_all();
    }

    fn wait_for(
        &self,
        mut inner: MutexGuard<'_, Inner>,
        timeout: Duration,
        what: &'static str,
        done: impl Fn(&Inner) -> bool,
    ) -> Result<(), PauseError> {
        let start = Instant::now();
        loop {
            if inner.stopping {
                return Err(PauseError::Stopping);
            }
            if done(&inner) {
                return Ok(());
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                let count = if what == "parked" {
                    inner.parked
                } else {
                    inner.alive.saturating_sub(inner.parked)
                };
                return Err(PauseError::Timeout {
                    done: count,
                    total: inner.alive,
                    what,
                    waited: timeout,
                });
            }
            inner = self
                .cond
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    static KICKS: AtomicUsize = AtomicUsize::new(0);
    fn count_kick(_: libc::pthread_t) {
        KICKS.fetch_add(1, Ordering::SeqCst);
    }
    fn no_kick(_: libc::pthread_t) {}

    const T: Duration = Duration::from_secs(5);

    /// Fake vCPU threads: loop on the flag like the real run loop.
    fn spawn_vcpus(
        ctl: &Arc<PauseControl>,
        n: usize,
        stop: &Arc<AtomicBool>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (ctl, stop) = (ctl.clone(), stop.clone());
                std::thread::spawn(move || {
                    let _reg = ctl.register();
                    while !stop.load(Ordering::SeqCst) {
                        if ctl.is_requested() {
                            ctl.park(|| {});
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect()
    }

    #[test]
    fn pause_waits_for_every_vcpu_and_resume_releases_them() {
        let ctl = Arc::new(PauseControl::new(3, count_kick));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = spawn_vcpus(&ctl, 3, &stop);
        ctl.pause(T).unwrap();
        assert!(ctl.is_paused());
        assert_eq!(ctl.lock().parked, 3);
        // Idempotent both ways.
        ctl.pause(T).unwrap();
        ctl.resume(T).unwrap();
        assert_eq!(ctl.lock().parked, 0);
        assert!(!ctl.is_paused());
        ctl.resume(T).unwrap();
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ctl.lock().alive, 0);
        assert!(KICKS.load(Ordering::SeqCst) >= 3);
    }

    #[test]
    fn pause_times_out_when_a_vcpu_never_parks() {
        // Two vCPUs expected, none running: nobody parks.
        let ctl = PauseControl::new(2, no_kick);
        let err = ctl.pause(Duration::from_millis(20)).unwrap_err();
        assert!(
            matches!(
                err,
                PauseError::Timeout {
                    done: 0,
                    total: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("0 of 2 vCPUs parked"));
    }

    #[test]
    fn stop_releases_parked_threads_and_refuses_requests() {
        let ctl = Arc::new(PauseControl::new(1, no_kick));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = spawn_vcpus(&ctl, 1, &stop);
        ctl.pause(T).unwrap();
        ctl.stop();
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ctl.pause(T), Err(PauseError::Stopping));
        assert_eq!(ctl.resume(T), Err(PauseError::Stopping));
    }

    #[test]
    fn parked_threads_serve_when_woken_and_stay_parked() {
        let ctl = Arc::new(PauseControl::new(1, no_kick));
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let t = {
            let (ctl, served, stop) = (ctl.clone(), served.clone(), stop.clone());
            std::thread::spawn(move || {
                let _reg = ctl.register();
                while !stop.load(Ordering::SeqCst) {
                    if ctl.is_requested() {
                        ctl.park(|| {
                            served.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        ctl.pause(T).unwrap();
        let before = served.load(Ordering::SeqCst);
        assert!(before >= 1, "serves once on parking");
        ctl.wake_parked();
        let deadline = Instant::now() + T;
        while served.load(Ordering::SeqCst) == before {
            assert!(Instant::now() < deadline, "not woken");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(ctl.lock().parked, 1, "still parked");
        ctl.resume(T).unwrap();
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap();
    }

    #[test]
    fn exited_vcpus_do_not_block_a_pause() {
        let ctl = Arc::new(PauseControl::new(1, no_kick));
        drop(ctl.register());
        ctl.pause(T).unwrap();
    }
}
