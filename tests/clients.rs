//! Real clients a newcomer uses, against the real binary or an in-process server:
//! the binary's startup summary; librtmp's handshake checks (rtmpdump, the library
//! OBS and GStreamer's rtmpsink are built on) for the simple and the digest
//! handshake; and Enhanced RTMP publishes from a current ffmpeg (9.x, from
//! `scripts/ffmpeg9.sh`): H.264 + Opus and HEVC + AAC, played back over
//! WebSocket-FLV and checked with the `flv` crate. A missing tool fails the test.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use flv::{AudioCodec, AudioConfig, Tag, TagType, VideoCodec};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use wsrelay::app::Server;
use wsrelay::config::Listen;

const SECOND: Duration = Duration::from_secs(1);

// ---- the binary's startup summary ----

/// Runs `wsrelay --http 127.0.0.1:0 --rtmp 127.0.0.1:0 [extra]` in an empty
/// directory with `RUST_LOG=info`; returns the child, the two listening addresses
/// from stdout, and stderr's lines up to the summary's last (`cluster: off`).
async fn run_binary(extra: &[&str]) -> (Child, SocketAddr, SocketAddr, Vec<String>) {
    let dir = scratch().join(format!("summary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .args(["--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
        .args(extra)
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run wsrelay");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_stdout = async || {
        tokio::time::timeout(15 * SECOND, stdout.next_line())
            .await
            .expect("a listening line within 15 s")
            .unwrap()
            .expect("stdout open")
    };
    // The exact lines scripts and tests parse.
    let http = next_stdout().await;
    let http: SocketAddr = http
        .strip_prefix("listening http://")
        .unwrap_or_else(|| panic!("first stdout line: {http:?}"))
        .parse()
        .unwrap();
    let rtmp = next_stdout().await;
    let rtmp: SocketAddr = rtmp
        .strip_prefix("listening rtmp://")
        .unwrap_or_else(|| panic!("second stdout line: {rtmp:?}"))
        .parse()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + 15 * SECOND;
    loop {
        let line = tokio::time::timeout_at(deadline, stderr.next_line())
            .await
            .unwrap_or_else(|_| panic!("no `cluster: off` within 15 s; stderr: {lines:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("stderr closed; stderr: {lines:#?}"));
        let done = line.contains("cluster: off");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, http, rtmp, lines)
}

/// The one line of `lines` containing `needle` (exactly one).
fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
    assert_eq!(found.len(), 1, "one line with `{needle}` in {lines:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_summary_says_where_everything_is() {
    let (mut child, http, rtmp, lines) = run_binary(&[]).await;
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "no colours when piped: {line:?}");
    }
    let listeners = line_with(&lines, "listeners:");
    assert!(listeners.contains(" INFO "), "{listeners}");
    assert!(
        listeners.ends_with(&format!("listeners: http {http}, rtmp {rtmp}, tls off")),
        "{listeners}"
    );
    assert!(
        line_with(&lines, "web UI:").ends_with(&format!(
            "web UI: http://{http}/ (pages built into the binary)"
        )),
        "{lines:#?}"
    );
    assert!(line_with(&lines, "OBS:").contains(&format!(
        "OBS: Server rtmp://{rtmp}/live, Stream Key = NAME (any name)"
    )));
    let play = line_with(&lines, "play NAME:");
    for url in [
        format!("ws://{http}/live/NAME.flv"),
        format!("http://{http}/live/NAME.flv"),
        format!("http://{http}/player.html?stream=NAME"),
    ] {
        assert!(play.contains(&url), "{url} in {play}");
    }
    assert!(line_with(&lines, "auth:").contains("auth: off"));
    assert!(line_with(&lines, "admin API:").contains("admin API: off"));
    line_with(&lines, "cluster: off");
    // The web UI URL it printed works.
    let (status, page) = http_request(http, "GET", "/", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));
    child.kill().await.unwrap();

    // Auth and the admin API on: said so, and no secret in the log.
    let (mut child, _, _, lines) = run_binary(&[
        "--set",
        "auth.secrets=[\"summary-secret-1234567890\"]",
        "--set",
        "auth.play_prefixes=[\"private/\"]",
        "--set",
        "admin_token=summary-admin-1234567890",
    ])
    .await;
    assert!(
        line_with(&lines, "auth:").contains(
            "auth: on (1 secret): publish needs a token; play needs a token for streams under private/"
        ),
        "{lines:#?}"
    );
    assert!(line_with(&lines, "OBS:").contains("with a token: NAME?token=TOKEN"));
    assert!(line_with(&lines, "admin API:").contains("admin API: on"));
    let all = lines.join("\n");
    assert!(!all.contains("summary-secret") && !all.contains("summary-admin"));
    child.kill().await.unwrap();
}

// ---- librtmp (rtmpdump): the handshake it checks ----

/// Fails loudly when `rtmpdump` (Debian package `rtmpdump`, built on librtmp) is missing.
fn require_rtmpdump() {
    let ok = std::process::Command::new("rtmpdump")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "`rtmpdump` is required (apt-get install rtmpdump); run the README's test command"
    );
}

