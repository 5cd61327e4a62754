//! The agent's durability policy for applied-level receipts: when an applied batch's journal
//! write may wait to share one fsync with the batches after it, and when it must not.

use crate::persist::JournalBatch;
use std::time::{Duration, Instant};

/// Batches applied and reported `Applied` whose journal write waits, at most `delay`, to
/// share one fsync with the batches after them.
///
/// A wake-up costs as much as an fsync here, so the write rides on wake-ups the link has
/// anyway: a frame arriving after half the delay writes the group (its own batch included).
/// The timer, at the full delay, only ends a burst.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// The held batches, in order.
    pub(super) batches: Vec<JournalBatch>,
    /// `--applied-fsync-delay`.
    pub(super) delay: Duration,
    /// When the oldest held batch was applied.
    pub(super) since: Option<Instant>,
}

impl Held {
    /// The latest time the held group is written.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.since.map(|t| t + self.delay)
    }

    /// True once half the delay has passed: a frame arriving now writes the group.
    fn ripe(&self, now: Instant) -> bool {
        self.since.is_some_and(|t| now >= t + self.delay / 2)
    }

    /// Whether `group`, just applied at `now`, is held back (true) or written now (false). It is
    /// held only while the link is up, every batch in it was awaited at the applied level, a
    /// delay is configured, the oldest held batch is younger than half the delay, and it holds
    /// at most [`MAX_HELD_ENTRIES`] entries. Anything else writes everything at once: a
    /// durable wait must not wait for a timer, and a lost link must not leave writes behind.
    pub(super) fn holds(&self, group: Group, now: Instant) -> bool {
        group.linked
            && !group.durable_awaited
            && group.batches > 0
            && !self.delay.is_zero()
            && !self.ripe(now)
            && group.entries <= MAX_HELD_ENTRIES
    }
}

/// What [`Held::holds`] decides on: the group of batches applied together.
#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    /// The link is up (its `Applied` report went out ahead of the write).
    pub(super) linked: bool,
    /// Some batch in it was awaited at the durable level.
    pub(super) durable_awaited: bool,
    /// Entries in it, held ones included.
    pub(super) entries: usize,
    /// Batches in it, held ones included.
    pub(super) batches: usize,
}

/// Most entries held back from the journal; a group beyond is written at once.
pub(super) const MAX_HELD_ENTRIES: usize = 4 * revmesh_protocol::frame::MAX_ENTRIES_PER_FRAME;

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(100);

    fn group(entries: usize) -> Group {
        Group { linked: true, durable_awaited: false, entries, batches: 1 }
    }

    /// Each row: what differs from a group that is held, and whether it is then held.
    #[test]
    fn a_group_is_held_only_when_every_condition_allows_it() {
        let t0 = revmesh_runtime::Clock::system().mono();
        let fresh = Held { delay: DELAY, ..Held::default() };
        let rows: [(&str, Held, Group, Instant, bool); 8] = [
            (
                "an applied-level group on a live link",
                Held { delay: DELAY, ..Held::default() },
                group(1),
                t0,
                true,
            ),
            (
                "a durable wait in the group",
                Held { delay: DELAY, ..Held::default() },
                Group { durable_awaited: true, ..group(1) },
                t0,
                false,
            ),
            (
                "no link to report on",
                Held { delay: DELAY, ..Held::default() },
                Group { linked: false, ..group(1) },
                t0,
                false,
            ),
            ("no delay configured", Held::default(), group(1), t0, false),
            (
                "an empty group",
                Held { delay: DELAY, ..Held::default() },
                Group { batches: 0, ..group(0) },
                t0,
                false,
            ),
            (
                "too many entries",
                Held { delay: DELAY, ..Held::default() },
                group(MAX_HELD_ENTRIES + 1),
                t0,
                false,
            ),
            (
                "the oldest held batch is just younger than half the delay",
                Held { since: Some(t0), ..Held { delay: DELAY, ..Held::default() } },
                group(2),
                t0 + DELAY / 2 - Duration::from_millis(1),
                true,
            ),
            (
                "the oldest held batch is half the delay old",
                Held { since: Some(t0), ..Held { delay: DELAY, ..Held::default() } },
                group(2),
                t0 + DELAY / 2,
                false,
            ),
        ];
        for (what, held, g, now, want) in rows {
            assert_eq!(held.holds(g, now), want, "{what}");
        }
        assert!(fresh.holds(group(MAX_HELD_ENTRIES), t0), "the limit itself is still held");
    }

    #[test]
    fn the_deadline_is_the_oldest_held_batch_plus_the_delay() {
        let t0 = revmesh_runtime::Clock::system().mono();
        assert_eq!(Held { delay: DELAY, ..Held::default() }.deadline(), None, "nothing held, no timer");
        let held = Held { delay: DELAY, since: Some(t0), ..Held::default() };
        assert_eq!(held.deadline(), Some(t0 + DELAY));
    }
}
