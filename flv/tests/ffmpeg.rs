//! A real FLV made by ffmpeg (H.264 + AAC, GOP 1 s), demuxed and checked packet by packet
//! against what `ffprobe -show_packets` says about the same file.
//!
//! Needs `ffmpeg` and `ffprobe` on PATH (Debian: `apt-get install ffmpeg`); fails, never
//! skips, without them.

use std::path::{Path, PathBuf};
use std::process::Command;

use flv::{
    AudioCodec, AudioPacketType, Demuxer, DemuxerConfig, GopCache, GopCacheConfig, Header,
    Metadata, Tag, TagType, VideoCodec, VideoPacketType,
};
use serde_json::Value;

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("flv-ffmpeg-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); install it: apt-get install -y ffmpeg")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Each demuxed tag with the stream offset where it starts.
fn demux(bytes: &[u8], chunk: usize) -> (Header, Vec<(u64, Tag)>) {
    let mut d = Demuxer::new(DemuxerConfig::default());
    let mut tags = Vec::new();
    for c in bytes.chunks(chunk) {
        d.push(c);
        while let Some(tag) = d.next_tag().expect("ffmpeg output demuxes") {
            let start = d.offset() - (Tag::HEADER_LEN + tag.body.len()) as u64;
            tags.push((start, tag));
        }
    }
    d.finish().expect("ffmpeg output ends cleanly");
    (d.header().unwrap(), tags)
}

