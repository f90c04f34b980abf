//! Players: WebSocket-FLV and HTTP-FLV.
//!
//! A player task writes the FLV header and the stream's preamble (metadata, sequence
//! headers, cached GOP) at once, then follows the stream's broadcast ring, gathering
//! whatever is visible into one write. With a coalescing window
//! (`live.write_coalesce_ms`) the ring shows new tags once per window
//! ([`crate::live::ring`]). Once the player is at the live edge, it hands its writes
//! to one of the stream's writer shards ([`crate::live::writer`]), which write every
//! player at the edge once per window without waking their tasks; the task only
//! waits for the client and takes the writes back when the shard gives them back
//! (the player's socket was full, or the stream ended). It owns no payload: every
//! chunk it writes is a `Bytes` shared with all other players.
//!
//! Slow players: a player that falls behind the ring's length is told how many tags
//! it missed; it then skips to the next keyframe ([`SkipGate`]). A player that has not
//! caught up with the live edge for `live.player_max_behind_ms`, or whose single
//! write stalls for `live.player_write_timeout_ms`, is disconnected with a logged
//! reason. The publisher and the other players never wait for it.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flv::{Tag, TagType};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_tungstenite::WebSocketStream;
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::LiveConfig;
use crate::live::ring::TryRecvError;
use crate::live::socket::{
    Handoff, SharedTcp, read_shared, shutdown_write, write_all_shared, write_shared,
};
use crate::live::writer::{
    Back, Edge, MAX_IOVECS, Target, WriteCounters, chunk_header, chunk_iovecs, recycle,
};
use crate::live::{EndReason, Entry, Subscription};

pub use crate::live::writer::binary_frame_header;

/// The WebSocket type after an upgrade.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// A WebSocket-FLV player's connection.
pub type PlayerWs = WebSocketStream<PlayerIo>;

/// A player's upgraded connection: plain TCP, shared with the stream's writer shards
/// ([`crate::live::writer`]) once the player is at the live edge, or anything else
/// hyper upgraded (TLS), which its own task always writes.
#[derive(Debug)]
pub enum PlayerIo {
    /// A plain TCP connection, and what hyper had read past the request.
    Tcp {
        /// The socket; the writer shards hold clones while they write it.
        socket: Arc<TcpStream>,
        /// Bytes the client sent after its request, read before the socket.
        read_first: Bytes,
    },
    /// Another upgraded connection.
    Other(TokioIo<Upgraded>),
}

impl PlayerIo {
    /// The plain TCP socket under `upgraded`, when it is one.
    pub fn new(upgraded: Upgraded) -> PlayerIo {
        match upgraded.downcast::<TokioIo<SharedTcp>>() {
            Ok(parts) => PlayerIo::Tcp {
                socket: parts.io.into_inner().socket().clone(),
                // A copy: the buffer hyper read the request into (8 KiB and up) is
                // freed now instead of staying with the player for its whole life.
                read_first: Bytes::copy_from_slice(&parts.read_buf),
            },
            Err(upgraded) => PlayerIo::Other(TokioIo::new(upgraded)),
        }
    }
}

