//! The ceiling: a minimal TCP fan-out server, run as a separate process
//! (`load ceiling-server`) so its CPU and memory are sampled like wsrelay's.
//!
//! It does what a relay cannot avoid and nothing else: accept a publisher (HTTP POST
//! with a chunked FLV body, or RTMP through wsrelay's own pure
//! `wsrelay::rtmp::session::Session`), encode each tag once (`wsrelay::live::WireTag`),
//! keep the join preamble (`flv::GopCache`), fan tags out through one shared
//! `tokio::sync::broadcast` ring, and have each player task gather what is queued
//! and write it with one `writev`: one WebSocket binary frame per tag (WS-FLV) or one
//! HTTP chunk per tag (HTTP-FLV), the same bytes and the same write pattern as
//! wsrelay. No router, no hyper, no tungstenite, no limits, no logging, no
//! slow-player handling beyond skipping.
//!
//! **Window** (`--window-ms W`, the counterpart of wsrelay's `live.write_coalesce_ms`):
//! with W = 0 every tag goes into the ring as it is demuxed, waking the players once
//! per tag. With W > 0 the publisher side holds its tags and, on one tokio interval
//! of W ms per stream, puts everything it holds into the ring as one entry: the
//! players wake once per window and write all of it with one `writev`. A joining
//! player's preamble is written at once either way.
//!
//! `GET /metrics` answers `wsrelay_player_writes_total` and
//! `wsrelay_player_wakeups_total` (same names and meaning as wsrelay's), so the
//! harness measures writes and wakeups per tag the same way for both.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flv::{Demuxer, DemuxerConfig, GopCache, GopCacheConfig, Tag};
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use wsrelay::live::WireTag;
use wsrelay::rtmp::session::{Session, SessionConfig, SessionEvent};

use crate::wire::{Chunked, head_end, header, ws_binary_header};

/// Ring length in entries (a tag, or a window's tags), as wsrelay's default
/// `live.player_backlog_tags`.
const RING: usize = 1024;
/// Bytes gathered into one write, as wsrelay's `live.player_write_batch_bytes`
/// (a window's entry is always taken whole).
const BATCH_BYTES: usize = 64 << 10;
/// iovecs per `writev` call (Linux IOV_MAX is 1024).
const MAX_IOV: usize = 512;

/// One ring entry: the encoded tags of one window (one tag with W = 0).
type Entry = Arc<[Bytes]>;

struct Shared {
    cache: Mutex<GopCache<WireTag>>,
    tx: broadcast::Sender<Entry>,
    /// The window, ms (0: each tag at once).
    window_ms: u64,
    /// Writes handed to player sockets (one `writev` batch), WS-FLV and HTTP-FLV.
    writes: [AtomicU64; 2],
    /// Times a player task woke from waiting on the ring, WS-FLV and HTTP-FLV.
    wakeups: [AtomicU64; 2],
}

/// Serves until killed; prints `listening http://ADDR` (and `listening rtmp://ADDR`
/// with `rtmp`) like wsrelay.
pub async fn serve(
    listen: SocketAddr,
    rtmp: Option<SocketAddr>,
    window_ms: u64,
) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, _) = broadcast::channel(RING);
    let shared = Arc::new(Shared {
        cache: Mutex::new(GopCache::new(GopCacheConfig::default())),
        tx,
        window_ms,
        writes: Default::default(),
        wakeups: Default::default(),
    });
    if let Some(rtmp) = rtmp {
        let rtmp_listener = TcpListener::bind(rtmp)
            .await
            .map_err(|e| format!("bind {rtmp}: {e}"))?;
        let rtmp_addr = rtmp_listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening rtmp://{rtmp_addr}");
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = rtmp_listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = rtmp_publisher(sock, &shared).await;
                });
            }
        });
    }
    println!("listening http://{addr}");
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = connection(sock, shared).await;
        });
    }
}

/// The publisher side: tags go into the GOP cache and the ring together (under the
/// cache lock, so a joining player's snapshot and its ring position agree), each at
/// once (W = 0) or all of a window's at its tick.
struct Fanout<'a> {
    shared: &'a Shared,
    held: Vec<WireTag>,
}

impl Fanout<'_> {
    fn push(&mut self, tag: &Tag) {
        self.held.push(WireTag::encode(tag, tag.timestamp));
        if self.shared.window_ms == 0 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut cache = self.shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        // The ceiling keeps one contiguous buffer per tag (copied once here).
        let entry: Entry = self.held.iter().map(WireTag::to_bytes).collect();
        for frame in self.held.drain(..) {
            cache.push(frame);
        }
        let _ = self.shared.tx.send(entry);
    }

    /// The stream's one timer: an interval of the window (never fires with W = 0).
    fn ticker(&self) -> Option<tokio::time::Interval> {
        (self.shared.window_ms > 0).then(|| {
            let w = Duration::from_millis(self.shared.window_ms);
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + w, w);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        })
    }
}

