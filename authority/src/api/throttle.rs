//! Refused admin credentials, per source: counted, logged, and limited, so that the admin token
//! cannot be guessed at line rate (docs/security.md).
//!
//! A source (an IPv4 address, or an IPv6 /64) may present a missing or wrong token
//! [`ALLOWED`] times per [`WINDOW`]; after that its requests get 429 without their token being
//! looked at, until the window ends. The table is bounded: at [`MAX_SOURCES`] expired windows
//! are dropped first, then the oldest.

use revmesh_runtime::Clock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Refusals a source may collect in one window.
pub const ALLOWED: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at most.
pub const MAX_SOURCES: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Strikes {
    since_ms: u64,
    count: u32,
}

/// Refusals per source.
#[derive(Debug)]
pub struct Throttle {
    sources: Mutex<HashMap<IpAddr, Strikes>>,
    clock: Clock,
}

/// What a request's source is counted as: the address, or its /64 for IPv6 (a host usually
/// holds a whole /64).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
        v4 => v4,
    }
}

impl Throttle {
    /// An empty table reading time from `clock`.
    pub fn new(clock: Clock) -> Self {
        Self { sources: Mutex::new(HashMap::new()), clock }
    }

    /// How long `ip` must wait before its token is looked at again; `None` when it may ask now.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = self.clock.unix_ms();
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let s = sources.get(&source(ip))?;
        let ends = s.since_ms + WINDOW.as_millis() as u64;
        (s.count >= ALLOWED && now < ends).then(|| Duration::from_millis(ends - now))
    }

    /// Records a refusal of `ip`'s credentials; returns its refusals in the current window.
    pub fn refused(&self, ip: IpAddr) -> u32 {
        let now = self.clock.unix_ms();
        let window = WINDOW.as_millis() as u64;
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let key = source(ip);
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&key) {
            sources.retain(|_, s| now < s.since_ms + window);
            if sources.len() >= MAX_SOURCES {
                if let Some(oldest) = sources.iter().min_by_key(|(_, s)| s.since_ms).map(|(k, _)| *k) {
                    sources.remove(&oldest);
                }
            }
        }
        let s = sources.entry(key).or_insert(Strikes { since_ms: now, count: 0 });
        if now >= s.since_ms + window {
            *s = Strikes { since_ms: now, count: 0 };
        }
        s.count = s.count.saturating_add(1);
        s.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_limited_to_its_allowance_per_window() {
        let clock = Clock::manual(1_000_000);
        let t = Throttle::new(clock.clone());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for n in 1..=ALLOWED {
            assert_eq!(t.blocked(ip), None);
            assert_eq!(t.refused(ip), n);
        }
        assert_eq!(t.blocked(ip), Some(WINDOW));
        assert_eq!(t.blocked("192.0.2.8".parse().unwrap()), None, "another source is not held");
        clock.advance(WINDOW.as_millis() as u64 - 1);
        assert_eq!(t.blocked(ip), Some(Duration::from_millis(1)));
        clock.advance(1);
        assert_eq!(t.blocked(ip), None, "a new window");
        assert_eq!(t.refused(ip), 1);
    }

    #[test]
    fn an_ipv6_host_is_one_source_and_the_table_is_bounded() {
        let t = Throttle::new(Clock::manual(0));
        for i in 0..ALLOWED {
            t.refused(format!("2001:db8:1:2::{i:x}").parse().unwrap());
        }
        assert!(t.blocked("2001:db8:1:2:ffff::1".parse().unwrap()).is_some(), "one /64");
        for i in 0..(MAX_SOURCES as u32 + 50) {
            t.refused(IpAddr::V4(std::net::Ipv4Addr::from(i)));
        }
        assert!(t.sources.lock().unwrap().len() <= MAX_SOURCES);
    }
}