impl AsyncRead for PlayerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PlayerIo::Tcp { socket, read_first } => {
                if !read_first.is_empty() {
                    let n = read_first.len().min(buf.remaining());
                    buf.put_slice(&read_first.split_to(n));
                    if read_first.is_empty() {
                        *read_first = Bytes::new(); // frees the copy
                    }
                    return Poll::Ready(Ok(()));
                }
                read_shared(socket, cx, buf)
            }
            PlayerIo::Other(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PlayerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PlayerIo::Tcp { socket, .. } => write_shared(socket, cx, bufs),
            PlayerIo::Other(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PlayerIo::Tcp { .. } => Poll::Ready(Ok(())),
            PlayerIo::Other(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PlayerIo::Tcp { socket, .. } => Poll::Ready(shutdown_write(socket)),
            PlayerIo::Other(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// Why a player's connection ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlayerEnd {
    /// The stream ended or the server is shutting down (clean close 1000/1001).
    #[error("{}", .0.as_str())]
    Stream(EndReason),
    /// The client closed the connection.
    #[error("client closed the connection")]
    ClientGone,
    /// The client stayed behind the live edge too long (close 1008).
    #[error("player too slow: behind the live edge for more than {0} ms")]
    TooSlow(u64),
    /// One write did not complete in time (close 1008).
    #[error("player stalled: a write took more than {0} ms")]
    WriteStalled(u64),
    /// Writing failed (connection reset).
    #[error("write failed: {0}")]
    WriteFailed(#[source] std::io::Error),
}

impl PlayerEnd {
    /// The WebSocket close frame for this end, if one can still be sent.
    fn close_frame(&self) -> Option<CloseFrame> {
        let code = match self {
            PlayerEnd::Stream(
                EndReason::PublisherGone | EndReason::Kicked | EndReason::Unpublished,
            ) => CloseCode::Normal,
            PlayerEnd::Stream(EndReason::Shutdown) => CloseCode::Away,
            PlayerEnd::Stream(EndReason::Failed) => CloseCode::Error,
            PlayerEnd::TooSlow(_) | PlayerEnd::WriteStalled(_) => CloseCode::Policy,
            PlayerEnd::ClientGone | PlayerEnd::WriteFailed(_) => return None,
        };
        Some(CloseFrame {
            code,
            reason: self.to_string().into(),
        })
    }
}

/// Decides which tags a player forwards after it fell behind: nothing but metadata
/// and sequence headers until the next video keyframe (or, for audio-only streams,
/// the next audio tag), so the decoder restarts on a clean frame and audio resumes
/// with the video it belongs to.
#[derive(Debug)]
pub struct SkipGate {
    has_video: bool,
    skipping: bool,
}

impl SkipGate {
    /// An open gate for a stream with or without video.
    pub fn new(has_video: bool) -> SkipGate {
        SkipGate {
            has_video,
            skipping: false,
        }
    }

    /// The same gate, closed until the next keyframe (a join with no keyframe
    /// cached); a gate for an audio-only stream stays open.
    pub fn until_keyframe(mut self) -> SkipGate {
        self.skipping = self.has_video;
        self
    }

    /// The player missed tags: wait for the next point where decoding can restart.
    pub fn lagged(&mut self) {
        self.skipping = true;
    }

    /// Whether the player is currently skipping.
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }

    /// Whether to forward `tag`.
    pub fn pass(&mut self, tag: &Tag) -> bool {
        if !self.skipping || tag.is_sequence_header() || tag.is_metadata() {
            return true;
        }
        let restart = if self.has_video {
            tag.is_keyframe()
        } else {
            tag.tag_type == TagType::Audio
        };
        if restart {
            self.skipping = false;
        }
        restart
    }
}

/// Tags' worth of per-player write buffers kept between writes (a live window at
/// 2.5 Mbit/s and 50 ms holds about 4 tags); longer batches' buffers are freed.
const KEPT_BATCH_CAPACITY: usize = 16;

/// Where a player's bytes go.
pub(crate) trait PlayerSink {
    /// Writes the chunks, in order.
    async fn write(&mut self, messages: &[Msg]) -> std::io::Result<()>;
    /// Frees reusable buffers beyond `messages` messages' worth.
    fn shrink(&mut self, _messages: usize) {}
    /// Resolves when the client has gone away. Must be cancel-safe.
    async fn closed(&mut self);
    /// Ends the connection cleanly for `end`.
    async fn finish(self, end: &PlayerEnd);
    /// Where the stream's writer shards may write this player now: a plain TCP
    /// connection with nothing of ours half written or queued, or an HTTP body.
    fn shared(&self) -> Option<Target>;
    /// While a shard writes: resolves with the client's next message (true: it
    /// closed or went away), reading nothing more, so nothing is written meanwhile
    /// (a pong waits until the writes are taken back). Cancel-safe.
    async fn next_from_client(&mut self) -> bool {
        self.closed().await;
        true
    }
    /// Writes what a shard could not ([`Back::Blocked`]): the rest of a WebSocket
    /// write it cut, or an HTTP chunk that did not fit in the body's queue.
    async fn write_rest(&mut self, rest: &[Bytes]) -> std::io::Result<()>;
}

/// A WebSocket-FLV player connection.
///
/// Data frames bypass tungstenite's write buffer: [`WsSink::write`] frames each chunk
/// as one binary message itself and hands the frame headers and the shared payloads to
/// the socket with vectored writes, so no player copies a payload byte and no
/// per-player buffer grows to the size of a keyframe or a GOP (tungstenite copies
/// every message into its write buffer, which keeps its largest capacity for the
/// connection's life). tungstenite still reads (pings, the close) and writes its
/// control frames (pongs, the close); both only ever write whole frames, so the
/// byte stream stays a valid sequence of frames.
pub(crate) struct WsSink {
    ws: PlayerWs,
    /// A vectored write was started and did not finish (an error, or the write
    /// timeout cancelled it): the byte stream may end inside a frame, so no further
    /// frame, not even a close, may be written.
    mid_frame: bool,
    /// A message was read since the last flush: tungstenite may hold a pong (or the
    /// tail of one) to send before the next data frame.
    control_pending: bool,
    /// Frame headers of the batch being written, reused from write to write.
    heads: Vec<([u8; 10], usize)>,
    /// The iovec array's allocation, reused from write to write (always empty here).
    iov: Vec<IoSlice<'static>>,
}

/// Writes all of `bufs`, `MAX_IOVECS` at a time.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !bufs.is_empty() {
        let n = bufs.len().min(MAX_IOVECS);
        let written = io.write_vectored(&bufs[..n]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, written);
    }
    io.flush().await
}

impl WsSink {
    pub(crate) fn new(ws: PlayerWs) -> WsSink {
        WsSink {
            ws,
            mid_frame: false,
            control_pending: false,
            heads: Vec::new(),
            iov: Vec::new(),
        }
    }
}

impl PlayerSink for WsSink {
    fn shrink(&mut self, messages: usize) {
        self.heads.shrink_to(messages);
        self.iov.shrink_to(messages * 2);
    }

    async fn write(&mut self, messages: &[Msg]) -> std::io::Result<()> {
        // One binary message per tag: its frame header, then the tag's parts.
        self.heads.clear();
        self.heads
            .extend(messages.iter().map(|m| binary_frame_header(m.len())));
        let mut slices = recycle(std::mem::take(&mut self.iov));
        slices.reserve(messages.len() * 2);
        for (message, (head, len)) in messages.iter().zip(&self.heads) {
            slices.push(IoSlice::new(&head[..*len]));
            slices.push(IoSlice::new(message));
        }
        // tungstenite may hold a control frame (a pong queued while we read, perhaps
        // half written to a full socket): finish it before our frames go out.
        if self.control_pending {
            self.ws.flush().await.map_err(std::io::Error::other)?;
            self.control_pending = false;
        }
        self.mid_frame = true;
        write_all_vectored(self.ws.get_mut(), &mut slices).await?;
        self.mid_frame = false;
        self.iov = recycle(slices);
        Ok(())
    }

    async fn closed(&mut self) {
        // Players send nothing we need; read to see pings answered and the close.
        while !self.next_from_client().await {}
    }

    fn shared(&self) -> Option<Target> {
        match self.ws.get_ref() {
            PlayerIo::Tcp { socket, .. } if !self.mid_frame && !self.control_pending => {
                Some(Target::Ws(socket.clone()))
            }
            _ => None,
        }
    }

    async fn next_from_client(&mut self) -> bool {
        match self.ws.next().await {
            Some(Ok(msg)) if !msg.is_close() => {
                // A ping's pong is queued in tungstenite: flushed before our next frame.
                self.control_pending = true;
                false
            }
            _ => true,
        }
    }

    async fn write_rest(&mut self, rest: &[Bytes]) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = rest.iter().map(|b| IoSlice::new(b)).collect();
        self.mid_frame = true;
        write_all_vectored(self.ws.get_mut(), &mut slices).await?;
        self.mid_frame = false;
        Ok(())
    }

    async fn finish(mut self, end: &PlayerEnd) {
        if self.mid_frame {
            return; // a close frame would land inside a data frame; just drop the socket
        }
        if matches!(end, PlayerEnd::ClientGone) {
            // The client closed: tungstenite queued the close reply; send it, so the
            // browser sees a clean close (1000), not 1006.
            let _ = tokio::time::timeout(crate::vocab::CLOSE_TIMEOUT, self.ws.flush()).await;
            return;
        }
        if let Some(frame) = end.close_frame() {
            let close = async {
                self.ws.send(Message::Close(Some(frame))).await?;
                // Wait briefly for the client's close reply, as the RFC asks.
                while let Some(msg) = self.ws.next().await {
                    if msg?.is_close() {
                        break;
                    }
                }
                Ok::<_, hyper_tungstenite::tungstenite::Error>(())
            };
            let _ = tokio::time::timeout(crate::vocab::CLOSE_TIMEOUT, close).await;
        }
    }
}

