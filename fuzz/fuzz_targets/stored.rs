//! What a node reads back from disk or a peer besides records: stored
//! objects (with their clocks) and layouts. Never panics; an object that
//! decodes is validated without panicking, decodes as rmp_serde decodes it,
//! and survives re-encoding.
#![no_main]

use distro_db::cluster::layout::Layout;
use distro_db::object::Object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = Object::from_bytes(data);
    // The hand-written reader (src/object/codec.rs) accepts and refuses
    // exactly what rmp_serde reading the derived form does, and what it
    // accepts re-encodes to an object that reads back the same.
    let by_serde = rmp_serde::from_slice::<Object>(data);
    assert_eq!(decoded.as_ref().ok(), by_serde.as_ref().ok());
    if let Ok(o) = decoded {
        let _ = o.validate();
        assert_eq!(Object::from_bytes(&o.to_bytes()).ok(), Some(o));
    }
    if let Ok(l) = Layout::from_bytes(data) {
        let _ = Layout::from_bytes(&l.to_bytes()).expect("a layout re-encodes");
    }
});