/// `rtmpdump -V -r rtmp://ADDR/live/hs [extra]`: librtmp's debug log. Our server
/// refuses to play, so rtmpdump fails after connecting; the log is what matters.
async fn rtmpdump_log(rtmp: SocketAddr, extra: &[&str]) -> String {
    let out = Command::new("rtmpdump")
        .args(["-V", "-m", "10", "-o", "/dev/null", "-r"])
        .arg(format!("rtmp://{rtmp}/live/hs"))
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(20 * SECOND, out)
        .await
        .expect("rtmpdump finished")
        .expect("rtmpdump runs");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librtmp_accepts_our_s2_in_the_simple_and_the_digest_handshake() {
    require_rtmpdump();
    let server = server(|c| c.rtmp = Listen::On("127.0.0.1:0".parse().unwrap())).await;
    let rtmp = server.rtmp_addr().unwrap();

    // Plain rtmp:// (what OBS does): the simple handshake; S2 must be C1.
    let log = rtmpdump_log(rtmp, &[]).await;
    assert!(log.contains("Handshaking finished"), "{log}");
    assert!(log.contains("FMS Version   : 0.0.0.0"), "simple: {log}");
    assert!(!log.contains("signature does not match"), "{log}");
    assert!(log.contains("NetStream.Play.Failed"), "connected: {log}");

    // With SWF verification parameters librtmp uses the digest handshake and checks
    // S1's digest and S2's signature (a failure aborts the connection).
    let zero_hash = "0".repeat(64);
    let log = rtmpdump_log(rtmp, &["-w", &zero_hash, "-x", "1000"]).await;
    assert!(log.contains("Client digest offset"), "digest: {log}");
    assert!(log.contains("Genuine Adobe Flash Media Server"), "{log}");
    assert!(!log.contains("not genuine") && !log.contains("Couldn't verify"));
    assert!(log.contains("NetStream.Play.Failed"), "connected: {log}");
    server.shutdown().await;
}

// ---- Enhanced RTMP from a current ffmpeg ----

/// The ffmpeg 9 that `scripts/ffmpeg9.sh` installs (once) and names.
fn ffmpeg9() -> &'static Path {
    static EXE: OnceLock<std::path::PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ffmpeg9.sh");
        let out = std::process::Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "scripts/ffmpeg9.sh failed (needs python3 with venv and PyPI)"
        );
        let path = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let version = std::process::Command::new(&path)
            .args(["-hide_banner", "-version"])
            .output()
            .expect("ffmpeg 9 runs");
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        assert!(
            version.starts_with("ffmpeg version n9.") || version.starts_with("ffmpeg version 9."),
            "expected ffmpeg 9, got {version}"
        );
        path
    })
}

/// ffmpeg 9 encodes lavfi test sources live (1 s GOP, 48 kHz mono sine) and
/// publishes them over RTMP.
fn publish_enhanced(rtmp: SocketAddr, name: &str, video: &[&str], audio: &[&str]) -> Child {
    Command::new(ffmpeg9())
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "60", "-pix_fmt", "yuv420p", "-g", "25"])
        .args(video)
        .args(audio)
        .args(["-f", "flv"])
        .arg(format!("rtmp://{rtmp}/live/{name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg 9")
}

/// What a WebSocket-FLV player of the stream received: the checked stream rules,
/// and the sequence headers.
struct Played {
    check: StreamCheck,
    video_header: Tag,
    audio_header: Tag,
    /// Tags `flv::for_browser_players` says mpegts.js must not get (e.g. ffmpeg 7+'s
    /// Opus MultichannelConfig), as `(type, first body byte)`.
    not_for_browsers: Vec<(TagType, u8)>,
}

async fn play(http: SocketAddr, name: &str, min_video: usize) -> Played {
    let mut player = WsPlayer::connect(http, name).await;
    let mut check = StreamCheck::new();
    let (mut video_header, mut audio_header) = (None, None);
    let mut not_for_browsers = Vec::new();
    while check.video < min_video {
        let tag = player.next(10 * SECOND).await.expect("the stream goes on");
        if !flv::for_browser_players(&tag) {
            not_for_browsers.push((tag.tag_type, tag.body.first().copied().unwrap_or(0)));
        }
        // Order, keyframe first, monotonic timestamps per track.
        check.tag(&tag, player.started.elapsed());
        if tag.is_sequence_header() {
            match tag.tag_type {
                TagType::Video => video_header = Some(tag),
                // The Opus sequence start, not the MultichannelConfig before it.
                TagType::Audio if !tag.audio().unwrap().is_multichannel_config() => {
                    audio_header = Some(tag)
                }
                _ => {}
            }
        }
    }
    let header = player.header().expect("FLV header");
    assert!(header.audio && header.video, "{header:?}");
    eprintln!("{name}: tags browsers must not get: {not_for_browsers:x?}");
    Played {
        check,
        video_header: video_header.expect("a video sequence header"),
        audio_header: audio_header.expect("an audio sequence header"),
        not_for_browsers,
    }
}

