//! The ceiling: a minimal TCP fan-out server, run as a separate process
//! (`load ceiling-server`) so its CPU and memory are sampled like wsrelay's.
//!
//! It does what a relay cannot avoid and nothing else: accept an HTTP POST publisher
//! (chunked FLV), encode each tag once (`wsrelay::live::WireTag`), keep the join preamble
//! (`flv::GopCache`), fan tags out through one shared `tokio::sync::broadcast` ring,
//! and have each player task gather what is queued and write it with one `writev`:
//! one WebSocket binary frame per tag (WS-FLV) or one HTTP chunk per tag (HTTP-FLV),
//! the same bytes and the same write pattern as wsrelay. No router, no hyper, no
//! tungstenite, no limits, no logging, no slow-player handling beyond skipping.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flv::{Demuxer, DemuxerConfig, GopCache, GopCacheConfig};
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use wsrelay::live::WireTag;

use crate::wire::{Chunked, head_end, header, ws_binary_header};

/// Ring length, as wsrelay's default `live.player_backlog_tags`.
const RING: usize = 1024;
/// Bytes gathered into one write, as wsrelay's `live.player_write_batch_bytes`.
const BATCH_BYTES: usize = 64 << 10;
/// iovecs per `writev` call (Linux IOV_MAX is 1024).
const MAX_IOV: usize = 512;

struct Shared {
    cache: Mutex<GopCache<WireTag>>,
    tx: broadcast::Sender<Bytes>,
}

/// Serves until killed; prints `listening http://ADDR` like wsrelay.
pub async fn serve(listen: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening http://{addr}");
    let (tx, _) = broadcast::channel(RING);
    let shared = Arc::new(Shared {
        cache: Mutex::new(GopCache::new(GopCacheConfig::default())),
        tx,
    });
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
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
        return publisher(sock, &head, rest, &shared).await;
    }
    let ws_key = header(&head, "sec-websocket-key").map(str::to_owned);
    // Subscribe and snapshot under the lock, as wsrelay does, so no tag is missed.
    let (flv_header, preamble, mut rx) = {
        let cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        let preamble: Vec<Bytes> = cache.join().map(|f| f.to_bytes()).collect();
        (cache.header().encode(), preamble, shared.tx.subscribe())
    };
    let ws = ws_key.is_some();
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
        batch.clear();
        let mut next = rx.recv().await;
        let mut bytes = 0;
        loop {
            match next {
                Ok(wire) => {
                    bytes += wire.len();
                    batch.push(wire);
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Ok(()),
            }
            if bytes >= BATCH_BYTES {
                break;
            }
            next = match rx.try_recv() {
                Ok(wire) => Ok(wire),
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

async fn publisher(
    mut sock: TcpStream,
    head: &str,
    rest: Vec<u8>,
    shared: &Shared,
) -> std::io::Result<()> {
    let chunked =
        header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut demux = Demuxer::new(DemuxerConfig::default());
    let mut chunks = Chunked::default();
    let mut push = |data: &[u8]| -> Result<(), String> {
        demux.push(data);
        while let Some(tag) = demux.next_tag().map_err(|e| e.to_string())? {
            let frame = WireTag::encode(&tag, tag.timestamp);
            let mut cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.push(frame.clone());
            // The ceiling keeps one contiguous buffer per tag (copied once here).
            let _ = shared.tx.send(frame.to_bytes());
        }
        Ok(())
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut data: &[u8] = &rest;
    loop {
        let r = if chunked {
            chunks.feed(data, &mut push)
        } else {
            push(data)
        };
        if r.is_err() || chunks.is_done() {
            break;
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        data = &buf[..n];
    }
    sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
}
