//! Any bytes in any chunking: the demuxer returns tags or a typed error, never panics,
//! never buffers past its limit, and every returned tag can be inspected and
//! re-encoded to exactly its wire size.
#![no_main]

use bytes::BytesMut;
use flv::{Demuxer, DemuxerConfig, GopCache, GopCacheConfig, Metadata, TagType};
use libfuzzer_sys::fuzz_target;

const MAX_TAG: usize = 64 << 10;

fuzz_target!(|input: (u8, &[u8])| {
    let (chunk, data) = input;
    let chunk = usize::from(chunk).max(1);
    let mut demux = Demuxer::new(DemuxerConfig {
        max_tag_size: MAX_TAG,
        ..DemuxerConfig::default()
    });
    let mut cache: GopCache = GopCache::new(GopCacheConfig {
        max_bytes: 256 << 10,
        max_duration_ms: 5_000,
    });
    for piece in data.chunks(chunk) {
        demux.push(piece);
        loop {
            match demux.next_tag() {
                Ok(Some(tag)) => {
                    let _ = (
                        tag.video(),
                        tag.audio(),
                        tag.is_keyframe(),
                        tag.is_sequence_header(),
                    );
                    if tag.tag_type == TagType::Script {
                        let _ = Metadata::parse(&tag.body).map(|m| m.encode());
                    }
                    let mut out = BytesMut::new();
                    tag.write_with_timestamp(tag.timestamp ^ 0x00ff_ff00, &mut out);
                    assert_eq!(out.len(), tag.encoded_len());
                    cache.push(tag);
                    assert!(cache.bytes() <= 256 << 10);
                    let _ = cache.join().count();
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.offset();
                    return;
                }
            }
        }
        assert!(demux.buffered() <= MAX_TAG + 15 + chunk);
    }
    let _ = demux.finish();
});
