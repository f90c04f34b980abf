//! The coalescing window (`live.write_coalesce_ms`) with real clients: ffmpeg
//! publishes over HTTP POST, WebSocket-FLV and HTTP-FLV players note when each piece
//! arrives. A joining player's preamble goes out at once; live tags then arrive in
//! one burst per window, one write each (for a player at the live edge, written by
//! the stream's writer shard without waking the player's task).

mod common;

use std::time::{Duration, Instant};

use common::*;
use flv::{Demuxer, DemuxerConfig, TagType};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Long enough to tell apart from the tag rate (~73 tags/s) and scheduling noise.
const WINDOW_MS: u64 = 500;
/// How long the players listen to the live stream after their preamble.
const LISTEN: Duration = Duration::from_secs(3);
/// Arrivals closer than this belong to the same burst (one write).
const SAME_BURST: Duration = Duration::from_millis(100);

/// Groups arrival instants into bursts; returns the instants each burst started.
fn bursts(arrivals: &[Instant]) -> Vec<Instant> {
    let mut starts: Vec<Instant> = Vec::new();
    let mut last: Option<Instant> = None;
    for &at in arrivals {
        if last.is_none_or(|l| at.duration_since(l) > SAME_BURST) {
            starts.push(at);
        }
        last = Some(at);
    }
    starts
}

/// Checks the bursts of live data that followed the preamble: about one per
/// window, never closer than most of a window.
fn check_window(what: &str, starts: &[Instant]) {
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    println!("{what}: {} bursts, gaps {gaps:?}", starts.len());
    let most = (LISTEN.as_millis() as u64 / WINDOW_MS) as usize + 2;
    assert!(
        starts.len() <= most,
        "{what}: {} bursts in {LISTEN:?}: the {WINDOW_MS} ms window was not kept",
        starts.len()
    );
    assert!(starts.len() >= 3, "{what}: the stream stopped flowing");
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_millis(WINDOW_MS * 6 / 10),
            "{what}: two writes {gap:?} apart with a {WINDOW_MS} ms window"
        );
    }
}

/// How many whole chunks of a chunked HTTP response `data` (head included) holds.
fn http_chunks(data: &[u8]) -> usize {
    let find = |from: usize, pat: &[u8]| {
        data[from..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|i| from + i)
    };
    let mut at = find(0, b"\r\n\r\n").expect("a response head") + 4;
    let mut chunks = 0;
    while let Some(eol) = find(at, b"\r\n") {
        let size = std::str::from_utf8(&data[at..eol])
            .ok()
            .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
            .expect("a chunk size line");
        let next = eol + 2 + size + 2;
        if size == 0 || next > data.len() {
            break;
        }
        chunks += 1;
        at = next;
    }
    chunks
}

/// `wsrelay_player_writes_total{protocol}` now.
async fn writes(addr: std::net::SocketAddr, protocol: &str) -> f64 {
    counter(addr, "wsrelay_player_writes_total", protocol).await
}

