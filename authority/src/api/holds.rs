//! Guessing resistance on the admin API: each client address (an IPv4 address, an IPv6 /64)
//! may present [`BURST`] wrong bearer tokens, then one per [`REFILL`]; beyond that its bearer
//! tokens are answered 429 without being looked at, so a token cannot be guessed at line rate
//! (README, "Operators and the audit trail").
//!
//! Only a token that was presented and is wrong counts: a request without credentials (a
//! health checker, a slow-client attack) holds nobody. Operators that authenticate with a
//! client certificate are never held: a certificate cannot be guessed. Other addresses are
//! unaffected. What a hold cannot do is tell the operator apart from a guesser at the same
//! address before looking at the token; docs/security.md says how to keep them apart.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens an address may present at once.
pub const BURST: f64 = 10.0;
/// Time for one more.
pub const REFILL: Duration = Duration::from_secs(1);
/// Addresses tracked at most; beyond, addresses whose allowance is whole again are dropped,
/// and when none is, a new address is not tracked (memory stays bounded under a flood of
/// addresses, and nobody is held by mistake).
const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: f64,
    at: Instant,
}

impl Allowance {
    fn refilled(self, now: Instant) -> f64 {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        (self.left + gained).min(BURST)
    }
}

/// Per-address allowances of wrong tokens, and when the table was last swept of addresses
/// whose allowance is whole again (at most once per [`REFILL`], so a flood of new addresses at a
/// full table costs one scan a second, not one per request).
#[derive(Debug, Default)]
pub struct Holds(Mutex<(Allowances, Option<Instant>)>);

/// Allowances by address key.
type Allowances = HashMap<[u8; 16], Allowance>;

/// The key of an address: IPv4 whole, IPv6 by its /64 (one host holds a whole /64).
fn key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            if v6.to_ipv4_mapped().is_none() {
                o[8..].fill(0);
            }
            o
        }
    }
}

impl Holds {
    /// `Some(retry_after)` when `ip` has used up its allowance: its token is not to be checked.
    pub fn held(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let a = guard.0.get(&key(ip))?;
        let left = a.refilled(now);
        (left < 1.0).then(|| REFILL.mul_f64(1.0 - left))
    }

    /// `ip` presented a wrong token.
    pub fn wrong(&self, ip: IpAddr, now: Instant) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (map, swept) = &mut *guard;
        let k = key(ip);
        if !map.contains_key(&k) && map.len() >= MAX_TRACKED {
            if swept.is_none_or(|t| now.saturating_duration_since(t) >= REFILL) {
                *swept = Some(now);
                map.retain(|_, a| a.refilled(now) < BURST);
            }
            if map.len() >= MAX_TRACKED {
                return;
            }
        }
        let a = map.entry(k).or_insert(Allowance { left: BURST, at: now });
        *a = Allowance { left: (a.refilled(now) - 1.0).max(0.0), at: now };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_held_after_its_burst_and_let_go_as_it_refills() {
        let h = Holds::default();
        let t0 = revmesh_runtime::Clock::system().mono();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..10 {
            assert!(h.held(ip, t0).is_none());
            h.wrong(ip, t0);
        }
        let wait = h.held(ip, t0).expect("held after the burst");
        assert!(wait <= REFILL);
        assert!(h.held("192.0.2.8".parse().unwrap(), t0).is_none(), "other addresses are not");
        assert!(h.held(ip, t0 + REFILL).is_none(), "one more after the refill");
        h.wrong(ip, t0 + REFILL);
        assert!(h.held(ip, t0 + REFILL).is_some());
    }

    /// A full table drops addresses whose allowance is whole again, and otherwise stops
    /// tracking new ones (memory stays bounded; nobody is held by mistake).
    #[test]
    fn the_table_stays_bounded() {
        let h = Holds::default();
        let t0 = revmesh_runtime::Clock::system().mono();
        for i in 0..MAX_TRACKED as u32 + 10 {
            h.wrong(IpAddr::V4(std::net::Ipv4Addr::from(i)), t0);
        }
        assert_eq!(h.0.lock().expect("lock").0.len(), MAX_TRACKED);
        // Once the first ones have their allowance back they make room for a new address.
        let later = t0 + REFILL * 20;
        h.wrong("198.51.100.1".parse().unwrap(), later);
        assert_eq!(h.0.lock().expect("lock").0.len(), 1);
    }

    #[test]
    fn ipv6_hosts_are_held_by_their_64() {
        let h = Holds::default();
        let t0 = revmesh_runtime::Clock::system().mono();
        for i in 0..10u16 {
            h.wrong(IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i)), t0);
        }
        assert!(h.held("2001:db8:0:1::ffff".parse().unwrap(), t0).is_some());
        assert!(h.held("2001:db8:0:2::1".parse().unwrap(), t0).is_none());
    }
}
