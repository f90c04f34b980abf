//! Criterion: signaling message parse and route — `signaling::protocol::parse` alone,
//! and a whole `Room::handle` (parse, validate, rate limit, stamp `from`, serialize
//! the relayed message) plus draining its outputs, in rooms of 2 and 8 peers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use signaling::{Config, Input, Output, Room, WallClock};

/// A typical trickled ICE candidate.
const CANDIDATE: &str = r#"{"type":"candidate","to":"p1","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag sXJ3 network-cost 999","sdpMid":"0","sdpMLineIndex":0}}"#;

/// An offer with a ~3 KiB SDP (audio + video, many codecs).
fn offer() -> String {
    let mut sdp = String::from(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n",
    );
    while sdp.len() < 3000 {
        sdp.push_str("a=rtpmap:96 VP8/90000\\r\\na=rtcp-fb:96 goog-remb\\r\\na=rtcp-fb:96 transport-cc\\r\\n");
    }
    format!(r#"{{"type":"offer","to":"p1","sdp":{{"type":"offer","sdp":"{sdp}"}}}}"#)
}

/// A room with `peers` joined peers p0..p{n-1} on connections 0..n-1, rate limits
/// lifted (the bench sends far faster than a real client may).
fn room(peers: u64, t0: Instant) -> Room {
    let config = Config {
        rate_burst: 1_000_000_000,
        rate_per_second: 1_000_000_000,
        ..Config::default()
    };
    let mut room = Room::new(
        "bench",
        Arc::new(config),
        WallClock::new(t0, 1_700_000_000_000),
        [7; 32],
    );
    for conn in 0..peers {
        room.handle(t0, Input::Connect { conn });
        room.handle(
            t0,
            Input::Text {
                conn,
                text: format!(r#"{{"type":"join","peer":"p{conn}"}}"#),
            },
        );
    }
    room.drain_outputs().for_each(drop);
    room
}

fn relay(room: &mut Room, now: Instant, text: String) -> usize {
    room.handle(now, Input::Text { conn: 0, text });
    let mut sent = 0;
    while let Some(out) = room.poll_output() {
        if let Output::Send { text, .. } = out {
            sent += black_box(text).len();
        }
    }
    sent
}

fn benches(c: &mut Criterion) {
    let t0 = Instant::now();
    let offer = offer();

    let mut g = c.benchmark_group("signaling/parse");
    for (name, text) in [("candidate", CANDIDATE), ("offer_3k", offer.as_str())] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(signaling::protocol::parse(black_box(text)).is_ok()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("signaling/route");
    g.throughput(Throughput::Elements(1));
    for peers in [2u64, 8] {
        let mut r = room(peers, t0);
        g.bench_function(format!("candidate_to_one/room{peers}"), |b| {
            b.iter_batched(
                || CANDIDATE.to_owned(),
                |text| relay(&mut r, t0, text),
                BatchSize::SmallInput,
            )
        });
        let mut r = room(peers, t0);
        g.bench_function(format!("offer_3k_to_one/room{peers}"), |b| {
            b.iter_batched(
                || offer.clone(),
                |text| relay(&mut r, t0, text),
                BatchSize::SmallInput,
            )
        });
        let mut r = room(peers, t0);
        let broadcast = r#"{"type":"message","data":{"chat":"hello everyone"}}"#;
        g.bench_function(format!("message_to_all/room{peers}"), |b| {
            b.iter_batched(
                || broadcast.to_owned(),
                |text| relay(&mut r, t0, text),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(signaling_benches, benches);
criterion_main!(signaling_benches);