/// The counter `name{protocol}` now.
async fn counter(addr: std::net::SocketAddr, name: &str, protocol: &str) -> f64 {
    let metrics = http_get(addr, "/metrics").await.unwrap();
    let series = format!("{name}{{protocol=\"{protocol}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Checks that a player connected `since` wrote at most once per window (plus
/// its preamble).
fn check_writes(what: &str, writes: f64, since: Instant) {
    let windows = (since.elapsed().as_millis() as f64 / WINDOW_MS as f64).ceil() + 1.0;
    println!("{what}: {writes} writes in about {windows} windows");
    assert!(
        writes <= windows + 1.0,
        "{what}: {writes} writes for about {windows} windows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_batches_live_tags_and_never_delays_a_join() {
    let server = server(|c| {
        c.live.write_coalesce_ms = WINDOW_MS;
        // A window of this stream (~160 KB) in one write, not split at 64 KiB.
        c.live.player_write_batch_bytes = 1 << 20;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "window", media());
    wait_live(addr, "window").await;
    // A GOP (1 s) is cached by now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // WebSocket-FLV: one message per tag.
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/live/window.flv"))
        .await
        .expect("ws connect");
    let mut demux = Demuxer::new(DemuxerConfig::default());
    let mut first_keyframe = None;
    let mut live: Vec<Instant> = Vec::new();
    let mut live_tags = 0;
    let mut preamble_done: Option<Instant> = None;
    while started.elapsed() < LISTEN + Duration::from_millis(WINDOW_MS) {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("data within 5 s")
            .expect("stream continues")
            .expect("no error");
        let Message::Binary(data) = msg else { continue };
        let at = Instant::now();
        demux.push(&data);
        while let Some(tag) = demux.next_tag().expect("valid FLV") {
            if first_keyframe.is_none() && tag.is_keyframe() && !tag.is_sequence_header() {
                first_keyframe = Some(at - started);
            }
        }
        // The preamble arrives as one burst right after the join; the rest is live.
        match preamble_done {
            None if live.is_empty() && at.duration_since(started) < SAME_BURST * 3 => {}
            None => {
                preamble_done = Some(at);
                live.push(at);
                live_tags += 1;
            }
            Some(_) => {
                live.push(at);
                live_tags += 1;
            }
        }
    }
    let ttfk = first_keyframe.expect("a keyframe arrived");
    println!("WS-FLV time to first keyframe with a {WINDOW_MS} ms window: {ttfk:?}");
    assert!(
        ttfk < Duration::from_millis(WINDOW_MS / 2),
        "the join waited for the window: first keyframe after {ttfk:?}"
    );
    let starts = bursts(&live);
    check_window("WS-FLV", &starts);
    assert!(
        live_tags >= starts.len() * 10,
        "WS-FLV: {live_tags} tags in {} bursts: not batched",
        starts.len()
    );
    // One write per window for this player (plus its preamble).
    check_writes("WS-FLV", writes(addr, "ws").await, started);
    // At the live edge the stream's writer shard writes it: its own task was not
    // woken once per window, only for its join (and at most one hand-back).
    let wakeups = counter(addr, "wsrelay_player_wakeups_total", "ws").await;
    println!(
        "WS-FLV: {wakeups} player task wakeups for {} bursts",
        starts.len()
    );
    assert!(
        wakeups <= 2.0,
        "WS-FLV: the player's task woke {wakeups} times for {} windows",
        starts.len()
    );
    drop(ws);

    // HTTP-FLV: one HTTP chunk per write, so chunk arrivals show the window too.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    tcp.write_all(b"GET /live/window.flv HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut arrivals = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut received: Vec<u8> = Vec::new();
    let mut first_data = None;
    while started.elapsed() < LISTEN + Duration::from_millis(WINDOW_MS) {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("data within 5 s")
            .unwrap();
        assert!(n > 0, "HTTP-FLV ended early");
        received.extend_from_slice(&buf[..n]);
        let at = Instant::now();
        first_data.get_or_insert(at - started);
        if at.duration_since(started) >= SAME_BURST * 3 {
            arrivals.push(at);
        }
    }
    let first = first_data.unwrap();
    println!(
        "HTTP-FLV first bytes after {first:?}; {} bytes",
        received.len()
    );
    assert!(first < Duration::from_millis(WINDOW_MS / 2));
    check_window("HTTP-FLV", &bursts(&arrivals));
    // One HTTP chunk per window (a tag used to be three chunks).
    check_writes("HTTP-FLV", writes(addr, "http").await, started);
    check_writes("HTTP-FLV chunks", http_chunks(&received) as f64, started);
    let wakeups = counter(addr, "wsrelay_player_wakeups_total", "http").await;
    println!("HTTP-FLV: {wakeups} player task wakeups");
    assert!(
        wakeups <= 2.0,
        "HTTP-FLV: the player's task woke {wakeups} times: not written by the shard"
    );

    server.shutdown().await;
}

/// The FLV tags of `flv` (header included), parsed by our demuxer, which checks
/// every PreviousTagSize, and `finish`: nothing is left over. Returns (type,
/// timestamp, keyframe).
fn flv_tags(flv: &[u8]) -> Vec<(TagType, u32, bool)> {
    let mut demux = Demuxer::new(DemuxerConfig::default());
    demux.push(flv);
    let mut tags = Vec::new();
    while let Some(tag) = demux.next_tag().expect("a well-formed FLV") {
        tags.push((tag.tag_type, tag.timestamp, tag.is_keyframe()));
    }
    demux.finish().expect("whole tags, nothing left over");
    tags
}

/// Reads from `s` until `done(read so far)`, within 15 s.
async fn read_until(s: &mut tokio::net::TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(15), async {
        while !done(&out) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed early");
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the response in time");
    out
}

/// HTTP-FLV players on plain TCP get their chunks written by the player's task and
/// the writer shards, not hyper. The body must still be well-formed HTTP/1.1: whole
/// chunks of whole tags, then hyper's last chunk when the stream ends, and nothing
/// after it. An HTTP/1.0 client (no chunks) gets a close-delimited body from hyper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_flv_body_is_whole_chunks_and_ends_with_the_last_chunk() {
    let server = server(|c| {
        c.live.write_coalesce_ms = 50;
        c.live.publisher_grace_ms = 200;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let short = make_media("h264-aac-4s.flv", 4, &[]);
    let mut publisher = publish_http(addr, "chunks", &short);
    wait_live(addr, "chunks").await;

    let mut keep = tokio::net::TcpStream::connect(addr).await.unwrap();
    keep.write_all(format!("GET /live/chunks.flv HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut old = tokio::net::TcpStream::connect(addr).await.unwrap();
    old.write_all(format!("GET /live/chunks.flv HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let old = tokio::spawn(async move {
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), old.read_to_end(&mut response))
            .await
            .expect("the HTTP/1.0 body ends")
            .unwrap();
        response
    });

    // HTTP/1.1: read to the last chunk (the stream ends after the publisher's file).
    let response = read_until(&mut keep, |r| r.ends_with(b"\r\n0\r\n\r\n")).await;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let (flv, after) = dechunk(&response[split..]);
    assert!(
        after.is_empty(),
        "{} bytes after the last chunk",
        after.len()
    );
    let tags = flv_tags(&flv);
    let video: Vec<_> = tags.iter().filter(|t| t.0 == TagType::Video).collect();
    println!(
        "HTTP/1.1: {} bytes, {} tags, {} video",
        flv.len(),
        tags.len(),
        video.len()
    );
    assert!(
        video.len() >= 25,
        "at least a second of video: {}",
        video.len()
    );
    assert!(video.iter().any(|t| t.2), "a keyframe");
    assert!(
        video.windows(2).all(|w| w[0].1 <= w[1].1),
        "video timestamps in order"
    );

    // HTTP/1.0: the whole FLV, then the close.
    let response = old.await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(!head.contains("chunked"), "{head}");
    let old_tags = flv_tags(&response[split..]);
    println!("HTTP/1.0: {} tags", old_tags.len());
    assert!(
        old_tags.len() >= video.len(),
        "the HTTP/1.0 player got the stream"
    );

    let _ = publisher.wait().await;
    server.shutdown().await;
}
