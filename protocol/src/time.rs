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

/// Parses a human duration such as `250ms`, `30s`, `5m`, `24h` or `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{text}` is not a duration (try 30s, 5m, 24h)"))?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => return Err(format!("`{text}` has an unknown unit `{unit}` (use ms, s, m, h or d)")),
    };
    d.ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let ok = |s: &str, d: Duration| assert_eq!(parse_duration(s), Ok(d), "{s}");
        ok("250ms", Duration::from_millis(250));
        ok("30", Duration::from_secs(30));
        ok("30s", Duration::from_secs(30));
        ok("5m", Duration::from_secs(300));
        ok("24h", Duration::from_secs(86_400));
        ok("2d", Duration::from_secs(172_800));
        for bad in ["", "s", "-1s", "1.5s", "3w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_is_capped_and_jitter_bounded() {
        let max = Duration::from_secs(30);
        assert_eq!(backoff(Duration::from_secs(1), 3, max), Duration::from_secs(8));
        assert_eq!(backoff(Duration::from_secs(1), 40, max), max);
        let mut j = Jitter::new(7);
        for _ in 0..1000 {
            let d = j.jitter(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
        }
    }
}
