//! Regression tests for the safety fixes, over real sockets against an in-process
//! server (and the real binary for SIGTERM): WebSockets hold their connection caps
//! for life, over-cap connections get `503` and are closed at once, stalled HTTP-FLV
//! sockets are closed, the fan-out ring is bounded in bytes, timestamps continue
//! through a 32-bit wrap, shutdown is bounded during a grace period, admin routes
//! are closed by default, `HEAD` starts no player, and WebSocket closes are answered.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use flv::{Demuxer, DemuxerConfig, Tag, TagType};
use futures_util::{SinkExt, StreamExt};
use signaling::Secret;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{RwLock, RwLockReadGuard};
use tokio_tungstenite::tungstenite::{self, Message};
use wsrelay::access::auth::{mint, unix_now};
use wsrelay::vocab::Action;

const SECOND: Duration = Duration::from_secs(1);

type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The memory test measures the whole process's RSS: it runs alone, the other
/// in-process tests share this lock among themselves.
static RSS_EXCLUSIVE: RwLock<()> = RwLock::const_new(());

/// Taken by every test that runs a server in this process.
async fn shared() -> RwLockReadGuard<'static, ()> {
    RSS_EXCLUSIVE.read().await
}

/// A raw HTTP/1.1 request with `Connection: close` and only `headers` (no admin
/// token); returns status, response head and body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(10 * SECOND, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), body.to_owned())
}

/// `/metrics`, polled until the server admits the request again (slots that were
/// just freed may take a moment to come back).
async fn metrics_once_admitted(addr: SocketAddr) -> String {
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        if let Ok(text) = http_get(addr, "/metrics").await {
            return text;
        }
        assert!(Instant::now() < deadline, "slots never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `series` in a `/metrics` text (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// The value of the sample `series` of `/metrics` (0 when absent).
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    sample(&http_get(addr, "/metrics").await.unwrap(), series)
}

/// `/api/streams` (with the admin token of the test config), as JSON.
async fn streams(addr: SocketAddr) -> Vec<serde_json::Value> {
    let body = http_get(addr, "/api/streams").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["streams"].as_array().unwrap().clone()
}

/// The entry of `name` in `/api/streams`, if listed.
async fn stream_status(addr: SocketAddr, name: &str) -> Option<serde_json::Value> {
    streams(addr).await.into_iter().find(|s| s["name"] == name)
}

/// Polls `/api/streams` until `name` is listed with a video track.
async fn wait_video(addr: SocketAddr, name: &str) {
    let deadline = Instant::now() + 15 * SECOND;
    loop {
        if let Some(s) = stream_status(addr, name).await
            && s["video"].is_object()
        {
            return;
        }
        assert!(Instant::now() < deadline, "stream {name} never went live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of a WebSocket upgrade to `url` (101 when it succeeded).
async fn ws_status(url: &str) -> (u16, Option<WsClient>) {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, res)) => (res.status().as_u16(), Some(ws)),
        Err(tungstenite::Error::Http(res)) => (res.status().as_u16(), None),
        Err(e) => panic!("WebSocket to {url} failed: {e}"),
    }
}

/// A WebSocket to `url`, retrying while the server answers `503` (a slot that was
/// just freed by a closing connection may take a moment to come back).
async fn ws_connect_retrying(url: &str) -> WsClient {
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        match ws_status(url).await {
            (101, Some(ws)) => return ws,
            (503, _) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (status, _) => panic!("WebSocket to {url}: status {status}"),
        }
    }
}

/// Joins signaling room `room` as `peer` (retrying a `503` briefly); returns the
/// socket after `welcome`.
async fn signal_join(addr: SocketAddr, room: &str, peer: &str) -> WsClient {
    let mut ws = ws_connect_retrying(&format!("ws://{addr}/signal/{room}")).await;
    let join = serde_json::json!({"type": "join", "peer": peer}).to_string();
    ws.send(Message::text(join)).await.unwrap();
    loop {
        let msg = tokio::time::timeout(5 * SECOND, ws.next())
            .await
            .expect("welcome in time")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "welcome" {
                return ws;
            }
            assert_eq!(v["type"], "peer-joined", "{v}");
        }
    }
}

