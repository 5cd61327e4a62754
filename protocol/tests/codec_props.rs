//! Property tests of the codec: every frame round-trips; arbitrary bytes never panic.

use proptest::prelude::*;
use revmesh_protocol::codec::{decode, encode};
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
    let batch = (log_id(), 1u64..u64::MAX / 2, prop::collection::vec(entry(0), 0..20)).prop_map(
        |(log_id, from_seq, mut entries)| {
            for (i, e) in entries.iter_mut().enumerate() {
                e.seq = from_seq + 2 * i as u64;
            }
            let to_seq = from_seq + 2 * entries.len() as u64;
            Frame::Batch(Batch { log_id, from_seq, to_seq, entries })
        },
    );
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
        (any::<u64>(), any::<u64>())
            .prop_map(|(head_seq, unix_ms)| Frame::Heartbeat(Heartbeat { head_seq, unix_ms })),
        chunk,
        (any::<u64>(), "[ -~]{0,50}")
            .prop_map(|(retry_after_ms, reason)| Frame::GoAway(GoAway { retry_after_ms, reason })),
        "[ -~]{0,50}".prop_map(|m| Frame::Error(ErrorFrame::new(ErrorCode::Violation, m))),
    ]
}

proptest! {
    #[test]
    fn every_frame_round_trips(f in frame()) {
        let bytes = encode(&f).unwrap();
        prop_assert_eq!(decode(&bytes), Ok(f));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
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
