//! Shared helpers for the integration tests: a server on free loopback ports, media
//! made by ffmpeg, ffmpeg publishers, and a WebSocket-FLV player that demuxes what it
//! receives with our `flv` crate.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flv::{Demuxer, DemuxerConfig, Header, Tag, TagType};
use futures_util::StreamExt;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use wsrelay::app::Server;
use wsrelay::config::{Config, Listen};

/// Fails the test loudly when a tool the test command should have installed is missing.
pub fn require(tool: &str) {
    // ffmpeg-style `-version`, or GNU-style `--version` (redis-server, node, …).
    let ok = ["-version", "--version"].iter().any(|flag| {
        std::process::Command::new(tool)
            .arg(flag)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(
        ok,
        "`{tool}` is required; run the README's test command (scripts/test.sh) to install it"
    );
}

/// Scratch directory under target/.
pub fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wsrelay-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 20 s H.264 (GOP 1 s, 25 fps) + AAC FLV at about 2.5 Mbit/s, made once per run.
pub fn media() -> &'static Path {
    static MEDIA: OnceLock<PathBuf> = OnceLock::new();
    MEDIA.get_or_init(|| make_media("h264-aac-20s.flv", 20, &[]))
}

/// Makes an FLV with ffmpeg (lavfi test sources) unless it exists already.
pub fn make_media(name: &str, seconds: u32, extra: &[&str]) -> PathBuf {
    require("ffmpeg");
    let out = scratch().join(name);
    if out.exists() {
        return out;
    }
    let tmp = out.with_extension(format!("tmp{}.flv", std::process::id()));
    let secs = seconds.to_string();
    let mut args: Vec<&str> = vec![
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
        &secs,
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "25",
        "-keyint_min",
        "25",
        "-sc_threshold",
        "0",
        "-b:v",
        "2300k",
        "-maxrate",
        "2300k",
        "-bufsize",
        "1000k",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-f", "flv"]);
    let status = std::process::Command::new("ffmpeg")
        .args(&args)
        .arg(&tmp)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not make test media");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// The admin token of [`test_config`]; [`http_request`] sends it.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A config for tests: loopback, free ports, RTMP off, short grace period, an admin
/// token (admin routes are closed without one).
pub fn test_config() -> Config {
    let mut c = Config {
        http: Listen::On("127.0.0.1:0".parse().unwrap()),
        rtmp: Listen::Off,
        static_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("static")),
        admin_token: Some(signaling::Secret::new(ADMIN_TOKEN)),
        ..Config::default()
    };
    c.live.publisher_grace_ms = 3_000;
    c
}

/// Starts a server in-process.
pub async fn server(tweak: impl FnOnce(&mut Config)) -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "wsrelay=info".into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
    let mut config = test_config();
    tweak(&mut config);
    wsrelay::app::spawn(config).await.expect("server starts")
}

/// `ffmpeg -re -i FILE -c copy -f flv -method POST http://ADDR/live/NAME.flv`.
pub fn publish_http(addr: std::net::SocketAddr, name: &str, file: &Path) -> Child {
    require("ffmpeg");
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", "-method", "POST"])
        .arg(format!("http://{addr}/live/{name}.flv"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg")
}

/// `ffmpeg -re -i FILE -c copy [extra] -f flv URL` (stderr piped, for tests that read
/// ffmpeg's verdict).
pub fn ffmpeg_publish(url: &str, file: &Path, extra: &[&str]) -> Child {
    require("ffmpeg");
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-i",
        ])
        .arg(file)
        .args(["-c", "copy"])
        .args(extra)
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg")
}

/// `ffmpeg -i http://ADDR/live/NAME.flv -t SECS -f null -`: plays HTTP-FLV with
/// ffmpeg and returns (frames decoded, error output). Fails if ffmpeg fails.
pub async fn ffmpeg_play(addr: std::net::SocketAddr, name: &str, secs: u32) -> (u64, String) {
    require("ffmpeg");
    let tag = name.replace('/', "_");
    let progress = scratch().join(format!("progress-{tag}-{}.txt", std::process::id()));
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(format!("http://{addr}/live/{name}.flv"))
        .args(["-t", &secs.to_string(), "-f", "null", "-", "-progress"])
        .arg(&progress)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("ffmpeg player finished")
        .expect("ffmpeg runs");
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ffmpeg player failed: {errors}");
    let text = std::fs::read_to_string(&progress).unwrap_or_default();
    let frames = text
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|v| v.trim().parse().ok())
        .next_back()
        .unwrap_or(0);
    (frames, errors)
}

/// Reads WebSocket-FLV from any WebSocket stream (plain, TLS, through a proxy) until
/// `min_video` video frames arrived, checking the player-stream rules on the way.
pub async fn read_ws_flv<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    min_video: usize,
) -> (Header, StreamCheck)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut demux = Demuxer::new(DemuxerConfig::default());
    let mut check = StreamCheck::new();
    let started = Instant::now();
    while check.video < min_video {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("WebSocket-FLV data within 5 s")
        {
            Some(Ok(Message::Binary(data))) => demux.push(&data),
            other => panic!("unexpected WebSocket message: {other:?}"),
        }
        while let Some(tag) = demux.next_tag().expect("valid FLV") {
            check.tag(&tag, started.elapsed());
        }
    }
    (demux.header().expect("FLV header"), check)
}