/// Sends a signaling `ping` and waits for its `pong`: the socket is alive.
async fn signal_ping(ws: &mut WsClient) {
    ws.send(Message::text(r#"{"type":"ping","id":"alive"}"#))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + 5 * SECOND;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("pong in time")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "pong" {
                return;
            }
        }
    }
}

/// Connects without sending a byte and reads until the server closes: the answer
/// must be a `503` naming `reason`, and the close must come within 2 s.
async fn refused_at_once(addr: SocketAddr, reason: &str) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(2 * SECOND, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        read.is_ok(),
        "the server did not close an over-cap connection within 2 s; got {text:?}"
    );
    assert!(
        text.starts_with("HTTP/1.1 503"),
        "an over-cap connection gets 503 without asking: {text:?}"
    );
    assert!(text.contains(reason), "{text:?}");
    println!("refused in {:?}", started.elapsed());
}

/// A GET sent on a fresh connection that then gets no further attention.
async fn get_and_hold(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_hold_the_per_ip_cap_for_their_whole_life() {
    let _shared = shared().await;
    let server = server(|c| {
        c.max_connections_per_ip = 20;
        c.header_read_timeout_ms = 60_000;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let mut held = Vec::new();
    for i in 0..20 {
        held.push(signal_join(addr, "caps", &format!("p{i}")).await);
    }
    // Long after their upgrades, the WebSockets still count.
    tokio::time::sleep(SECOND).await;
    let per_ip = "too many connections from your address";
    refused_at_once(addr, per_ip).await;
    let (status, _, body) = request(addr, "GET", "/healthz", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(per_ip), "{body}");
    let (status, _) = ws_status(&format!("ws://{addr}/signal/caps")).await;
    assert_eq!(status, 503, "a 21st WebSocket upgrade is refused");
    // The held sockets were not disturbed.
    for ws in &mut held {
        signal_ping(ws).await;
    }

    // Closing five frees five slots, and only five.
    for mut ws in held.drain(..5) {
        ws.close(None).await.unwrap();
    }
    for i in 20..25 {
        held.push(signal_join(addr, "caps", &format!("p{i}")).await);
    }
    refused_at_once(addr, per_ip).await;
    let (status, _) = ws_status(&format!("ws://{addr}/signal/caps")).await;
    assert_eq!(status, 503, "the cap is full again");
    for ws in &mut held {
        signal_ping(ws).await;
    }
    drop(held);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_players_hold_the_global_cap_for_their_whole_life() {
    let _shared = shared().await;
    let server = server(|c| {
        c.max_connections = 10;
        c.header_read_timeout_ms = 60_000;
    })
    .await;
    let addr = server.http_addr().unwrap();
    // The publisher's POST holds one connection, nine players the rest.
    let _publisher = publish_http(addr, "capped", media());
    wait_live(addr, "capped").await;
    let url = format!("ws://{addr}/live/capped.flv");
    let mut players = Vec::new();
    let spawn_player = |ws: WsClient| {
        tokio::spawn(async move {
            let mut ws = ws;
            let mut bytes = 0usize;
            while let Some(Ok(msg)) = ws.next().await {
                bytes += msg.len();
            }
            bytes
        })
    };
    for _ in 0..9 {
        let mut ws = ws_connect_retrying(&url).await;
        let first = tokio::time::timeout(5 * SECOND, ws.next()).await;
        assert!(
            matches!(first, Ok(Some(Ok(Message::Binary(_))))),
            "player gets data: {first:?}"
        );
        players.push(spawn_player(ws));
    }
    tokio::time::sleep(SECOND).await;
    let global = "server at connection limit";
    refused_at_once(addr, global).await;
    let (status, _) = ws_status(&url).await;
    assert_eq!(status, 503, "an 11th connection is refused");
    for p in &players {
        assert!(!p.is_finished(), "the players keep playing");
    }

    // Three players leave: three new connections get in, the next does not.
    for p in players.drain(..3) {
        p.abort();
    }
    for _ in 0..3 {
        let ws = ws_connect_retrying(&url).await;
        players.push(spawn_player(ws));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    refused_at_once(addr, global).await;
    for p in &players {
        assert!(!p.is_finished(), "the players keep playing");
    }
    for p in players.drain(..) {
        p.abort();
    }
    // Slots come back; the refusals were counted.
    let text = metrics_once_admitted(addr).await;
    let refused = sample(
        &text,
        "wsrelay_connections_refused_total{reason=\"connection_limit\"}",
    );
    assert!(
        refused >= 3.0,
        "connection_limit refusals counted: {refused}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_cap_plain_connections_get_503_and_are_closed_at_once() {
    let _shared = shared().await;
    let server = server(|c| {
        c.max_connections_per_ip = 5;
        c.header_read_timeout_ms = 60_000;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refusals: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                refused_at_once(addr, "too many connections from your address").await
            })
        })
        .collect();
    for r in refusals {
        r.await
            .expect("every over-cap connection is refused and closed");
    }
    // The five admitted connections are untouched (open, nothing sent to them).
    for s in &mut idle {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        assert!(read.is_err(), "an admitted idle connection was disturbed");
    }
    drop(idle);
    let text = metrics_once_admitted(addr).await;
    let refused = sample(
        &text,
        "wsrelay_connections_refused_total{reason=\"per_ip_limit\"}",
    );
    assert!(refused >= 20.0, "per_ip_limit refusals counted: {refused}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http_flv_players_are_disconnected_with_their_connection() {
    let _shared = shared().await;
    let server = server(|c| {
        c.live.player_write_timeout_ms = 1_000;
        // Keep-alive idling must not be what closes the sockets below.
        c.header_read_timeout_ms = 60_000;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "stall", media());
    wait_live(addr, "stall").await;

    // A normal player, read all along.
    let mut player = WsPlayer::connect(addr, "stall").await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut check = StreamCheck::new();
        let mut worst_gap = Duration::ZERO;
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                tag = player.next(10 * SECOND) => {
                    let tag = tag.expect("the normal player keeps playing");
                    check.tag(&tag, player.started.elapsed());
                    worst_gap = worst_gap.max(last.elapsed());
                    last = Instant::now();
                }
            }
        }
        (check.video, worst_gap)
    });

    // Ten HTTP-FLV players that never read, with small receive buffers.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(format!("GET /live/stall.flv HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        stalled.push(s);
    }

    // The server gives up on them once the socket buffers are full (a few MB on
    // loopback, about 10 s of this stream) and the 1 s write timeout passes: only the
    // WebSocket player is left.
    let deadline = Instant::now() + 30 * SECOND;
    loop {
        let stalled_out = metric(
            addr,
            "wsrelay_player_disconnects_total{reason=\"write_stalled\"}",
        )
        .await
            + metric(
                addr,
                "wsrelay_player_disconnects_total{reason=\"too_slow\"}",
            )
            .await;
        let players = stream_status(addr, "stall").await.expect("still live")["players"]
            .as_u64()
            .unwrap();
        if stalled_out >= 10.0 && players == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stalled players not disconnected: {stalled_out} cut off, {players} players"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("stalled players cut off after {:?}", started.elapsed());
    let (status, body) = http_request(addr, "GET", "/api/streams/stall", b"")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    let protocols: Vec<&str> = detail["players_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["protocol"].as_str().unwrap())
        .collect();
    assert_eq!(protocols, ["ws"], "{detail}");

    // Each stalled socket was closed by the server: draining it ends in EOF (or a
    // reset), not in a connection kept alive.
    let deadline = tokio::time::Instant::now() + 15 * SECOND;
    for (i, s) in stalled.iter_mut().enumerate() {
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0usize;
        let end = tokio::time::timeout_at(deadline, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => return "eof".to_owned(),
                    Ok(n) => total += n,
                    Err(e) => return format!("error {e}"),
                }
            }
        })
        .await;
        let end = end.unwrap_or_else(|_| {
            panic!("stalled socket {i} still open after draining {total} bytes")
        });
        println!("stalled socket {i}: {total} bytes, then {end}");
    }

    // The normal player played in real time throughout.
    let _ = stop_tx.send(());
    let (video, worst_gap) = reader.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!("normal player: {video} video tags in {secs:.1} s, worst gap {worst_gap:?}");
    assert!(
        video as f64 > secs * 25.0 * 0.6,
        "{video} video tags in {secs:.1} s"
    );
    assert!(worst_gap < 3 * SECOND, "worst gap {worst_gap:?}");
    assert!(stream_status(addr, "stall").await.is_some());
    server.shutdown().await;
}

