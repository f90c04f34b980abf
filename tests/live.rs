//! The live relay end to end with real clients: ffmpeg publishes over HTTP POST,
//! ffmpeg plays HTTP-FLV, WebSocket clients play WS-FLV and check every rule of what a
//! player receives with the `flv` demuxer.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flv::TagType;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_post_publish_plays_over_http_flv_and_ws_flv() {
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "cam", media());
    wait_live(addr, "cam").await;

    let ws = tokio::spawn(async move {
        let mut player = WsPlayer::connect(addr, "cam").await;
        let mut check = StreamCheck::new();
        let header_start = Instant::now();
        while header_start.elapsed() < 5 * SECOND {
            let tag = player.next(5 * SECOND).await.expect("stream continues");
            let header = player.header().expect("FLV header comes first");
            assert!(
                header.audio && header.video,
                "header flags match the tracks: {header:?}"
            );
            check.tag(&tag, player.started.elapsed());
        }
        check
    });
    let (frames, errors) = ffmpeg_play(addr, "cam", 5).await;
    assert!(errors.trim().is_empty(), "ffmpeg decode errors: {errors}");
    assert!(frames > 100, "ffmpeg decoded only {frames} frames in 5 s");
    let check = ws.await.unwrap();
    assert!(
        check.video > 100 && check.audio > 150,
        "video {} audio {}",
        check.video,
        check.audio
    );
    server.shutdown().await;
}

/// Issue 16: a second HTTP publisher of a live name is refused before its body is
/// read, so ffmpeg (with `-send_expect_100 1`, as the README shows) reports the
/// 409 instead of a broken pipe, and the first publisher goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_http_publisher_is_told_409() {
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    let _first = publish_http(addr, "dup", media());
    wait_live(addr, "dup").await;
    let url = format!("http://{addr}/live/dup.flv");
    let second = ffmpeg_publish(&url, media(), &["-send_expect_100", "1", "-method", "POST"]);
    let out = tokio::time::timeout(Duration::from_secs(20), second.wait_with_output())
        .await
        .expect("the refused ffmpeg exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // At ffmpeg's `error` log level: "Server returned 4XX Client Error" (the
    // `warning` level adds "HTTP error 409 Conflict").
    assert!(
        stderr.contains("Server returned 4XX"),
        "ffmpeg shows the refusal: {stderr}"
    );
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    let mut player = WsPlayer::connect(addr, "dup").await;
    player
        .next(Duration::from_secs(5))
        .await
        .expect("the first goes on");
    server.shutdown().await;
}

/// Issue 16: a kick can ban the name (or the client) for a while, so an encoder
/// that reconnects on its own (OBS retries after 2 s) is refused until the ban
/// ends; then the name publishes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_can_ban_the_name_for_a_while() {
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    let mut publisher = publish_http(addr, "banme", media());
    wait_live(addr, "banme").await;
    let (status, body) = http_request(addr, "DELETE", "/api/streams/banme?ban=3", b"")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["kicked"], true, "{report}");
    assert_eq!(report["banned_s"], 3, "{report}");
    let _ = publisher.wait().await;
    // A bare FLV header is a valid (empty) publish when allowed.
    let flv = flv::Header {
        audio: true,
        video: true,
    }
    .encode();
    let (status, body) = http_request(addr, "POST", "/live/banme.flv", &flv)
        .await
        .unwrap();
    assert_eq!(status, 403, "banned: {body}");
    assert!(body.contains("refused by an operator"), "{body}");
    // Other names are not affected.
    let (status, _) = http_request(addr, "POST", "/live/other.flv", &flv)
        .await
        .unwrap();
    assert_eq!(status, 200);
    // Bad ban values are a 400 with a reason.
    let (status, body) = http_request(addr, "DELETE", "/api/streams/other?ban=0", b"")
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ban must be"), "{body}");
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let (status, body) = http_request(addr, "POST", "/live/banme.flv", &flv)
        .await
        .unwrap();
    assert_eq!(status, 200, "the ban is over: {body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_starts_from_the_cached_keyframe() {
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "late", media());
    wait_live(addr, "late").await;
    let live_since = Instant::now();
    // Join in the middle of a GOP (GOP = 1 s).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let live_edge_ms = live_since.elapsed().as_millis() as u32;
    let mut player = WsPlayer::connect(addr, "late").await;
    let mut check = StreamCheck::new();
    let keyframe_ts = loop {
        let tag = player.next(5 * SECOND).await.expect("stream continues");
        check.tag(&tag, player.started.elapsed());
        if check.frames == 1 {
            break tag.timestamp;
        }
    };
    let ttfk = check.first_keyframe_at.unwrap();
    println!(
        "time to first keyframe for a late joiner: {ttfk:?} (keyframe ts {keyframe_ts} ms, live edge ~{live_edge_ms} ms)"
    );
    // From the cache: the keyframe is in the past (not the next one, up to 1 s ahead)
    // and within one GOP of the live edge.
    assert!(
        keyframe_ts <= live_edge_ms + 300,
        "waited for a future keyframe: {keyframe_ts} vs {live_edge_ms}"
    );
    assert!(
        keyframe_ts + 1_000 + 500 >= live_edge_ms,
        "started more than a GOP back: {keyframe_ts} vs {live_edge_ms}"
    );
    server.shutdown().await;
}