/// Polls `/api/streams` until `name` is live (a publisher just started).
pub async fn wait_live(addr: std::net::SocketAddr, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(body) = http_get(addr, "/api/streams").await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let live = v["streams"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == name && s["video"].is_object() && s["audio"].is_object());
            if live {
                return;
            }
        }
        assert!(Instant::now() < deadline, "stream {name} never went live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal HTTP/1.1 GET returning the body (for small API responses).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let (status, body) = http_request(addr, "GET", path, &[]).await?;
    if status != 200 {
        return Err(std::io::Error::other(format!("status {status}")));
    }
    Ok(body)
}

/// A raw HTTP/1.1 request with `Connection: close` and the admin token of
/// [`test_config`]; returns status and body.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A raw `GET path` (plus `extra` header lines, each ending in CRLF) whose response
/// head is read: (status, the head in lowercase, the connection positioned at the
/// body).
pub async fn get_head(
    addr: std::net::SocketAddr,
    path: &str,
    extra: &str,
) -> (u16, String, tokio::io::BufReader<tokio::net::TcpStream>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n").as_bytes())
        .await
        .unwrap();
    let mut r = tokio::io::BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(15), r.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("GET {path} on {addr}: no response head within 15 s"))
            .unwrap();
        assert!(
            n > 0,
            "connection closed before the response head: {head:?}"
        );
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), r)
}

/// A WebSocket-FLV player that demuxes what it receives.
pub struct WsPlayer {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub demux: Demuxer,
    pub bytes: u64,
    pub started: Instant,
}

/// How a WebSocket-FLV connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// A close frame with this code and reason.
    Close(u16, String),
    /// The TCP connection ended without a close frame.
    Eof,
}

impl WsPlayer {
    pub async fn connect(addr: std::net::SocketAddr, name: &str) -> WsPlayer {
        let url = format!("ws://{addr}/live/{name}.flv");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        WsPlayer {
            ws,
            demux: Demuxer::new(DemuxerConfig::default()),
            bytes: 0,
            started: Instant::now(),
        }
    }

    /// The next tag, or how the stream ended. Panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Tag, Ended> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(tag) = self.demux.next_tag().expect("server sent valid FLV") {
                return Ok(tag);
            }
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for a tag");
            match msg {
                Some(Ok(Message::Binary(data))) => {
                    self.bytes += data.len() as u64;
                    self.demux.push(&data);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(Ended::Close(1005, String::new()), |f| {
                        Ended::Close(f.code.into(), f.reason.to_string())
                    }));
                }
                Some(Ok(Message::Text(t))) => panic!("server sent text to a player: {t}"),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(Ended::Eof),
            }
        }
    }

    pub fn header(&self) -> Option<Header> {
        self.demux.header()
    }
}

/// Checks the rules of what a player receives; returns (video tags, audio tags).
pub struct StreamCheck {
    pub seen_meta: bool,
    pub seen_vsh: bool,
    pub seen_ash: bool,
    pub frames: usize,
    pub video: usize,
    pub audio: usize,
    pub last_video: Option<u32>,
    pub last_audio: Option<u32>,
    pub first_keyframe_at: Option<Duration>,
}

impl StreamCheck {
    pub fn new() -> StreamCheck {
        StreamCheck {
            seen_meta: false,
            seen_vsh: false,
            seen_ash: false,
            frames: 0,
            video: 0,
            audio: 0,
            last_video: None,
            last_audio: None,
            first_keyframe_at: None,
        }
    }

    /// Feeds one received tag, asserting order and monotonic timestamps.
    pub fn tag(&mut self, tag: &Tag, since_connect: Duration) {
        if tag.is_metadata() {
            self.seen_meta = true;
            return;
        }
        let last = match tag.tag_type {
            TagType::Video => &mut self.last_video,
            TagType::Audio => &mut self.last_audio,
            other => panic!("unexpected tag type {other:?}"),
        };
        if let Some(l) = *last {
            assert!(
                tag.timestamp >= l,
                "{:?} timestamp went back: {l} -> {}",
                tag.tag_type,
                tag.timestamp
            );
        }
        *last = Some(tag.timestamp);
        if tag.is_sequence_header() {
            match tag.tag_type {
                TagType::Video => self.seen_vsh = true,
                _ => self.seen_ash = true,
            }
            return;
        }
        if self.frames == 0 {
            assert!(self.seen_meta, "onMetaData must come before any frame");
            assert!(
                self.seen_vsh && self.seen_ash,
                "both sequence headers before any frame"
            );
            assert!(
                tag.tag_type == TagType::Video && tag.is_keyframe(),
                "the first frame must be a video keyframe, got {:?}",
                tag.tag_type
            );
            self.first_keyframe_at = Some(since_connect);
        }
        self.frames += 1;
        match tag.tag_type {
            TagType::Video => self.video += 1,
            _ => self.audio += 1,
        }
    }
}

/// Reads `/proc/PID/status` VmRSS in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A chunked HTTP/1.1 body (after the head), decoded strictly: every size line,
/// every CRLF after a chunk's data, the last chunk without trailers. Returns the
/// data and what followed the last chunk.
pub fn dechunk(mut body: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut data = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap(), 16)
            .expect("a hex chunk size");
        body = &body[eol + 2..];
        if size == 0 {
            assert_eq!(&body[..2], b"\r\n", "the last chunk has no trailers");
            return (data, body[2..].to_vec());
        }
        data.extend_from_slice(&body[..size]);
        assert_eq!(&body[size..size + 2], b"\r\n", "CRLF after a chunk's data");
        body = &body[size + 2..];
    }
}
