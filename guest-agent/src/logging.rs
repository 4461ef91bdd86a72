//! Log setup: terse lines on stderr, which is the serial console in the guest.

use std::fmt;

use nix::time::{clock_gettime, ClockId};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::prelude::*;

/// Environment variable holding the agent's log level (`error` … `trace`).
///
/// In the guest it can be set on the kernel command line
/// (`VESSEL_AGENT_LOG=debug`), since the kernel hands unknown `key=value`
/// parameters to init as environment.
pub const LOG_ENV: &str = "VESSEL_AGENT_LOG";

/// Stamps lines with `CLOCK_BOOTTIME`, the clock of the kernel's own console
/// lines, so agent and kernel timings line up on the serial log.
struct BootTime;

impl FormatTime for BootTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match clock_gettime(ClockId::CLOCK_BOOTTIME) {
            Ok(ts) => write!(w, "[{:5}.{:06}]", ts.tv_sec(), ts.tv_nsec() / 1000),
            Err(_) => write!(w, "[?]"),
        }
    }
}

/// Installs the global subscriber; the level comes from [`LOG_ENV`] (default `info`).
///
/// Only this crate logs at that level: tonic, h2 and hyper stay at `warn`,
/// because every serial byte costs the guest a VM exit.
pub fn init() {
    let level = std::env::var(LOG_ENV)
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let filter = Targets::new()
        .with_target("vessel_agent", level)
        .with_default(LevelFilter::WARN);
    let layer = tracing_subscriber::fmt::layer()
        .compact()
        .with_ansi(false)
        .with_target(false)
        .with_timer(BootTime)
        .with_writer(std::io::stderr);
    // Fails only if a subscriber is already set (e.g. by a test): keep that one.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
}
