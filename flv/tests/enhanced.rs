//! Handcrafted Enhanced RTMP/FLV streams (HEVC, AV1, VP9, Opus, FLAC), written byte by
//! byte from the Enhanced RTMP v2 specification, demuxed and inspected end to end.

use bytes::Bytes;
use flv::{
    AudioCodec, AudioPacketType, Demuxer, DemuxerConfig, FrameType, GopCache, GopCacheConfig,
    Header, Metadata, Tag, TagType, VideoCodec, VideoPacketType,
};

/// ExVideoTagHeader: IsExHeader (0x80) | FrameType << 4 | VideoPacketType, FourCC.
fn ex_video(frame_type: u8, packet_type: u8, fourcc: &[u8; 4], rest: &[u8]) -> Bytes {
    let mut b = vec![0x80 | frame_type << 4 | packet_type];
    b.extend_from_slice(fourcc);
    b.extend_from_slice(rest);
    Bytes::from(b)
}

/// ExAudioTagHeader: SoundFormat 9 (ExHeader) << 4 | AudioPacketType, FourCC.
fn ex_audio(packet_type: u8, fourcc: &[u8; 4], rest: &[u8]) -> Bytes {
    let mut b = vec![0x90 | packet_type];
    b.extend_from_slice(fourcc);
    b.extend_from_slice(rest);
    Bytes::from(b)
}

const KEY: u8 = 1;
const INTER: u8 = 2;
const SEQUENCE_START: u8 = 0;
const CODED_FRAMES: u8 = 1;
const SEQUENCE_END: u8 = 2;
const CODED_FRAMES_X: u8 = 3;

/// An HEVCDecoderConfigurationRecord for Main profile, level 3.1, with empty arrays.
const HVCC: &[u8] = &[
    0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5D, 0xF0, 0x00, 0xFC,
    0xFD, 0xF8, 0xF8, 0x00, 0x00, 0x0F, 0x00,
];
/// AV1CodecConfigurationRecord: marker/version, main profile level 4.0, 8-bit 4:2:0.
const AV1C: &[u8] = &[0x81, 0x08, 0x0C, 0x00];
/// VPCodecConfigurationRecord (vpcC body): profile 0, level 3.1, 8-bit, BT.709.
const VPCC: &[u8] = &[0x00, 0x1F, 0x80, 0x01, 0x01, 0x01, 0x00, 0x00];
/// OpusHead: version 1, 2 channels, pre-skip 312, 48 kHz, gain 0, mapping family 0.
const OPUS_HEAD: &[u8] = b"OpusHead\x01\x02\x38\x01\x80\xBB\x00\x00\x00\x00\x00";
/// `fLaC` + a last-metadata-block STREAMINFO header (34 bytes follow).
const FLAC_HEADER: &[u8] = &[
    b'f', b'L', b'a', b'C', 0x80, 0x00, 0x00, 0x22, 0x10, 0x00, 0x10, 0x00, 0x00, 0x00, 0x0E, 0x00,
    0x30, 0x5C, 0x0A, 0xC4, 0x42, 0xF0, 0x00, 0x00, 0xAC, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0,
];

fn metadata(video_fourcc: &[u8; 4], audio_fourcc: &[u8; 4]) -> Tag {
    use amf::amf0::Value;
    let props = vec![
        ("width".to_string(), Value::Number(1280.0)),
        ("height".to_string(), Value::Number(720.0)),
        ("framerate".to_string(), Value::Number(30.0)),
        // Enhanced RTMP: codec ids are FourCCs as numbers.
        (
            "videocodecid".to_string(),
            Value::Number(f64::from(u32::from_be_bytes(*video_fourcc))),
        ),
        (
            "audiocodecid".to_string(),
            Value::Number(f64::from(u32::from_be_bytes(*audio_fourcc))),
        ),
    ];
    Tag::new(
        TagType::Script,
        0,
        Metadata::from_properties(props).encode(),
    )
}

fn stream(tags: &[Tag]) -> Vec<u8> {
    let mut out = Header {
        audio: true,
        video: true,
    }
    .encode()
    .to_vec();
    for t in tags {
        t.write_to(&mut out);
    }
    out
}

fn demux(bytes: &[u8]) -> Vec<Tag> {
    let mut d = Demuxer::new(DemuxerConfig::default());
    let mut tags = Vec::new();
    // Odd chunk size so tags straddle pushes.
    for chunk in bytes.chunks(7) {
        d.push(chunk);
        while let Some(t) = d.next_tag().expect("valid stream") {
            tags.push(t);
        }
    }
    d.finish().expect("complete stream");
    tags
}

