//! Storage records and hint files on arbitrary bytes: never panic; a
//! record that decodes uses no more bytes than it was given, and re-encodes
//! to exactly those bytes (the CRC leaves no other way to decode).
#![no_main]

use distro_db::storage::log::{hint, record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((r, used)) = record::decode(data) {
        assert!(used <= data.len());
        let mut again = Vec::new();
        record::encode(&mut again, r.timestamp, r.flags, r.key, r.value);
        assert_eq!(&again[..], &data[..used]);
    }
    let _ = hint::decode(data, 7, |_, _, _, _, _| {});
});
