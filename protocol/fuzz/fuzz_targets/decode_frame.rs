//! Frame decoding must never panic or allocate without bound, and whatever decodes must
//! re-encode to exactly the same bytes (the codec's canonical-form rule). The borrowed decoder
//! the agent uses for batches must agree with the owned one on every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revmesh_protocol::codec::{decode, decode_view, encode, Decoded};
use revmesh_protocol::frame::{Batch, Frame};

fuzz_target!(|data: &[u8]| {
    let owned = decode(data);
    if let Ok(frame) = &owned {
        let again = encode(frame).ok();
        assert_eq!(again.as_deref(), Some(data));
    }
    let view = decode_view(data).map(|d| match d {
        Decoded::Frame(f) => f,
        Decoded::Batch { batch, waited } => {
            let entries = batch.entries.iter().map(|e| e.to_entry()).collect();
            let b = Batch { log_id: batch.log_id, from_seq: batch.from_seq, to_seq: batch.to_seq, entries };
            if waited {
                Frame::WaitedBatch(b)
            } else {
                Frame::Batch(b)
            }
        }
    });
    assert_eq!(view.map_err(|e| e.reason()), owned.map_err(|e| e.reason()));
});