/// `/api/streams`' entry for `name`.
async fn api_stream(http: SocketAddr, name: &str) -> serde_json::Value {
    let body = http_get(http, "/api/streams").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {body}"))
}

async fn rtmp_server() -> (Server, SocketAddr, SocketAddr) {
    let server = server(|c| c.rtmp = Listen::On("127.0.0.1:0".parse().unwrap())).await;
    let http = server.http_addr().unwrap();
    let rtmp = server.rtmp_addr().unwrap();
    (server, http, rtmp)
}

/// Ends ffmpeg; fails with its error output if it had already stopped.
async fn stop(mut ffmpeg: Child) {
    if let Some(status) = ffmpeg.try_wait().unwrap() {
        let out = ffmpeg.wait_with_output().await.unwrap();
        panic!(
            "ffmpeg 9 stopped early ({status}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ffmpeg.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg9_publishes_h264_and_opus_over_enhanced_rtmp() {
    let (server, http, rtmp) = rtmp_server().await;
    let started = Instant::now();
    let ffmpeg = publish_enhanced(
        rtmp,
        "opus",
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ],
        &["-c:a", "libopus", "-b:a", "64k"],
    );
    wait_live(http, "opus").await;
    let status = api_stream(http, "opus").await;
    assert_eq!(status["video"]["codec"], "h264", "{status}");
    assert_eq!(status["audio"]["codec"], "opus", "{status}");
    assert_eq!(status["publisher"], "rtmp");
    // From the Opus sequence header (ffmpeg's onMetaData gives the Opus rate too,
    // but the sequence header is what the API prefers).
    assert_eq!(status["audio"]["sample_rate"], 48000.0, "{status}");

    let played = play(http, "opus", 30).await;
    assert!(played.check.audio > 10, "Opus frames flow");
    // ffmpeg 7+ sends an Opus MultichannelConfig (audio packet type 4), which
    // mpegts.js rejects: the relay drops it, so players never get it.
    assert!(
        played.not_for_browsers.is_empty(),
        "{:x?}",
        played.not_for_browsers
    );
    let video = played.video_header.video().unwrap();
    assert_eq!(video.codec, VideoCodec::Avc);
    let audio = played.audio_header.audio().unwrap();
    assert_eq!(audio.codec, AudioCodec::Opus);
    assert!(audio.enhanced, "Opus travels as Enhanced FLV (FourCC)");
    assert_eq!(
        played.audio_header.audio_config(),
        Some(AudioConfig {
            sample_rate: Some(48_000),
            channels: Some(1),
        }),
        "the OpusHead of a 48 kHz mono sine"
    );
    stop(ffmpeg).await;
    eprintln!("h264+opus checked in {:?}", started.elapsed());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg9_publishes_hevc_and_aac_over_enhanced_rtmp() {
    let (server, http, rtmp) = rtmp_server().await;
    let started = Instant::now();
    let ffmpeg = publish_enhanced(
        rtmp,
        "hevc",
        &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=25:min-keyint=25:log-level=error",
        ],
        &["-c:a", "aac", "-b:a", "96k"],
    );
    wait_live(http, "hevc").await;
    let status = api_stream(http, "hevc").await;
    assert_eq!(status["video"]["codec"], "hevc", "{status}");
    assert_eq!(status["audio"]["codec"], "aac", "{status}");

    let played = play(http, "hevc", 30).await;
    assert!(played.check.audio > 10, "AAC frames flow");
    // ffmpeg 7+'s `colorInfo` Metadata packet (video packet type 4) is dropped by
    // the relay: players never get it.
    assert!(
        played.not_for_browsers.is_empty(),
        "{:x?}",
        played.not_for_browsers
    );
    let video = played.video_header.video().unwrap();
    assert_eq!(video.codec, VideoCodec::Hevc);
    assert!(video.enhanced, "HEVC travels as Enhanced FLV (FourCC hvc1)");
    assert_eq!(played.audio_header.audio().unwrap().codec, AudioCodec::Aac);
    assert_eq!(
        played.audio_header.audio_config(),
        Some(AudioConfig {
            sample_rate: Some(48_000),
            channels: Some(1),
        }),
        "the AudioSpecificConfig of a 48 kHz mono sine"
    );
    stop(ffmpeg).await;
    eprintln!("hevc+aac checked in {:?}", started.elapsed());
    server.shutdown().await;
}
