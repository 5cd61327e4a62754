//! A direct reader for the body of a batch frame: the fast path of [`super::decode_view`].
//!
//! The agent decodes nearly every entry it ever receives from a batch frame, and going through
//! serde's visitors, then re-encoding the batch to prove the bytes canonical, cost about a
//! fifth of an agent's CPU in a catch-up. This reader walks bincode's standard layout
//! (PROTOCOL.md §2: little-endian, variable-length integers) once, and accepts only what is
//! structurally valid *and* canonical: minimal integers, option tags 0 or 1, known variants,
//! UTF-8 texts, no trailing bytes, at most [`MAX_ENTRIES_PER_FRAME`] entries and within
//! bincode's read limit as bincode counts it. For anything else it answers `None`, and the
//! caller falls back to bincode and the re-encoding check, which name the error exactly. So the
//! fast path changes no verdict: whatever it accepts, bincode decodes to the same batch and
//! re-encodes to the same bytes (a property test and the fuzz target compare the two).

use super::MAX_FRAME_BYTES;
use crate::frame::{BatchView, MAX_ENTRIES_PER_FRAME};
use crate::model::{EntryView, Kind, LogId, RevocationView};

/// bincode's varint markers: the value follows in 2, 4 or 8 bytes.
const U16_MARKER: u8 = 251;
const U32_MARKER: u8 = 252;
const U64_MARKER: u8 = 253;

/// Reads a batch frame's body (after the version byte and the variant index).
pub(super) fn read_batch(body: &[u8]) -> Option<BatchView<'_>> {
    let mut r = Reader { rest: body, claimed: 0 };
    let mut log_id = [0u8; 16];
    for b in &mut log_id {
        *b = r.u8()?;
    }
    let from_seq = r.u64()?;
    let to_seq = r.u64()?;
    let n = r.len()?;
    if n > MAX_ENTRIES_PER_FRAME {
        return None;
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(r.entry()?);
    }
    // bincode counts its limit as it goes and never gives bytes back, so checking the total
    // once at the end gives the same answer.
    if !r.rest.is_empty() || r.claimed > MAX_FRAME_BYTES {
        return None;
    }
    Some(BatchView { log_id: LogId(log_id), from_seq, to_seq, entries })
}

