//! Any AMF0 command body: decoding never panics, never aborts on a hostile count,
//! and never recurses past the reader's depth bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsrelay::rtmp::command::{Command, leading_name};

fuzz_target!(|data: &[u8]| {
    let _ = leading_name(data);
    let _ = Command::parse(data);
});
