//! The publisher: replays the media by HTTP POST (chunked), WebSocket, RTMP (our own
//! client, `rtmp.rs`) or RTMP through ffmpeg, in real time or as fast as possible,
//! recording when it wrote each tag (all but ffmpeg).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use hyper_tungstenite::tungstenite::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::media::Media;
use crate::player::SendTable;
use crate::rtmp::{self, Amf};

/// How the publisher reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublishMode {
    /// HTTP POST with a chunked FLV body.
    Http,
    /// WebSocket `?publish`, one binary message per tag.
    Ws,
    /// RTMP, the harness's own client: one message per tag, chunk size 60,000.
    Rtmp,
    /// `ffmpeg -re -i FILE -c copy -f flv rtmp://…` (no per-tag send times).
    RtmpFfmpeg,
    /// Nothing: attach players to a stream that is already live (`--url`).
    Attach,
}

/// Replay speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// Each tag when its timestamp is due.
    Realtime,
    /// As fast as the server takes it.
    Fast,
}

/// What the publisher did.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Tags written.
    pub tags: AtomicU64,
    /// Tag bytes written.
    pub bytes: AtomicU64,
}

/// One encoded tag: FLV bytes and the (type, timestamp) players will see.
struct Out {
    tag_type: u8,
    timestamp: u32,
    wire: Vec<u8>,
}

/// The tags to send, forever: preamble once, then the loop with timestamps shifted by
/// one loop length per repetition (so every (type, timestamp) stays unique).
fn tags(media: &Media) -> impl Iterator<Item = Out> + '_ {
    let encode = |tag: &flv::Tag, ts: u32| {
        let mut wire = Vec::with_capacity(tag.encoded_len());
        tag.write_with_timestamp(ts, &mut wire);
        Out {
            tag_type: u8::from(tag.tag_type),
            timestamp: ts,
            wire,
        }
    };
    let pre = media.preamble.iter().map(move |t| encode(t, 0));
    let looped = (0u32..).flat_map(move |i| {
        media
            .tags
            .iter()
            .map(move |t| encode(t, t.timestamp + i * media.loop_ms))
    });
    pre.chain(looped)
}

/// What to publish where.
#[derive(Debug)]
pub struct Publish {
    /// Transport.
    pub mode: PublishMode,
    /// The server's HTTP/WebSocket address.
    pub http: SocketAddr,
    /// RTMP URL to push to (`--rtmp-url`, or the server's RTMP listener).
    pub rtmp: Option<String>,
    /// Stream name (`/live/NAME.flv`).
    pub stream: String,
    /// What to replay.
    pub media: Arc<Media>,
    /// How fast.
    pub pace: Pace,
    /// Where to record send times (all modes but `rtmp-ffmpeg` and `attach`).
    pub table: Option<Arc<SendTable>>,
    /// Counters.
    pub stats: Arc<PublishStats>,
}

/// Publishes until `stop`. Records each tag in `table` just before writing it.
pub async fn run(p: Publish, stop: CancellationToken) -> Result<(), String> {
    let Publish {
        mode,
        http,
        rtmp,
        stream,
        media,
        pace,
        table,
        stats,
    } = p;
    let stream = stream.as_str();
    match mode {
        PublishMode::Attach => {
            stop.cancelled().await;
            Ok(())
        }
        PublishMode::RtmpFfmpeg => {
            let rtmp =
                rtmp.ok_or("--publish rtmp-ffmpeg: the server has no RTMP listener (--rtmp-url)")?;
            rtmp_ffmpeg(&rtmp, &media, stop).await
        }
        PublishMode::Rtmp => {
            let rtmp =
                rtmp.ok_or("--publish rtmp: the server has no RTMP listener (--rtmp-url)")?;
            rtmp_native(&rtmp, &media, pace, table.as_deref(), &stats, stop).await
        }
        PublishMode::Http | PublishMode::Ws => {
            let mut sink = Sink::connect(mode, http, stream).await?;
            sink.write(media.header.encode().to_vec()).await?;
            let start = tokio::time::Instant::now();
            for out in tags(&media) {
                if pace == Pace::Realtime {
                    let due = start + Duration::from_millis(u64::from(out.timestamp));
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = stop.cancelled() => break,
                        r = sink.early_response() => return Err(r),
                    }
                } else if stop.is_cancelled() {
                    break;
                }
                let len = out.wire.len() as u64;
                if let Some(table) = &table {
                    table.insert(out.tag_type, out.timestamp, len as u32, Instant::now());
                }
                tokio::select! {
                    r = sink.write(out.wire) => r?,
                    _ = stop.cancelled() => break,
                }
                stats.tags.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(len, Ordering::Relaxed);
            }
            sink.finish().await;
            Ok(())
        }
    }
}

