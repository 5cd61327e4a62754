//! The in-memory revocation set: O(1) answers to "does any entry revoke this token?".
//!
//! `jti` revocations dominate in number, so they live in [`JtiTable`], an open-addressing
//! Robin Hood table of fixed 24-byte slots holding a 96-bit digest of `iss`+`jti` instead of
//! the strings. The other kinds are few (one per user, key or session) and keep their strings
//! in ordinary hash maps.
//!
//! The digest is xxh3-128, not a cryptographic hash. That is deliberate: the inputs are
//! identifiers minted by the token issuer, and a collision could only make the set report a
//! token as revoked that is not (it fails closed, never open).

use crate::model::{Entry, EntryView, Kind, RevocationView, TokenRef, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Fixed-size digest of a `jti` revocation key (`iss` + `jti`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JtiDigest {
    /// First 64 bits; also picks the home slot.
    pub hi: u64,
    /// Next 32 bits.
    pub lo: u32,
}

impl JtiDigest {
    /// Digest of a `jti` with an optional `iss`. The issuer selects the hash seed, so `None`
    /// (seed 0) never collides with any issuer by construction (issuer seeds are odd).
    pub fn new(iss: Option<&str>, jti: &str) -> Self {
        let seed = iss.map_or(0, |iss| xxhash_rust::xxh3::xxh3_64(iss.as_bytes()) | 1);
        let d = xxhash_rust::xxh3::xxh3_128_with_seed(jti.as_bytes(), seed);
        Self { hi: d as u64, lo: (d >> 64) as u32 }
    }
}

/// One slot: 24 bytes. `seq == 0` marks an empty slot (seqs start at 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JtiSlot {
    /// Digest, high part.
    pub hi: u64,
    /// Seq of the revoking entry.
    pub seq: u64,
    /// Digest, low part.
    pub lo: u32,
    /// Expiry, unix seconds (saturated at `u32::MAX`, the year 2106).
    pub expires_at: u32,
}

/// A [`JtiTable`] as laid out in memory, for a state file that loads without rebuilding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableImage {
    /// The home multiplier.
    pub mult: u64,
    /// Every slot, empty ones (`seq == 0`) included.
    pub slots: Vec<JtiSlot>,
}

/// Robin Hood hash table of [`JtiSlot`]s with linear probing and backward-shift deletion.
///
/// The capacity need not be a power of two (slots are picked by multiply-shift), so the
/// table grows by 1.5× and stays between ~57% and 85% full: 28–42 bytes per entry.
///
/// The home slot is `hi` scrambled by a multiplier that depends on the capacity, then
/// range-reduced. Range reduction alone is monotonic in `hi`, so digests arriving in table
/// order (a snapshot, a rehash) or sorted would all have their homes in a small prefix of a
/// smaller table: one giant cluster, and quadratic insertion. With a per-capacity scramble an
/// order that is sorted for one capacity is a pseudo-random one for every other.
#[derive(Clone, Debug, Default)]
pub struct JtiTable {
    slots: Vec<JtiSlot>,
    len: usize,
    /// Odd multiplier for the current capacity.
    mult: u64,
    /// Slots examined by insertions (tests check that insertion stays linear in any order).
    #[cfg(test)]
    probes: u64,
}

const MIN_CAPACITY: usize = 16;