/// An HTTP-FLV player.
///
/// On a plain TCP connection the player's task and the writer shards write the
/// response's chunks to the socket themselves, once hyper has written the head
/// ([`crate::live::socket`]): each batch one chunk (`SIZE\r\n`, the tags, `\r\n`) in
/// one vectored write, so hyper's connection task does not wake per batch.
/// Otherwise (TLS, an HTTP/1.0 client) the response body's channel takes one batch
/// per write and hyper writes it as one chunk. Either way dropping the sender ends
/// the body: hyper writes the last chunk.
pub(crate) struct HttpSink {
    tx: mpsc::Sender<Vec<Bytes>>,
    direct: Option<Direct>,
}

/// An HTTP-FLV player's socket, taken from hyper.
struct Direct {
    socket: Arc<TcpStream>,
    handoff: Arc<Handoff>,
    /// Closes the connection at once (hyper's side too).
    kill: CancellationToken,
    /// A chunk was started and did not finish (an error, or the write timeout
    /// cancelled it): the body can only be cut off, not ended.
    mid_chunk: bool,
    /// The iovec array's allocation, reused from write to write (always empty here).
    iov: Vec<IoSlice<'static>>,
}

impl HttpSink {
    /// A player whose batches hyper writes, from the response body's channel.
    pub(crate) fn channel(tx: mpsc::Sender<Vec<Bytes>>) -> HttpSink {
        HttpSink { tx, direct: None }
    }

