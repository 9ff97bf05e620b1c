//! Peer frames on arbitrary bytes: the length prefix, requests and answers
//! never panic, and a request that decodes passes or fails validation
//! without panicking.
#![no_main]

use distro_db::rpc::frame;
use distro_db::rpc::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::frame_len(data);
    if let Ok((env, used)) = frame::decode::<Request>(data) {
        assert!(used <= data.len());
        let _ = env.body.validate(3);
    }
    if let Ok((_, used)) = frame::decode::<Response>(data) {
        assert!(used <= data.len());
    }
});