/// An FLV video tag body of `len` bytes: `frame` is 0x17 (key) or 0x27 (inter),
/// `packet` 0 (sequence header) or 1 (NALUs).
fn avc_body(frame: u8, packet: u8, len: usize) -> Bytes {
    let mut body = vec![0u8; len];
    body[0] = frame;
    body[1] = packet;
    for (i, b) in body.iter_mut().enumerate().skip(5) {
        *b = (i * 31 % 251) as u8;
    }
    Bytes::from(body)
}

fn tag_bytes(tag: &Tag) -> Bytes {
    let mut buf = BytesMut::with_capacity(tag.encoded_len());
    tag.write_to(&mut buf);
    buf.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_memory_is_bounded_in_bytes_not_tags() {
    // The whole process's RSS is measured: nothing else may run meanwhile.
    let _exclusive = RSS_EXCLUSIVE.write().await;
    const TAG: usize = 2 << 20;
    const TAGS: u32 = 300;
    let server = server(|c| {
        c.live.max_publish_message_bytes = 8 << 20;
        c.live.max_tag_bytes = 8 << 20;
        c.live.player_backlog_bytes = 16 << 20;
        c.live.gop_max_bytes = 16 << 20;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let (mut publisher, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/live/big.flv?publish"))
            .await
            .expect("publisher connects");
    let header = flv::Header {
        audio: false,
        video: true,
    };
    let key = avc_body(0x17, 1, TAG);
    let inter = avc_body(0x27, 1, TAG);
    let config = Bytes::from_static(&[
        0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x04, 0x67, 0x64, 0x00,
        0x1f, 0x01, 0x00, 0x04, 0x68, 0xee, 0x3c, 0x80,
    ]);
    let mut first = BytesMut::new();
    first.extend_from_slice(&header.encode());
    Tag::new(TagType::Video, 0, config).write_to(&mut first);
    Tag::new(TagType::Video, 0, key.clone()).write_to(&mut first);
    publisher
        .send(Message::Binary(first.freeze()))
        .await
        .unwrap();
    wait_video(addr, "big").await;
    // A player that never reads.
    let (stalled_player, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/live/big.flv"))
        .await
        .expect("player connects");

    let baseline = rss_kib();
    let mut peak = baseline;
    let started = Instant::now();
    for i in 1..TAGS {
        let body = if i % 5 == 0 { &key } else { &inter };
        let tag = Tag::new(TagType::Video, i * 40, body.clone());
        tokio::time::timeout(
            10 * SECOND,
            publisher.send(Message::Binary(tag_bytes(&tag))),
        )
        .await
        .expect("the publisher is never held up")
        .expect("the publisher is not cut off");
        peak = peak.max(rss_kib());
    }
    let growth_mib = (peak - baseline) / 1024;
    println!(
        "{} MiB through in {:?}: RSS {} MiB at start, peak growth {growth_mib} MiB",
        (TAGS as usize * TAG) >> 20,
        started.elapsed(),
        baseline / 1024
    );
    assert!(
        growth_mib < 200,
        "RSS grew by {growth_mib} MiB: the ring is not bounded in bytes"
    );

    // The publisher was never cut off: everything arrived and it is still live.
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let s = stream_status(addr, "big")
            .await
            .expect("stream still listed");
        assert_eq!(s["state"], "live", "{s}");
        assert_eq!(s["publisher"], "ws", "{s}");
        if s["bytes_in"].as_u64().unwrap() >= u64::from(TAGS) * TAG as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "not all tags arrived: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.close(None).await.unwrap();
    drop(stalled_player);
    server.shutdown().await;
}

/// The FLV header and the tags of the test media up to `ms` milliseconds.
fn media_tags(ms: u32) -> (flv::Header, Vec<Tag>) {
    let mut demux = Demuxer::new(DemuxerConfig::default());
    demux.push(&std::fs::read(media()).unwrap());
    let mut tags = Vec::new();
    while let Some(tag) = demux.next_tag().unwrap() {
        if tag.timestamp > ms {
            break;
        }
        tags.push(tag);
    }
    (demux.header().unwrap(), tags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_continue_through_a_32_bit_wrap_over_http_post() {
    let _shared = shared().await;
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();

    // Eight seconds of the test media, shifted to start 3 s before the wrap.
    const CONTENT_MS: u32 = 8_000;
    let shift = u32::MAX - 3_000;
    let (header, tags) = media_tags(CONTENT_MS);
    assert!(tags.len() > 300);

    let post = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /live/wrap.flv HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\
             Content-Type: video/x-flv\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let chunk = |data: &[u8]| {
            let mut out = format!("{:x}\r\n", data.len()).into_bytes();
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            out
        };
        s.write_all(&chunk(&header.encode())).await.unwrap();
        let start = tokio::time::Instant::now();
        let mut crossed = false;
        for tag in &tags {
            // Paced as live, by the original timestamps.
            tokio::time::sleep_until(start + Duration::from_millis(tag.timestamp.into())).await;
            let shifted = Tag {
                timestamp: tag.timestamp.wrapping_add(shift),
                ..tag.clone()
            };
            crossed |= shifted.timestamp < shift;
            s.write_all(&chunk(&tag_bytes(&shifted))).await.unwrap();
        }
        assert!(crossed, "the publisher's timestamps wrapped");
        s.write_all(b"0\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(10 * SECOND, s.read_to_end(&mut out))
            .await
            .expect("response to the POST")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    });

    wait_live(addr, "wrap").await;
    let mut player = WsPlayer::connect(addr, "wrap").await;
    let mut check = StreamCheck::new();
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    let end = loop {
        match player.next(10 * SECOND).await {
            Ok(tag) => {
                check.tag(&tag, player.started.elapsed());
                if tag.is_sequence_header() || tag.is_metadata() {
                    continue;
                }
                match tag.tag_type {
                    TagType::Video => video.push(tag.timestamp),
                    TagType::Audio => audio.push(tag.timestamp),
                    _ => {}
                }
            }
            Err(end) => break end,
        }
    };
    println!("player end: {end:?}");
    let response = post.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    for (track, ts) in [("video", &video), ("audio", &audio)] {
        let (first, last) = (ts[0], *ts.last().unwrap());
        let worst_step = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        println!(
            "{track}: {} tags, {first} -> {last} ms, largest step {worst_step} ms",
            ts.len()
        );
        // StreamCheck asserted non-decreasing; here: no freeze, no jump.
        assert!(
            last - first >= CONTENT_MS - 2_500,
            "{track} advanced only {first} -> {last} ms over {CONTENT_MS} ms of content"
        );
        assert!(
            last - first <= CONTENT_MS + 500,
            "{track}: {first} -> {last}"
        );
        assert!(worst_step < 1_000, "{track} jumped by {worst_step} ms");
    }
    server.shutdown().await;
}

/// The real binary: `wsrelay --config FILE --http 127.0.0.1:0 --rtmp off`.
async fn spawn_binary(config: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .arg("--config")
        .arg(config)
        .args(["--http", "127.0.0.1:0", "--rtmp", "off"])
        .env("RUST_LOG", "wsrelay=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run wsrelay");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(15 * SECOND, lines.next_line())
        .await
        .expect("listening line")
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("listening http://")
        .expect("listening line")
        .parse()
        .unwrap();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_grace_period_exits_within_the_shutdown_timeout() {
    let dir = scratch().join(format!("sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wsrelay.toml");
    std::fs::write(
        &file,
        "shutdown_timeout_ms = 2000\n[live]\npublisher_grace_ms = 30000\n",
    )
    .unwrap();
    let (mut child, addr) = spawn_binary(&file).await;
    let mut publisher = publish_http(addr, "graceful", media());
    wait_live(addr, "graceful").await;
    let mut player = WsPlayer::connect(addr, "graceful").await;
    let until = Instant::now() + 2 * SECOND;
    while Instant::now() < until {
        player.next(5 * SECOND).await.expect("tags");
    }

    // The publisher drops: the stream waits for it (30 s grace), the player stays.
    publisher.kill().await.unwrap();
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let s = stream_status(addr, "graceful").await.expect("listed");
        if s["state"] == "reconnecting" {
            assert_eq!(s["players"], 1, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "no grace period: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Read the player in the background, answering the server's close.
    let reader = tokio::spawn(async move {
        let mut close = None;
        loop {
            match tokio::time::timeout(10 * SECOND, player.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => close = Some(frame),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return (close, Some(e.to_string())),
                Ok(None) => return (close, None),
                Err(_) => return (close, Some("no end within 10 s".to_owned())),
            }
        }
    });

    let pid = child.id().unwrap().to_string();
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(10 * SECOND, child.wait())
        .await
        .expect("wsrelay exits on SIGTERM")
        .unwrap();
    let took = sent.elapsed();
    println!("exited {status} {took:?} after SIGTERM");
    assert!(
        took < 4 * SECOND,
        "took {took:?} to exit with shutdown_timeout_ms = 2000"
    );
    assert!(status.success(), "{status}");
    let (close, error) = reader.await.unwrap();
    let close = close.unwrap_or_else(|| panic!("the player got no close frame ({error:?})"));
    let frame = close.expect("a close code");
    assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
}

/// A play token for `stream` signed with `secret`.
fn play_token(secret: &str, stream: &str) -> String {
    mint(
        &Secret::new(secret),
        stream,
        Action::Play,
        Duration::from_secs(600),
        unix_now(),
    )
}

/// The names `/api/streams?QUERY` lists with `headers`.
async fn listed(addr: SocketAddr, query: &str, headers: &str) -> Vec<String> {
    let (status, _, body) = request(addr, "GET", &format!("/api/streams{query}"), headers).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut names: Vec<String> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_are_closed_by_default_and_protected_streams_unlisted() {
    let _shared = shared().await;
    // No admin token: the admin routes answer 403 admin_disabled, to anyone.
    let open = server(|c| c.admin_token = None).await;
    let addr = open.http_addr().unwrap();
    let _publisher = publish_http(addr, "cam", media());
    wait_live(addr, "cam").await;
    let mut player = WsPlayer::connect(addr, "cam").await;
    player.next(5 * SECOND).await.expect("plays");
    for (method, path) in [
        ("DELETE", "/api/streams/cam"),
        ("GET", "/api/streams/cam"),
        ("GET", "/api/rooms/room"),
    ] {
        for headers in ["", "Authorization: Bearer guess\r\n"] {
            let (status, _, body) = request(addr, method, path, headers).await;
            assert_eq!(status, 403, "{method} {path}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["code"], "admin_disabled", "{method} {path}: {body}");
            assert!(
                v["message"].as_str().unwrap().contains("admin_token"),
                "{body}"
            );
        }
    }
    // Nothing was kicked: the player keeps playing.
    let mut check = StreamCheck::new();
    let until = Instant::now() + 2 * SECOND;
    while Instant::now() < until {
        let tag = player
            .next(5 * SECOND)
            .await
            .expect("the stream was not kicked");
        if check.frames > 0 || tag.is_keyframe() {
            check.frames += 1;
        }
    }
    assert!(check.frames > 20);
    assert_eq!(listed(addr, "", "").await, ["cam"]);
    open.shutdown().await;

    // Play tokens for `private/`: the public list leaves those streams out.
    let guarded = server(|c| {
        c.auth.secrets = vec![Secret::new("s")];
        c.auth.play_prefixes = vec!["private/".into()];
        c.auth.publish_prefixes = vec![];
    })
    .await;
    let addr = guarded.http_addr().unwrap();
    let _private = publish_http(addr, "private/cam", media());
    let _public = publish_http(addr, "pub/cam", media());
    wait_live(addr, "private/cam").await;
    wait_live(addr, "pub/cam").await;
    let both = ["private/cam", "pub/cam"];
    assert_eq!(listed(addr, "", "").await, ["pub/cam"]);
    let good = play_token("s", "private/cam");
    assert_eq!(listed(addr, &format!("?token={good}"), "").await, both);
    for (what, bad) in [
        ("another stream's", play_token("s", "private/other")),
        ("a forged", play_token("not-s", "private/cam")),
        (
            "a publish",
            mint(
                &Secret::new("s"),
                "private/cam",
                Action::Publish,
                Duration::from_secs(600),
                unix_now(),
            ),
        ),
    ] {
        assert_eq!(
            listed(addr, &format!("?token={bad}"), "").await,
            ["pub/cam"],
            "{what} token"
        );
    }
    let admin = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    assert_eq!(listed(addr, "", &admin).await, both);
    assert_eq!(
        listed(addr, "", "Authorization: Bearer nope\r\n").await,
        ["pub/cam"]
    );
    guarded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_like_get_without_starting_a_player() {
    let _shared = shared().await;
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "headed", media());
    wait_live(addr, "headed").await;
    for _ in 0..3 {
        let (status, head, body) = request(addr, "HEAD", "/live/headed.flv", "").await;
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: video/x-flv"),
            "{head}"
        );
        assert!(body.is_empty(), "HEAD has no body: {body:?}");
    }
    // Also with keep-alive: the connection answers and is not turned into a player.
    let mut s = get_and_hold(addr, "/healthz").await;
    s.write_all(format!("HEAD /live/headed.flv HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(SECOND).await;
    for _ in 0..5 {
        let s = stream_status(addr, "headed").await.unwrap();
        assert_eq!(s["players"], 0, "HEAD started a player: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(addr, "wsrelay_players{protocol=\"http\"}").await,
        0.0
    );
    drop(s);
    let (status, _, body) = request(addr, "HEAD", "/live/nobody.flv", "").await;
    assert_eq!(status, 404, "{body}");
    assert!(stream_status(addr, "nobody").await.is_none());
    server.shutdown().await;
}

/// Sends a close frame and reads until the stream ends: returns the close frame the
/// server answered with, or what happened instead.
async fn close_handshake(
    ws: &mut WsClient,
) -> Result<Option<tungstenite::protocol::CloseFrame>, String> {
    ws.close(None)
        .await
        .map_err(|e| format!("sending close: {e}"))?;
    let mut answer = None;
    let deadline = tokio::time::Instant::now() + 5 * SECOND;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("no end within 5 s".into()),
            Ok(Some(Ok(Message::Close(frame)))) => answer = Some(frame),
            Ok(Some(Ok(_))) => {} // data in flight before our close arrived
            Ok(Some(Err(e))) => return Err(format!("{e} (close answer: {answer:?})")),
            Ok(None) => return answer.ok_or_else(|| "ended without a close frame".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_close_frames_are_answered() {
    let _shared = shared().await;
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();

    // A WebSocket publisher closes.
    let (mut publisher, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/live/closing.flv?publish"))
            .await
            .unwrap();
    // Whole tags (two seconds of the media), so the FLV stream ends cleanly.
    let (header, tags) = media_tags(2_000);
    let mut flv = BytesMut::new();
    flv.extend_from_slice(&header.encode());
    for tag in &tags {
        tag.write_to(&mut flv);
    }
    for chunk in flv.chunks(64 << 10) {
        publisher
            .send(Message::Binary(Bytes::copy_from_slice(chunk)))
            .await
            .unwrap();
    }
    wait_live(addr, "closing").await;

    // A player of it closes.
    let mut player = WsPlayer::connect(addr, "closing").await;
    player.next(5 * SECOND).await.expect("a tag");
    let player_end = close_handshake(&mut player.ws).await;
    let publisher_end = close_handshake(&mut publisher).await;
    println!("player: {player_end:?}; publisher: {publisher_end:?}");
    assert!(
        player_end.is_ok(),
        "a player's close is answered with a close: {player_end:?}"
    );
    assert!(
        publisher_end.is_ok(),
        "a publisher's close is answered with a close: {publisher_end:?}"
    );
    server.shutdown().await;
}

/// Issue 16: a client that repeats a bad request does not flood the log. 300
/// plays with a bad token and 300 connections over the per-IP cap give a handful
/// of lines (one per client and reason per 10 s, with a count), not 600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_refusals_are_logged_once_per_window() {
    let _shared = shared().await;
    let dir = scratch().join(format!("quiet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("wsrelay.toml");
    std::fs::write(
        &config,
        "max_connections_per_ip = 4\n[auth]\nsecrets = [\"s\"]\nplay_prefixes = [\"\"]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .arg("--config")
        .arg(&config)
        .args(["--http", "127.0.0.1:0", "--rtmp", "off"])
        .env("RUST_LOG", "wsrelay=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run wsrelay");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(15 * SECOND, BufReader::new(stdout).lines().next_line())
        .await
        .expect("listening line")
        .unwrap()
        .unwrap();
    let addr: SocketAddr = line
        .strip_prefix("listening http://")
        .unwrap()
        .parse()
        .unwrap();
    for _ in 0..300 {
        let (status, _, _) = request(addr, "GET", "/live/cam.flv?token=bad", "").await;
        assert_eq!(status, 401);
    }
    let held: Vec<TcpStream> = futures_util::future::join_all(
        (0..4).map(|_| get_and_hold(addr, "/live/cam.flv?token=bad")),
    )
    .await;
    for _ in 0..300 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(2 * SECOND, s.read_to_end(&mut sink)).await;
    }
    drop(held);
    let pid = child.id().unwrap().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let out = tokio::time::timeout(10 * SECOND, child.wait_with_output())
        .await
        .expect("exits")
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let refused_play = log.lines().filter(|l| l.contains("play refused")).count();
    let refused_conn = log
        .lines()
        .filter(|l| l.contains("connection refused"))
        .count();
    println!("play refused lines: {refused_play}; connection refused lines: {refused_conn}");
    assert!(
        (1..=3).contains(&refused_play),
        "{refused_play} lines for 300 bad tokens:\n{log}"
    );
    assert!(
        (1..=3).contains(&refused_conn),
        "{refused_conn} lines for 300 over-cap connections"
    );
    assert!(
        log.contains("suppressed"),
        "the count of quiet lines is kept"
    );
}
