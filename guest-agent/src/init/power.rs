//! Ending the VM: sync and reboot, which with `reboot=k` resets through the
//! i8042 and makes the VMM exit.

use std::time::Duration;

use nix::sys::reboot::RebootMode;

/// Syncs filesystems and reboots the guest; never returns.
///
/// If the reboot syscall itself fails there is nothing better to do than to
/// stay alive: returning would panic the kernel and hide the log line.
pub fn reboot(reason: &str) -> ! {
    tracing::info!(reason, "rebooting guest");
    reboot_now()
}

/// [`reboot`] without logging, for the panic hook.
fn reboot_now() -> ! {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(RebootMode::RB_AUTOBOOT) {
        Ok(never) => match never {},
        Err(errno) => eprintln!("vessel-agent: reboot failed ({errno}); idling"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Makes the kernel send SIGINT to PID 1 on ctrl-alt-del instead of
/// restarting at once, so the VMM's graceful shutdown request (it types
/// ctrl-alt-del) reaches the agent's orderly shutdown. Call once the SIGINT
/// handler is in place: init ignores signals it has no handler for.
pub fn ctrl_alt_del_signals_init() {
    match nix::sys::reboot::set_cad_enabled(false) {
        Ok(()) => tracing::info!("ctrl-alt-del now sends SIGINT to the agent"),
        Err(errno) => tracing::warn!(
            %errno,
            "cannot route ctrl-alt-del to the agent; it restarts the guest at once"
        ),
    }
}

/// Makes a panic anywhere in PID 1 reboot the guest (after printing it) rather
/// than abort, which would panic the kernel.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        // eprintln, not tracing: the subscriber may be what panicked.
        eprintln!("vessel-agent: panic in PID 1, rebooting: {info}");
        reboot_now();
    }));
}