#[test]
fn ffmpeg_h264_aac_matches_ffprobe() {
    let dir = temp_dir();
    let file = dir.join("out.flv");
    let file_str = file.to_str().unwrap();
    run(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "flv",
            file_str,
        ],
    );
    let probe: Value = serde_json::from_slice(&run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_packets",
            "-show_streams",
            "-of",
            "json",
            file_str,
        ],
    ))
    .unwrap();
    let bytes = std::fs::read(&file).unwrap();

    let (header, tags) = demux(&bytes, 4096);
    assert_eq!(
        header,
        Header {
            audio: true,
            video: true
        }
    );
    // Chunking does not matter.
    assert_eq!(demux(&bytes, 1357).1, tags);

    // onMetaData first.
    assert!(tags[0].1.is_metadata());
    let meta = Metadata::parse(&tags[0].1.body).unwrap();
    assert_eq!(meta.width, Some(640.0));
    assert_eq!(meta.height, Some(360.0));
    assert_eq!(meta.framerate, Some(25.0));
    assert_eq!(meta.video_codec_id, Some(7.0));
    assert_eq!(meta.audio_codec_id, Some(10.0));
    assert_eq!(meta.audio_sample_rate, Some(44100.0));
    assert!(meta.encoder.as_deref().unwrap_or("").starts_with("Lav"));

    // Codec names agree with ffprobe's streams.
    let streams = probe["streams"].as_array().unwrap();
    let codec_name = |kind: &str| {
        streams
            .iter()
            .find(|s| s["codec_type"] == kind)
            .and_then(|s| s["codec_name"].as_str())
            .unwrap()
            .to_owned()
    };

    // Sequence headers: one each, before any frame; ffprobe does not list them as packets.
    let vseq: Vec<_> = tags
        .iter()
        .filter(|(_, t)| t.tag_type == TagType::Video && t.is_sequence_header())
        .collect();
    let aseq: Vec<_> = tags
        .iter()
        .filter(|(_, t)| t.tag_type == TagType::Audio && t.is_sequence_header())
        .collect();
    assert_eq!((vseq.len(), aseq.len()), (1, 1));
    let v = vseq[0].1.video().unwrap();
    assert_eq!(v.codec, VideoCodec::Avc);
    assert_eq!(v.codec.name(), codec_name("video"));
    let a = aseq[0].1.audio().unwrap();
    assert_eq!(a.codec, AudioCodec::Aac);
    assert_eq!(a.codec.name(), codec_name("audio"));

    // Media tags vs ffprobe packets, one by one, in file order.
    let media: Vec<&(u64, Tag)> = tags
        .iter()
        .filter(|(_, t)| match t.tag_type {
            TagType::Video => t.video().unwrap().packet_type == VideoPacketType::CodedFrames,
            TagType::Audio => t.audio().unwrap().packet_type == AudioPacketType::CodedFrames,
            _ => false,
        })
        .collect();
    let packets = probe["packets"].as_array().unwrap();
    assert_eq!(media.len(), packets.len());
    let num = |p: &Value, k: &str| -> i64 {
        match &p[k] {
            Value::Number(n) => n.as_i64().unwrap(),
            Value::String(s) => s.parse().unwrap(),
            other => panic!("{k}: {other:?}"),
        }
    };
    let (mut video_count, mut audio_count) = (0, 0);
    let mut key_pts = Vec::new();
    for ((offset, tag), p) in media.iter().zip(packets) {
        assert_eq!(num(p, "pos"), *offset as i64, "tag offset");
        assert_eq!(num(p, "dts"), i64::from(tag.timestamp), "dts at {offset}");
        let keyflag = p["flags"].as_str().unwrap().starts_with('K');
        match p["codec_type"].as_str().unwrap() {
            "video" => {
                video_count += 1;
                assert_eq!(tag.tag_type, TagType::Video);
                let v = tag.video().unwrap();
                assert_eq!(
                    num(p, "pts"),
                    i64::from(tag.timestamp) + i64::from(v.composition_time),
                    "pts at {offset}"
                );
                assert_eq!(num(p, "size"), tag.body.len() as i64 - 5);
                assert_eq!(tag.is_keyframe(), keyflag, "keyframe flag at {offset}");
                if keyflag {
                    key_pts.push(num(p, "pts"));
                }
            }
            "audio" => {
                audio_count += 1;
                assert_eq!(tag.tag_type, TagType::Audio);
                assert_eq!(num(p, "size"), tag.body.len() as i64 - 2);
            }
            other => panic!("unexpected packet type {other}"),
        }
    }
    // 4 s at 25 fps, a keyframe every 25 frames; 44.1 kHz AAC is ~43 frames/s.
    assert_eq!(video_count, 100);
    assert!(
        (170..=180).contains(&audio_count),
        "{audio_count} audio packets"
    );
    let key_dts: Vec<u32> = tags
        .iter()
        .filter(|(_, t)| t.is_keyframe())
        .map(|(_, t)| t.timestamp)
        .collect();
    assert_eq!(key_dts, vec![0, 1000, 2000, 3000]);
    assert_eq!(key_pts.len(), 4);

    // A player joining at the end gets metadata, both headers and the last GOP.
    let mut cache: GopCache = GopCache::new(GopCacheConfig::default());
    for (_, t) in &tags {
        cache.push(t.clone());
    }
    let joined: Vec<&Tag> = cache.join().collect();
    assert!(joined[0].is_metadata());
    assert!(joined[1].is_sequence_header() && joined[1].tag_type == TagType::Video);
    assert!(joined[2].is_sequence_header() && joined[2].tag_type == TagType::Audio);
    assert!(joined[3].is_keyframe());
    assert_eq!(joined[3].timestamp, 3000);
    assert_eq!(cache.header(), header);
    // 25 frames, then the AVC end-of-sequence tag ffmpeg writes last.
    let gop_video: Vec<VideoPacketType> = cache
        .gop()
        .filter_map(|t| t.video())
        .map(|v| v.packet_type)
        .collect();
    assert_eq!(gop_video.len(), 26);
    assert!(
        gop_video[..25]
            .iter()
            .all(|p| *p == VideoPacketType::CodedFrames)
    );
    assert_eq!(gop_video[25], VideoPacketType::SequenceEnd);

    std::fs::remove_dir_all(&dir).ok();
}
