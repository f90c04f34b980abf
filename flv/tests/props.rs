//! Property tests: chunking invariance, mux/demux round trip, robustness on arbitrary
//! input, GOP cache invariants.

use bytes::Bytes;
use flv::{
    AudioConfig, AudioInfo, Demuxer, DemuxerConfig, Error, GopCache, GopCacheConfig, Header,
    Metadata, Tag, TagType, VideoInfo, strip_set_data_frame,
};
use proptest::prelude::*;

fn arb_tag() -> impl Strategy<Value = Tag> {
    let tag_type = prop_oneof![
        Just(TagType::Audio),
        Just(TagType::Video),
        Just(TagType::Script),
        any::<u8>().prop_map(TagType::from),
    ];
    (
        tag_type,
        any::<u32>(),
        0u32..0x0100_0000,
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(tag_type, timestamp, stream_id, body)| Tag {
            tag_type,
            timestamp,
            stream_id,
            body: Bytes::from(body),
        })
}

fn mux(header: Header, tags: &[Tag]) -> Vec<u8> {
    let mut out = header.encode().to_vec();
    for t in tags {
        t.write_to(&mut out);
    }
    out
}

/// Cuts `data` at the given (sorted, deduplicated) positions.
fn chunks<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts {
        out.push(&data[start..c]);
        start = c;
    }
    out.push(&data[start..]);
    out
}

fn demux_chunked(data: &[u8], cuts: &[usize]) -> Result<Vec<Tag>, Error> {
    let mut d = Demuxer::new(DemuxerConfig::default());
    let mut tags = Vec::new();
    for chunk in chunks(data, cuts) {
        d.push(chunk);
        while let Some(t) = d.next_tag()? {
            tags.push(t);
        }
    }
    d.finish()?;
    Ok(tags)
}