type WsClient = tokio_tungstenite::WebSocketStream<TcpStream>;

enum Sink {
    Http(TcpStream),
    Ws(Box<WsClient>),
}

impl Sink {
    async fn connect(mode: PublishMode, addr: SocketAddr, stream: &str) -> Result<Sink, String> {
        let sock = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("publisher connect {addr}: {e}"))?;
        let _ = sock.set_nodelay(true);
        if mode == PublishMode::Ws {
            let url = format!("ws://{addr}/live/{stream}.flv?publish");
            let (ws, _) = tokio_tungstenite::client_async(url, sock)
                .await
                .map_err(|e| format!("publisher WebSocket: {e}"))?;
            return Ok(Sink::Ws(Box::new(ws)));
        }
        let mut sock = sock;
        let head = format!(
            "POST /live/{stream}.flv HTTP/1.1\r\nHost: {addr}\r\nContent-Type: video/x-flv\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        sock.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("publisher write: {e}"))?;
        Ok(Sink::Http(sock))
    }

    async fn write(&mut self, data: Vec<u8>) -> Result<(), String> {
        match self {
            Sink::Http(sock) => {
                let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                sock.write_all(&chunk)
                    .await
                    .map_err(|e| format!("publisher write: {e}"))
            }
            Sink::Ws(ws) => ws
                .send(Message::Binary(Bytes::from(data)))
                .await
                .map_err(|e| format!("publisher write: {e}")),
        }
    }

    /// Resolves if the server answers while we publish (a refusal); never otherwise.
    async fn early_response(&mut self) -> String {
        match self {
            Sink::Http(sock) => {
                let mut buf = [0u8; 512];
                match sock.read(&mut buf).await {
                    Ok(0) => "publisher: server closed the connection".into(),
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        format!("publisher refused: {}", text.lines().next().unwrap_or(""))
                    }
                    Err(e) => format!("publisher read: {e}"),
                }
            }
            Sink::Ws(ws) => {
                use futures_util::StreamExt;
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => {
                        format!("publisher closed by server: {frame:?}")
                    }
                    Some(Ok(_)) => std::future::pending().await,
                    Some(Err(e)) => format!("publisher WebSocket: {e}"),
                    None => "publisher: server closed the connection".into(),
                }
            }
        }
    }

    async fn finish(self) {
        match self {
            Sink::Http(mut sock) => {
                let _ = sock.write_all(b"0\r\n\r\n").await;
            }
            Sink::Ws(mut ws) => {
                let _ = ws.close().await;
            }
        }
    }
}

async fn rtmp_ffmpeg(url: &str, media: &Media, stop: CancellationToken) -> Result<(), String> {
    let mut child = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(&media.path)
        .args(["-c", "copy", "-f", "flv"])
        .arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run ffmpeg for RTMP publishing: {e}"))?;
    tokio::select! {
        status = child.wait() => Err(format!("ffmpeg RTMP publisher exited early: {status:?}")),
        _ = stop.cancelled() => {
            let _ = child.kill().await;
            Ok(())
        }
    }
}

