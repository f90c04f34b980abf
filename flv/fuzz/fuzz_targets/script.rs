//! Any script-tag body: `onMetaData` parsing (our bounded AMF0 reader) and the
//! `@setDataFrame` stripping never panic, and what parses re-encodes and parses again.
#![no_main]

use bytes::Bytes;
use flv::{Metadata, is_metadata, strip_set_data_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = strip_set_data_frame(Bytes::copy_from_slice(data));
    assert!(body.len() <= data.len());
    let _ = is_metadata(&body);
    if let Ok(meta) = Metadata::parse(&body) {
        let again = Metadata::parse(&meta.encode()).expect("what we encode parses");
        assert_eq!(again.properties.len(), meta.properties.len());
    }
});
