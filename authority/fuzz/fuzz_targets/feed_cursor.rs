//! Any bytes as the change feed's `Last-Event-ID` header: the cursor parser never panics, and
//! a cursor it accepts is a plain decimal seq.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revmesh_authority::fuzzing::start_cursor;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = start_cursor(Some(text), None, 5) {
        assert_eq!(text.trim().parse::<u64>().ok(), Some(c));
    }
});
