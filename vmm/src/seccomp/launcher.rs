//! The launcher: a thread that starts device worker threads on request.
//!
//! Devices are activated by a guest MMIO write, so on a vCPU thread; a
//! worker started there would inherit the vCPU filter (filters are
//! inherited and only ever add restrictions), so every worker would need
//! everything the vCPU and all devices need. The launcher runs under the
//! union of the device rules and thread creation; each worker then narrows
//! itself to the device role before running its loop.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use super::Role;

type Body = Box<dyn FnOnce() + Send + 'static>;

/// A request to start one worker; the reply carries its handle.
struct Request {
    name: String,
    role: Role,
    body: Body,
    reply: SyncSender<io::Result<JoinHandle<()>>>,
}

static LAUNCHER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();

/// Starts the launcher thread (once, after the filters are active).
pub(super) fn start() -> io::Result<()> {
    let (tx, rx) = mpsc::channel();
    crate::threads::builder("launcher").spawn(move || run(rx))?;
    if LAUNCHER.set(Mutex::new(tx)).is_err() {
        tracing::warn!("device launcher already running");
    }
    Ok(())
}

fn run(rx: Receiver<Request>) {
    if super::enter(Role::Launcher).is_err() {
        return;
    }
    for req in rx {
        let (body, role) = (req.body, req.role);
        let spawned = crate::threads::builder(req.name).spawn(move || {
            if super::enter(role).is_ok() {
                body();
            }
        });
        // The requester waits for the reply; it is gone only if its
        // thread is gone too, and then nobody needs the handle.
        let _ = req.reply.send(spawned);
    }
}

/// Starts a device worker thread named `name` running `body` under the
/// filter of `role` (a device role). Without active filters
/// (`--seccomp=off`, unit tests) it is a plain `std::thread` spawn.
pub fn spawn_worker<F>(name: &str, role: Role, body: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let Some(launcher) = LAUNCHER.get() else {
        return spawn_direct(name, role, body);
    };
    let (reply, answer) = mpsc::sync_channel(1);
    let req = Request {
        name: name.to_string(),
        role,
        body: Box::new(body),
        reply,
    };
    let sent = launcher
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(req);
    if sent.is_err() {
        return Err(io::Error::other("the device launcher thread is gone"));
    }
    answer
        .recv()
        .map_err(|_| io::Error::other("the device launcher thread is gone"))?
}

#[cfg(not(test))]
fn spawn_direct<F>(name: &str, _role: Role, body: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    crate::threads::builder(name).spawn(body)
}

/// Unit tests: with `VESSEL_VMM_TEST_DEVICE_SECCOMP=1` every worker runs
/// under its real device filter (kill), so the device tests prove the
/// filter covers what the workers do (see `seccomp::tests`).
#[cfg(test)]
fn spawn_direct<F>(name: &str, role: Role, body: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let confine = std::env::var_os(super::tests::DEVICE_FILTER_ENV).is_some();
    crate::threads::builder(name).spawn(move || {
        if confine {
            if let Err(e) = super::install_now(role, seccompiler::SeccompAction::KillProcess) {
                panic!("cannot install the device filter: {e}");
            }
        }
        body()
    })
}
