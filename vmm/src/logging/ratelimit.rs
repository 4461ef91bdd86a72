//! A token bucket per log call site for warnings a guest can trigger at
//! will (two MMIO writes can hit most of them): a burst of [`BURST`], then
//! one per [`REFILL`], and the next line that goes out says how many were
//! suppressed in between. Hand-written: a dozen lines, where the crates
//! that do it (governor) bring far more than one counter needs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines a call site may log at once.
pub const BURST: u64 = 10;
/// Time for one more line once the burst is spent.
pub const REFILL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Bucket {
    tokens: u64,
    refilled: Option<Instant>,
    suppressed: u64,
}

/// One call site's limit; `const`, so it lives in a `static`.
#[derive(Debug)]
pub struct RateLimit(Mutex<Bucket>);

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimit {
    /// A full bucket.
    pub const fn new() -> Self {
        RateLimit(Mutex::new(Bucket {
            tokens: BURST,
            refilled: None,
            suppressed: 0,
        }))
    }

    /// Whether a line may go out now: `Some(n)` with the number of lines
    /// suppressed since the last one that went out, `None` to drop it.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// [`RateLimit::check`] at a given time (for tests).
    pub fn check_at(&self, now: Instant) -> Option<u64> {
        let mut b = match self.0.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let since = *b.refilled.get_or_insert(now);
        let earned = (now.saturating_duration_since(since).as_nanos() / REFILL.as_nanos()) as u64;
        if earned > 0 {
            b.tokens = (b.tokens + earned).min(BURST);
            b.refilled = Some(since + REFILL * earned.min(u64::from(u32::MAX)) as u32);
        }
        if b.tokens == 0 {
            b.suppressed += 1;
            return None;
        }
        b.tokens -= 1;
        Some(std::mem::take(&mut b.suppressed))
    }
}

/// `tracing::warn!` for what a guest can trigger: rate-limited per call
/// site, with a `suppressed` field counting the lines dropped before it.
#[macro_export]
macro_rules! guest_warn {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::logging::RateLimit = $crate::logging::RateLimit::new();
        match LIMIT.check() {
            Some(0) => ::tracing::warn!($($arg)+),
            Some(suppressed) => ::tracing::warn!(suppressed, $($arg)+),
            None => {}
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_and_counts_what_it_dropped() {
        let limit = RateLimit::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limit.check_at(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(limit.check_at(t0), None);
        }
        assert_eq!(limit.check_at(t0 + REFILL), Some(1000));
        assert_eq!(limit.check_at(t0 + REFILL), None);
        assert_eq!(limit.check_at(t0 + REFILL * 100), Some(1));
        for _ in 1..BURST {
            assert_eq!(limit.check_at(t0 + REFILL * 100), Some(0));
        }
        assert_eq!(limit.check_at(t0 + REFILL * 100), None);
    }

    #[test]
    fn a_flood_of_guest_warnings_logs_a_bounded_number_of_lines() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Lines::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100_000 {
                crate::guest_warn!(i, "guest did something odd");
            }
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines = text.lines().count() as u64;
        assert!(
            (BURST..=BURST + 2).contains(&lines),
            "{lines} lines:\n{text}"
        );
    }
}
