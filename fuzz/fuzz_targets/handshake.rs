//! The server side of the peer handshake fed whatever a stranger sends:
//! it refuses (a stranger cannot know the key), within its time bound, and
//! never panics.
#![no_main]

use std::time::Duration;

use distro_db::rpc::auth::{self, PeerKey};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let refused = rt.block_on(async {
        let (mut c, mut s) = tokio::io::duplex(1 << 16);
        let key = PeerKey::derive(b"secret", "cluster");
        let server = tokio::spawn(async move { auth::server(&mut s, &key).await });
        let _ = c.write_all(data).await;
        drop(c);
        tokio::time::timeout(Duration::from_secs(60), server).await
    });
    assert!(
        matches!(refused, Ok(Ok(Err(_)))),
        "a stranger's bytes were accepted"
    );
});