/// Time a server has to answer the handshake and each command.
const RTMP_SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// `rtmp://HOST:PORT/APP/NAME` → (`HOST:PORT`, `APP`, `NAME`). The port defaults to 1935.
fn parse_rtmp_url(url: &str) -> Result<(String, String, String), String> {
    let bad = || format!("RTMP URL {url}: expected rtmp://HOST[:PORT]/APP/NAME");
    let rest = url.strip_prefix("rtmp://").ok_or_else(bad)?;
    let (host, path) = rest.split_once('/').ok_or_else(bad)?;
    let (app, name) = path.split_once('/').ok_or_else(bad)?;
    if host.is_empty() || app.is_empty() || name.is_empty() {
        return Err(bad());
    }
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:1935")
    };
    Ok((host, app.to_owned(), name.to_owned()))
}

/// An RTMP connection while it sets up: the socket and the reader of the answers.
struct RtmpSetup {
    sock: TcpStream,
    reader: rtmp::ChunkReader,
    buf: Vec<u8>,
}

impl RtmpSetup {
    /// Reads until the `_result` of transaction `txn` (its values), failing on its
    /// `_error`.
    async fn result(&mut self, txn: f64, what: &str) -> Result<Vec<Amf>, String> {
        loop {
            let msg = self.message(what).await?;
            if msg.msg_type != rtmp::kind::COMMAND_AMF0 {
                continue;
            }
            let values =
                Amf::decode_all(&msg.payload).map_err(|e| format!("RTMP answer to {what}: {e}"))?;
            let name = values.first().and_then(Amf::as_str).unwrap_or("");
            let id = values.get(1).and_then(Amf::as_f64);
            match name {
                "_result" if id == Some(txn) => return Ok(values),
                "_error" if id == Some(txn) => {
                    return Err(format!("RTMP {what} refused: {}", describe(&values)));
                }
                _ => {}
            }
        }
    }

    /// Reads until an `onStatus` with `code`, failing on an error-level status.
    async fn status(&mut self, code: &str) -> Result<(), String> {
        loop {
            let msg = self.message("publish").await?;
            if msg.msg_type != rtmp::kind::COMMAND_AMF0 {
                continue;
            }
            let values = Amf::decode_all(&msg.payload)
                .map_err(|e| format!("RTMP answer to publish: {e}"))?;
            if values.first().and_then(Amf::as_str) != Some("onStatus") {
                continue;
            }
            let info = values.get(3);
            let got = info.and_then(|i| i.get("code")).and_then(Amf::as_str);
            if got == Some(code) {
                return Ok(());
            }
            let level = info.and_then(|i| i.get("level")).and_then(Amf::as_str);
            if level == Some("error") {
                return Err(format!("RTMP publish refused: {}", describe(&values)));
            }
        }
    }

    async fn message(&mut self, what: &str) -> Result<rtmp::Message, String> {
        loop {
            if let Some(m) = self.reader.next_message()? {
                return Ok(m);
            }
            let n = tokio::time::timeout(RTMP_SETUP_TIMEOUT, self.sock.read(&mut self.buf))
                .await
                .map_err(|_| format!("RTMP: no answer to {what} in {RTMP_SETUP_TIMEOUT:?}"))?
                .map_err(|e| format!("RTMP read: {e}"))?;
            if n == 0 {
                return Err(format!("RTMP: server closed the connection after {what}"));
            }
            self.reader.push(&self.buf[..n]);
        }
    }
}

/// The `code` and `description` of an `_error` / `onStatus`.
fn describe(values: &[Amf]) -> String {
    let info = values.get(3);
    let field = |k| {
        info.and_then(|i| i.get(k))
            .and_then(Amf::as_str)
            .unwrap_or("?")
    };
    format!("{} ({})", field("code"), field("description"))
}

