//! The coalescing window (`live.write_coalesce_ms`) with real clients: ffmpeg
//! publishes over HTTP POST, WebSocket-FLV and HTTP-FLV players note when each piece
//! arrives. A joining player's preamble goes out at once; live tags then arrive in
//! one burst per window, one write each.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flv::{Demuxer, DemuxerConfig};
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
/// window, never closer than most of a window, carrying many tags each.
fn check_window(what: &str, starts: &[Instant], tags: usize) {
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    println!(
        "{what}: {tags} tags in {} bursts, gaps {gaps:?}",
        starts.len()
    );
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
    assert!(
        tags >= starts.len() * 10,
        "{what}: {tags} tags in {} bursts: not batched",
        starts.len()
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
    check_window("WS-FLV", &bursts(&live), live_tags);
    // The metrics count one write per window per player (plus its preamble).
    let metrics = http_get(addr, "/metrics").await.unwrap();
    let writes: f64 = metrics
        .lines()
        .find(|l| l.starts_with("wsrelay_player_writes_total{protocol=\"ws\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("wsrelay_player_writes_total for ws");
    let windows = (started.elapsed().as_millis() as f64 / WINDOW_MS as f64).ceil() + 1.0;
    println!("WS writes: {writes}, live tags {live_tags}");
    assert!(
        writes <= windows + 1.0,
        "{writes} writes for about {windows} windows"
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
    let mut received = 0usize;
    let mut first_data = None;
    while started.elapsed() < LISTEN + Duration::from_millis(WINDOW_MS) {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("data within 5 s")
            .unwrap();
        assert!(n > 0, "HTTP-FLV ended early");
        received += n;
        let at = Instant::now();
        first_data.get_or_insert(at - started);
        if at.duration_since(started) >= SAME_BURST * 3 {
            arrivals.push(at);
        }
    }
    let first = first_data.unwrap();
    println!("HTTP-FLV first bytes after {first:?}; {received} bytes");
    assert!(first < Duration::from_millis(WINDOW_MS / 2));
    let starts = bursts(&arrivals);
    // Reads, not tags: a burst is one write (it may take a few reads).
    check_window("HTTP-FLV", &starts, arrivals.len().max(starts.len() * 10));

    server.shutdown().await;
}
