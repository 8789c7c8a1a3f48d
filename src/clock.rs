//! Time as the coordinators see it. Every deadline (sessions, rebalances, transactions) is
//! computed from a [`Clock`], so tests (and later a deterministic simulation) drive time
//! instead of sleeping: [`Clock::manual`] stands still until told to move.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Milliseconds since the Unix epoch, from the system or set by hand.
#[derive(Clone, Debug)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that reads `start_ms` until [`Clock::advance`] moves it.
    pub fn manual(start_ms: i64) -> Clock {
        Clock(Some(Arc::new(AtomicI64::new(start_ms))))
    }

    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(t) => t.load(Ordering::Acquire),
            None => crate::log::now_ms(),
        }
    }

    /// Moves a manual clock forward (a system clock cannot be moved: a no-op).
    pub fn advance(&self, ms: i64) {
        if let Some(t) = &self.0 {
            t.fetch_add(ms, Ordering::AcqRel);
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = Clock::manual(1_000);
        let shared = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        shared.advance(250);
        assert_eq!(c.now_ms(), 1_250);
        assert!(Clock::system().now_ms() > 1_600_000_000_000);
    }
}
