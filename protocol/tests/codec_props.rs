//! Property tests of the codec: every frame round-trips; arbitrary bytes never panic.

use proptest::prelude::*;
use revmesh_protocol::codec::{decode, decode_view, encode, DecodeError, Decoded};
use revmesh_protocol::frame::*;
use revmesh_protocol::model::*;

fn id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.:@-]{1,40}"
}

fn revocation() -> impl Strategy<Value = Revocation> {
    prop_oneof![
        (id(), prop::option::of(id())).prop_map(|(jti, iss)| Revocation::Jti { jti, iss }),
        (id(), any::<u64>()).prop_map(|(sub, issued_before)| Revocation::Subject { sub, issued_before }),
        id().prop_map(|kid| Revocation::Key { kid }),
        id().prop_map(|sid| Revocation::Session { sid }),
        (id(), id(), any::<u64>()).prop_map(|(sub, iss, ib)| Revocation::subject(sub, ib, Some(iss))),
        (id(), id()).prop_map(|(sid, iss)| Revocation::session(sid, Some(iss))),
    ]
}

fn entry(seq: u64) -> impl Strategy<Value = Entry> {
    (any::<u64>(), any::<u64>(), prop::option::of("[ -~]{0,60}"), revocation()).prop_map(
        move |(created_at_ms, expires_at, reason, revocation)| Entry {
            seq,
            created_at_ms,
            expires_at,
            reason,
            revocation,
        },
    )
}

fn log_id() -> impl Strategy<Value = LogId> {
    any::<[u8; 16]>().prop_map(LogId)
}

fn frame() -> impl Strategy<Value = Frame> {
    let batch = (log_id(), 1u64..u64::MAX / 2, prop::collection::vec(entry(0), 0..20), any::<bool>())
        .prop_map(|(log_id, from_seq, mut entries, waited)| {
            for (i, e) in entries.iter_mut().enumerate() {
                e.seq = from_seq + 2 * i as u64;
            }
            let to_seq = from_seq + 2 * entries.len() as u64;
            let b = Batch { log_id, from_seq, to_seq, entries };
            if waited {
                Frame::WaitedBatch(b)
            } else {
                Frame::Batch(b)
            }
        });
    let chunk = (log_id(), any::<u64>(), any::<u32>(), any::<bool>(), prop::collection::vec(entry(1), 0..10))
        .prop_map(|(log_id, snapshot_id, index, last, entries)| {
            Frame::SnapshotChunk(SnapshotChunk { log_id, snapshot_id, snapshot_seq: 1, index, last, entries })
        });
    prop_oneof![
        (any::<u8>(), id(), "[ -~]{0,30}", prop::option::of(log_id()), any::<u64>()).prop_map(
            |(max_version, agent_id, agent_version, log_id, applied_seq)| Frame::Hello(Hello {
                max_version,
                agent_id,
                agent_version,
                log_id,
                applied_seq
            })
        ),
        (log_id(), any::<u64>(), 1u64.., any::<bool>()).prop_map(|(log_id, head_seq, heartbeat_ms, snap)| {
            Frame::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                log_id,
                head_seq,
                heartbeat_ms,
                resume: if snap { Resume::Snapshot } else { Resume::Incremental },
            })
        }),
        batch,
        (log_id(), any::<u64>()).prop_map(|(log_id, applied_seq)| Frame::Ack(Ack { log_id, applied_seq })),
        (log_id(), any::<u64>())
            .prop_map(|(log_id, applied_seq)| Frame::Applied(Ack { log_id, applied_seq })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(head_seq, unix_ms)| Frame::Heartbeat(Heartbeat { head_seq, unix_ms })),
        chunk,
        (any::<u64>(), "[ -~]{0,50}")
            .prop_map(|(retry_after_ms, reason)| Frame::GoAway(GoAway { retry_after_ms, reason })),
        "[ -~]{0,50}".prop_map(|m| Frame::Error(ErrorFrame::new(ErrorCode::Violation, m))),
    ]
}

