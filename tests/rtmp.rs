//! RTMP ingest end to end: ffmpeg publishes over RTMP (a file with `-c copy`, a live
//! x264 encode), ffmpeg plays HTTP-FLV, WebSocket players check every rule of what a
//! player receives; misbehaving clients (garbage, truncated handshake, half-sent
//! chunk, idlers) are closed with a logged reason while a real publish goes on; a
//! hand-made RTMP client publishes Enhanced RTMP (HEVC + Opus FourCC tags) at
//! extended timestamps.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use flv::{Demuxer, DemuxerConfig, TagType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use wsrelay::app::Server;
use wsrelay::config::{Config, Listen};
use wsrelay::rtmp::chunk::{ChunkEncoder, FirstHeader};

const SECOND: Duration = Duration::from_secs(1);

// ---- log capture: tests assert that a closed client left a reason in the log ----

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

struct FieldText(String);

impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut text = FieldText(String::new());
        event.record(&mut text);
        LOGS.lock().unwrap().push(text.0);
    }
}

fn init_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "wsrelay=info".into());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .with(Capture)
            .try_init();
    });
}

/// Waits for a log line about `peer` containing `needle`; returns it.
async fn wait_log(peer: SocketAddr, needle: &str) -> String {
    let deadline = Instant::now() + 10 * SECOND;
    let peer = format!("peer={peer} ");
    loop {
        let found = LOGS
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(&peer) && l.contains(needle))
            .cloned();
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line for {peer} containing {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- servers, publishers and players ----

async fn rtmp_server(tweak: impl FnOnce(&mut Config)) -> (Server, SocketAddr, SocketAddr) {
    init_logs();
    let server = server(|c| {
        c.rtmp = Listen::On("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
    .await;
    let http = server.http_addr().unwrap();
    let rtmp = server.rtmp_addr().expect("RTMP listener is on");
    (server, http, rtmp)
}

/// `ffmpeg -re -i FILE -c copy [extra] -f flv rtmp://ADDR/PATH` (stderr piped).
fn publish_rtmp(rtmp: SocketAddr, path: &str, file: &Path, extra: &[&str]) -> Child {
    ffmpeg_publish(&format!("rtmp://{rtmp}/{path}"), file, extra)
}

/// Plays `name` over WebSocket-FLV for `secs`, checking the player-stream rules;
/// returns the check and every A/V tag received (type, timestamp, body).
async fn ws_play(
    addr: SocketAddr,
    name: &str,
    secs: Duration,
) -> (StreamCheck, Vec<(TagType, u32, Bytes)>) {
    let mut player = WsPlayer::connect(addr, name).await;
    let mut check = StreamCheck::new();
    let mut tags = Vec::new();
    let start = Instant::now();
    while start.elapsed() < secs {
        let tag = player.next(5 * SECOND).await.expect("stream continues");
        let header = player.header().expect("FLV header comes first");
        assert!(
            header.audio && header.video,
            "header flags match the tracks: {header:?}"
        );
        check.tag(&tag, player.started.elapsed());
        if !tag.is_metadata() {
            tags.push((tag.tag_type, tag.timestamp, tag.body.clone()));
        }
    }
    (check, tags)
}

/// Every tag body of an FLV file by (type, timestamp) (a sequence header and the
/// first frame share a timestamp).
fn file_tags(path: &Path) -> HashMap<(TagType, u32), Vec<Bytes>> {
    let mut demux = Demuxer::new(DemuxerConfig::default());
    demux.push(&std::fs::read(path).unwrap());
    let mut out: HashMap<_, Vec<Bytes>> = HashMap::new();
    while let Some(tag) = demux.next_tag().unwrap() {
        out.entry((tag.tag_type, tag.timestamp))
            .or_default()
            .push(tag.body);
    }
    out
}

async fn wait_exit(child: &mut Child, within: Duration) -> (std::process::ExitStatus, String) {
    let status = tokio::time::timeout(within, child.wait())
        .await
        .expect("ffmpeg exits")
        .unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr).await;
    }
    (status, stderr)
}

// ---- a hand-made RTMP client for what ffmpeg will not send ----

const HANDSHAKE: usize = 1536;

async fn rtmp_handshake(s: &mut TcpStream) {
    let mut c0c1 = vec![3u8];
    c0c1.extend((0..HANDSHAKE).map(|i| (i * 7) as u8));
    s.write_all(&c0c1).await.unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * HANDSHAKE];
    tokio::time::timeout(5 * SECOND, s.read_exact(&mut s0s1s2))
        .await
        .expect("S0 S1 S2 in time")
        .unwrap();
    assert_eq!(s0s1s2[0], 3);
    s.write_all(&s0s1s2[1..1 + HANDSHAKE]).await.unwrap(); // C2 echoes S1
}

/// AMF0 values for [`amf_command`].
enum Amf<'a> {
    S(&'a str),
    N(f64),
    Null,
    Obj(&'a [(&'a str, &'a str)]),
}

fn amf(values: &[Amf<'_>]) -> Vec<u8> {
    use scuffle_amf0::encoder::Amf0Encoder;
    use scuffle_amf0::{Amf0Object, Amf0Value};
    let mut body = Vec::new();
    let mut enc = Amf0Encoder::new(&mut body);
    for v in values {
        match v {
            Amf::S(s) => enc.encode_string(s).unwrap(),
            Amf::N(n) => enc.encode_number(*n).unwrap(),
            Amf::Null => enc.encode_null().unwrap(),
            Amf::Obj(props) => {
                let obj: Amf0Object<'_> = props
                    .iter()
                    .map(|(k, v)| ((*k).into(), Amf0Value::String((*v).into())))
                    .collect();
                enc.encode_object(&obj).unwrap();
            }
        }
    }
    body
}

fn amf_command(out: &mut Vec<u8>, stream_id: u32, values: &[Amf<'_>]) {
    let body = amf(values);
    ChunkEncoder::new(128).message(out, 3, FirstHeader::Full, 0, 20, stream_id, &body);
}

/// Handshake, connect, createStream, publish; returns once publishing started.
async fn raw_publish(rtmp: SocketAddr, app: &str, key: &str) -> TcpStream {
    use Amf::*;
    let mut s = TcpStream::connect(rtmp).await.unwrap();
    rtmp_handshake(&mut s).await;
    let mut out = Vec::new();
    amf_command(&mut out, 0, &[S("connect"), N(1.0), Obj(&[("app", app)])]);
    amf_command(&mut out, 0, &[S("createStream"), N(2.0), Null]);
    amf_command(
        &mut out,
        1,
        &[S("publish"), N(3.0), Null, S(key), S("live")],
    );
    s.write_all(&out).await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + 5 * SECOND;
    while !seen
        .windows(23)
        .any(|w: &[u8]| w == b"NetStream.Publish.Start")
    {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut buf))
            .await
            .expect("NetStream.Publish.Start in time")
            .unwrap();
        assert!(n > 0, "server closed: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

/// Sends one media message (Type 0 header) on the publishing stream (id 1).
async fn raw_send(s: &mut TcpStream, type_id: u8, timestamp: u32, body: &[u8]) {
    let csid = if type_id == 9 { 6 } else { 4 };
    let mut out = Vec::new();
    ChunkEncoder::new(128).message(
        &mut out,
        csid,
        FirstHeader::Full,
        timestamp,
        type_id,
        1,
        body,
    );
    s.write_all(&out).await.unwrap();
}

/// Reads until the server closes; panics if it is still open after `within`.
async fn expect_closed(s: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_rtmp_publish_plays_over_http_flv_and_ws_flv_with_exact_timestamps() {
    let (server, http, rtmp) = rtmp_server(|_| {}).await;
    let mut publisher = publish_rtmp(rtmp, "live/cam", media(), &[]);
    wait_live(http, "cam").await;

    let ws = tokio::spawn(async move { ws_play(http, "cam", 5 * SECOND).await });
    let (frames, errors) = ffmpeg_play(http, "cam", 5).await;
    assert!(errors.trim().is_empty(), "ffmpeg decode errors: {errors}");
    assert!(frames > 100, "ffmpeg decoded only {frames} frames in 5 s");
    let (check, tags) = ws.await.unwrap();
    assert!(
        check.video > 100 && check.audio > 150,
        "video {} audio {}",
        check.video,
        check.audio
    );
    // RTMP timestamps carried over exactly: every tag is the file's tag at the same
    // timestamp (a reader that mishandles Type 3 headers drifts audio here).
    let source = file_tags(media());
    for (tag_type, ts, body) in &tags {
        let originals = source
            .get(&(*tag_type, *ts))
            .unwrap_or_else(|| panic!("{tag_type:?} at {ts} ms is not in the source file"));
        assert!(
            originals.contains(body),
            "{tag_type:?} at {ts} ms ({} bytes) differs from the file's",
            body.len()
        );
    }
    let status = http_get(http, "/api/streams").await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["streams"][0]["publisher"], "rtmp", "{status}");
    assert!(
        publisher.try_wait().unwrap().is_none(),
        "publisher still running"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_x264_encode_over_rtmp_plays() {
    require("ffmpeg");
    let (server, http, rtmp) = rtmp_server(|_| {}).await;
    let _encoder = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", "30", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "flv"])
        .arg(format!("rtmp://{rtmp}/live/x264"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg");
    wait_live(http, "x264").await;
    let ws = tokio::spawn(async move { ws_play(http, "x264", 4 * SECOND).await });
    let (frames, errors) = ffmpeg_play(http, "x264", 4).await;
    assert!(errors.trim().is_empty(), "ffmpeg decode errors: {errors}");
    assert!(frames > 75, "ffmpeg decoded only {frames} frames in 4 s");
    let (check, _) = ws.await.unwrap();
    assert!(check.video > 75, "video {}", check.video);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publisher_restarted_within_grace_continues_the_stream() {
    let (server, http, rtmp) = rtmp_server(|c| c.live.publisher_grace_ms = 4_000).await;
    let mut first = publish_rtmp(rtmp, "live/re", media(), &[]);
    wait_live(http, "re").await;
    let mut player = WsPlayer::connect(http, "re").await;
    let mut check = StreamCheck::new();
    let until = Instant::now() + 2 * SECOND;
    while Instant::now() < until {
        let tag = player.next(5 * SECOND).await.unwrap();
        check.tag(&tag, player.started.elapsed());
    }
    let before = check.last_video.unwrap();

    // OBS on a network blip: the connection dies, the encoder reconnects.
    first.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _second = publish_rtmp(rtmp, "live/re", media(), &[]);
    let until = Instant::now() + 3 * SECOND;
    let mut after = 0;
    while Instant::now() < until {
        let tag = player
            .next(5 * SECOND)
            .await
            .expect("player stays connected across the reconnect");
        check.tag(&tag, player.started.elapsed()); // monotonic per track
        if tag.tag_type == TagType::Video && tag.timestamp > before {
            after += 1;
        }
    }
    assert!(
        after > 30,
        "the new publisher continues the timeline ({after} frames)"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_rtmp_publisher_is_refused_and_the_first_continues() {
    let (server, http, rtmp) = rtmp_server(|_| {}).await;
    let mut first = publish_rtmp(rtmp, "live/dup", media(), &[]);
    wait_live(http, "dup").await;
    let player = tokio::spawn(async move { ws_play(http, "dup", 4 * SECOND).await });

    let mut second = publish_rtmp(rtmp, "live/dup", media(), &[]);
    let (status, stderr) = wait_exit(&mut second, 15 * SECOND).await;
    assert!(!status.success(), "the second publisher must fail");
    assert!(
        stderr.contains("already has a publisher"),
        "ffmpeg shows the server's reason: {stderr}"
    );
    let (check, _) = player.await.unwrap();
    assert!(
        check.video > 75,
        "first stream went on: {} frames",
        check.video
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "first publisher still running"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_maps_to_a_path_and_a_key_query_is_split_off() {
    let (server, http, rtmp) = rtmp_server(|_| {}).await;
    // rtmp://host/myapp/cam plays at /live/myapp/cam.flv.
    let _a = publish_rtmp(rtmp, "myapp/cam", media(), &[]);
    // OBS form: Server rtmp://host/live, Stream Key "tok?token=x".
    let _b = publish_rtmp(rtmp, "live", media(), &["-rtmp_playpath", "tok?token=x"]);
    wait_live(http, "myapp/cam").await;
    wait_live(http, "tok").await;
    let (check, _) = ws_play(http, "myapp/cam", 2 * SECOND).await;
    assert!(check.video > 25);
    let (check, _) = ws_play(http, "tok", 2 * SECOND).await;
    assert!(check.video > 25);
    let streams = http_get(http, "/api/streams").await.unwrap();
    assert!(
        !streams.contains("token"),
        "the query is not part of the name: {streams}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rtmp_clients_are_closed_with_a_reason_and_a_real_publish_goes_on() {
    let (server, http, rtmp) = rtmp_server(|c| {
        c.rtmp_settings.handshake_timeout_ms = 1_500;
        c.rtmp_settings.publish_timeout_ms = 2_500;
    })
    .await;
    let _good = publish_rtmp(rtmp, "live/good", media(), &[]);
    wait_live(http, "good").await;
    let player = tokio::spawn(async move {
        let mut player = WsPlayer::connect(http, "good").await;
        let mut check = StreamCheck::new();
        let mut last = Instant::now();
        let mut worst_gap = Duration::ZERO;
        let start = Instant::now();
        while start.elapsed() < 5 * SECOND {
            let tag = player
                .next(5 * SECOND)
                .await
                .expect("good stream continues");
            check.tag(&tag, player.started.elapsed());
            worst_gap = worst_gap.max(last.elapsed());
            last = Instant::now();
        }
        (check, worst_gap)
    });

    let garbage = async {
        let mut s = TcpStream::connect(rtmp).await.unwrap();
        let peer = s.local_addr().unwrap();
        s.write_all(b"GET /live/good.flv HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let took = expect_closed(&mut s, 2 * SECOND).await;
        assert!(took < SECOND, "garbage is refused at once ({took:?})");
        wait_log(peer, "not an RTMP client").await
    };
    let truncated_handshake = async {
        let mut s = TcpStream::connect(rtmp).await.unwrap();
        let peer = s.local_addr().unwrap();
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&[0u8; 700]);
        s.write_all(&c0c1).await.unwrap();
        expect_closed(&mut s, 4 * SECOND).await;
        wait_log(peer, "handshake not completed within 1500 ms").await
    };
    let idle = async {
        let mut s = TcpStream::connect(rtmp).await.unwrap();
        let peer = s.local_addr().unwrap();
        expect_closed(&mut s, 4 * SECOND).await;
        wait_log(peer, "handshake not completed").await
    };
    let half_sent_chunk = async {
        let mut s = TcpStream::connect(rtmp).await.unwrap();
        let peer = s.local_addr().unwrap();
        rtmp_handshake(&mut s).await;
        let mut out = Vec::new();
        amf_command(
            &mut out,
            0,
            &[Amf::S("connect"), Amf::N(1.0), Amf::Obj(&[("app", "live")])],
        );
        s.write_all(&out[..out.len() / 2]).await.unwrap();
        expect_closed(&mut s, 5 * SECOND).await;
        wait_log(peer, "no publish within 2500 ms").await
    };
    let bad_chunk = async {
        let mut s = TcpStream::connect(rtmp).await.unwrap();
        let peer = s.local_addr().unwrap();
        rtmp_handshake(&mut s).await;
        // A Type 1 header on a chunk stream that never had a Type 0.
        s.write_all(&[0x44, 0, 0, 40, 0, 0, 5, 8, 1, 2, 3, 4, 5])
            .await
            .unwrap();
        expect_closed(&mut s, 2 * SECOND).await;
        wait_log(peer, "continued before its first full header").await
    };
    let huge_message = async {
        let mut s = TcpStream::connect(rtmp).await.unwrap();
        let peer = s.local_addr().unwrap();
        rtmp_handshake(&mut s).await;
        // A message announcing 16 MiB (over live.max_tag_bytes).
        s.write_all(&[0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0])
            .await
            .unwrap();
        expect_closed(&mut s, 2 * SECOND).await;
        wait_log(peer, "exceeds the limit").await
    };
    let lines = tokio::join!(
        garbage,
        truncated_handshake,
        idle,
        half_sent_chunk,
        bad_chunk,
        huge_message
    );
    println!("{lines:#?}");
    let (check, worst_gap) = player.await.unwrap();
    assert!(check.video > 100, "good stream: {} frames", check.video);
    assert!(
        worst_gap < SECOND,
        "the good stream never stalled ({worst_gap:?})"
    );
    server.shutdown().await;
}

/// Issue 11, finding 1: AMF0 commands right after the handshake (no connect, no
/// auth) that made `scuffle-amf0` abort the process (a strict or ECMA array
/// announcing 2^32 - 1 elements) or overflow its stack (3,000 nested objects). Each
/// client is closed with a logged reason; the process lives on and a real publish
/// that started before keeps playing, and a new one can start after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_amf0_commands_close_the_client_not_the_server() {
    let (server, http, rtmp) = rtmp_server(|_| {}).await;
    let _good = publish_rtmp(rtmp, "live/amfgood", media(), &[]);
    wait_live(http, "amfgood").await;
    let mut player = WsPlayer::connect(http, "amfgood").await;

    let mut strict = vec![0x02, 0, 7];
    strict.extend_from_slice(b"connect");
    strict.push(0x00);
    strict.extend_from_slice(&1.0f64.to_be_bytes());
    strict.push(0x0A); // strict array
    strict.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut ecma = strict.clone();
    *ecma.iter_mut().rev().nth(4).unwrap() = 0x08; // ECMA array, same count
    let mut nested = vec![0x02, 0, 7];
    nested.extend_from_slice(b"connect");
    for _ in 0..3000 {
        nested.extend_from_slice(&[0x03, 0, 1, b'k']);
    }
    let mut deep_arrays = vec![0x02, 0, 7];
    deep_arrays.extend_from_slice(b"publish");
    for _ in 0..3000 {
        deep_arrays.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
    }
    for (what, body) in [
        ("strict array of 2^32-1", strict),
        ("ECMA array of 2^32-1", ecma),
        ("3,000 nested objects", nested),
        ("3,000 nested strict arrays", deep_arrays),
    ] {
        let mut s = TcpStream::connect(rtmp).await.unwrap();
        let peer = s.local_addr().unwrap();
        rtmp_handshake(&mut s).await;
        let mut out = Vec::new();
        ChunkEncoder::new(128).message(&mut out, 3, FirstHeader::Full, 0, 20, 0, &body);
        s.write_all(&out).await.unwrap();
        let took = expect_closed(&mut s, 3 * SECOND).await;
        assert!(took < 2 * SECOND, "{what}: closed at once ({took:?})");
        let line = wait_log(peer, "RTMP connection closed").await;
        assert!(line.contains("bad RTMP command"), "{what}: {line}");
    }

    // The good stream kept flowing through all of it.
    let mut check = StreamCheck::new();
    let start = Instant::now();
    while start.elapsed() < 2 * SECOND {
        let tag = player
            .next(5 * SECOND)
            .await
            .expect("good stream continues");
        check.tag(&tag, player.started.elapsed());
    }
    assert!(check.video > 20, "good stream: {} frames", check.video);
    // And a new publisher is admitted.
    let mut s = raw_publish(rtmp, "live", "amfafter").await;
    s.shutdown().await.unwrap();
    server.shutdown().await;
}

/// Issue 16: an explicit stop (OBS "Stop Streaming": `FCUnpublish` and
/// `deleteStream`) ends the stream for players at once with a clean close, while a
/// connection that just drops keeps the grace period (see
/// `rtmp_publisher_restarted_within_grace_continues_the_stream`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_unpublish_ends_the_stream_at_once() {
    use Amf::*;
    let (server, http, rtmp) = rtmp_server(|c| c.live.publisher_grace_ms = 30_000).await;
    let mut s = raw_publish(rtmp, "live", "stopme").await;
    raw_send(&mut s, 9, 0, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]).await;
    raw_send(&mut s, 8, 0, &[0xAF, 0, 0x12, 0x10]).await;
    for i in 0..10u32 {
        raw_send(&mut s, 9, i * 40, &[0x17, 1, 0, 0, 0, 0x65, 1, 2, 3]).await;
        raw_send(&mut s, 8, i * 40 + 5, &[0xAF, 1, 0x21, 0x10]).await;
    }
    wait_live(http, "stopme").await;
    let mut player = WsPlayer::connect(http, "stopme").await;
    player.next(5 * SECOND).await.expect("a tag");
    let mut out = Vec::new();
    amf_command(&mut out, 0, &[S("FCUnpublish"), N(6.0), Null, S("stopme")]);
    amf_command(&mut out, 0, &[S("deleteStream"), N(7.0), Null, N(1.0)]);
    s.write_all(&out).await.unwrap();
    let started = Instant::now();
    let end = loop {
        match player.next(5 * SECOND).await {
            Ok(_) => continue,
            Err(end) => break end,
        }
    };
    let took = started.elapsed();
    assert!(
        took < 3 * SECOND,
        "players end at once, not after the 30 s grace ({took:?}, {end:?})"
    );
    match end {
        Ended::Close(code, reason) => {
            assert_eq!(code, 1000, "{reason}");
            assert!(reason.contains("publisher stopped"), "{reason}");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The name is free again at once.
    let (status, _) = http_request(http, "GET", "/api/streams/stopme", b"")
        .await
        .unwrap();
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_connections_are_capped() {
    let (server, _http, rtmp) = rtmp_server(|c| c.rtmp_settings.max_connections = 2).await;
    let a = TcpStream::connect(rtmp).await.unwrap();
    let b = TcpStream::connect(rtmp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = TcpStream::connect(rtmp).await.unwrap();
    let peer = c.local_addr().unwrap();
    let took = expect_closed(&mut c, 2 * SECOND).await;
    assert!(took < SECOND, "over the cap: closed at once ({took:?})");
    wait_log(peer, "at connection limit").await;
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Slots are free again: a real publisher gets in.
    let mut s = raw_publish(rtmp, "live", "capped").await;
    s.shutdown().await.unwrap();
    server.shutdown().await;
}

/// Enhanced RTMP (OBS 30+ with HEVC, AV1, Opus...): FourCC tags pass through and the
/// keyframe / sequence-header detection works for them, so the GOP cache does too.
/// ffmpeg 5.1 (Debian 12) cannot mux HEVC into RTMP, so a hand-made client sends
/// HEVC + Opus tags; it also starts past 0xFFFFFF ms (extended timestamps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_rtmp_hevc_opus_at_extended_timestamps() {
    let (server, http, rtmp) = rtmp_server(|_| {}).await;
    let mut s = raw_publish(rtmp, "live", "hevc").await;
    const T0: u32 = 20_000_000; // > 0xFFFFFF: extended timestamps on the wire
    let meta = amf(&[
        Amf::S("@setDataFrame"),
        Amf::S("onMetaData"),
        Amf::Obj(&[("encoder", "hand-made")]),
    ]);
    raw_send(&mut s, 18, T0, &meta).await;
    // Sequence starts: [ExHeader|key|SequenceStart] "hvc1" hvcC, [Ex|SequenceStart] "Opus".
    raw_send(&mut s, 9, T0, b"\x90hvc1\x01\x02\x03\x04").await;
    raw_send(&mut s, 8, T0, b"\x90OpusOpusHead\x01\x02").await;
    let frame = |i: u32| -> Vec<u8> {
        // CodedFramesX (3): no composition time. Keyframe every 25 frames.
        let mut b = if i.is_multiple_of(25) {
            b"\x93hvc1".to_vec()
        } else {
            b"\xA3hvc1".to_vec()
        };
        b.extend_from_slice(&i.to_be_bytes());
        b.extend(std::iter::repeat_n(0x55u8, 500));
        b
    };
    let mut i = 0;
    let send_second = async |s: &mut TcpStream, i: &mut u32| {
        for _ in 0..25 {
            let ts = T0 + *i * 40;
            raw_send(s, 9, ts, &frame(*i)).await;
            raw_send(s, 8, ts, b"\x91Opus\xFC\x01").await;
            raw_send(s, 8, ts + 20, b"\x91Opus\xFC\x02").await;
            *i += 1;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    };
    send_second(&mut s, &mut i).await;
    wait_live(http, "hevc").await;
    let status = http_get(http, "/api/streams").await.unwrap();
    assert!(
        status.contains("\"hevc\"") && status.contains("\"opus\""),
        "{status}"
    );
    let play = tokio::spawn(async move {
        let mut player = WsPlayer::connect(http, "hevc").await;
        let mut check = StreamCheck::new();
        let mut first_frame = None;
        while check.video < 30 {
            let tag = player.next(5 * SECOND).await.expect("stream continues");
            check.tag(&tag, player.started.elapsed());
            if first_frame.is_none() && check.frames == 1 {
                first_frame = Some((tag.timestamp, tag.body.clone()));
            }
        }
        (check, first_frame.unwrap())
    });
    for _ in 0..3 {
        send_second(&mut s, &mut i).await;
    }
    let (check, (ts, body)) = play.await.unwrap();
    // The player starts at a cached keyframe with its original (extended) timestamp.
    assert!(check.seen_vsh && check.seen_ash);
    assert_eq!(body[0], 0x93, "first frame is an HEVC keyframe");
    assert!(
        ts >= T0 && (ts - T0).is_multiple_of(1000),
        "keyframe timestamp {ts}"
    );
    s.shutdown().await.unwrap();
    server.shutdown().await;
}