impl JtiTable {
    /// Number of digests stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the table's slot array.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<JtiSlot>()
    }

    /// A table with room for `n` digests without growing. Its homes are the digests range-reduced
    /// without a scramble, so digests inserted in ascending `hi` order (as a snapshot lists them)
    /// land one after another: a sequential, cache-friendly pass. Any other order costs the same
    /// probes (in a table that does not grow, linear probing's total displacement does not depend
    /// on the order); the scramble returns with the first growth.
    pub fn with_capacity(n: usize) -> Self {
        let mut t = Self::default();
        if n > 0 {
            t.rehash((n * 20 / 17 + 1).max(MIN_CAPACITY));
            t.mult = 1;
        }
        t
    }

    /// Makes room for `additional` more digests without growing while they arrive (an agent
    /// about to catch up). Growing by steps rehashes every digest each time; one rehash to the
    /// final size halves what applying a catch-up costs.
    pub fn reserve(&mut self, additional: usize) {
        let want = self.len.saturating_add(additional);
        if want.saturating_mul(20) > self.slots.len().saturating_mul(17) {
            self.rehash((want.saturating_mul(20) / 17 + 1).max(MIN_CAPACITY));
        }
    }

    fn multiplier(capacity: usize) -> u64 {
        (capacity as u64 ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
    }

    fn home(&self, hi: u64) -> usize {
        ((u128::from(hi.wrapping_mul(self.mult)) * self.slots.len() as u128) >> 64) as usize
    }

    fn distance(&self, index: usize) -> usize {
        let home = self.home(self.slots[index].hi);
        // Both are below the capacity: a wrap costs an addition, not a division.
        if index >= home {
            index - home
        } else {
            index + self.slots.len() - home
        }
    }

    /// The slot after `index`, wrapping. A 64-bit division on every probe step was the larger
    /// part of an insert's cost.
    fn next(index: usize, cap: usize) -> usize {
        if index + 1 == cap {
            0
        } else {
            index + 1
        }
    }

    fn find(&self, d: JtiDigest) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let cap = self.slots.len();
        let mut i = self.home(d.hi);
        let mut dist = 0;
        loop {
            let s = &self.slots[i];
            if s.seq == 0 || self.distance(i) < dist {
                return None;
            }
            if s.hi == d.hi && s.lo == d.lo {
                return Some(i);
            }
            i = Self::next(i, cap);
            dist += 1;
            if dist > cap {
                return None;
            }
        }
    }

    /// Looks a digest up: `(seq, expires_at)` of the revoking entry.
    pub fn get(&self, d: JtiDigest) -> Option<(u64, u32)> {
        self.find(d).map(|i| (self.slots[i].seq, self.slots[i].expires_at))
    }

    /// Inserts or extends a digest. An existing digest keeps its first seq and the later expiry.
    ///
    /// One walk from the digest's home both looks it up and finds its place: by the Robin Hood
    /// invariant, the digest is absent once the walk meets an empty slot or a resident closer
    /// to its own home than the digest would be, and that is where it goes.
    pub fn insert(&mut self, d: JtiDigest, seq: u64, expires_at: u64) {
        debug_assert!(seq != 0);
        let expires_at = u32::try_from(expires_at).unwrap_or(u32::MAX);
        if (self.len + 1) * 20 > self.slots.len() * 17 {
            if let Some(i) = self.find(d) {
                let s = &mut self.slots[i];
                s.expires_at = s.expires_at.max(expires_at);
                return;
            }
            let grown = (self.slots.len() * 3 / 2).max(MIN_CAPACITY);
            self.rehash(grown);
        }
        let cap = self.slots.len();
        let mut i = self.home(d.hi);
        let mut dist = 0;
        loop {
            #[cfg(test)]
            {
                self.probes += 1;
            }
            let s = self.slots[i];
            if s.seq == 0 || self.distance(i) < dist {
                break;
            }
            if s.hi == d.hi && s.lo == d.lo {
                self.slots[i].expires_at = s.expires_at.max(expires_at);
                return;
            }
            i = Self::next(i, cap);
            dist += 1;
        }
        self.place(JtiSlot { hi: d.hi, seq, lo: d.lo, expires_at }, i, dist);
        self.len += 1;
    }

    fn insert_new(&mut self, slot: JtiSlot) {
        let home = self.home(slot.hi);
        self.place(slot, home, 0);
    }

    /// Puts `slot` at `i` (which is `dist` past its home) or further on, moving richer
    /// residents along (Robin Hood). The digest must not be in the table.
    fn place(&mut self, mut slot: JtiSlot, mut i: usize, mut dist: usize) {
        let cap = self.slots.len();
        loop {
            #[cfg(test)]
            {
                self.probes += 1;
            }
            if self.slots[i].seq == 0 {
                self.slots[i] = slot;
                return;
            }
            let existing = self.distance(i);
            if existing < dist {
                // Robin Hood: the richer resident moves on, the poorer newcomer takes its place.
                std::mem::swap(&mut self.slots[i], &mut slot);
                dist = existing;
            }
            i = Self::next(i, cap);
            dist += 1;
        }
    }

    fn rehash(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![JtiSlot::default(); capacity]);
        self.mult = Self::multiplier(capacity);
        for s in old.into_iter().filter(|s| s.seq != 0) {
            self.insert_new(s);
        }
    }

    /// The table as it is laid out: its multiplier and every slot, empty ones included.
    pub fn image(&self) -> TableImage {
        TableImage { mult: self.mult, slots: self.slots.clone() }
    }

    /// Adopts a table laid out by [`Self::image`], after checking that every digest can be
    /// found from its home (each slot's probe distance is at most one more than its
    /// predecessor's, with no empty slot in between) and that the load is within bounds. A
    /// damaged image is refused, never trusted: a digest that cannot be found would be a
    /// revoked token answered OK.
    pub fn from_image(image: TableImage) -> Result<Self, String> {
        let TableImage { mult, slots } = image;
        if slots.is_empty() {
            return Ok(Self::default());
        }
        if slots.len() < MIN_CAPACITY || mult & 1 == 0 {
            return Err(format!("table image: capacity {} or multiplier {mult:#x} impossible", slots.len()));
        }
        let mut t = Self::default();
        (t.slots, t.mult) = (slots, mult);
        let cap = t.slots.len();
        let mut len = 0;
        for i in 0..cap {
            if t.slots[i].seq == 0 {
                continue;
            }
            len += 1;
            let d = t.distance(i);
            if d > 0 {
                let prev = (i + cap - 1) % cap;
                if t.slots[prev].seq == 0 || t.distance(prev) + 1 < d {
                    return Err(format!("table image: slot {i} cannot be reached from its home"));
                }
            }
        }
        if len * 20 > cap * 17 {
            return Err(format!("table image: {len} digests in {cap} slots"));
        }
        t.len = len;
        Ok(t)
    }

    /// Removes the slot at `index` by shifting the following cluster back one place.
    fn remove_at(&mut self, mut index: usize) {
        let cap = self.slots.len();
        loop {
            let next = Self::next(index, cap);
            if self.slots[next].seq == 0 || self.distance(next) == 0 {
                self.slots[index] = JtiSlot::default();
                break;
            }
            self.slots[index] = self.slots[next];
            index = next;
        }
        self.len -= 1;
    }

    /// Removes a digest; true if it was there.
    pub fn remove(&mut self, d: JtiDigest) -> bool {
        match self.find(d) {
            Some(i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    /// Drops every slot whose expiry is `<= now`; returns how many. Shrinks a mostly empty table.
    pub fn remove_expired(&mut self, now_unix_secs: u64) -> usize {
        let before = self.len;
        let mut i = 0;
        // Backward shifts only move slots into the position being examined or to positions
        // not yet examined (or, at the wrap, from the front to the back), so one pass sees
        // every slot at least once.
        while i < self.slots.len() {
            let s = self.slots[i];
            if s.seq != 0 && u64::from(s.expires_at) <= now_unix_secs {
                self.remove_at(i);
                continue;
            }
            i += 1;
        }
        if self.slots.len() > MIN_CAPACITY && self.len * 4 < self.slots.len() {
            self.rehash((self.len * 10 / 6).max(MIN_CAPACITY));
        }
        before - self.len
    }

    /// Every occupied slot (for snapshots).
    pub fn iter(&self) -> impl Iterator<Item = &JtiSlot> {
        self.slots.iter().filter(|s| s.seq != 0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Rec {
    seq: u64,
    expires_at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SubjectRec {
    issued_before: u64,
    seq: u64,
    expires_at: u64,
}

/// Everything currently revoked, answering checks in O(1).
#[derive(Clone, Debug, Default)]
pub struct RevocationSet {
    jti: JtiTable,
    subjects: HashMap<Box<str>, SubjectRec>,
    keys: HashMap<Box<str>, Rec>,
    sessions: HashMap<Box<str>, Rec>,
    /// Issuer-scoped subjects and sessions (PROTOCOL.md §8.2), by issuer then identifier, so a
    /// check looks them up without building a key.
    scoped_subjects: HashMap<Box<str>, HashMap<Box<str>, SubjectRec>>,
    scoped_sessions: HashMap<Box<str>, HashMap<Box<str>, Rec>>,
}

/// A scoped entry's key in a [`SetSnapshot`]: `iss`, a space, the identifier. Identifiers
/// hold no whitespace (PROTOCOL.md §8), so an unscoped key never contains a space and the
/// split is unambiguous.
fn scoped_key(iss: &str, id: &str) -> String {
    format!("{iss} {id}")
}

fn merge_subject(map: &mut HashMap<Box<str>, SubjectRec>, sub: &str, issued_before: u64, seq: u64, exp: u64) {
    match map.get_mut(sub) {
        // Several revocations of one subject collapse to the widest: the latest
        // `issued_before` (with its seq) and the latest expiry.
        Some(r) => {
            if issued_before > r.issued_before {
                r.issued_before = issued_before;
                r.seq = seq;
            }
            r.expires_at = r.expires_at.max(exp);
        }
        None => {
            map.insert(sub.into(), SubjectRec { issued_before, seq, expires_at: exp });
        }
    }
}

/// The serialisable form of a [`RevocationSet`] (digests, not `jti` strings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSnapshot {
    jti: Vec<JtiSlot>,
    subjects: Vec<(String, SubjectRec)>,
    keys: Vec<(String, Rec)>,
    sessions: Vec<(String, Rec)>,
}

fn merge_rec(map: &mut HashMap<Box<str>, Rec>, key: &str, seq: u64, expires_at: u64) {
    match map.get_mut(key) {
        Some(r) => r.expires_at = r.expires_at.max(expires_at),
        None => {
            map.insert(key.into(), Rec { seq, expires_at });
        }
    }
}

impl RevocationSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for `n` `jti` revocations (a snapshot about to be installed).
    pub fn with_jti_capacity(n: usize) -> Self {
        Self { jti: JtiTable::with_capacity(n), ..Self::default() }
    }

    /// Makes room for `additional` more `jti` revocations (see [`JtiTable::reserve`]).
    pub fn reserve_jti(&mut self, additional: usize) {
        self.jti.reserve(additional);
    }

    /// Adds an entry's revocation. Entries already expired at `now_unix_secs` are skipped
    /// (PROTOCOL.md §9.2); returns whether it was added.
    pub fn insert(&mut self, entry: &Entry, now_unix_secs: u64) -> bool {
        self.insert_view(entry.view(), now_unix_secs)
    }

    /// [`Self::insert`] for an entry borrowed from a received frame. A withdrawal lifts the
    /// revocation it names (see [`Self::withdraw`]); returns whether it lifted one.
    pub fn insert_view(&mut self, entry: EntryView<'_>, now_unix_secs: u64) -> bool {
        if entry.is_expired(now_unix_secs) {
            return false;
        }
        let (seq, exp) = (entry.seq, entry.expires_at);
        match entry.revocation {
            RevocationView::Withdrawal { kind, id, iss, .. } => return self.withdraw(kind, id, iss),
            RevocationView::Jti { jti, iss } => self.jti.insert(JtiDigest::new(iss, jti), seq, exp),
            RevocationView::Key { kid } => merge_rec(&mut self.keys, kid, seq, exp),
            RevocationView::Session { sid } => merge_rec(&mut self.sessions, sid, seq, exp),
            RevocationView::Subject { sub, issued_before } => {
                merge_subject(&mut self.subjects, sub, issued_before, seq, exp)
            }
            RevocationView::ScopedSubject { id, iss, issued_before } => merge_subject(
                self.scoped_subjects.entry(iss.into()).or_default(),
                id,
                issued_before,
                seq,
                exp,
            ),
            RevocationView::ScopedSession { id, iss, .. } => {
                merge_rec(self.scoped_sessions.entry(iss.into()).or_default(), id, seq, exp)
            }
        }
        true
    }

    /// Lifts the revocation of one identifier (`kind`, `id` and, for `jti`, `iss`), whichever
    /// entries made it and from whichever log: what a withdrawal entry does (PROTOCOL.md §8.1).
    /// Returns whether something was lifted.
    pub fn withdraw(&mut self, kind: Kind, id: &str, iss: Option<&str>) -> bool {
        fn scoped<R>(maps: &mut HashMap<Box<str>, HashMap<Box<str>, R>>, iss: &str, id: &str) -> bool {
            let Some(m) = maps.get_mut(iss) else { return false };
            let lifted = m.remove(id).is_some();
            if m.is_empty() {
                maps.remove(iss);
            }
            lifted
        }
        match (kind, iss) {
            (Kind::Jti, _) => self.jti.remove(JtiDigest::new(iss, id)),
            (Kind::Subject, None) => self.subjects.remove(id).is_some(),
            (Kind::Subject, Some(iss)) => scoped(&mut self.scoped_subjects, iss, id),
            (Kind::Key, _) => self.keys.remove(id).is_some(),
            (Kind::Session, None) => self.sessions.remove(id).is_some(),
            (Kind::Session, Some(iss)) => scoped(&mut self.scoped_sessions, iss, id),
            (Kind::Withdrawal, _) => false,
        }
    }

    /// Adopts a snapshot of another log, or of this one from another point, without dropping
    /// anything already enforced (PROTOCOL.md §9.9): every entry of the snapshot is applied on
    /// top of the set in seq order, and what the set held stays until it expires or a
    /// withdrawal lifts it. Withdrawals with a seq at or below `withdrawals_applied_upto` were
    /// applied before (the same log, up to the agent's own cursor) and are not applied again:
    /// replayed from a log restored to an earlier point, one could lift a revocation made after
    /// it. Returns how many entries were applied.
    pub fn adopt(
        &mut self,
        entries: &mut [Entry],
        withdrawals_applied_upto: u64,
        now_unix_secs: u64,
    ) -> usize {
        if !entries.is_sorted_by_key(|e| e.seq) {
            entries.sort_by_key(|e| e.seq);
        }
        let jti =
            entries.iter().filter(|e| matches!(e.revocation, crate::model::Revocation::Jti { .. })).count();
        if self.is_empty() {
            // Nothing to carry (a fresh agent): a table sized for the snapshot, as before.
            *self = Self::with_jti_capacity(jti);
        } else {
            self.jti.reserve(jti);
        }
        let mut applied = 0;
        for e in entries.iter() {
            if e.revocation.is_withdrawal() && e.seq <= withdrawals_applied_upto {
                continue;
            }
            applied += usize::from(self.insert(e, now_unix_secs));
        }
        applied
    }

    /// The `kid`s this set revokes (to compare with the keys an agent verifies with).
    pub fn revoked_kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(|k| &**k)
    }

    /// The entry that revokes this token, if any.
    pub fn check(&self, t: &TokenRef<'_>) -> Option<Verdict> {
        if let Some(jti) = t.jti {
            if !self.jti.is_empty() {
                let hit = t
                    .iss
                    .and_then(|iss| self.jti.get(JtiDigest::new(Some(iss), jti)))
                    .or_else(|| self.jti.get(JtiDigest::new(None, jti)));
                if let Some((seq, _)) = hit {
                    return Some(Verdict { kind: Kind::Jti, seq });
                }
            }
        }
        if let Some(r) = t.kid.and_then(|k| self.keys.get(k)) {
            return Some(Verdict { kind: Kind::Key, seq: r.seq });
        }
        if let Some(sid) = t.sid {
            let scoped = || t.iss.and_then(|iss| self.scoped_sessions.get(iss)).and_then(|m| m.get(sid));
            if let Some(r) = self.sessions.get(sid).or_else(scoped) {
                return Some(Verdict { kind: Kind::Session, seq: r.seq });
            }
        }
        if let Some(sub) = t.sub {
            // A token without `iat` counts as issued before. `iat` has one-second resolution,
            // so a token minted in the revocation's second is revoked too: fail closed.
            let hit = |r: &SubjectRec| t.iat.is_none_or(|iat| iat <= r.issued_before);
            if let Some(r) = self.subjects.get(sub).filter(|r| hit(r)) {
                return Some(Verdict { kind: Kind::Subject, seq: r.seq });
            }
            let scoped = t.iss.and_then(|iss| self.scoped_subjects.get(iss)).and_then(|m| m.get(sub));
            if let Some(r) = scoped.filter(|r| hit(r)) {
                return Some(Verdict { kind: Kind::Subject, seq: r.seq });
            }
        }
        None
    }

    /// Forgets every entry [`Entry::is_expired`] at `now_unix_secs` (its `expires_at` plus the
    /// grace has passed); returns how many were removed.
    pub fn remove_expired(&mut self, now_unix_secs: u64) -> usize {
        let now_unix_secs = crate::model::expiry_horizon(now_unix_secs);
        let mut removed = self.jti.remove_expired(now_unix_secs);
        let sweep = |map: &mut HashMap<Box<str>, Rec>| {
            let before = map.len();
            map.retain(|_, r| r.expires_at > now_unix_secs);
            before - map.len()
        };
        removed += sweep(&mut self.keys);
        removed += sweep(&mut self.sessions);
        for m in self.scoped_sessions.values_mut() {
            removed += sweep(m);
        }
        self.scoped_sessions.retain(|_, m| !m.is_empty());
        let mut sweep_subjects = |map: &mut HashMap<Box<str>, SubjectRec>| {
            let before = map.len();
            map.retain(|_, r| r.expires_at > now_unix_secs);
            removed += before - map.len();
        };
        sweep_subjects(&mut self.subjects);
        for m in self.scoped_subjects.values_mut() {
            sweep_subjects(m);
        }
        self.scoped_subjects.retain(|_, m| !m.is_empty());
        removed
    }

    /// Number of live revocations of a kind.
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Jti => self.jti.len(),
            Kind::Subject => {
                self.subjects.len() + self.scoped_subjects.values().map(HashMap::len).sum::<usize>()
            }
            Kind::Key => self.keys.len(),
            Kind::Session => {
                self.sessions.len() + self.scoped_sessions.values().map(HashMap::len).sum::<usize>()
            }
            Kind::Withdrawal => 0,
        }
    }

    /// Total live revocations.
    pub fn len(&self) -> usize {
        Kind::ALL.iter().map(|k| self.count(*k)).sum()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes used by the `jti` table (the part that scales with token revocations).
    pub fn jti_memory_bytes(&self) -> usize {
        self.jti.memory_bytes()
    }

    /// A serialisable copy of the set.
    pub fn snapshot(&self) -> SetSnapshot {
        // Ascending digests: a restore into a table sized for them is one sequential pass.
        let mut jti: Vec<JtiSlot> = self.jti.iter().copied().collect();
        jti.sort_unstable_by_key(|s| s.hi);
        SetSnapshot { jti, ..self.rest() }
    }

    /// Everything but the `jti` digests, scoped entries under their [`scoped_key`].
    fn rest(&self) -> SetSnapshot {
        fn strings<R: Copy>(m: &HashMap<Box<str>, R>) -> Vec<(String, R)> {
            m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        }
        fn scoped<R: Copy>(
            m: &HashMap<Box<str>, HashMap<Box<str>, R>>,
        ) -> impl Iterator<Item = (String, R)> + '_ {
            m.iter().flat_map(|(iss, ids)| ids.iter().map(move |(id, r)| (scoped_key(iss, id), *r)))
        }
        let mut subjects = strings(&self.subjects);
        subjects.extend(scoped(&self.scoped_subjects));
        let mut sessions = strings(&self.sessions);
        sessions.extend(scoped(&self.scoped_sessions));
        SetSnapshot { jti: Vec::new(), subjects, keys: strings(&self.keys), sessions }
    }

    /// The set as a snapshot without its `jti` digests, plus the `jti` table as laid out: what
    /// an agent writes to its state file, so a restart adopts the table instead of rebuilding it.
    pub fn image(&self) -> (SetSnapshot, TableImage) {
        (self.rest(), self.jti.image())
    }

    /// The inverse of [`Self::image`]; a damaged table image is refused.
    pub fn from_image(rest: SetSnapshot, table: TableImage) -> Result<Self, String> {
        let mut set = Self::restore(rest);
        set.jti = JtiTable::from_image(table)?;
        Ok(set)
    }

    /// Rebuilds a set from a snapshot. Slots with seq 0 are ignored. The table is sized for
    /// the whole snapshot first, so the rebuild is one pass without growth.
    pub fn restore(snapshot: SetSnapshot) -> Self {
        let mut set = Self::new();
        set.jti = JtiTable::with_capacity(snapshot.jti.iter().filter(|s| s.seq != 0).count());
        for s in snapshot.jti.into_iter().filter(|s| s.seq != 0) {
            set.jti.insert(JtiDigest { hi: s.hi, lo: s.lo }, s.seq, u64::from(s.expires_at));
        }
        fn split<R>(
            items: Vec<(String, R)>,
            plain: &mut HashMap<Box<str>, R>,
            scoped: &mut HashMap<Box<str>, HashMap<Box<str>, R>>,
        ) {
            for (k, v) in items {
                match k.split_once(' ') {
                    None => {
                        plain.insert(k.into(), v);
                    }
                    Some((iss, id)) => {
                        scoped.entry(iss.into()).or_default().insert(id.into(), v);
                    }
                }
            }
        }
        split(snapshot.subjects, &mut set.subjects, &mut set.scoped_subjects);
        set.keys = snapshot.keys.into_iter().map(|(k, v)| (k.into(), v)).collect();
        split(snapshot.sessions, &mut set.sessions, &mut set.scoped_sessions);
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Revocation;
    use proptest::prelude::*;

    fn entry(seq: u64, expires_at: u64, revocation: Revocation) -> Entry {
        Entry { seq, created_at_ms: 0, expires_at, reason: None, revocation }
    }

    fn jti(j: &str, iss: Option<&str>) -> Revocation {
        Revocation::Jti { jti: j.into(), iss: iss.map(Into::into) }
    }

    type Case = (Vec<Revocation>, TokenRef<'static>, Option<(Kind, u64)>);

    /// Table-driven: (entries, token, expected verdict).
    #[test]
    fn checks_follow_the_model() {
        let tok = |f: fn(&mut TokenRef<'static>)| {
            let mut t = TokenRef::default();
            f(&mut t);
            t
        };
        let cases: Vec<Case> = vec![
            (vec![jti("a", None)], tok(|t| t.jti = Some("a")), Some((Kind::Jti, 1))),
            (vec![jti("a", None)], tok(|t| (t.jti, t.iss) = (Some("a"), Some("x"))), Some((Kind::Jti, 1))),
            (
                vec![jti("a", Some("x"))],
                tok(|t| (t.jti, t.iss) = (Some("a"), Some("x"))),
                Some((Kind::Jti, 1)),
            ),
            (vec![jti("a", Some("x"))], tok(|t| (t.jti, t.iss) = (Some("a"), Some("y"))), None),
            (vec![jti("a", Some("x"))], tok(|t| t.jti = Some("a")), None),
            (vec![jti("a", None)], tok(|t| t.jti = Some("b")), None),
            (
                vec![Revocation::Subject { sub: "u".into(), issued_before: 100 }],
                tok(|t| (t.sub, t.iat) = (Some("u"), Some(99))),
                Some((Kind::Subject, 1)),
            ),
            (
                vec![Revocation::Subject { sub: "u".into(), issued_before: 100 }],
                // Same second as the revocation: revoked (fail closed at one-second resolution).
                tok(|t| (t.sub, t.iat) = (Some("u"), Some(100))),
                Some((Kind::Subject, 1)),
            ),
            (
                vec![Revocation::Subject { sub: "u".into(), issued_before: 100 }],
                tok(|t| (t.sub, t.iat) = (Some("u"), Some(101))),
                None,
            ),
            (
                vec![Revocation::Subject { sub: "u".into(), issued_before: 100 }],
                tok(|t| t.sub = Some("u")),
                Some((Kind::Subject, 1)),
            ),
            (
                vec![
                    Revocation::Subject { sub: "u".into(), issued_before: 100 },
                    Revocation::Subject { sub: "u".into(), issued_before: 200 },
                ],
                tok(|t| (t.sub, t.iat) = (Some("u"), Some(150))),
                Some((Kind::Subject, 2)),
            ),
            (vec![Revocation::Key { kid: "k1".into() }], tok(|t| t.kid = Some("k1")), Some((Kind::Key, 1))),
            (vec![Revocation::Key { kid: "k1".into() }], tok(|t| t.kid = Some("k2")), None),
            (
                vec![Revocation::Session { sid: "s".into() }],
                tok(|t| t.sid = Some("s")),
                Some((Kind::Session, 1)),
            ),
            (vec![Revocation::Session { sid: "s".into() }], tok(|t| t.sub = Some("s")), None),
        ];
        for (i, (revs, token, want)) in cases.into_iter().enumerate() {
            let mut set = RevocationSet::new();
            for (n, r) in revs.into_iter().enumerate() {
                assert!(set.insert(&entry(n as u64 + 1, 1000, r), 10));
            }
            let got = set.check(&token).map(|v| (v.kind, v.seq));
            assert_eq!(got, want, "case {i}: {token:?}");
        }
    }

    fn token_of(r: &Revocation) -> TokenRef<'_> {
        match r {
            Revocation::Jti { jti, iss } => {
                TokenRef { jti: Some(jti), iss: iss.as_deref(), ..Default::default() }
            }
            Revocation::Subject { sub, .. } => {
                TokenRef { sub: Some(sub), iat: Some(0), ..Default::default() }
            }
            Revocation::Key { kid } => TokenRef { kid: Some(kid), ..Default::default() },
            Revocation::Session { sid } => TokenRef { sid: Some(sid), ..Default::default() },
            Revocation::ScopedSubject(x) => {
                TokenRef { sub: Some(&x.id), iss: Some(&x.iss), iat: Some(0), ..Default::default() }
            }
            Revocation::ScopedSession(x) => {
                TokenRef { sid: Some(&x.id), iss: Some(&x.iss), ..Default::default() }
            }
            Revocation::Withdrawal(_) => TokenRef::default(),
        }
    }

    /// An issuer-scoped subject or session refuses only that issuer's tokens; the unscoped
    /// form refuses every issuer's; a withdrawal lifts the scoped one only; and the scope
    /// survives a snapshot and an image.
    #[test]
    fn scoped_subjects_and_sessions_match_their_issuer_only() {
        let tok = |sub: Option<&'static str>, sid: Option<&'static str>, iss: Option<&'static str>| {
            TokenRef { sub, sid, iss, iat: Some(50), ..Default::default() }
        };
        let mut set = RevocationSet::new();
        set.insert(&entry(1, 1000, Revocation::session("sess-A".into(), Some("https://a".into()))), 10);
        set.insert(&entry(2, 1000, Revocation::subject("u".into(), 100, Some("https://a".into()))), 10);
        for s in [&set, &RevocationSet::restore(set.snapshot()), &{
            let (rest, table) = set.image();
            RevocationSet::from_image(rest, table).unwrap()
        }] {
            assert_eq!(s.check(&tok(None, Some("sess-A"), Some("https://a"))).map(|v| v.seq), Some(1));
            assert_eq!(
                s.check(&tok(None, Some("sess-A"), Some("https://b"))),
                None,
                "another provider's session"
            );
            assert_eq!(s.check(&tok(None, Some("sess-A"), None)), None, "a token without iss");
            assert_eq!(s.check(&tok(Some("u"), None, Some("https://a"))).map(|v| v.seq), Some(2));
            assert_eq!(s.check(&tok(Some("u"), None, Some("https://b"))), None, "another provider's user");
            assert_eq!(s.count(Kind::Session) + s.count(Kind::Subject), 2);
        }
        // The unscoped form is every issuer's.
        set.insert(&entry(3, 1000, Revocation::Session { sid: "sess-A".into() }), 10);
        assert_eq!(set.check(&tok(None, Some("sess-A"), Some("https://b"))).map(|v| v.seq), Some(3));
        // Withdrawing the scoped one leaves the unscoped one.
        let w = Revocation::session("sess-A".into(), Some("https://a".into())).withdrawal(1).unwrap();
        assert!(set.insert(&entry(4, 1000, w), 10));
        assert_eq!(set.check(&tok(None, Some("sess-A"), Some("https://a"))).map(|v| v.seq), Some(3));
        assert_eq!(set.remove_expired(100_000), 2);
        assert!(set.is_empty());
    }

    /// Below link version 4 a scoped entry goes unscoped (wider) and the withdrawal of one is
    /// not sent (the agent keeps enforcing it): never narrower.
    #[test]
    fn older_links_get_scoped_entries_wider_never_narrower() {
        let scoped = Revocation::session("s".into(), Some("https://a".into()));
        assert_eq!(scoped.for_link(3).unwrap().into_owned(), Revocation::Session { sid: "s".into() });
        assert_eq!(scoped.for_link(4).unwrap().into_owned(), scoped);
        let w = scoped.withdrawal(9).unwrap();
        assert!(w.for_link(3).is_none() && w.for_link(4).is_some());
        let plain_w = Revocation::Session { sid: "s".into() }.withdrawal(9).unwrap();
        assert!(plain_w.for_link(3).is_some() && plain_w.for_link(2).is_none());
    }

    /// A withdrawal lifts its identifier whatever seq (or log) made the revocation, and only it.
    #[test]
    fn a_withdrawal_lifts_its_identifier_and_nothing_else() {
        let kinds = [
            jti("j", Some("i")),
            Revocation::Subject { sub: "u".into(), issued_before: 10 },
            Revocation::Key { kid: "k".into() },
            Revocation::Session { sid: "s".into() },
        ];
        for (n, r) in kinds.iter().enumerate() {
            let mut set = RevocationSet::new();
            set.insert(&entry(7, 100, r.clone()), 0);
            set.insert(&entry(8, 100, jti("j", None)), 0);
            // Named by another seq (an earlier log's copy): lifted all the same.
            let w = r.withdrawal(3).unwrap();
            assert!(set.insert(&entry(20 + n as u64, 100, w.clone()), 0), "{r:?}");
            assert_eq!(set.check(&token_of(r)).map(|v| v.seq).filter(|s| *s != 8), None, "{r:?} lifted");
            assert!(set.check(&token_of(&jti("j", None))).is_some(), "an unscoped jti is another identifier");
            assert!(!set.insert(&entry(30, 100, w), 0), "a second withdrawal lifts nothing");
        }
    }

    /// Adopting a snapshot keeps what the set held, applies the snapshot in seq order, and skips
    /// withdrawals the agent applied before: replayed from a restored log, one could otherwise
    /// lift a revocation made after it.
    #[test]
    fn adopting_a_snapshot_drops_nothing_enforced() {
        let mut set = RevocationSet::new();
        set.insert(&entry(12, 100, jti("carried", None)), 0);
        set.insert(&entry(13, 100, Revocation::Key { kid: "re-revoked".into() }), 0);
        let mut snapshot = vec![
            entry(11, 100, Revocation::Key { kid: "re-revoked".into() }.withdrawal(4).unwrap()),
            entry(5, 100, Revocation::Session { sid: "new".into() }),
            entry(9, 100, Revocation::Session { sid: "lifted".into() }.withdrawal(2).unwrap()),
            entry(2, 100, Revocation::Session { sid: "lifted".into() }),
        ];
        set.adopt(&mut snapshot, 11, 0);
        assert!(set.check(&token_of(&jti("carried", None))).is_some(), "carried forward");
        assert!(
            set.check(&TokenRef { kid: Some("re-revoked"), ..Default::default() }).is_some(),
            "not lifted again"
        );
        assert!(set.check(&TokenRef { sid: Some("new"), ..Default::default() }).is_some());
        assert!(
            set.check(&TokenRef { sid: Some("lifted"), ..Default::default() }).is_some(),
            "already applied"
        );
        // From another log every withdrawal is new, and applies in seq order.
        let mut other = vec![
            entry(9, 100, Revocation::Session { sid: "lifted".into() }.withdrawal(2).unwrap()),
            entry(2, 100, Revocation::Session { sid: "lifted".into() }),
        ];
        set.adopt(&mut other, 0, 0);
        assert!(set.check(&TokenRef { sid: Some("lifted"), ..Default::default() }).is_none());
    }

    /// A key revocation with no expiry stays, however far the clock runs.
    #[test]
    fn a_revocation_kept_until_withdrawn_never_lapses() {
        let mut set = RevocationSet::new();
        set.insert(&entry(1, crate::model::NEVER, Revocation::Key { kid: "leaked".into() }), 0);
        assert_eq!(set.remove_expired(u64::MAX - 1), 0);
        assert!(set.check(&TokenRef { kid: Some("leaked"), ..Default::default() }).is_some());
    }

    #[test]
    fn expired_entries_are_skipped_and_collected() {
        let g = crate::model::EXPIRY_GRACE_SECS;
        let mut set = RevocationSet::new();
        assert!(!set.insert(&entry(1, 10, jti("old", None)), 10 + g));
        assert!(set.insert(&entry(2, 20, jti("a", None)), 10 + g));
        assert!(set.insert(&entry(3, 30, Revocation::Key { kid: "k".into() }), 10 + g));
        assert_eq!(set.remove_expired(20 + g), 1);
        assert_eq!(set.count(Kind::Jti), 0);
        assert_eq!(set.count(Kind::Key), 1);
        assert_eq!(set.remove_expired(30 + g), 1);
        assert!(set.is_empty());
    }

    /// A verifier still accepts a token for its leeway after `exp`: the entry that revokes it
    /// must outlive `exp` by at least that much.
    #[test]
    fn entries_outlive_their_expiry_by_the_grace() {
        let mut set = RevocationSet::new();
        assert!(set.insert(&entry(1, 100, jti("a", None)), 100));
        assert_eq!(set.remove_expired(130), 0, "a token 30 s past exp is still within a leeway");
        assert!(set.check(&TokenRef { jti: Some("a"), ..Default::default() }).is_some());
        assert_eq!(set.remove_expired(100 + crate::model::EXPIRY_GRACE_SECS), 1);
    }

    #[test]
    fn snapshot_restores_the_same_answers() {
        let mut set = RevocationSet::new();
        for i in 1..=1000u64 {
            set.insert(&entry(i, 100 + i, jti(&format!("j{i}"), (i % 2 == 0).then_some("iss"))), 0);
        }
        set.insert(&entry(1001, 500, Revocation::Subject { sub: "u".into(), issued_before: 50 }), 0);
        let restored = RevocationSet::restore(set.snapshot());
        assert_eq!(restored.len(), set.len());
        for i in 1..=1000u64 {
            let j = format!("j{i}");
            let t = TokenRef { jti: Some(&j), iss: Some("iss"), ..Default::default() };
            assert_eq!(restored.check(&t), set.check(&t));
            assert!(restored.check(&t).is_some());
        }
    }

    /// Slots examined per digest when `n` digests are inserted in each order into a growing
    /// table, and when a table-order snapshot is restored. Counts probes, not time: a return of
    /// the quadratic case (sorted homes crammed into a smaller table) shows as thousands of
    /// probes per digest instead of a handful.
    #[test]
    fn insertion_cost_does_not_depend_on_the_order() {
        let n = 40_000u64;
        let random: Vec<JtiDigest> = (0..n).map(|i| JtiDigest::new(None, &format!("j-{i}"))).collect();
        let mut sorted = random.clone();
        sorted.sort_by_key(|d| d.hi);
        let reversed: Vec<JtiDigest> = sorted.iter().rev().copied().collect();
        let table_order: Vec<JtiDigest> = {
            let mut t = JtiTable::default();
            for (i, d) in random.iter().enumerate() {
                t.insert(*d, i as u64 + 1, 100);
            }
            t.iter().map(|s| JtiDigest { hi: s.hi, lo: s.lo }).collect()
        };
        let per_digest = |order: &[JtiDigest]| {
            let mut t = JtiTable::default();
            for (i, d) in order.iter().enumerate() {
                t.insert(*d, i as u64 + 1, 100);
            }
            assert_eq!(t.len(), n as usize);
            t.probes as f64 / n as f64
        };
        let base = per_digest(&random);
        for (name, order) in [("sorted", &sorted), ("reversed", &reversed), ("table order", &table_order)] {
            let p = per_digest(order);
            assert!(p <= 2.0 * base + 2.0, "{name}: {p:.1} probes per digest, random order {base:.1}");
        }
        // Restoring a snapshot (which lists slots in table order) is one linear pass.
        let mut set = RevocationSet::new();
        for (i, d) in random.iter().enumerate() {
            set.jti.insert(*d, i as u64 + 1, 100);
        }
        let restored = RevocationSet::restore(set.snapshot());
        let p = restored.jti.probes as f64 / n as f64;
        assert!(p <= 2.0 * base + 2.0, "restore: {p:.1} probes per digest, random order {base:.1}");
    }

    proptest! {
        /// The table behaves like a `HashMap` model under random inserts, removals, reservations
        /// and expiry sweeps.
        #[test]
        fn jti_table_matches_a_model(ops in prop::collection::vec((0u8..5, 0u16..300, 1u32..50), 1..600)) {
            let mut table = JtiTable::default();
            let mut model: HashMap<u16, u32> = HashMap::new();
            let d = |k: u16| JtiDigest::new(None, &k.to_string());
            for (op, key, exp) in ops {
                match op {
                    0 | 1 => {
                        table.insert(d(key), u64::from(key) + 1, u64::from(exp));
                        let e = model.entry(key).or_insert(exp);
                        *e = (*e).max(exp);
                    }
                    2 => { prop_assert_eq!(table.remove(d(key)), model.remove(&key).is_some()); }
                    3 => table.reserve(usize::from(key)),
                    _ => {
                        let now = u64::from(exp);
                        let removed = table.remove_expired(now);
                        let before = model.len();
                        model.retain(|_, e| u64::from(*e) > now);
                        prop_assert_eq!(removed, before - model.len());
                    }
                }
                prop_assert_eq!(table.len(), model.len());
            }
            for k in 0u16..300 {
                prop_assert_eq!(table.get(d(k)).map(|(_, exp)| exp), model.get(&k).copied());
            }
            // Every digest still sits where a lookup from its home finds it.
            prop_assert!(JtiTable::from_image(table.image()).is_ok());
        }
    }
}
