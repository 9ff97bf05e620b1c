//! What a node reads back from disk or a peer besides records: stored
//! objects (with their clocks) and layouts. Never panics; an object that
//! decodes is validated without panicking.
#![no_main]

use distro_db::cluster::layout::Layout;
use distro_db::object::Object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(o) = Object::from_bytes(data) {
        let _ = o.validate();
    }
    if let Ok(l) = Layout::from_bytes(data) {
        let _ = Layout::from_bytes(&l.to_bytes()).expect("a layout re-encodes");
    }
});