/// What `decode_view` says, owned and with errors by reason, to compare with `decode`.
fn view_as_owned(bytes: &[u8]) -> Result<Frame, &'static str> {
    match decode_view(bytes).map_err(|e| e.reason())? {
        Decoded::Frame(f) => Ok(f),
        Decoded::Batch { batch, waited } => {
            let entries = batch.entries.iter().map(EntryView::to_entry).collect();
            let b = Batch { log_id: batch.log_id, from_seq: batch.from_seq, to_seq: batch.to_seq, entries };
            Ok(if waited { Frame::WaitedBatch(b) } else { Frame::Batch(b) })
        }
    }
}

fn by_reason(bytes: &[u8]) -> Result<Frame, &'static str> {
    decode(bytes).map_err(|e: DecodeError| e.reason())
}

proptest! {
    #[test]
    fn every_frame_round_trips(f in frame()) {
        let bytes = encode(&f).unwrap();
        prop_assert_eq!(view_as_owned(&bytes), Ok(f.clone()));
        prop_assert_eq!(decode(&bytes), Ok(f));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert_eq!(view_as_owned(&bytes), by_reason(&bytes));
    }

    /// The borrowed decoder accepts exactly what the owned one accepts, with the same result,
    /// and refuses the rest for the same reason: flip any byte of a valid frame.
    #[test]
    fn the_borrowed_decoder_agrees_with_the_owned_one(
        f in frame(), pos in any::<prop::sample::Index>(), x in 1u8.., version in 0u8..4
    ) {
        let mut bytes = encode(&f).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] ^= x;
        prop_assert_eq!(view_as_owned(&bytes), by_reason(&bytes));
        bytes[0] = version;
        prop_assert_eq!(view_as_owned(&bytes), by_reason(&bytes));
    }

    /// Flipping any byte of a valid frame gives an error or another valid frame, never a panic,
    /// and a decoded result always re-encodes to exactly the input (canonical form).
    #[test]
    fn corrupted_frames_are_rejected_or_canonical(f in frame(), pos in any::<prop::sample::Index>(), x in 1u8..) {
        let mut bytes = encode(&f).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] ^= x;
        if let Ok(g) = decode(&bytes) {
            prop_assert_eq!(encode(&g).unwrap(), bytes);
        }
    }
}

/// A valid state image of `n` jti digests.
fn state_image(n: u64) -> Vec<u8> {
    let mut set = revmesh_protocol::RevocationSet::new();
    for seq in 1..=n {
        let e = Entry {
            seq,
            created_at_ms: 0,
            expires_at: 4_000_000_000,
            reason: None,
            revocation: Revocation::Jti { jti: format!("j{seq}"), iss: None },
        };
        set.insert(&e, 0);
    }
    let (rest, table) = set.image();
    let state = revmesh_protocol::codec::PersistedState { log_id: None, applied_seq: n, set: rest };
    revmesh_protocol::codec::encode_state_image(&state, &table).unwrap()
}

proptest! {
    /// A state image read from a file is hostile input: any bytes, and any damage to a valid
    /// image, give an error or a set whose every digest can be found, never a panic; feeding it
    /// in pieces gives the same result as feeding it whole.
    #[test]
    fn state_images_never_panic_and_feed_in_any_pieces(
        n in 0u64..60,
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 0..3),
        cut in any::<prop::sample::Index>(),
        garbage in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        use revmesh_protocol::codec::{decode_state_image, StateImageDecoder};
        let _ = decode_state_image(&garbage);
        let mut bytes = state_image(n);
        for (pos, x) in flips {
            let i = pos.index(bytes.len());
            bytes[i] ^= x;
        }
        let whole = decode_state_image(&bytes);
        let at = cut.index(bytes.len() + 1);
        let mut d = StateImageDecoder::new(bytes.len());
        let pieces = d.feed(&bytes[..at]).and_then(|()| d.feed(&bytes[at..])).and_then(|()| d.finish());
        prop_assert_eq!(whole.is_ok(), pieces.is_ok());
        if let Ok((mut state, table)) = whole {
            if let Ok(set) = revmesh_protocol::RevocationSet::from_image(std::mem::take(&mut state.set), table) {
                prop_assert!(set.count(Kind::Jti) <= 60);
            }
        }
    }
}