proptest! {
    #[test]
    fn demux_of_mux_is_identity(
        audio: bool,
        video: bool,
        tags in prop::collection::vec(arb_tag(), 0..30),
    ) {
        let data = mux(Header { audio, video }, &tags);
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(&data);
        let mut got = Vec::new();
        while let Some(t) = d.next_tag().unwrap() {
            got.push(t);
        }
        prop_assert_eq!(d.finish(), Ok(()));
        prop_assert_eq!(d.header(), Some(Header { audio, video }));
        prop_assert_eq!(&got, &tags);
        // And writing them again gives the same bytes.
        prop_assert_eq!(mux(Header { audio, video }, &got), data);
    }

    #[test]
    fn any_chunking_yields_identical_tags(
        tags in prop::collection::vec(arb_tag(), 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let data = mux(Header { audio: true, video: true }, &tags);
        let whole = demux_chunked(&data, &[]).unwrap();
        let chunked = demux_chunked(&data, &cuts).unwrap();
        prop_assert_eq!(&whole, &tags);
        prop_assert_eq!(&chunked, &tags);
    }

    #[test]
    fn rebased_timestamps_change_only_the_header(tag in arb_tag(), ts: u32) {
        let mut out = Vec::new();
        tag.write_with_timestamp(ts, &mut out);
        let mut expected = tag.clone();
        expected.timestamp = ts;
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(&Header::default().encode());
        d.push(&out);
        prop_assert_eq!(d.next_tag().unwrap(), Some(expected));
    }

    /// Arbitrary bytes (raw, or after a valid header so tag parsing is reached) never
    /// panic, and the buffer never holds more than one max-size tag + its header and
    /// trailer + the last chunk.
    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        with_header: bool,
        garbage in prop::collection::vec(any::<u8>(), 0..4000),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        max_tag_size in 0usize..2000,
    ) {
        let mut data = if with_header { Header::default().encode().to_vec() } else { Vec::new() };
        data.extend_from_slice(&garbage);
        let mut d = Demuxer::new(DemuxerConfig { max_tag_size, ..DemuxerConfig::default() });
        let mut failed = None;
        for chunk in chunks(&data, &cuts) {
            d.push(chunk);
            loop {
                match d.next_tag() {
                    Ok(Some(t)) => {
                        prop_assert!(t.body.len() <= max_tag_size);
                        let _ = (t.video(), t.audio(), t.is_keyframe(), t.is_metadata());
                        let _ = Metadata::parse(&t.body);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // Sticky.
                        prop_assert_eq!(d.next_tag(), Err(e.clone()));
                        failed = Some(e);
                        break;
                    }
                }
            }
            prop_assert!(d.buffered() <= max_tag_size + Tag::HEADER_LEN + Tag::TRAILER_LEN + chunk.len());
            prop_assert!(d.offset() + d.buffered() as u64 <= data.len() as u64);
        }
        if let Some(e) = failed {
            prop_assert_eq!(d.finish(), Err(e));
        }
    }

    /// Flipping bytes of a valid stream never panics; whatever comes out before an
    /// error is a prefix-consistent set of tags.
    #[test]
    fn corrupted_streams_never_panic(
        tags in prop::collection::vec(arb_tag(), 1..10),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut data = mux(Header { audio: true, video: true }, &tags);
        for (pos, val) in flips {
            let n = data.len();
            data[pos % n] = val;
        }
        let _ = demux_chunked(&data, &[7, 100, 1000]);
    }

    #[test]
    fn body_parsers_never_panic(body in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = VideoInfo::parse(&body);
        let _ = AudioInfo::parse(&body);
        let _ = Metadata::parse(&body);
        let _ = flv::is_metadata(&body);
        let _ = AudioConfig::parse(&body);
        for kind in [TagType::Audio, TagType::Video] {
            let _ = flv::for_browser_players(&Tag::new(kind, 0, Bytes::from(body.clone())));
        }
        prop_assert!(flv::for_browser_players(&Tag::new(TagType::Script, 0, Bytes::from(body.clone()))));
        let stripped = strip_set_data_frame(Bytes::from(body.clone()));
        prop_assert!(body.ends_with(&stripped));
    }

    /// Sequence headers that start like the real thing (legacy AAC, Enhanced `mp4a`,
    /// `Opus`, `fLaC`, a MultichannelConfig), then go random: never a panic, and what
    /// comes out is plausible.
    #[test]
    fn audio_config_never_panics_on_real_prefixes(
        which in 0usize..5,
        tail in prop::collection::vec(any::<u8>(), 0..48),
    ) {
        let prefixes: [&[u8]; 5] = [
            &[0xAF, 0x00],
            &[0x90, b'm', b'p', b'4', b'a'],
            &[0x90, b'O', b'p', b'u', b's', b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd'],
            &[0x90, b'f', b'L', b'a', b'C'],
            &[0x94, b'O', b'p', b'u', b's'],
        ];
        let mut body = prefixes[which].to_vec();
        body.extend_from_slice(&tail);
        if let Some(config) = AudioConfig::parse(&body) {
            prop_assert!(config.sample_rate != Some(0));
            prop_assert!(config.channels != Some(0));
            if which == 2 {
                prop_assert_eq!(config.sample_rate, Some(48_000));
            }
        }
    }

    /// Metadata bodies that start like the real thing, then go random.
    #[test]
    fn metadata_parser_never_panics(tail in prop::collection::vec(any::<u8>(), 0..256)) {
        for prefix in [&b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x01"[..], b"\x02\x00\x0aonMetaData\x03\x00\x01k"] {
            let mut body = prefix.to_vec();
            body.extend_from_slice(&tail);
            let _ = Metadata::parse(&body);
        }
    }

    /// Whatever is pushed, the cache stays within its bounds and a kept GOP starts with
    /// a keyframe.
    #[test]
    fn gop_cache_invariants(
        script in prop::collection::vec((0u8..6, 0u32..200, 0usize..300), 0..200),
        max_bytes in 0usize..20_000,
        max_duration_ms in 0u32..2_000,
    ) {
        let config = GopCacheConfig { max_bytes, max_duration_ms };
        let mut c: GopCache = GopCache::new(config);
        let mut ts = 0u32;
        for (kind, step, size) in script {
            ts += step;
            let mut body = match kind {
                0 => vec![0x17, 1, 0, 0, 0],
                1 => vec![0x27, 1, 0, 0, 0],
                2 => vec![0x17, 0, 0, 0, 0],
                3 => vec![0xAF, 1],
                4 => vec![0xAF, 0],
                _ => vec![],
            };
            body.resize(body.len() + size, 0);
            let tag_type = match kind { 0..=2 => TagType::Video, 3 | 4 => TagType::Audio, _ => TagType::Script };
            c.push(Tag::new(tag_type, ts, Bytes::from(body)));
            prop_assert!(c.bytes() <= max_bytes);
            prop_assert!(c.duration_ms() <= max_duration_ms);
            prop_assert_eq!(c.bytes(), c.gop().map(|t| t.encoded_len()).sum::<usize>());
            if c.has_keyframe() {
                prop_assert!(c.gop().next().unwrap().is_keyframe());
            }
            prop_assert!(c.gop().all(|t| !t.is_sequence_header() && !t.is_metadata()));
            let n = c.join().count();
            prop_assert_eq!(n, c.gop().count()
                + usize::from(c.metadata().is_some())
                + usize::from(c.video_sequence_header().is_some())
                + usize::from(c.audio_sequence_header().is_some())
                + usize::from(c.audio_multichannel_config().is_some()));
        }
    }
}
