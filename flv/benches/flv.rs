//! Criterion benchmarks: demux throughput over a realistic live stream, and the GOP
//! cache join snapshot.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flv::{Demuxer, DemuxerConfig, GopCache, GopCacheConfig, Header, Metadata, Tag, TagType};

/// A synthetic stream shaped like a 2.5 Mbit/s H.264 + 128 kbit/s AAC live stream:
/// 25 fps video with a keyframe every 2 s (keyframes ~8x an inter frame), AAC frames
/// every 23 ms (~370 bytes), `seconds` long. Returns the FLV bytes and the tags.
fn stream(seconds: u32) -> (Vec<u8>, Vec<Tag>) {
    let video_bps = 2_500_000 / 8;
    let frames_per_gop = 50;
    // One keyframe = 8 units, 49 inter frames = 1 unit each: 57 units per 2 s.
    let unit = video_bps * 2 / (8 + frames_per_gop - 1);
    let mut tags = vec![
        Tag::new(
            TagType::Script,
            0,
            Metadata::from_properties(vec![
                ("width".into(), amf::amf0::Value::Number(1280.0)),
                ("height".into(), amf::amf0::Value::Number(720.0)),
            ])
            .encode(),
        ),
        Tag::new(
            TagType::Video,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]),
        ),
        Tag::new(
            TagType::Audio,
            0,
            Bytes::from_static(&[0xAF, 0, 0x12, 0x10]),
        ),
    ];
    let mut media = Vec::new();
    for frame in 0..seconds * 25 {
        let ts = frame * 40;
        let key = frame % frames_per_gop == 0;
        let size = if key { unit * 8 } else { unit };
        let mut body = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0x50];
        body.resize(size as usize, 0xAB);
        media.push(Tag::new(TagType::Video, ts, Bytes::from(body)));
    }
    for i in 0..seconds * 44_100 / 1024 {
        let ts = i * 1024 * 1000 / 44_100;
        let mut body = vec![0xAF, 1];
        body.resize(370, 0x21);
        media.push(Tag::new(TagType::Audio, ts, Bytes::from(body)));
    }
    media.sort_by_key(|t| t.timestamp);
    tags.extend(media);
    let mut out = Header {
        audio: true,
        video: true,
    }
    .encode()
    .to_vec();
    for t in &tags {
        t.write_to(&mut out);
    }
    (out, tags)
}

fn demux(c: &mut Criterion) {
    let (bytes, tags) = stream(20);
    let mut group = c.benchmark_group("demux");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    // Socket-read-sized pushes: what the server does.
    for chunk in [16 * 1024, 64 * 1024] {
        group.bench_function(format!("push {}KiB + next_tag", chunk / 1024), |b| {
            b.iter(|| {
                let mut d = Demuxer::new(DemuxerConfig::default());
                let mut n = 0usize;
                for c in bytes.chunks(chunk) {
                    d.push(c);
                    while let Some(tag) = d.next_tag().unwrap() {
                        n += tag.body.len();
                        black_box(&tag);
                    }
                }
                n
            })
        });
    }
    group.bench_function("push + next_tag + inspect", |b| {
        b.iter(|| {
            let mut d = Demuxer::new(DemuxerConfig::default());
            let mut keys = 0usize;
            for c in bytes.chunks(64 * 1024) {
                d.push(c);
                while let Some(tag) = d.next_tag().unwrap() {
                    keys += usize::from(tag.is_keyframe() || tag.is_sequence_header());
                }
            }
            keys
        })
    });
    group.finish();

    let mut group = c.benchmark_group("mux");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("write_with_timestamp", |b| {
        let mut out = Vec::with_capacity(bytes.len());
        b.iter(|| {
            out.clear();
            for t in &tags {
                t.write_with_timestamp(t.timestamp + 1000, &mut out);
            }
            out.len()
        })
    });
    group.finish();
}

fn gop(c: &mut Criterion) {
    let (_, tags) = stream(20);
    let mut cache: GopCache = GopCache::new(GopCacheConfig::default());
    for t in &tags {
        cache.push(t.clone());
    }
    let joined = cache.join().count();
    let mut group = c.benchmark_group("gop_cache");
    group.bench_function(format!("join snapshot ({joined} tags)"), |b| {
        b.iter(|| cache.join().cloned().collect::<Vec<Tag>>())
    });
    group.bench_function("push (whole 20 s stream)", |b| {
        b.iter(|| {
            let mut c: GopCache = GopCache::new(GopCacheConfig::default());
            for t in &tags {
                c.push(t.clone());
            }
            c.bytes()
        })
    });
    group.finish();
}

criterion_group!(benches, demux, gop);
criterion_main!(benches);
