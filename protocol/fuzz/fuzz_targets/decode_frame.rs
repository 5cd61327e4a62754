//! Frame decoding must never panic or allocate without bound, and whatever decodes must
//! re-encode to exactly the same bytes (the codec's canonical-form rule).
#![no_main]

use libfuzzer_sys::fuzz_target;
use revmesh_protocol::codec::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode(data) {
        let again = encode(&frame).ok();
        assert_eq!(again.as_deref(), Some(data));
    }
});