    /// A player that writes its chunks to `socket` itself: `handoff` says hyper is
    /// done writing ([`Handoff::taken`] resolved). `kill` closes the connection.
    pub(crate) fn direct(
        tx: mpsc::Sender<Vec<Bytes>>,
        socket: Arc<TcpStream>,
        handoff: Arc<Handoff>,
        kill: CancellationToken,
    ) -> HttpSink {
        HttpSink {
            tx,
            direct: Some(Direct {
                socket,
                handoff,
                kill,
                mid_chunk: false,
                iov: Vec::new(),
            }),
        }
    }
}

impl PlayerSink for HttpSink {
    fn shrink(&mut self, messages: usize) {
        if let Some(d) = &mut self.direct {
            d.iov.shrink_to(messages + 2);
        }
    }

    async fn write(&mut self, messages: &[Msg]) -> std::io::Result<()> {
        let Some(d) = &mut self.direct else {
            return self.tx.send(messages.to_vec()).await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away")
            });
        };
        let len: usize = messages.iter().map(|m| m.len()).sum();
        if len == 0 {
            return Ok(()); // an empty chunk would end the body
        }
        let (head, head_len) = chunk_header(len);
        let mut slices = recycle(std::mem::take(&mut d.iov));
        chunk_iovecs(&head[..head_len], messages, &mut slices);
        d.mid_chunk = true;
        write_all_shared(&d.socket, &mut slices).await?;
        d.mid_chunk = false;
        d.iov = recycle(slices);
        Ok(())
    }

    async fn closed(&mut self) {
        // hyper drops the body when the connection ends.
        self.tx.closed().await;
    }

    fn shared(&self) -> Option<Target> {
        match &self.direct {
            None => Some(Target::Http(self.tx.clone())),
            Some(d) if !d.mid_chunk => Some(Target::Chunked(d.socket.clone())),
            Some(_) => None,
        }
    }

    async fn write_rest(&mut self, rest: &[Bytes]) -> std::io::Result<()> {
        let Some(d) = &mut self.direct else {
            // What did not fit in the body's queue: one chunk, as the shard made it.
            return self.write(rest).await;
        };
        // The rest of a chunk the shard cut, then its whole chunks.
        let mut slices: Vec<IoSlice<'_>> = rest.iter().map(|b| IoSlice::new(b)).collect();
        d.mid_chunk = true;
        write_all_shared(&d.socket, &mut slices).await?;
        d.mid_chunk = false;
        Ok(())
    }

    async fn finish(self, _end: &PlayerEnd) {
        if let Some(d) = self.direct {
            if d.mid_chunk {
                // hyper's last chunk would land inside ours: cut the connection.
                d.kill.cancel();
            } else {
                d.handoff.give_back();
            }
        }
        // Dropping the sender ends the body; hyper writes the last chunk.
    }
}

