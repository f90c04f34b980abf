//! The publisher: replays the media by HTTP POST (chunked), WebSocket or RTMP
//! (ffmpeg), in real time or as fast as possible, recording when it wrote each tag.

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

/// How the publisher reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// HTTP POST with a chunked FLV body.
    Http,
    /// WebSocket `?publish`, one binary message per tag.
    Ws,
    /// `ffmpeg -re -i FILE -c copy -f flv rtmp://…` (no per-tag send times).
    Rtmp,
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
    /// Where to record send times (HTTP and WebSocket modes).
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
        PublishMode::Rtmp => {
            let rtmp =
                rtmp.ok_or("--publish rtmp: the server has no RTMP listener (--rtmp-url)")?;
            rtmp_ffmpeg(&rtmp, &media, stop).await
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