/// The unread bytes, and how many bytes bincode would have claimed against its limit so far
/// (it claims a type's full width, e.g. 8 for any `u64`, whatever its encoded length).
struct Reader<'a> {
    rest: &'a [u8],
    claimed: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.claimed += 1;
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// A minimal varint of at most `max_marker`'s width.
    fn varint(&mut self, max_marker: u8) -> Option<u64> {
        let marker = self.u8()?;
        if marker <= 250 {
            return Some(u64::from(marker));
        }
        if marker > max_marker {
            return None;
        }
        // One fixed-width load per width: copying a variable number of bytes into an 8-byte
        // buffer and reading it back was a library call and a stalled load, three times per
        // entry (seq, created_at_ms and expires_at are all wider than a byte).
        let (v, floor) = match marker {
            U16_MARKER => (u64::from(u16::from_le_bytes(self.array()?)), 251),
            U32_MARKER => (u64::from(u32::from_le_bytes(self.array()?)), 1 << 16),
            U64_MARKER => (u64::from_le_bytes(self.array()?), 1 << 32),
            _ => return None,
        };
        // A value that fits a shorter form is not canonical.
        (v >= floor).then_some(v)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        // The marker byte was counted by `u8`; bincode claims 8 in all.
        self.claimed += 7;
        self.varint(U64_MARKER)
    }

    fn len(&mut self) -> Option<usize> {
        self.u64().and_then(|v| usize::try_from(v).ok())
    }

    fn variant(&mut self) -> Option<u32> {
        self.claimed += 3;
        self.varint(U32_MARKER).and_then(|v| u32::try_from(v).ok())
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        self.claimed = self.claimed.checked_add(n)?;
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.str().map(Some),
            _ => None,
        }
    }

    fn entry(&mut self) -> Option<EntryView<'a>> {
        let seq = self.u64()?;
        let created_at_ms = self.u64()?;
        let expires_at = self.u64()?;
        let reason = self.opt_str()?;
        let revocation = match self.variant()? {
            0 => RevocationView::Jti { jti: self.str()?, iss: self.opt_str()? },
            1 => RevocationView::Subject { sub: self.str()?, issued_before: self.u64()? },
            2 => RevocationView::Key { kid: self.str()? },
            3 => RevocationView::Session { sid: self.str()? },
            4 => RevocationView::Withdrawal {
                seq: self.u64()?,
                kind: match self.variant()? {
                    0 => Kind::Jti,
                    1 => Kind::Subject,
                    2 => Kind::Key,
                    3 => Kind::Session,
                    4 => Kind::Withdrawal,
                    _ => return None,
                },
                id: self.str()?,
                iss: self.opt_str()?,
            },
            _ => return None,
        };
        Some(EntryView { seq, created_at_ms, expires_at, reason, revocation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Batch;
    use crate::model::{Entry, Revocation, Withdrawn};

    /// Every valid batch must take the fast path (a silent fallback would hide a broken reader
    /// behind bincode), with the same entries: integers at each width's edges, every kind,
    /// texts of 0, 250 and 251 bytes, multi-byte UTF-8, options both ways.
    #[test]
    fn every_valid_batch_shape_is_read_directly_and_the_same() {
        let edges = [0, 1, 250, 251, 65_535, 65_536, u64::from(u32::MAX), 1 << 32, u64::MAX];
        let texts = ["", "a", "ü€😀", &"x".repeat(250), &"y".repeat(251)];
        let mut entries = Vec::new();
        for (i, &n) in edges.iter().enumerate() {
            let t = |k: usize| texts[(i + k) % texts.len()].to_owned();
            let revocations = [
                Revocation::Jti { jti: t(0), iss: None },
                Revocation::Jti { jti: t(1), iss: Some(t(2)) },
                Revocation::Subject { sub: t(3), issued_before: n },
                Revocation::Key { kid: t(4) },
                Revocation::Session { sid: t(0) },
                Revocation::Withdrawal(Box::new(Withdrawn {
                    seq: n,
                    kind: Kind::Jti,
                    id: t(1),
                    iss: Some(t(2)),
                })),
                Revocation::Withdrawal(Box::new(Withdrawn {
                    seq: n,
                    kind: Kind::Session,
                    id: t(3),
                    iss: None,
                })),
            ];
            for revocation in revocations {
                let reason = (entries.len() % 2 == 0).then(|| t(1));
                entries.push(Entry { seq: n, created_at_ms: n, expires_at: n, reason, revocation });
            }
        }
        for (from, to) in [(0, 0), (250, 251), (1 << 32, u64::MAX)] {
            for chunk in [&entries[..0], &entries[..], &entries[..1]] {
                let batch =
                    Batch { log_id: LogId([7; 16]), from_seq: from, to_seq: to, entries: chunk.to_vec() };
                let bytes = super::super::encode_batch(&batch).expect("encodes");
                let view = read_batch(&bytes[2..]).expect("read directly");
                assert_eq!(view, super::super::batch_view(&bytes).expect("bincode reads it"));
                let owned: Vec<Entry> = view.entries.iter().map(|e| e.to_entry()).collect();
                assert_eq!(owned, batch.entries);
                // One byte more or less is not a batch.
                assert_eq!(read_batch(&bytes[2..bytes.len() - 1]), None);
                let mut longer = bytes[2..].to_vec();
                longer.push(0);
                assert_eq!(read_batch(&longer), None);
            }
        }
    }

    fn varint(bytes: &[u8]) -> Option<u64> {
        Reader { rest: bytes, claimed: 0 }.varint(U64_MARKER)
    }

    #[test]
    fn varints_must_be_minimal() {
        assert_eq!(varint(&[250]), Some(250));
        assert_eq!(varint(&[251, 251, 0]), Some(251));
        assert_eq!(varint(&[251, 250, 0]), None, "fits one byte");
        assert_eq!(varint(&[252, 0, 0, 1, 0]), Some(1 << 16));
        assert_eq!(varint(&[252, 255, 255, 0, 0]), None, "fits two bytes");
        assert_eq!(varint(&[253, 0, 0, 0, 0, 1, 0, 0, 0]), Some(1 << 32));
        assert_eq!(varint(&[253, 255, 255, 255, 255, 0, 0, 0, 0]), None, "fits four bytes");
        assert_eq!(varint(&[254]), None, "u128 marker");
        assert_eq!(varint(&[255]), None, "reserved marker");
        assert_eq!(varint(&[251, 1]), None, "short");
        let mut r = Reader { rest: &[253, 0, 0, 0, 0, 1, 0, 0, 0], claimed: 0 };
        assert_eq!(r.variant(), None, "a u64 is too wide for a variant index");
    }
}