/// Writes `batch`, giving up after `limit`. The timer is armed only when the write
/// does not complete at once: a player at the live edge writes into a socket with
/// room, and its writes then cost no timer.
async fn write_within<S: PlayerSink>(
    sink: &mut S,
    batch: &[Msg],
    limit: Duration,
) -> Result<std::io::Result<()>, tokio::time::error::Elapsed> {
    let mut write = std::pin::pin!(sink.write(batch));
    match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout(limit, write).await,
    }
}

/// Bytes and tags a player got, for the log line at its end.
#[derive(Debug, Default)]
pub struct PlayerStats {
    /// Bytes written.
    pub bytes: u64,
    /// Tags dropped because the player fell behind.
    pub skipped: u64,
    /// Times it fell behind.
    pub lags: u64,
}

/// Runs one player until the stream ends, the client leaves or is cut off.
pub(crate) async fn run_player<S: PlayerSink>(
    mut sink: S,
    mut sub: Subscription,
    config: &LiveConfig,
    shutdown: CancellationToken,
) -> (PlayerEnd, PlayerStats) {
    let mut stats = PlayerStats::default();
    let metrics = sub.metrics().clone();
    let label = [("protocol", sub.protocol.as_str())];
    let bytes_out = metrics.bytes_out.get_or_create_owned(&label);
    let writes = metrics.player_writes.get_or_create_owned(&label);
    let wakeups = metrics.player_wakeups.get_or_create_owned(&label);
    let counters = WriteCounters {
        bytes_out: bytes_out.clone(),
        writes: writes.clone(),
    };
    // Time to first frame: from the play request to the first written media tag.
    let mut first_frame_pending = true;
    let mut batch_has_media = sub.preamble.iter().any(|f| is_media(&f.tag));
    let write_timeout = Duration::from_millis(config.player_write_timeout_ms);
    let max_behind = Duration::from_millis(config.player_max_behind_ms);

    let has_keyframe = sub.preamble.iter().any(|f| f.tag.is_keyframe());
    let mut gate = SkipGate::new(sub.header.video);
    if !has_keyframe {
        gate = gate.until_keyframe();
    }
    let mut batch: Vec<Msg> = Vec::with_capacity(sub.preamble.len() + 1);
    batch.push(Bytes::copy_from_slice(&sub.header.encode()));
    // Taken, not drained: the preamble's allocation (a GOP's worth) is freed now.
    batch.extend(
        std::mem::take(&mut sub.preamble)
            .into_iter()
            .map(|f| f.wire().clone()),
    );

    // Entries taken from the ring and not looked at yet (reused from wakeup to wakeup).
    let mut taken: VecDeque<Entry> = VecDeque::new();
    let mut behind_since: Option<Instant> = None;
    // Whether the last gather took everything queued (the player is at the live
    // edge). Tracked from `try_recv` instead of asking the ring (`Receiver::len`
    // locks the ring's tail, which every player and the publisher share).
    let mut caught_up = true;
    // A child token per player, waited on through one future created once: a wakeup
    // then locks only this player's token, not the server-wide one every player
    // shares, and does not re-register with it.
    let shutdown = shutdown.child_token();
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let end = loop {
        // Write what we have; a stalled client cannot hold us longer than the timeout.
        if !batch.is_empty() {
            let bytes = batch_len(&batch);
            stats.bytes += bytes;
            match write_within(&mut sink, &batch, write_timeout).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break PlayerEnd::WriteFailed(e),
                Err(_) => break PlayerEnd::WriteStalled(config.player_write_timeout_ms),
            }
            bytes_out.inc_by(bytes);
            writes.inc();
            if first_frame_pending && batch_has_media {
                first_frame_pending = false;
                metrics
                    .first_frame
                    .get_or_create(&label)
                    .observe(sub.requested.elapsed().as_secs_f64());
            }
            batch.clear();
            // A join preamble (a whole GOP) or a catch-up batch is much longer than
            // a live window: give that memory back rather than keep it per player.
            batch.shrink_to(KEPT_BATCH_CAPACITY);
            taken.shrink_to(KEPT_BATCH_CAPACITY);
            sink.shrink(KEPT_BATCH_CAPACITY);
        }
        if caught_up {
            behind_since = None;
        } else {
            let since = *behind_since.get_or_insert_with(Instant::now);
            if since.elapsed() > max_behind {
                break PlayerEnd::TooSlow(config.player_max_behind_ms);
            }
        }

        // At the live edge, the gate open and the last write gone out whole: the
        // stream's writer shards write this player from here on, and this task only
        // waits for the client, the shutdown, or the shard giving the writes back.
        if caught_up
            && !gate.is_skipping()
            && !first_frame_pending
            && let Some(target) = sink.shared()
        {
            let edge = Edge {
                target,
                next: sub.rx.position(),
                bytes: 0,
            };
            let slot = sub.stream.writers.hand_over(edge, counters.clone());
            let end = tokio::select! {
                biased;
                _ = slot.given_back() => None,
                closed = sink.next_from_client() => closed.then_some(PlayerEnd::ClientGone),
                _ = &mut cancelled => Some(PlayerEnd::Stream(EndReason::Shutdown)),
            };
            wakeups.inc();
            let (edge, back) = slot.take();
            sub.rx.seek(edge.next);
            stats.bytes += edge.bytes;
            // Whatever the shard gave back, the ring is read here again from now on.
            caught_up = false;
            match back {
                Back::Taken | Back::Behind => {}
                Back::Failed(e) => break PlayerEnd::WriteFailed(e),
                Back::Blocked(rest) => {
                    // The socket was full: finish the frame it cut, within the timeout.
                    let bytes = batch_len(&rest);
                    stats.bytes += bytes;
                    match tokio::time::timeout(write_timeout, sink.write_rest(&rest)).await {
                        Ok(Ok(())) => {
                            bytes_out.inc_by(bytes);
                        }
                        Ok(Err(e)) => break PlayerEnd::WriteFailed(e),
                        Err(_) => break PlayerEnd::WriteStalled(config.player_write_timeout_ms),
                    }
                }
            }
            if let Some(end) = end {
                break end;
            }
            continue;
        }

        // The ring first: a wakeup for new tags then polls nothing else. The client's
        // side and the shutdown are polled (and their wakers registered) whenever
        // the player waits, which is after every write.
        let first = tokio::select! {
            biased;
            event = sub.rx.recv() => event,
            _ = sink.closed() => break PlayerEnd::ClientGone,
            _ = &mut cancelled => break PlayerEnd::Stream(EndReason::Shutdown),
        };
        wakeups.inc();
        let mut pending = Some(first);
        let mut batch_bytes = 0;
        let mut ended = None;
        caught_up = false;
        // Gather what is already queued (never wait for more) into one write.
        while let Some(event) = pending.take() {
            match event {
                Ok(Entry::Tag(frame)) => {
                    if gate.pass(&frame.tag) {
                        batch_has_media |= is_media(&frame.tag);
                        batch_bytes += frame.len();
                        batch.push(frame.wire().clone());
                    } else {
                        stats.skipped += 1;
                        metrics.tags_skipped.inc();
                    }
                }
                Ok(Entry::End(reason)) => {
                    ended = Some(PlayerEnd::Stream(reason));
                    break;
                }
                Err(TryRecvError::Lagged(missed)) => {
                    stats.lags += 1;
                    stats.skipped += missed;
                    metrics.tags_skipped.inc_by(missed);
                    gate.lagged();
                    tracing::debug!(missed, "player fell behind; skipping to the next keyframe");
                }
                Err(TryRecvError::Empty) => {}
            }
            if let Some(entry) = taken.pop_front() {
                pending = Some(Ok(entry));
            } else if caught_up {
                // The last look took everything visible.
            } else if batch_bytes < config.player_write_batch_bytes {
                // The rest of what is visible, in one look at the ring.
                let room = config.player_write_batch_bytes - batch_bytes;
                pending = match sub.rx.try_recv_into(&mut taken, room) {
                    Ok(at_edge) => {
                        caught_up = at_edge;
                        taken.pop_front().map(Ok)
                    }
                    Err(TryRecvError::Empty) => {
                        caught_up = true;
                        None
                    }
                    Err(lagged) => Some(Err(lagged)),
                };
            } else if ended.is_none() {
                // The batch is full: did it take the last visible tag? (A window
                // larger than a batch must not count as being behind.)
                caught_up = sub.rx.is_empty();
            }
        }
        taken.clear();
        if let Some(end) = ended {
            if !batch.is_empty() {
                let _ = write_within(&mut sink, &batch, write_timeout).await;
                let bytes = batch_len(&batch);
                stats.bytes += bytes;
                bytes_out.inc_by(bytes);
            }
            break end;
        }
    };
    let slow = match end {
        PlayerEnd::TooSlow(_) => Some("too_slow"),
        PlayerEnd::WriteStalled(_) => Some("write_stalled"),
        _ => None,
    };
    if let Some(reason) = slow {
        metrics
            .player_disconnects
            .get_or_create(&[("reason", reason)])
            .inc();
    }
    sink.finish(&end).await;
    (end, stats)
}