/// Reads tags until `secs` of stream time after the first keyframe.
async fn collect(mut player: WsPlayer, stream_ms: u32) -> Vec<(TagType, u32, usize, u64)> {
    let mut check = StreamCheck::new();
    let mut tags = Vec::new();
    let mut start = None;
    loop {
        let tag = player.next(10 * SECOND).await.expect("stream continues");
        check.tag(&tag, player.started.elapsed());
        if check.frames == 0 {
            continue; // metadata and sequence headers
        }
        let start = *start.get_or_insert(tag.timestamp);
        let fingerprint = tag
            .body
            .iter()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
        tags.push((tag.tag_type, tag.timestamp, tag.body.len(), fingerprint));
        if tag.tag_type == TagType::Video && tag.timestamp >= start + stream_ms {
            return tags;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_players_receive_every_tag_in_order() {
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "many", media());
    wait_live(addr, "many").await;

    let reference = tokio::spawn(collect(WsPlayer::connect(addr, "many").await, 6_000));
    let mut players = Vec::new();
    for _ in 0..100 {
        players.push(WsPlayer::connect(addr, "many").await);
    }
    let handles: Vec<_> = players
        .into_iter()
        .map(|p| tokio::spawn(collect(p, 3_000)))
        .collect();
    let reference = reference.await.unwrap();
    for (i, h) in handles.into_iter().enumerate() {
        let tags = h.await.unwrap();
        // Every player's tags are one contiguous run of the reference: nothing lost,
        // nothing repeated, nothing reordered.
        let at = reference
            .iter()
            .position(|t| *t == tags[0])
            .unwrap_or_else(|| panic!("player {i} started at a tag the reference never saw"));
        assert!(
            reference.len() >= at + tags.len(),
            "player {i} got more than the reference"
        );
        assert_eq!(
            &reference[at..at + tags.len()],
            &tags[..],
            "player {i} diverged"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_player_is_cut_off_without_hurting_others() {
    let server = server(|c| {
        c.live.player_backlog_tags = 128;
        c.live.player_max_behind_ms = 2_000;
        c.live.player_write_timeout_ms = 2_000;
    })
    .await;
    let addr = server.http_addr().unwrap();
    // ~14 Mbit/s, so a stalled reader fills the socket buffers in seconds.
    let big = make_media(
        "h264-lossless-20s.flv",
        20,
        &[
            "-s",
            "1280x720",
            "-qp",
            "0",
            "-preset",
            "ultrafast",
            "-b:v",
            "0",
            "-maxrate",
            "0",
            "-bufsize",
            "0",
        ],
    );
    let _publisher = publish_http(addr, "slow", &big);
    wait_live(addr, "slow").await;
    let rss_before = rss_kib();

    // A raw client with a tiny receive buffer that upgrades and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /live/slow.flv HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();

    // A normal player keeps up with real time meanwhile.
    let mut player = WsPlayer::connect(addr, "slow").await;
    let mut check = StreamCheck::new();
    let mut first: Option<(Instant, u32)> = None;
    let mut pace = 0.0;
    let mut players_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline {
        let tag = player
            .next(5 * SECOND)
            .await
            .expect("normal player keeps receiving");
        check.tag(&tag, player.started.elapsed());
        if tag.tag_type == TagType::Video && check.frames > 0 {
            let (t0, ts0) = *first.get_or_insert((Instant::now(), tag.timestamp));
            let wall = t0.elapsed().as_secs_f64();
            if wall > 2.0 {
                pace = f64::from(tag.timestamp - ts0) / 1000.0 / wall;
            }
        }
        if let Ok(body) = http_get(addr, "/api/streams").await
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
        {
            players_seen.push(v["streams"][0]["players"].as_u64().unwrap_or(0));
        }
    }
    let rss_after = rss_kib();
    println!(
        "normal player pace {pace:.2}x real time; players over time {:?}; RSS {rss_before} -> {rss_after} KiB",
        players_seen.iter().step_by(20).collect::<Vec<_>>()
    );
    assert!(
        pace > 0.9,
        "the normal player fell behind real time: {pace:.2}x"
    );
    assert_eq!(
        players_seen.iter().max(),
        Some(&2),
        "both players were connected"
    );
    assert_eq!(
        players_seen.last(),
        Some(&1),
        "the stalled player was disconnected"
    );
    // The stalled socket got closed by the server.
    let mut buf = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(5 * SECOND, async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled connection was not closed");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_publisher_refused_and_reconnect_within_grace_continues() {
    let server = server(|c| c.live.publisher_grace_ms = 3_000).await;
    let addr = server.http_addr().unwrap();
    let mut first = publish_http(addr, "re", media());
    wait_live(addr, "re").await;

    // A second publisher on a live name: 409, the first is unaffected.
    let (status, body) = http_request(
        addr,
        "POST",
        "/live/re.flv",
        b"FLV\x01\x05\0\0\0\x09\0\0\0\0",
    )
    .await
    .unwrap();
    assert_eq!(status, 409, "{body}");
    let ws_dup = tokio_tungstenite::connect_async(format!("ws://{addr}/live/re.flv?publish")).await;
    match ws_dup {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 409),
        other => panic!("a WebSocket publisher on a live name is refused, got {other:?}"),
    }

    let mut player = WsPlayer::connect(addr, "re").await;
    let mut check = StreamCheck::new();
    let until = Instant::now() + 2 * SECOND;
    while Instant::now() < until {
        let tag = player.next(5 * SECOND).await.unwrap();
        check.tag(&tag, player.started.elapsed());
    }
    let before_restart = check.last_video.unwrap();

    // Publisher dies; another starts within the grace period (its timestamps restart at 0).
    first.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut second = publish_http(addr, "re", media());
    let until = Instant::now() + 3 * SECOND;
    let mut after = 0;
    while Instant::now() < until {
        let tag = player
            .next(5 * SECOND)
            .await
            .expect("player stays connected across the reconnect");
        check.tag(&tag, player.started.elapsed()); // asserts monotonic per track; a 2nd FLV header would fail to demux as a tag
        if tag.tag_type == TagType::Video && tag.timestamp > before_restart {
            after += 1;
        }
    }
    assert!(
        after > 25,
        "frames from the new publisher continue the timeline ({after})"
    );

    // Publisher gone for good: after the grace period players get a clean close.
    second.kill().await.unwrap();
    let gone = Instant::now();
    let end = loop {
        match player.next(10 * SECOND).await {
            Ok(tag) => check.tag(&tag, player.started.elapsed()),
            Err(end) => break end,
        }
    };
    println!(
        "player closed {:?} after the publisher left: {end:?}",
        gone.elapsed()
    );
    match end {
        Ended::Close(code, reason) => {
            assert_eq!(code, 1000);
            assert!(reason.contains("ended"), "{reason}");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(
        gone.elapsed() >= Duration::from_millis(2_500),
        "closed before the grace period"
    );
    let (status, _) = http_request(addr, "GET", "/live/re.flv", b"")
        .await
        .unwrap();
    assert_eq!(status, 404, "an ended stream is gone");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishers_are_rejected_and_other_streams_continue() {
    let server = server(|c| {
        c.live.publisher_grace_ms = 500;
        c.live.max_tag_bytes = 1 << 20;
        c.live.max_publish_message_bytes = 256 << 10;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let _good = publish_http(addr, "good", media());
    wait_live(addr, "good").await;
    let mut player = WsPlayer::connect(addr, "good").await;
    let mut check = StreamCheck::new();

    let header = b"FLV\x01\x05\0\0\0\x09\0\0\0\0";
    // Not FLV at all.
    let (status, body) = http_request(addr, "POST", "/live/bad1.flv", b"GET / HTTP/1.1 hello")
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("FLV"), "reason names the problem: {body}");
    // A valid header, then a tag cut short.
    let mut truncated = header.to_vec();
    truncated.extend_from_slice(&[9, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0x17, 1]);
    let (status, body) = http_request(addr, "POST", "/live/bad2.flv", &truncated)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    // A tag claiming 16 MiB, above the 1 MiB limit.
    let mut oversized = header.to_vec();
    oversized.extend_from_slice(&[9, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]);
    oversized.extend_from_slice(&[0u8; 4096]);
    let (status, body) = http_request(addr, "POST", "/live/bad3.flv", &oversized)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit"), "{body}");

    // WebSocket publishers: a text message, an oversized message, garbage bytes.
    for (name, msg, code) in [
        ("bad4", Message::text("hello"), 1003u16),
        ("bad5", Message::binary(vec![0u8; 512 << 10]), 1009),
        (
            "bad6",
            Message::binary(b"definitely not an FLV stream".to_vec()),
            1007,
        ),
    ] {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/live/{name}.flv?publish"))
                .await
                .unwrap();
        let _ = ws.send(msg).await;
        let closed = tokio::time::timeout(5 * SECOND, async {
            while let Some(m) = ws.next().await {
                match m {
                    Ok(Message::Close(Some(f))) => return Some(u16::from(f.code)),
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        })
        .await
        .expect("bad WebSocket publisher is closed");
        assert_eq!(closed, Some(code), "{name}");
    }

    // A player on a stream whose publisher is cut off gets the clean end.
    let (mut bad_pub, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/live/bad7.flv?publish"))
            .await
            .unwrap();
    let media_bytes = std::fs::read(media()).unwrap();
    // Cut at a tag boundary, so the garbage that follows is read as a tag header.
    let mut demux = flv::Demuxer::new(flv::DemuxerConfig::default());
    demux.push(&media_bytes);
    while demux.offset() < 200_000 {
        demux.next_tag().unwrap().unwrap();
    }
    let cut = demux.offset() as usize;
    bad_pub
        .send(Message::binary(media_bytes[..cut].to_vec()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut bad_player = WsPlayer::connect(addr, "bad7").await;
    bad_pub
        .send(Message::binary(vec![0xffu8; 64]))
        .await
        .unwrap();
    let end = loop {
        match bad_player.next(5 * SECOND).await {
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    assert!(matches!(end, Ended::Close(1000, _)), "{end:?}");

    // The good stream never noticed.
    let until = Instant::now() + 2 * SECOND;
    while Instant::now() < until {
        let tag = player
            .next(5 * SECOND)
            .await
            .expect("good stream unaffected");
        check.tag(&tag, player.started.elapsed());
    }
    assert!(check.video > 25);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_statuses_and_headers() {
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    assert_eq!(
        http_request(addr, "GET", "/live/none.flv", b"")
            .await
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        http_request(addr, "GET", "/live/bad%20name.flv", b"")
            .await
            .unwrap()
            .0,
        400
    );
    assert_eq!(
        http_request(addr, "GET", "/live/noext", b"")
            .await
            .unwrap()
            .0,
        400
    );
    assert_eq!(
        http_request(addr, "DELETE", "/live/x.flv", b"")
            .await
            .unwrap()
            .0,
        405
    );
    assert_eq!(
        http_request(addr, "GET", "/nowhere", b"").await.unwrap().0,
        404
    );
    assert_eq!(http_get(addr, "/healthz").await.unwrap().trim(), "ok");
    let api: serde_json::Value =
        serde_json::from_str(&http_get(addr, "/api/streams").await.unwrap()).unwrap();
    assert!(
        api["rtmp_port"].is_null(),
        "RTMP is off in this test: {api}"
    );
    let ws = tokio_tungstenite::connect_async(format!("ws://{addr}/live/none.flv")).await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }

    let _publisher = publish_http(addr, "hdr", media());
    wait_live(addr, "hdr").await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /live/hdr.flv HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: video/x-flv"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_from_a_player_interleave_with_the_stream() {
    // Data frames go out through vectored writes, pongs through tungstenite: a client
    // that pings while it plays must still see well-formed frames and every pong.
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "ping", media());
    wait_live(addr, "ping").await;
    let mut player = WsPlayer::connect(addr, "ping").await;
    let mut check = StreamCheck::new();
    let (mut pings, mut pongs) = (0u32, 0u32);
    let until = Instant::now() + 3 * SECOND;
    while Instant::now() < until {
        player
            .ws
            .send(Message::Ping(pings.to_be_bytes().to_vec().into()))
            .await
            .unwrap();
        pings += 1;
        let step = Instant::now() + Duration::from_millis(20);
        while Instant::now() < step {
            match tokio::time::timeout_at(step.into(), player.ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Binary(data)))) => player.demux.push(&data),
                Ok(Some(Ok(Message::Pong(_)))) => pongs += 1,
                Ok(other) => panic!("unexpected {other:?}"),
            }
            while let Some(tag) = player.demux.next_tag().expect("valid FLV") {
                check.tag(&tag, player.started.elapsed());
            }
        }
    }
    assert!(check.video > 50, "{} video frames", check.video);
    assert!(pongs + 5 >= pings, "{pongs} pongs for {pings} pings");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_503_with_a_reason() {
    let server = server(|c| {
        c.live.max_players_per_stream = 1;
        c.live.max_streams = 1;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "one", media());
    wait_live(addr, "one").await;
    let (status, body) = http_request(addr, "POST", "/live/two.flv", b"FLV")
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("limit"), "{body}");
    let mut first = WsPlayer::connect(addr, "one").await;
    first.next(5 * SECOND).await.unwrap();
    match tokio_tungstenite::connect_async(format!("ws://{addr}/live/one.flv")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    // The refused player did not use up the slot of the next one.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = WsPlayer::connect(addr, "one").await;
    again.next(5 * SECOND).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_players_cleanly() {
    let server = server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "bye", media());
    wait_live(addr, "bye").await;
    let mut ws_player = WsPlayer::connect(addr, "bye").await;
    ws_player.next(5 * SECOND).await.unwrap();
    // HTTP-FLV player: the chunked body must end with its terminator.
    let mut http_player = tokio::net::TcpStream::connect(addr).await.unwrap();
    http_player
        .write_all(format!("GET /live/bye.flv HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down = tokio::spawn(server.shutdown());
    let end = loop {
        match ws_player.next(5 * SECOND).await {
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    assert!(matches!(end, Ended::Close(1001, _)), "{end:?}");
    let mut body = Vec::new();
    tokio::time::timeout(5 * SECOND, http_player.read_to_end(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(
        body.ends_with(b"0\r\n\r\n"),
        "chunked body ends with its terminator"
    );
    tokio::time::timeout(10 * SECOND, down)
        .await
        .unwrap()
        .unwrap();
}
