//! Rate-limited log lines: a hostile or broken peer must not flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Lets a log line through at most once per interval (shared by every caller of one limiter).
#[derive(Default)]
pub struct LogLimit {
    next_ms: AtomicU64,
}

impl LogLimit {
    pub const fn new() -> LogLimit {
        LogLimit {
            next_ms: AtomicU64::new(0),
        }
    }

    pub fn allow(&self, every: Duration) -> bool {
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + every.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}