#[test]
fn hevc_and_opus() {
    let tags = vec![
        metadata(b"hvc1", b"Opus"),
        Tag::new(
            TagType::Video,
            0,
            ex_video(KEY, SEQUENCE_START, b"hvc1", HVCC),
        ),
        Tag::new(
            TagType::Audio,
            0,
            ex_audio(SEQUENCE_START, b"Opus", OPUS_HEAD),
        ),
        // CodedFrames carries an SI24 composition time (here 66 ms), then HVCC NALUs.
        Tag::new(
            TagType::Video,
            0,
            ex_video(
                KEY,
                CODED_FRAMES,
                b"hvc1",
                &[0, 0, 66, 0, 0, 0, 2, 0x26, 0x01],
            ),
        ),
        Tag::new(
            TagType::Audio,
            0,
            ex_audio(CODED_FRAMES, b"Opus", &[0xFC, 0xFF, 0xFE]),
        ),
        // CodedFramesX: composition time implicitly 0.
        Tag::new(
            TagType::Video,
            33,
            ex_video(INTER, CODED_FRAMES_X, b"hvc1", &[0, 0, 0, 2, 0x02, 0x01]),
        ),
        Tag::new(
            TagType::Audio,
            20,
            ex_audio(CODED_FRAMES, b"Opus", &[0xFC, 0xFF, 0xFE]),
        ),
        Tag::new(
            TagType::Video,
            66,
            ex_video(KEY, SEQUENCE_END, b"hvc1", &[]),
        ),
    ];
    let got = demux(&stream(&tags));
    assert_eq!(got, tags);

    let meta = Metadata::parse(&got[0].body).unwrap();
    assert_eq!(meta.width, Some(1280.0));
    assert_eq!(
        meta.video_codec_id,
        Some(f64::from(u32::from_be_bytes(*b"hvc1")))
    );

    let vseq = got[1].video().unwrap();
    assert_eq!(vseq.codec, VideoCodec::Hevc);
    assert!(vseq.enhanced);
    assert!(got[1].is_sequence_header() && !got[1].is_keyframe());

    let aseq = got[2].audio().unwrap();
    assert_eq!(aseq.codec, AudioCodec::Opus);
    assert_eq!(aseq.codec.name(), "opus");
    assert!(got[2].is_sequence_header());

    let key = got[3].video().unwrap();
    assert_eq!(key.frame_type, FrameType::Key);
    assert_eq!(key.packet_type, VideoPacketType::CodedFrames);
    assert_eq!(key.composition_time, 66);
    assert!(got[3].is_keyframe());

    assert_eq!(
        got[4].audio().unwrap().packet_type,
        AudioPacketType::CodedFrames
    );
    let inter = got[5].video().unwrap();
    assert_eq!(inter.packet_type, VideoPacketType::CodedFramesX);
    assert!(!got[5].is_keyframe());
    assert_eq!(
        got[7].video().unwrap().packet_type,
        VideoPacketType::SequenceEnd
    );
    assert!(!got[7].is_keyframe() && !got[7].is_sequence_header());

    // A player joining after the inter frame gets metadata, headers and the GOP.
    let mut cache: GopCache = GopCache::new(GopCacheConfig::default());
    for t in &got[..7] {
        cache.push(t.clone());
    }
    let joined: Vec<&Tag> = cache.join().collect();
    assert_eq!(
        joined,
        vec![
            &got[0], &got[1], &got[2], &got[3], &got[4], &got[5], &got[6]
        ]
    );
    assert_eq!(
        cache.header(),
        Header {
            audio: true,
            video: true
        }
    );
}

#[test]
fn av1_and_flac() {
    let tags = vec![
        metadata(b"av01", b"fLaC"),
        Tag::new(
            TagType::Video,
            0,
            ex_video(KEY, SEQUENCE_START, b"av01", AV1C),
        ),
        Tag::new(
            TagType::Audio,
            0,
            ex_audio(SEQUENCE_START, b"fLaC", FLAC_HEADER),
        ),
        // AV1 CodedFrames: no composition time; a temporal delimiter OBU + sequence header OBU.
        Tag::new(
            TagType::Video,
            0,
            ex_video(KEY, CODED_FRAMES, b"av01", &[0x12, 0x00, 0x0A, 0x0B, 0x00]),
        ),
        Tag::new(
            TagType::Audio,
            0,
            ex_audio(CODED_FRAMES, b"fLaC", &[0xFF, 0xF8, 0x69]),
        ),
        Tag::new(
            TagType::Video,
            33,
            ex_video(INTER, CODED_FRAMES, b"av01", &[0x12, 0x00, 0x32]),
        ),
    ];
    let got = demux(&stream(&tags));
    assert_eq!(got, tags);
    let v = got[1].video().unwrap();
    assert_eq!((v.codec, v.codec.name()), (VideoCodec::Av1, "av1"));
    assert!(got[1].is_sequence_header());
    let a = got[2].audio().unwrap();
    assert_eq!((a.codec, a.codec.name()), (AudioCodec::Flac, "flac"));
    assert!(got[2].is_sequence_header());
    let key = got[3].video().unwrap();
    assert!(key.is_keyframe());
    assert_eq!(key.composition_time, 0);
    assert!(!got[5].is_keyframe());
    assert_eq!(got[4].audio().unwrap().sample_rate_hz(), None);
}

