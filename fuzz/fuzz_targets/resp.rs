//! The RESP decoder on arbitrary bytes: never panics; a frame it decodes
//! re-encodes (as RESP3, which has every type the decoder reads) to bytes
//! that decode to the same frame.
#![no_main]

use distro_db::resp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    // Every frame in the buffer, as a pipelining client sends them.
    while at < data.len() {
        match resp::decode(&data[at..]) {
            Ok((frame, used)) => {
                assert!(used > 0 && used <= data.len() - at);
                let mut again = Vec::new();
                frame.encode_as(&mut again, resp::Proto::V3);
                let (back, n) = resp::decode(&again).expect("a re-encoded frame decodes");
                assert_eq!(n, again.len());
                assert_eq!(back, frame);
                at += used;
            }
            Err(_) => break,
        }
    }
});
