//! Time as an input: the state machines never read a clock, callers pass [`Now`] in.

use std::time::{Duration, Instant};

/// The two clocks a protocol step may need, sampled once by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timeouts and backoff.
    pub mono: Instant,
    /// Wall clock, unix milliseconds, for expiry and heartbeats.
    pub unix_ms: u64,
}

impl Now {
    /// Wall clock in whole unix seconds.
    pub fn unix_secs(&self) -> u64 {
        self.unix_ms / 1000
    }

    /// The same moment advanced by `d` on both clocks (used by simulations and tests).
    pub fn advance(self, d: Duration) -> Self {
        Self { mono: self.mono + d, unix_ms: self.unix_ms + d.as_millis() as u64 }
    }
}

/// Small deterministic PRNG (SplitMix64) for jitter; seeded by the caller so runs replay.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A duration uniformly drawn from `[d/2, d]` ("equal jitter").
    pub fn jitter(&mut self, d: Duration) -> Duration {
        let half = d / 2;
        let nanos = half.as_nanos().min(u128::from(u64::MAX)) as u64;
        half + Duration::from_nanos(if nanos == 0 { 0 } else { self.next_u64() % (nanos + 1) })
    }
}

/// `base * 2^attempt`, capped at `max`.
pub fn backoff(base: Duration, attempt: u32, max: Duration) -> Duration {
    base.checked_mul(1u32 << attempt.min(20)).unwrap_or(max).min(max)
}