#[test]
fn vp9_alone_and_mpeg2ts_av1() {
    let tags = vec![
        Tag::new(
            TagType::Video,
            0,
            ex_video(KEY, SEQUENCE_START, b"vp09", VPCC),
        ),
        Tag::new(
            TagType::Video,
            0,
            ex_video(KEY, CODED_FRAMES, b"vp09", &[0x82, 0x49, 0x83]),
        ),
        Tag::new(
            TagType::Video,
            33,
            ex_video(INTER, CODED_FRAMES, b"vp09", &[0x86, 0x00]),
        ),
        // AV1 signalled MPEG-2 TS style (packet type 5) counts as a sequence header.
        Tag::new(TagType::Video, 66, ex_video(KEY, 5, b"av01", &[0x80, 0x01])),
    ];
    let got = demux(&stream(&tags));
    assert_eq!(got, tags);
    assert_eq!(got[0].video().unwrap().codec.name(), "vp9");
    assert!(got[0].is_sequence_header());
    assert!(got[1].is_keyframe());
    assert!(!got[2].is_keyframe());
    assert_eq!(
        got[3].video().unwrap().packet_type,
        VideoPacketType::Mpeg2TsSequenceStart
    );
    assert!(got[3].is_sequence_header());

    // Video-only: a joining player's header says so.
    let mut cache: GopCache = GopCache::new(GopCacheConfig::default());
    for t in &got[..3] {
        cache.push(t.clone());
    }
    assert_eq!(
        cache.header(),
        Header {
            audio: false,
            video: true
        }
    );
    assert_eq!(cache.join().count(), 3);
}

/// What ffmpeg 7+ writes for HEVC + Opus: a video `colorInfo` Metadata packet (frame
/// type 5, packet type 4) and an audio MultichannelConfig (packet type 4) before the
/// sequence starts. Filtered with `for_browser_players`, exactly those two go, and
/// what remains is what mpegts.js accepts; the Opus header still gives rate and
/// channels.
#[test]
fn ffmpeg7_preamble_filtered_for_browsers() {
    // `colorInfo` AMF: string "colorInfo", then an object (abridged).
    let color_info = {
        let mut b = vec![0x80 | 5 << 4 | 4];
        b.extend_from_slice(b"hvc1");
        b.extend_from_slice(&[0x02, 0x00, 0x09]);
        b.extend_from_slice(b"colorInfo");
        b.extend_from_slice(&[0x03, 0x00, 0x00, 0x09]);
        Bytes::from(b)
    };
    // MultichannelConfig: AudioChannelOrder 1 (native), 2 channels, mask FL|FR.
    let multichannel = ex_audio(4, b"Opus", &[0x01, 0x02, 0x00, 0x00, 0x00, 0x03]);
    let tags = vec![
        metadata(b"hvc1", b"Opus"),
        Tag::new(
            TagType::Video,
            0,
            ex_video(KEY, SEQUENCE_START, b"hvc1", HVCC),
        ),
        Tag::new(TagType::Video, 0, color_info),
        Tag::new(TagType::Audio, 0, multichannel),
        Tag::new(
            TagType::Audio,
            0,
            ex_audio(SEQUENCE_START, b"Opus", OPUS_HEAD),
        ),
        Tag::new(
            TagType::Video,
            0,
            ex_video(
                KEY,
                CODED_FRAMES,
                b"hvc1",
                &[0, 0, 0, 0, 0, 0, 2, 0x26, 0x01],
            ),
        ),
        Tag::new(
            TagType::Audio,
            0,
            ex_audio(CODED_FRAMES, b"Opus", &[0xFC, 0xFF, 0xFE]),
        ),
    ];
    let got = demux(&stream(&tags));
    assert_eq!(got, tags);
    let for_browsers: Vec<&Tag> = got.iter().filter(|t| flv::for_browser_players(t)).collect();
    assert_eq!(
        for_browsers,
        vec![&got[0], &got[1], &got[4], &got[5], &got[6]],
        "the colorInfo and MultichannelConfig packets are dropped, nothing else"
    );
    // Everything a browser still gets is a packet type mpegts.js accepts (0, 1, 2, 3).
    for t in &for_browsers[1..] {
        assert!(t.body[0] & 0x0F <= 3, "{t:?}");
    }
    assert_eq!(
        got[4].audio_config(),
        Some(flv::AudioConfig {
            sample_rate: Some(48_000),
            channels: Some(2),
        })
    );
    assert_eq!(got[3].audio_config().and_then(|c| c.channels), Some(2));

    // A relay that filters before its cache: joiners get no dropped packet either.
    let mut cache: GopCache = GopCache::new(GopCacheConfig::default());
    for t in for_browsers {
        cache.push(t.clone());
    }
    assert!(cache.audio_multichannel_config().is_none());
    assert_eq!(cache.join().count(), 5);
}