/// Publishes over RTMP with the harness's own client (see `rtmp.rs`): plain
/// handshake, Set Chunk Size 60,000, `connect`, `createStream`, `publish`, then each
/// tag when due, its send instant recorded in `table` right before the write.
async fn rtmp_native(
    url: &str,
    media: &Media,
    pace: Pace,
    table: Option<&SendTable>,
    stats: &PublishStats,
    stop: CancellationToken,
) -> Result<(), String> {
    let (host, app, name) = parse_rtmp_url(url)?;
    let sock = tokio::time::timeout(RTMP_SETUP_TIMEOUT, TcpStream::connect(&host))
        .await
        .map_err(|_| format!("RTMP connect {host}: timeout"))?
        .map_err(|e| format!("RTMP connect {host}: {e}"))?;
    let _ = sock.set_nodelay(true);
    let mut c = RtmpSetup {
        sock,
        reader: rtmp::ChunkReader::default(),
        buf: vec![0u8; 16 << 10],
    };
    let io = |e: std::io::Error| format!("RTMP publisher: {e}");
    c.sock.write_all(&rtmp::c0c1()).await.map_err(io)?;
    let mut s0s1s2 = vec![0u8; 1 + 2 * rtmp::HANDSHAKE_SIZE];
    tokio::time::timeout(RTMP_SETUP_TIMEOUT, c.sock.read_exact(&mut s0s1s2))
        .await
        .map_err(|_| "RTMP: no handshake answer in time".to_owned())?
        .map_err(|e| format!("RTMP handshake: {e}"))?;
    if s0s1s2[0] != 3 {
        return Err(format!("RTMP handshake: version {} (not 3)", s0s1s2[0]));
    }
    // C2 echoes S1.
    c.sock
        .write_all(&s0s1s2[1..1 + rtmp::HANDSHAKE_SIZE])
        .await
        .map_err(io)?;

    let chunk = rtmp::CHUNK_SIZE as usize;
    let mut out = Vec::new();
    rtmp::write_message(
        &mut out,
        rtmp::csid::CONTROL,
        rtmp::kind::SET_CHUNK_SIZE,
        0,
        0,
        &rtmp::set_chunk_size(rtmp::CHUNK_SIZE),
        128,
    )?;
    let tc_url = format!("rtmp://{host}/{app}");
    let cmd = rtmp::csid::COMMAND;
    let amf0 = rtmp::kind::COMMAND_AMF0;
    rtmp::write_message(
        &mut out,
        cmd,
        amf0,
        0,
        0,
        &rtmp::connect(&app, &tc_url),
        chunk,
    )?;
    c.sock.write_all(&out).await.map_err(io)?;
    c.result(1.0, "connect").await?;
    out.clear();
    let create = rtmp::command("createStream", 2.0, &[Amf::Null]);
    rtmp::write_message(&mut out, cmd, amf0, 0, 0, &create, chunk)?;
    c.sock.write_all(&out).await.map_err(io)?;
    let created = c.result(2.0, "createStream").await?;
    let stream_id = created.get(3).and_then(Amf::as_f64).unwrap_or(1.0) as u32;
    out.clear();
    let publish = rtmp::command(
        "publish",
        3.0,
        &[Amf::Null, Amf::Str(name.clone()), Amf::Str("live".into())],
    );
    rtmp::write_message(&mut out, cmd, amf0, stream_id, 0, &publish, chunk)?;
    c.sock.write_all(&out).await.map_err(io)?;
    c.status("NetStream.Publish.Start").await?;

    let RtmpSetup {
        sock,
        mut reader,
        mut buf,
    } = c;
    let (mut rd, mut wr) = sock.into_split();
    let start = tokio::time::Instant::now();
    // What the server sends while we publish: pings to answer, a refusal to report.
    let mut on_input = |n: usize, buf: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        if n == 0 {
            return Err("RTMP publisher: server closed the connection".into());
        }
        reader.push(&buf[..n]);
        while let Some(m) = reader.next_message()? {
            match m.msg_type {
                rtmp::kind::USER_CONTROL if m.payload.get(..2) == Some(&[0, 6]) => {
                    let mut pong = vec![0, 7];
                    pong.extend_from_slice(m.payload.get(2..6).unwrap_or(&[0; 4]));
                    rtmp::write_message(
                        out,
                        rtmp::csid::CONTROL,
                        rtmp::kind::USER_CONTROL,
                        0,
                        0,
                        &pong,
                        chunk,
                    )?;
                }
                rtmp::kind::COMMAND_AMF0 => {
                    let values = Amf::decode_all(&m.payload).unwrap_or_default();
                    let info = values.get(3);
                    if info.and_then(|i| i.get("level")).and_then(Amf::as_str) == Some("error") {
                        return Err(format!("RTMP publisher stopped: {}", describe(&values)));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    };
    'tags: for t in tags(media) {
        out.clear();
        if pace == Pace::Realtime {
            let due = start + Duration::from_millis(u64::from(t.timestamp));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    _ = stop.cancelled() => break 'tags,
                    r = rd.read(&mut buf) => {
                        on_input(r.map_err(io)?, &buf, &mut out)?;
                    }
                }
            }
        } else if stop.is_cancelled() {
            break;
        }
        let body = &t.wire[11..t.wire.len() - 4];
        match t.tag_type {
            8 => rtmp::write_message(
                &mut out,
                rtmp::csid::AUDIO,
                rtmp::kind::AUDIO,
                stream_id,
                t.timestamp,
                body,
                chunk,
            )?,
            9 => rtmp::write_message(
                &mut out,
                rtmp::csid::VIDEO,
                rtmp::kind::VIDEO,
                stream_id,
                t.timestamp,
                body,
                chunk,
            )?,
            _ => rtmp::write_message(
                &mut out,
                rtmp::csid::DATA,
                rtmp::kind::DATA_AMF0,
                stream_id,
                t.timestamp,
                &rtmp::data_frame(body),
                chunk,
            )?,
        }
        let len = t.wire.len() as u64;
        if let Some(table) = table {
            table.insert(t.tag_type, t.timestamp, len as u32, Instant::now());
        }
        tokio::select! {
            r = wr.write_all(&out) => r.map_err(io)?,
            _ = stop.cancelled() => break,
        }
        stats.tags.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(len, Ordering::Relaxed);
    }
    out.clear();
    let delete = rtmp::command(
        "deleteStream",
        0.0,
        &[Amf::Null, Amf::Number(f64::from(stream_id))],
    );
    if rtmp::write_message(&mut out, cmd, amf0, 0, 0, &delete, chunk).is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(200), wr.write_all(&out)).await;
    }
    Ok(())
}

