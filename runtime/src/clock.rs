//! The one clock of a driver: every wall-clock and monotonic reading of the authority and the
//! agent goes through a [`Clock`] handed to the component, so a test can hold wall time still
//! or move it by hand.

use revmesh_protocol::Now;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Wall and monotonic time. Cheap to clone; clones share one source.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    /// Wall time set by hand (unix ms); monotonic time still comes from the system (tokio's
    /// paused time drives timers on its own).
    Manual(AtomicU64),
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system's clocks.
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A wall clock that stands at `unix_ms` until [`Clock::advance`] or [`Clock::set`].
    pub fn manual(unix_ms: u64) -> Self {
        Self(Arc::new(Source::Manual(AtomicU64::new(unix_ms))))
    }

    /// Wall clock, unix milliseconds (0 before 1970).
    // The one place a binary reads the system's clocks (clippy.toml disallows it elsewhere).
    #[allow(clippy::disallowed_methods)]
    pub fn unix_ms(&self) -> u64 {
        match &*self.0 {
            Source::System => {
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
            }
            Source::Manual(ms) => ms.load(Ordering::Acquire),
        }
    }

    /// Wall clock, unix seconds.
    pub fn unix_secs(&self) -> u64 {
        self.unix_ms() / 1000
    }

    /// Monotonic time.
    #[allow(clippy::disallowed_methods)]
    pub fn mono(&self) -> Instant {
        Instant::now()
    }

    /// Both readings, for the protocol's state machines.
    pub fn now(&self) -> Now {
        Now { mono: self.mono(), unix_ms: self.unix_ms() }
    }

    /// Moves a manual clock forward (a system clock is not moved).
    pub fn advance(&self, ms: u64) {
        if let Source::Manual(t) = &*self.0 {
            t.fetch_add(ms, Ordering::AcqRel);
        }
    }

    /// Sets a manual clock (a system clock is not moved).
    pub fn set(&self, unix_ms: u64) {
        if let Source::Manual(t) = &*self.0 {
            t.store(unix_ms, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_by_hand_and_clones_share_it() {
        let c = Clock::manual(5_000);
        let d = c.clone();
        assert_eq!(c.unix_secs(), 5);
        d.advance(1_500);
        assert_eq!(c.unix_ms(), 6_500);
        c.set(42);
        assert_eq!(d.now().unix_ms, 42);
    }

    #[test]
    fn the_system_clock_is_past_2020() {
        assert!(Clock::system().unix_secs() > 1_577_836_800);
    }
}
