//! The VMM's own output, bounded against a hostile guest: size-capped log
//! files ([`CappedFile`]), a rate limit on warnings the guest can trigger
//! ([`guest_warn!`](crate::guest_warn)), and escaping of guest-supplied
//! strings before they reach a log line or a terminal ([`escape`]).

mod capped;
mod escape;
mod ratelimit;

pub use capped::{CappedFile, SharedCappedFile};
pub use escape::{escape, Escaped, TerminalSafe};
pub use ratelimit::{RateLimit, BURST, REFILL};