/// Drives wsrelay's own pure RTMP session (`wsrelay::rtmp::session::Session`) with
/// what [`rtmp_native`] sends: handshake, commands, a metadata, a two-chunk video
/// and an audio message; checks the answers parse and the tags come out unchanged
/// (`load self-test`).
pub fn self_test_against_wsrelay() -> Result<(), String> {
    use wsrelay::rtmp::session::{Session, SessionConfig, SessionEvent};
    let err = |e: &dyn std::fmt::Display| format!("RTMP client vs wsrelay's session: {e}");
    let mut session = Session::new(SessionConfig::default());
    session.handle_input(&rtmp::c0c1()).map_err(|e| err(&e))?;
    let s0s1s2 = session.take_output();
    if s0s1s2.len() != 1 + 2 * rtmp::HANDSHAKE_SIZE || s0s1s2[0] != 3 {
        return Err(err(&format!("S0+S1+S2 of {} bytes", s0s1s2.len())));
    }
    let chunk = rtmp::CHUNK_SIZE as usize;
    let (cmd, amf0) = (rtmp::csid::COMMAND, rtmp::kind::COMMAND_AMF0);
    let mut input = s0s1s2[1..1 + rtmp::HANDSHAKE_SIZE].to_vec();
    rtmp::write_message(
        &mut input,
        rtmp::csid::CONTROL,
        rtmp::kind::SET_CHUNK_SIZE,
        0,
        0,
        &rtmp::set_chunk_size(rtmp::CHUNK_SIZE),
        128,
    )?;
    let connect = rtmp::connect("live", "rtmp://127.0.0.1/live");
    rtmp::write_message(&mut input, cmd, amf0, 0, 0, &connect, chunk)?;
    let create = rtmp::command("createStream", 2.0, &[Amf::Null]);
    rtmp::write_message(&mut input, cmd, amf0, 0, 0, &create, chunk)?;
    session.handle_input(&input).map_err(|e| err(&e))?;
    let mut reader = rtmp::ChunkReader::default();
    reader.push(&session.take_output());
    let mut results = Vec::new();
    while let Some(m) = reader.next_message()? {
        if m.msg_type == amf0 {
            results.push(Amf::decode_all(&m.payload)?);
        }
    }
    let id = |v: &Vec<Amf>| v.get(1).and_then(Amf::as_f64);
    let stream_id = match &results[..] {
        [c, s] if id(c) == Some(1.0) && id(s) == Some(2.0) => {
            s.get(3).and_then(Amf::as_f64).unwrap_or(0.0) as u32
        }
        other => return Err(err(&format!("answers to connect/createStream: {other:?}"))),
    };
    input.clear();
    let publish = rtmp::command(
        "publish",
        3.0,
        &[Amf::Null, Amf::Str("bench".into()), Amf::Str("live".into())],
    );
    rtmp::write_message(&mut input, cmd, amf0, stream_id, 0, &publish, chunk)?;
    session.handle_input(&input).map_err(|e| err(&e))?;
    let mut requested = false;
    while let Some(ev) = session.poll_event() {
        if let SessionEvent::PublishRequested { app, key } = ev {
            requested = app == "live" && key == "bench";
        }
    }
    if !requested {
        return Err(err(&"no publish request for live/bench"));
    }
    session.accept_publish("ok").map_err(|e| err(&e))?;
    reader.push(&session.take_output());
    let mut started = false;
    while let Some(m) = reader.next_message()? {
        if m.msg_type == amf0 {
            let v = Amf::decode_all(&m.payload)?;
            started |= v.get(3).and_then(|i| i.get("code")).and_then(Amf::as_str)
                == Some("NetStream.Publish.Start");
        }
    }
    if !started {
        return Err(err(&"no NetStream.Publish.Start"));
    }
    let mut meta = Vec::new();
    Amf::Str("onMetaData".into()).encode(&mut meta);
    Amf::Object(vec![("width".into(), Amf::Number(1280.0))]).encode(&mut meta);
    let video: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    input.clear();
    let data = rtmp::data_frame(&meta);
    let (d, v, au) = (rtmp::kind::DATA_AMF0, rtmp::kind::VIDEO, rtmp::kind::AUDIO);
    rtmp::write_message(&mut input, rtmp::csid::DATA, d, stream_id, 0, &data, chunk)?;
    rtmp::write_message(
        &mut input,
        rtmp::csid::VIDEO,
        v,
        stream_id,
        40,
        &video,
        chunk,
    )?;
    rtmp::write_message(
        &mut input,
        rtmp::csid::AUDIO,
        au,
        stream_id,
        41,
        &[0xaf, 1, 2],
        chunk,
    )?;
    session.handle_input(&input).map_err(|e| err(&e))?;
    let mut tags = Vec::new();
    while let Some(ev) = session.poll_event() {
        if let SessionEvent::Media(tag) = ev {
            tags.push(tag);
        }
    }
    let ok = tags.len() == 3
        && tags[0].is_metadata()
        && (u8::from(tags[1].tag_type), tags[1].timestamp) == (9, 40)
        && tags[1].body[..] == video[..]
        && (
            u8::from(tags[2].tag_type),
            tags[2].timestamp,
            &tags[2].body[..],
        ) == (8, 41, &[0xaf, 1, 2][..]);
    if !ok {
        let shape: Vec<_> = tags
            .iter()
            .map(|t| (t.tag_type, t.timestamp, t.body.len()))
            .collect();
        return Err(err(&format!("media events: {shape:?}")));
    }
    Ok(())
}
