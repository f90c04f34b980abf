//! Criterion: the per-tag fan-out path, as wsrelay runs it.
//!
//! - `fanout/push`: what the publisher side does per tag — `Publisher::push` (timeline,
//!   `WireTag::encode` once, GOP cache, one send on the shared broadcast ring).
//! - `fanout/ws/N`: push one tag, then for each of N players what `egress::run_player`
//!   and `WsSink` do: receive from the ring, clone the shared `Bytes`, build the
//!   WebSocket binary frame header and hand header + payload to one vectored write
//!   into a socket stand-in that accepts everything. Per-element = per tag per player.
//! - `fanout/ws_tungstenite/N`: the same through tungstenite's `write` + `flush` (the
//!   path before egress bypassed it: every payload is copied into its write buffer).
//! - `fanout/http/N`: the same with the HTTP-FLV path's bounded body channel.
//!
//! The FLV demuxer and the GOP join snapshot are benchmarked in `flv/benches/flv.rs`.

use std::hint::black_box;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flv::{Tag, TagType};
use hyper_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use hyper_tungstenite::tungstenite::{Message, WebSocket};
use wsrelay::config::LiveConfig;
use wsrelay::live::egress;
use wsrelay::live::{Entry, PublisherInfo, Streams, Subscription};
use wsrelay::vocab::Protocol;

/// A socket stand-in: counts what is written, never has anything to read.
struct Sink(u64);

impl Read for Sink {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = bufs.iter().map(|b| b.len()).sum::<usize>();
        self.0 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A 2.5 Mbit/s, 30 fps stream: a keyframe (~40 KiB) every 30 frames, inter frames
/// ~9 KiB, AAC frames ~370 bytes in between.
struct Source {
    n: u32,
}

impl Source {
    fn next_tag(&mut self) -> Tag {
        self.n += 1;
        let ts = self.n * 16;
        if self.n.is_multiple_of(2) {
            return Tag::new(TagType::Audio, ts, Bytes::from(vec![0xaf; 370]));
        }
        let frame = self.n / 2;
        let (first, len) = if frame.is_multiple_of(30) {
            (0x17, 40_000)
        } else {
            (0x27, 9_000)
        };
        let mut body = vec![0u8; len];
        body[0] = first;
        body[1] = 1;
        Tag::new(TagType::Video, ts, Bytes::from(body))
    }
}

fn sequence_headers() -> [Tag; 2] {
    [
        Tag::new(
            TagType::Video,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 0]),
        ),
        Tag::new(
            TagType::Audio,
            0,
            Bytes::from_static(&[0xaf, 0, 0x12, 0x10]),
        ),
    ]
}

fn ws_config() -> WebSocketConfig {
    // As src/server.rs configures player sockets.
    WebSocketConfig::default()
        .write_buffer_size(64 << 10)
        .max_write_buffer_size((64 << 10) + (8 << 20) + 1024)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();
    let hub = Streams::new(LiveConfig::default());
    let info = PublisherInfo {
        protocol: Protocol::Http,
        remote: SocketAddr::from(([127, 0, 0, 1], 1)),
    };
    let mut publisher = hub.publish("bench", info).expect("first publisher");
    for tag in sequence_headers() {
        publisher.push(tag).expect("push");
    }
    let mut source = Source { n: 0 };
    // Pre-build tags so the bench measures the relay, not the test data.
    let tags: Vec<Tag> = (0..600).map(|_| source.next_tag()).collect();
    let mut k: usize = 0;
    let mut next = move || {
        k += 1;
        let mut t = tags[k % tags.len()].clone();
        t.timestamp = (k as u32).wrapping_mul(16);
        t
    };

    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push", |b| b.iter(|| publisher.push(next()).expect("push")));
    for players in [1usize, 100, 1000] {
        g.throughput(Throughput::Elements(players as u64));
        let mut raw: Vec<(Subscription, Sink)> = (0..players)
            .map(|_| (hub.play("bench").expect("play"), Sink(0)))
            .collect();
        g.bench_function(format!("ws/{players}"), |b| {
            b.iter(|| {
                publisher.push(next()).expect("push");
                for (sub, sink) in &mut raw {
                    let mut batch = Vec::new();
                    while let Ok(Entry::Tag(frame)) = sub.rx.try_recv() {
                        batch.push(frame.wire().clone());
                    }
                    let heads: Vec<([u8; 10], usize)> = batch
                        .iter()
                        .map(|m| egress::binary_frame_header(m.len()))
                        .collect();
                    let mut slices = Vec::with_capacity(batch.len() * 2);
                    for (message, (head, n)) in batch.iter().zip(&heads) {
                        slices.push(IoSlice::new(&head[..*n]));
                        slices.push(IoSlice::new(message));
                    }
                    let n = sink.write_vectored(&slices).expect("write");
                    black_box(n);
                }
            })
        });
        black_box(raw.iter().map(|(_, s)| s.0).sum::<u64>());
        drop(raw);
        let mut subs: Vec<(Subscription, WebSocket<Sink>)> = (0..players)
            .map(|_| {
                let sub = hub.play("bench").expect("play");
                let ws = WebSocket::from_raw_socket(Sink(0), Role::Server, Some(ws_config()));
                (sub, ws)
            })
            .collect();
        g.bench_function(format!("ws_tungstenite/{players}"), |b| {
            b.iter(|| {
                publisher.push(next()).expect("push");
                for (sub, ws) in &mut subs {
                    while let Ok(Entry::Tag(frame)) = sub.rx.try_recv() {
                        ws.write(Message::Binary(frame.to_bytes())).expect("write");
                    }
                    ws.flush().expect("flush");
                }
            })
        });
        black_box(subs.iter().map(|(_, ws)| ws.get_ref().0).sum::<u64>());
        drop(subs);

        let mut subs: Vec<(
            Subscription,
            tokio::sync::mpsc::Sender<Bytes>,
            tokio::sync::mpsc::Receiver<Bytes>,
        )> = (0..players)
            .map(|_| {
                let (tx, rx) = tokio::sync::mpsc::channel(192);
                (hub.play("bench").expect("play"), tx, rx)
            })
            .collect();
        g.bench_function(format!("http/{players}"), |b| {
            b.iter(|| {
                publisher.push(next()).expect("push");
                for (sub, tx, rx) in &mut subs {
                    while let Ok(Entry::Tag(frame)) = sub.rx.try_recv() {
                        tx.try_send(frame.to_bytes())
                            .expect("room in the body channel");
                    }
                    while let Ok(chunk) = rx.try_recv() {
                        black_box(chunk);
                    }
                }
            })
        });
    }
    g.finish();
    drop(publisher);
}

criterion_group!(fanout_benches, benches);
criterion_main!(fanout_benches);
