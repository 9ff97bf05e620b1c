//! The REPL's line tokenizer (and the text protocol's) on arbitrary bytes:
//! never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = distro_db::text::tokenize(data);
});