/// Waits for the next tick of an optional interval (forever without one).
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn connection(mut sock: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 << 10];
    let mut filled = 0;
    let end = loop {
        let n = sock.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        if let Some(end) = head_end(&buf[..filled]) {
            break end;
        }
        if filled == buf.len() {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    if head.starts_with("POST ") || head.starts_with("PUT ") {
        let rest = buf[end..filled].to_vec();
        return http_publisher(sock, &head, rest, &shared).await;
    }
    if head.starts_with("GET /metrics ") {
        return metrics(sock, &shared).await;
    }
    let ws_key = header(&head, "sec-websocket-key").map(str::to_owned);
    // Subscribe and snapshot under the lock, as wsrelay does, so no tag is missed.
    let (flv_header, preamble, mut rx) = {
        let cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        let preamble: Vec<Bytes> = cache.join().map(|f| f.to_bytes()).collect();
        (cache.header().encode(), preamble, shared.tx.subscribe())
    };
    let ws = ws_key.is_some();
    let proto = usize::from(!ws);
    let response = match &ws_key {
        Some(key) => format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        ),
        None => "HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\
                 Cache-Control: no-cache\r\n\r\n"
            .to_owned(),
    };
    sock.write_all(response.as_bytes()).await?;
    let mut batch: Vec<Bytes> = Vec::with_capacity(preamble.len() + 1);
    batch.push(Bytes::copy_from_slice(&flv_header));
    batch.extend(preamble);
    loop {
        write_batch(&mut sock, &batch, ws).await?;
        shared.writes[proto].fetch_add(1, Ordering::Relaxed);
        batch.clear();
        let mut next = rx.recv().await;
        shared.wakeups[proto].fetch_add(1, Ordering::Relaxed);
        let mut bytes = 0;
        loop {
            match next {
                Ok(entry) => {
                    for wire in entry.iter() {
                        bytes += wire.len();
                        batch.push(wire.clone());
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Ok(()),
            }
            if bytes >= BATCH_BYTES {
                break;
            }
            next = match rx.try_recv() {
                Ok(entry) => Ok(entry),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Empty) => break,
            };
        }
    }
}

/// Writes every chunk framed as a WebSocket binary message or an HTTP chunk, with
/// vectored writes (no copy of the payloads).
async fn write_batch(sock: &mut TcpStream, chunks: &[Bytes], ws: bool) -> std::io::Result<()> {
    // Per chunk: a frame/chunk header (and for HTTP the trailing CRLF).
    let mut heads: Vec<([u8; 10], usize)> = Vec::with_capacity(chunks.len());
    for c in chunks {
        if ws {
            heads.push(ws_binary_header(c.len()));
        } else {
            let s = format!("{:x}\r\n", c.len());
            let mut h = [0u8; 10];
            h[..s.len()].copy_from_slice(s.as_bytes());
            heads.push((h, s.len()));
        }
    }
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunks.len() * 3);
    for (c, (h, n)) in chunks.iter().zip(&heads) {
        slices.push(IoSlice::new(&h[..*n]));
        slices.push(IoSlice::new(c));
        if !ws {
            slices.push(IoSlice::new(b"\r\n"));
        }
    }
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let upto = rest.len().min(MAX_IOV);
        let n = sock.write_vectored(&rest[..upto]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// `GET /metrics`: the two player counters in Prometheus text, then close.
async fn metrics(mut sock: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut body = String::new();
    for (name, counters) in [
        ("wsrelay_player_writes_total", &shared.writes),
        ("wsrelay_player_wakeups_total", &shared.wakeups),
    ] {
        for (i, proto) in ["ws", "http"].iter().enumerate() {
            let v = counters[i].load(Ordering::Relaxed);
            body.push_str(&format!("{name}{{protocol=\"{proto}\"}} {v}\n"));
        }
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}

async fn http_publisher(
    mut sock: TcpStream,
    head: &str,
    rest: Vec<u8>,
    shared: &Shared,
) -> std::io::Result<()> {
    let chunked =
        header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut demux = Demuxer::new(DemuxerConfig::default());
    let mut chunks = Chunked::default();
    let mut fanout = Fanout {
        shared,
        held: Vec::new(),
    };
    let mut ticker = fanout.ticker();
    let mut buf = vec![0u8; 64 << 10];
    let mut data: Vec<u8> = rest;
    loop {
        let mut push = |data: &[u8]| -> Result<(), String> {
            demux.push(data);
            while let Some(tag) = demux.next_tag().map_err(|e| e.to_string())? {
                fanout.push(&tag);
            }
            Ok(())
        };
        let r = if chunked {
            chunks.feed(&data, &mut push)
        } else {
            push(&data)
        };
        if r.is_err() || chunks.is_done() {
            break;
        }
        let n = loop {
            tokio::select! {
                n = sock.read(&mut buf) => break n?,
                () = tick(&mut ticker) => fanout.flush(),
            }
        };
        if n == 0 {
            break;
        }
        data.clear();
        data.extend_from_slice(&buf[..n]);
    }
    fanout.flush();
    sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
}

/// An RTMP publisher, driven through wsrelay's pure session (handshake, commands,
/// chunk reassembly): every publish is accepted, every tag fanned out.
async fn rtmp_publisher(mut sock: TcpStream, shared: &Shared) -> Result<(), String> {
    let mut session = Session::new(SessionConfig::default());
    let mut fanout = Fanout {
        shared,
        held: Vec::new(),
    };
    let mut ticker = fanout.ticker();
    let mut buf = vec![0u8; 64 << 10];
    let result = loop {
        let n = tokio::select! {
            n = sock.read(&mut buf) => match n {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(e.to_string()),
            },
            () = tick(&mut ticker) => {
                fanout.flush();
                continue;
            }
        };
        if let Err(e) = session.handle_input(&buf[..n]) {
            break Err(e.to_string());
        }
        let mut failed = None;
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Media(tag) => fanout.push(&tag),
                SessionEvent::PublishRequested { .. } => {
                    if let Err(e) = session.accept_publish("ceiling") {
                        failed = Some(e.to_string());
                    }
                }
                SessionEvent::Connected { .. } | SessionEvent::Unpublished => {}
            }
        }
        let out = session.take_output();
        if !out.is_empty()
            && let Err(e) = sock.write_all(&out).await
        {
            break Err(e.to_string());
        }
        if let Some(e) = failed {
            break Err(e);
        }
    };
    fanout.flush();
    result
}