/// One WebSocket message / one HTTP-FLV write unit as written: an encoded FLV tag
/// ([`crate::live::WireTag::wire`]) or the FLV file header.
pub(crate) type Msg = Bytes;

fn batch_len(batch: &[Msg]) -> u64 {
    batch.iter().map(|p| p.len() as u64).sum()
}

/// An audio or video frame (not a sequence header): what a player waits for.
fn is_media(tag: &Tag) -> bool {
    matches!(tag.tag_type, TagType::Audio | TagType::Video) && !tag.is_sequence_header()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(key: bool, seq: bool) -> Tag {
        let frame = if key { 0x17 } else { 0x27 };
        let packet = if seq { 0 } else { 1 };
        Tag::new(
            TagType::Video,
            0,
            Bytes::from(vec![frame, packet, 0, 0, 0, 1, 2, 3]),
        )
    }

    fn audio() -> Tag {
        Tag::new(TagType::Audio, 0, Bytes::from_static(&[0xaf, 1, 9, 9]))
    }

    #[test]
    fn gate_waits_for_a_keyframe_after_lag_but_keeps_sequence_headers() {
        let mut gate = SkipGate::new(true);
        assert!(gate.pass(&video(false, false)));
        gate.lagged();
        assert!(!gate.pass(&video(false, false)));
        assert!(!gate.pass(&audio()));
        assert!(gate.pass(&video(true, true)), "sequence header passes");
        assert!(gate.is_skipping());
        assert!(gate.pass(&video(true, false)));
        assert!(gate.pass(&audio()));
        assert!(gate.pass(&video(false, false)));
    }

    #[test]
    fn binary_frame_headers_use_the_shortest_length_encoding() {
        for (len, want) in [
            (0, &[0x82, 0][..]),
            (125, &[0x82, 125][..]),
            (126, &[0x82, 126, 0, 126][..]),
            (65_535, &[0x82, 126, 0xff, 0xff][..]),
            (65_536, &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0][..]),
        ] {
            let (head, n) = binary_frame_header(len);
            assert_eq!(&head[..n], want, "length {len}");
        }
    }

    #[test]
    fn audio_only_gate_restarts_on_the_next_audio_tag() {
        let mut gate = SkipGate::new(false).until_keyframe();
        assert!(!gate.is_skipping());
        gate.lagged();
        assert!(gate.pass(&audio()));
        assert!(!gate.is_skipping());
    }

    #[test]
    fn video_gate_can_start_closed_when_no_keyframe_is_cached() {
        let mut gate = SkipGate::new(true).until_keyframe();
        assert!(!gate.pass(&video(false, false)));
        assert!(gate.pass(&video(true, false)));
    }
}
