//! A light WS-FLV / HTTP-FLV player: raw TCP, its own decoders, tag headers only.
//!
//! Latency: the harness's publisher records when it wrote each tag in a shared
//! [`SendTable`] keyed by (tag type, timestamp); the player looks each completed tag
//! up there, so nothing is embedded in the stream and any server can be measured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::wire::{
    Chunked, Control, FlvScanner, TagInfo, WsDecoder, client_frame, head_end, header,
};

/// Read buffer per player. Tags of a 2.5 Mbit/s stream are a few KiB.
const READ_BUFFER: usize = 16 << 10;

/// Largest HTTP response head accepted.
const MAX_HEAD: usize = 16 << 10;

/// When the publisher wrote each tag, keyed by (type, timestamp).
#[derive(Debug, Default)]
pub struct SendTable {
    map: RwLock<HashMap<u64, (Instant, u32)>>,
}

fn key(tag_type: u8, timestamp: u32) -> u64 {
    (u64::from(tag_type) << 32) | u64::from(timestamp)
}

impl SendTable {
    /// Records that a tag of `wire_len` bytes is being written now.
    pub fn insert(&self, tag_type: u8, timestamp: u32, wire_len: u32, at: Instant) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.insert(key(tag_type, timestamp), (at, wire_len));
    }

    /// When the tag was sent and its size.
    pub fn get(&self, tag_type: u8, timestamp: u32) -> Option<(Instant, u32)> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(&key(tag_type, timestamp)).copied()
    }

    /// Bytes and tags sent within `[from, to)`.
    pub fn sent_in(&self, from: Instant, to: Instant) -> (u64, u64) {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .filter(|(at, _)| *at >= from && *at < to)
            .fold((0, 0), |(b, n), (_, len)| (b + u64::from(*len), n + 1))
    }
}

/// What every player of a run shares.
#[derive(Debug)]
pub struct PlayerConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path, e.g. `/live/bench.flv`.
    pub path: String,
    /// WebSocket-FLV (else HTTP-FLV).
    pub ws: bool,
    /// Send times, when the harness publishes.
    pub table: Option<Arc<SendTable>>,
    /// Measurement window.
    pub window: (Instant, Instant),
    /// Limit for connecting and for the first FLV byte.
    pub first_byte_timeout: Duration,
}

/// What one player saw.
#[derive(Debug, Default)]
pub struct PlayerResult {
    /// Why it failed, if it did (grouped in reports).
    pub failure: Option<String>,
    /// Start → first FLV byte.
    pub ttfb: Option<Duration>,
    /// Start → first complete video keyframe.
    pub ttfk: Option<Duration>,
    /// Tag bytes received in total.
    pub bytes: u64,
    /// Bytes of tags the publisher sent inside the window (needs the send table).
    pub window_sent_bytes: u64,
    /// Bytes of tags received inside the window (by arrival time).
    pub window_recv_bytes: u64,
    /// Publisher→player latency of tags sent inside the window, µs.
    pub latency_us: Vec<u32>,
}

impl PlayerResult {
    fn on_tag(&mut self, cfg: &PlayerConfig, tag: &TagInfo, now: Instant, t0: Instant) {
        self.bytes += u64::from(tag.wire_len);
        if tag.keyframe && self.ttfk.is_none() {
            self.ttfk = Some(now - t0);
        }
        let (from, to) = cfg.window;
        if now >= from && now < to {
            self.window_recv_bytes += u64::from(tag.wire_len);
        }
        if let Some(table) = &cfg.table
            && let Some((sent, _)) = table.get(tag.tag_type, tag.timestamp)
            && sent >= from
            && sent < to
        {
            self.window_sent_bytes += u64::from(tag.wire_len);
            let us = now.saturating_duration_since(sent).as_micros();
            self.latency_us.push(us.min(u128::from(u32::MAX)) as u32);
        }
    }
}

/// Plays until `stop`; never panics on what the server sends.
pub async fn run(cfg: Arc<PlayerConfig>, stop: CancellationToken) -> PlayerResult {
    let mut result = PlayerResult::default();
    let t0 = Instant::now();
    let outcome = tokio::select! {
        r = play(&cfg, &mut result, t0) => r,
        _ = stop.cancelled() => Ok(()),
    };
    if let Err(e) = outcome
        && !stop.is_cancelled()
    {
        result.failure = Some(e);
    }
    result
}

async fn play(cfg: &PlayerConfig, result: &mut PlayerResult, t0: Instant) -> Result<(), String> {
    let mut sock = tokio::time::timeout(cfg.first_byte_timeout, TcpStream::connect(cfg.addr))
        .await
        .map_err(|_| "connect timeout".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = sock.set_nodelay(true);
    let host = cfg.addr;
    let request = if cfg.ws {
        format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            cfg.path
        )
    } else {
        format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n",
            cfg.path
        )
    };
    sock.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write request: {e}"))?;

    let mut buf = vec![0u8; READ_BUFFER];
    let mut filled = 0;
    let deadline = tokio::time::Instant::from_std(t0 + cfg.first_byte_timeout);
    let body_start = loop {
        if filled == buf.len() {
            if buf.len() >= MAX_HEAD {
                return Err("protocol: response head too large".into());
            }
            buf.resize(MAX_HEAD, 0);
        }
        let n = tokio::time::timeout_at(deadline, sock.read(&mut buf[filled..]))
            .await
            .map_err(|_| "no response in time".to_owned())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("eof before response".into());
        }
        filled += n;
        if let Some(end) = head_end(&buf[..filled]) {
            break end;
        }
    };
    let head = String::from_utf8_lossy(&buf[..body_start]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    let want = if cfg.ws { "101" } else { "200" };
    if status != want {
        return Err(format!("status {status}"));
    }
    let chunked = !cfg.ws
        && header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));

    let mut ws = WsDecoder::default();
    let mut chunks = Chunked::default();
    let mut flv = FlvScanner::default();
    let mut pending: Vec<Control> = Vec::new();
    let mut start = body_start;
    let mut first_byte = false;
    loop {
        let now = Instant::now();
        let data = &buf[start..filled];
        if !data.is_empty() {
            if !first_byte {
                first_byte = true;
                result.ttfb = Some(now - t0);
            }
            let mut on_tag = |tag: &TagInfo| result.on_tag(cfg, tag, now, t0);
            let mut to_flv = |d: &[u8]| flv.feed(d, &mut on_tag);
            if cfg.ws {
                ws.feed(data, &mut to_flv)?;
                pending.append(&mut ws.controls);
            } else if chunked {
                chunks.feed(data, &mut to_flv)?;
                if chunks.is_done() {
                    return Err("stream ended (end of chunked body)".into());
                }
            } else {
                to_flv(data)?;
            }
        }
        for control in pending.drain(..) {
            match control {
                Control::Close(code, reason) => {
                    return Err(format!("closed by server: {code} {reason}"));
                }
                Control::Ping(payload) => sock
                    .write_all(&client_frame(0xA, &payload))
                    .await
                    .map_err(|e| format!("write pong: {e}"))?,
            }
        }
        start = 0;
        filled = if first_byte {
            sock.read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?
        } else {
            tokio::time::timeout_at(deadline, sock.read(&mut buf))
                .await
                .map_err(|_| "no data in time".to_owned())?
                .map_err(|e| format!("read: {e}"))?
        };
        if filled == 0 {
            return Err("eof (server closed the connection)".into());
        }
    }
}
