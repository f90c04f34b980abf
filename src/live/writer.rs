//! A stream's shared writers: players at the live edge are written by a few tasks
//! per stream instead of each by its own task.
//!
//! A player task ([`crate::live::egress`]) writes its join preamble and anything it
//! has to catch up on itself. Once it is at the live edge, with its gate open and its
//! last write gone out whole, it hands its writes to one of the stream's writer
//! shards ([`Writers::hand_over`]) and only waits for the client (pings, the close),
//! the shutdown, and the shard giving the writes back.
//!
//! A shard follows the stream's ring like a player, but for many players: when the
//! ring shows new tags (once per coalescing window) it takes them once and, for each
//! of its players, writes them without waiting ([`Target`]): a WebSocket-FLV player
//! on plain TCP gets the same binary frames, framed once per pass, with one
//! non-blocking vectored write on its socket; an HTTP-FLV player on plain TCP gets
//! them as one HTTP chunk, written the same way on the socket hyper handed over
//! ([`crate::live::socket`]); any other HTTP-FLV player gets the chunk handed to its
//! response body (hyper writes it). No player task wakes.
//!
//! A player whose target does not take the whole write (the socket or the body's
//! queue is full), whose write fails, or who is behind the shard, is handed back to
//! its own task at once with what is left to write ([`Back`]). That task then applies
//! the slow-player rules exactly as before (the write timeout, skipping to a keyframe,
//! the cut-off); the shard and the other players never wait for it. The end of the
//! stream is handed back too, so each player task closes its own connection.
//! TLS WebSocket players are always written by their own task (the TLS stream
//! cannot be shared), and TLS HTTP-FLV players by hyper.
//!
//! Shards: as many as the runtime has worker threads, so a stream with many players
//! is written on every core. Players go to the shards in turn. A shard's task runs
//! while it has players and ends with its last one.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::live::Entry;
use crate::live::ring::{Reader, Ring, TryRecvError};

/// How many players a shard writes between two looks at whether the ring showed
/// more tags since its pass began (each look locks the ring).
const GROW_CHECK_EVERY: usize = 32;

/// Most iovecs handed to one `writev` (Linux's IOV_MAX is 1024). A batch of tags
/// needs two per tag (frame header, tag); longer batches take several calls.
pub(crate) const MAX_IOVECS: usize = 512;

/// The header of an unmasked, final binary frame of `len` bytes (RFC 6455 §5.2).
pub fn binary_frame_header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x82; // FIN + binary
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(len) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// The size line of an HTTP/1.1 chunk of `len` bytes: `len` in hex, then CRLF.
pub(crate) fn chunk_header(len: usize) -> ([u8; 18], usize) {
    let mut h = [0u8; 18];
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, b) in h[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *b = b"0123456789abcdef"[nibble];
    }
    h[digits..digits + 2].copy_from_slice(b"\r\n");
    (h, digits + 2)
}

/// What follows an HTTP/1.1 chunk's data.
pub(crate) const CHUNK_END: &[u8] = b"\r\n";

/// Appends one HTTP/1.1 chunk to `out`: its size line `head` ([`chunk_header`]),
/// the parts, and [`CHUNK_END`].
pub(crate) fn chunk_iovecs<'b>(
    head: &'b [u8],
    parts: impl IntoIterator<Item = &'b Bytes>,
    out: &mut Vec<IoSlice<'b>>,
) {
    out.push(IoSlice::new(head));
    out.extend(parts.into_iter().map(|p| IoSlice::new(p)));
    out.push(IoSlice::new(CHUNK_END));
}

/// An emptied vector of iovecs with another lifetime. std's in-place collect keeps
/// the source's allocation (same element layout, no element survives), so the
/// iovec array is not reallocated per write.
pub(crate) fn recycle<'b>(mut v: Vec<IoSlice<'_>>) -> Vec<IoSlice<'b>> {
    v.clear();
    v.into_iter().map(|_| IoSlice::new(&[])).collect()
}

/// Where a shard writes a player.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A WebSocket-FLV player's socket, shared with its task (which reads from it):
    /// each tag one binary frame, a batch one non-blocking vectored write.
    Ws(Arc<TcpStream>),
    /// An HTTP-FLV player's response body: a batch one HTTP chunk, handed to hyper
    /// (which writes it) without waiting.
    Http(mpsc::Sender<Vec<Bytes>>),
    /// An HTTP-FLV player's socket, taken from hyper ([`crate::live::socket`]): a
    /// batch one HTTP chunk, one non-blocking vectored write.
    Chunked(Arc<TcpStream>),
}

/// What a shard needs to write one player: where to, and its place in the ring.
#[derive(Debug)]
pub(crate) struct Edge {
    /// Where its bytes go.
    pub(crate) target: Target,
    /// The ring position of the player's next tag.
    pub(crate) next: u64,
    /// Bytes the shard wrote for this player.
    pub(crate) bytes: u64,
}

/// Why a shard gave a player's writes back to its task.
#[derive(Debug)]
pub(crate) enum Back {
    /// The task took them back itself (the client spoke or left, or shutdown).
    Taken,
    /// The player is not where the shard is (it joined behind it, the shard fell
    /// behind the ring, or the stream ended): the task reads the ring itself.
    Behind,
    /// The target did not take a whole write: what is left of it goes out first,
    /// from the task, within the write timeout. For a WebSocket, the bytes left
    /// (the rest of the frame that was cut, then whole frames, headers included);
    /// for HTTP-FLV, the batch whose chunk did not fit in the body's queue.
    Blocked(Vec<Bytes>),
    /// The write failed (the connection was reset).
    Failed(std::io::Error),
}

#[derive(Debug)]
enum SlotState {
    /// A shard writes this player.
    Shard(Edge),
    /// The shard gave the writes back; the task has not taken them yet.
    Back(Edge, Back),
    /// The task took them.
    Done,
}

impl SlotState {
    /// Gives the writes back to the task with `back`, if a shard still has them.
    fn give_back(&mut self, back: Back) -> bool {
        match std::mem::replace(self, SlotState::Done) {
            SlotState::Shard(edge) => {
                *self = SlotState::Back(edge, back);
                true
            }
            other => {
                *self = other;
                false
            }
        }
    }
}

/// One player handed to a shard: shared by the shard and the player's task.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    /// Notified when the shard gives the writes back.
    back: Notify,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the shard gave the writes back. Cancel-safe.
    pub(crate) async fn given_back(&self) {
        self.back.notified().await;
    }

    /// Takes the writes back (from the shard, or as it gave them back): the player's
    /// place and bytes, and why.
    pub(crate) fn take(&self) -> (Edge, Back) {
        match std::mem::replace(&mut *self.lock(), SlotState::Done) {
            SlotState::Shard(edge) => (edge, Back::Taken),
            SlotState::Back(edge, back) => (edge, back),
            SlotState::Done => unreachable!("a slot is taken once, by its player"),
        }
    }
}

/// Counters a shard adds a player's writes to (the series of its protocol).
#[derive(Clone, Debug)]
pub(crate) struct WriteCounters {
    pub(crate) bytes_out: Counter,
    pub(crate) writes: Counter,
}

#[derive(Debug, Default)]
struct Joining {
    slots: Vec<(Arc<Slot>, WriteCounters)>,
    /// The shard's task is running (it ends when it has no players).
    running: bool,
}

#[derive(Debug)]
struct Shard {
    joining: Mutex<Joining>,
    joined: Notify,
}

/// A stream's writer shards.
#[derive(Debug)]
pub(crate) struct Writers {
    ring: Arc<Ring>,
    shards: Box<[Arc<Shard>]>,
    turn: AtomicUsize,
}

impl Writers {
    /// Writers for the stream of `ring`, `shards` of them (at least one).
    pub(crate) fn new(ring: Arc<Ring>, shards: usize) -> Writers {
        let shards = (0..shards.max(1))
            .map(|_| {
                Arc::new(Shard {
                    joining: Mutex::new(Joining::default()),
                    joined: Notify::new(),
                })
            })
            .collect();
        Writers {
            ring,
            shards,
            turn: AtomicUsize::new(0),
        }
    }

    /// Hands a player's writes to a shard, from ring position `edge.next` on.
    pub(crate) fn hand_over(&self, edge: Edge, counters: WriteCounters) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Shard(edge)),
            back: Notify::new(),
        });
        let shard = &self.shards[self.turn.fetch_add(1, Ordering::Relaxed) % self.shards.len()];
        let mut joining = shard.joining.lock().unwrap_or_else(|e| e.into_inner());
        joining.slots.push((slot.clone(), counters));
        if !joining.running {
            joining.running = true;
            tokio::spawn(run_shard(shard.clone(), self.ring.clone()));
        }
        drop(joining);
        shard.joined.notify_one();
        slot
    }
}

/// A shard's players and their counters.
type Players = Vec<(Arc<Slot>, WriteCounters)>;

/// A shard task's players. Should the task end any other way than by running
/// out of players (a panic, which is a bug, or the runtime dropping it), its
/// players are given back to their tasks, which go on writing them, and the next
/// player handed to the shard starts a new task.
struct Run {
    shard: Arc<Shard>,
    players: Players,
    /// It ran out of players and said so under the joining lock.
    done: bool,
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        give_back_all(&mut self.players);
        let mut joining = self.shard.joining.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, _) in joining.slots.drain(..) {
            give_back(&slot);
        }
        joining.running = false;
    }
}

async fn run_shard(shard: Arc<Shard>, ring: Arc<Ring>) {
    let mut run = Run {
        shard: shard.clone(),
        players: Vec::new(),
        done: false,
    };
    let players = &mut run.players;
    let mut reader: Option<Reader> = None;
    let mut entries: VecDeque<Entry> = VecDeque::new();
    let mut heads: Vec<([u8; 10], usize)> = Vec::new();
    let mut iov: Vec<IoSlice<'static>> = Vec::new();
    let mut chunk_iov: Vec<IoSlice<'static>> = Vec::new();
    loop {
        // Take in the players handed over since the last pass.
        let joined = {
            let mut joining = shard.joining.lock().unwrap_or_else(|e| e.into_inner());
            if joining.slots.is_empty() && players.is_empty() {
                joining.running = false;
                run.done = true;
                return;
            }
            std::mem::take(&mut joining.slots)
        };
        if !joined.is_empty() {
            if players.is_empty() {
                // Start at the first new player's place (nobody is behind it).
                let start = joined.iter().filter_map(|(s, _)| position(s)).min();
                if let Some(start) = start {
                    let mut r = ring.subscribe();
                    r.seek(start);
                    reader = Some(r);
                }
            }
            let at = reader.as_ref().map_or(0, Reader::position);
            for (slot, counters) in joined {
                if position(&slot).is_some_and(|next| next < at) {
                    // It joined behind the shard (which wrote the others meanwhile):
                    // its task catches up itself, now rather than at the next pass.
                    give_back(&slot);
                } else {
                    players.push((slot, counters));
                }
            }
        }
        let Some(reader) = reader.as_mut() else {
            give_back_all(players);
            continue;
        };
        // Wait for the ring (or a new player), then take the new players in before
        // taking the tags, so that they get these tags from the shard too.
        if reader.is_empty() {
            tokio::select! {
                _ = reader.wait() => {}
                _ = shard.joined.notified() => {}
            }
            continue;
        }
        let start = reader.position();
        entries.clear();
        // Everything visible, in one pass. Under a load where a pass takes longer
        // than a window, the next pass then writes more tags per write and the
        // shard keeps up; a pass capped in bytes (as a player's own write is, at
        // `player_write_batch_bytes`) would cap the stream at that many bytes per
        // pass, and every player of the shard would fall behind together.
        match reader.try_recv_into(&mut entries, usize::MAX) {
            Ok(_) => {}
            Err(TryRecvError::Empty) => continue,
            Err(TryRecvError::Lagged(_)) => {
                // The shard itself fell behind the ring: every player reads it itself.
                give_back_all(players);
                continue;
            }
        }
        // Players that left the shard during the pass (given back, or taken back by
        // their task) are dropped from the list after it.
        let mut gone = false;
        // Where the batch grew in the middle of the pass: the players from there on
        // get the old and the new tags in one write, then those before it the new.
        let mut grew_at: Option<usize> = None;
        let count = players.len();
        let ended = loop {
            let tags = entries
                .iter()
                .position(|e| matches!(e, Entry::End(_)))
                .unwrap_or(entries.len());
            heads.clear();
            heads.extend(entries.iter().take(tags).map(|e| match e {
                Entry::Tag(t) => binary_frame_header(t.len()),
                Entry::End(_) => unreachable!("tags come before the end"),
            }));
            let mut slices = recycle(std::mem::take(&mut iov));
            for (entry, (head, len)) in entries.iter().zip(&heads) {
                if let Entry::Tag(t) = entry {
                    slices.push(IoSlice::new(&head[..*len]));
                    slices.push(IoSlice::new(t.wire()));
                }
            }
            // The same tags as one HTTP chunk, for HTTP-FLV players on a socket.
            let wires = || entries.iter().take(tags).filter_map(Entry::wire);
            let (chunk_head, chunk_head_len) = chunk_header(wires().map(Bytes::len).sum());
            let mut chunk = recycle(std::mem::take(&mut chunk_iov));
            chunk_iovecs(&chunk_head[..chunk_head_len], wires(), &mut chunk);
            let pass = Pass {
                start,
                entries: &entries,
                heads: &heads,
                slices: &slices,
                chunk: &chunk,
                ended: tags < entries.len(),
            };
            let order = match grew_at {
                None => (0..count).chain(0..0),
                Some(at) => (at..count).chain(0..at),
            };
            let mut grows = None;
            for (n, i) in order.enumerate() {
                let (slot, counters) = &players[i];
                gone |= !pass.write(slot, counters);
                // A pass over thousands of players is long: let the publisher, joins
                // and the other tasks of this worker run in between (every 128 writes).
                tokio::task::consume_budget().await;
                // The ring showed more while the pass ran (it is longer than the
                // interval between tags): the players not written yet take the newer
                // tags in the same write, as a player task that woke late would.
                // Once per pass, looked at every few players.
                if grew_at.is_none()
                    && !pass.ended
                    && (n + 1) % GROW_CHECK_EVERY == 0
                    && n + 1 < count
                    && !reader.is_empty()
                {
                    grows = Some(n + 1);
                    break;
                }
            }
            let ended = pass.ended;
            iov = recycle(slices);
            chunk_iov = recycle(chunk);
            let Some(at) = grows else {
                break ended;
            };
            match reader.try_recv_into(&mut entries, usize::MAX) {
                Ok(_) | Err(TryRecvError::Empty) => grew_at = Some(at),
                Err(TryRecvError::Lagged(_)) => {
                    give_back_all(players);
                    break false;
                }
            }
        };
        if ended {
            give_back_all(players);
        } else if gone {
            players.retain(|(slot, _)| position(slot).is_some());
        }
    }
}

/// The ring position of a player still handed to the shard.
fn position(slot: &Slot) -> Option<u64> {
    match &*slot.lock() {
        SlotState::Shard(edge) => Some(edge.next),
        _ => None,
    }
}

/// Gives every player's writes back to its task, to read the ring itself.
fn give_back_all(players: &mut Players) {
    for (slot, _) in players.drain(..) {
        give_back(&slot);
    }
}

/// Gives a player's writes back to its task, to read the ring itself (unless the
/// task took them already).
fn give_back(slot: &Slot) {
    if slot.lock().give_back(Back::Behind) {
        slot.back.notify_one();
    }
}

/// One batch of tags, framed once, to write to each player.
struct Pass<'a> {
    /// Ring position of `entries[0]`.
    start: u64,
    entries: &'a VecDeque<Entry>,
    heads: &'a [([u8; 10], usize)],
    /// Two per tag: its frame header and the tag.
    slices: &'a [IoSlice<'a>],
    /// The batch's tags as one HTTP chunk: size line, tags, CRLF.
    chunk: &'a [IoSlice<'a>],
    /// The batch ends with the stream's end (after its tags).
    ended: bool,
}

impl Pass<'_> {
    /// Writes the batch to one player; false when the player leaves the shard.
    fn write(&self, slot: &Slot, counters: &WriteCounters) -> bool {
        let mut state = slot.lock();
        let SlotState::Shard(edge) = &mut *state else {
            return false; // its task took it back
        };
        let tags = self.heads.len() as u64;
        let back = if edge.next < self.start {
            Some(Back::Behind)
        } else if edge.next >= self.start + tags {
            None // it has these already (it joined with them)
        } else {
            let from = (edge.next - self.start) as usize;
            let back = match &edge.target {
                Target::Ws(socket) => self.write_ws(socket, from, &mut edge.bytes, counters),
                Target::Http(body) => self.send_http(body, from, &mut edge.bytes, counters),
                Target::Chunked(socket) => {
                    self.write_chunked(socket, from, &mut edge.bytes, counters)
                }
            };
            edge.next = self.start + tags;
            back
        };
        let back = match back {
            None if self.ended => Back::Behind, // the task reads the end itself
            None => return true,
            Some(back) => back,
        };
        // Under the same lock as the write: the task never takes a half-done write.
        state.give_back(back);
        drop(state);
        slot.back.notify_one();
        false
    }

    /// Writes the frames from tag `from` on to a WebSocket player's socket.
    fn write_ws(
        &self,
        socket: &TcpStream,
        from: usize,
        bytes: &mut u64,
        counters: &WriteCounters,
    ) -> Option<Back> {
        let slices = &self.slices[from * 2..];
        let n = write_counted(socket, slices, bytes, counters)?;
        Some(n.map_or_else(Back::Failed, |n| Back::Blocked(self.rest(from, n))))
    }

    /// Writes the tags from `from` on to an HTTP-FLV player's socket as one chunk:
    /// the pass's chunk, or, for a player that joined with some of its tags, a
    /// shorter one of its own.
    fn write_chunked(
        &self,
        socket: &TcpStream,
        from: usize,
        bytes: &mut u64,
        counters: &WriteCounters,
    ) -> Option<Back> {
        let head;
        let mut own = Vec::new();
        let slices = if from == 0 {
            self.chunk
        } else {
            head = chunk_header(self.tags(from).map(Bytes::len).sum());
            chunk_iovecs(&head.0[..head.1], self.tags(from), &mut own);
            &own[..]
        };
        let n = write_counted(socket, slices, bytes, counters)?;
        Some(n.map_or_else(Back::Failed, |n| {
            let parts = std::iter::once(Part::Copy(&slices[0]))
                .chain(self.tags(from).map(Part::Shared))
                .chain(std::iter::once(Part::Copy(CHUNK_END)));
            Back::Blocked(rest_after(parts, n))
        }))
    }

    /// The tags from `from` on.
    fn tags(&self, from: usize) -> impl Iterator<Item = &Bytes> {
        self.entries
            .iter()
            .skip(from)
            .take(self.heads.len() - from)
            .filter_map(Entry::wire)
    }

    /// Hands the tags from `from` on to an HTTP-FLV player's body as one chunk.
    fn send_http(
        &self,
        body: &mpsc::Sender<Vec<Bytes>>,
        from: usize,
        bytes: &mut u64,
        counters: &WriteCounters,
    ) -> Option<Back> {
        let batch: Vec<Bytes> = self.tags(from).cloned().collect();
        let n: u64 = batch.iter().map(|b| b.len() as u64).sum();
        match body.try_send(batch) {
            Ok(()) => {
                *bytes += n;
                counters.bytes_out.inc_by(n);
                counters.writes.inc();
                None
            }
            Err(TrySendError::Full(batch)) => Some(Back::Blocked(batch)),
            Err(TrySendError::Closed(_)) => {
                Some(Back::Failed(std::io::ErrorKind::BrokenPipe.into()))
            }
        }
    }

    /// What is left of the batch from tag `from` on after `written` bytes: the rest
    /// of the frame that was cut, then the whole frames after it.
    fn rest(&self, from: usize, written: usize) -> Vec<Bytes> {
        let parts = self
            .heads
            .iter()
            .skip(from)
            .zip(self.tags(from))
            .flat_map(|((head, len), tag)| [Part::Copy(&head[..*len]), Part::Shared(tag)]);
        rest_after(parts, written)
    }
}

/// A piece of a write: bytes of this pass (a header), or a shared tag.
enum Part<'a> {
    Copy(&'a [u8]),
    Shared(&'a Bytes),
}

/// What is left of `parts` after `written` bytes: the rest of the part that was
/// cut, then the whole parts after it.
fn rest_after<'a>(parts: impl Iterator<Item = Part<'a>>, mut written: usize) -> Vec<Bytes> {
    let mut rest = Vec::new();
    for part in parts {
        let len = match &part {
            Part::Copy(b) => b.len(),
            Part::Shared(b) => b.len(),
        };
        if written >= len {
            written -= len;
            continue;
        }
        rest.push(match part {
            Part::Copy(b) => Bytes::copy_from_slice(&b[written..]),
            Part::Shared(b) => b.slice(written..),
        });
        written = 0;
    }
    rest
}

/// Writes `slices` without waiting and counts what went out: `None` when all did,
/// else `Ok(bytes written)` (the socket is full, or part went out before an error:
/// the task's write then fails) or the error when nothing did.
fn write_counted(
    socket: &TcpStream,
    slices: &[IoSlice<'_>],
    bytes: &mut u64,
    counters: &WriteCounters,
) -> Option<Result<usize, std::io::Error>> {
    let want: usize = slices.iter().map(|s| s.len()).sum();
    let written = write_now(socket, slices);
    let n = match &written {
        Ok(n) | Err((n, _)) => *n,
    };
    *bytes += n as u64;
    counters.bytes_out.inc_by(n as u64);
    counters.writes.inc();
    match written {
        Ok(n) if n == want => None,
        Err((0, e)) => Some(Err(e)),
        Ok(n) | Err((n, _)) => Some(Ok(n)),
    }
}

/// Writes `slices` without waiting, `MAX_IOVECS` at a time: the bytes written
/// (fewer than all when the socket is full), or the error with what went out first.
fn write_now(socket: &TcpStream, slices: &[IoSlice<'_>]) -> Result<usize, (usize, std::io::Error)> {
    let mut written = 0;
    for chunk in slices.chunks(MAX_IOVECS) {
        let want: usize = chunk.iter().map(|s| s.len()).sum();
        match socket.try_write_vectored(chunk) {
            Ok(n) => {
                written += n;
                if n < want {
                    return Ok(written);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(written),
            Err(e) => return Err((written, e)),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use flv::{Tag, TagType};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::live::{EndReason, MediaBudget, WireTag};

    fn tag(ts: u32, size: usize) -> Entry {
        let mut body = vec![0x27, 1, 0, 0, 0];
        body.resize(size, ts as u8);
        let tag = Tag::new(TagType::Video, ts, Bytes::from(body));
        Entry::Tag(WireTag::encode(&tag, ts))
    }

    /// Each tag as one binary frame, as a player receives it.
    fn framed(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            if let Entry::Tag(t) = e {
                let (head, len) = binary_frame_header(t.len());
                out.extend_from_slice(&head[..len]);
                out.extend_from_slice(t.wire());
            }
        }
        out
    }

    /// A connected pair on loopback: (the server's side, the client's side).
    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Arc::new(server), client)
    }

    fn counters() -> WriteCounters {
        WriteCounters {
            bytes_out: Counter::default(),
            writes: Counter::default(),
        }
    }

    /// Reads `n` bytes from `client`.
    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        // (Byte vectors are compared with `==` below: a failing `assert_eq!` would
        // print megabytes.)
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut buf))
            .await
            .expect("the bytes arrive")
            .unwrap();
        buf
    }

    /// A ring that holds everything these tests push, with no window.
    fn big_ring() -> Arc<Ring> {
        Arc::new(Ring::new(
            4096,
            256 << 20,
            MediaBudget::new(1 << 30),
            Duration::ZERO,
        ))
    }

    /// Pushes 60 KB tags (added to `pushed`) until the shard gives `slot` back:
    /// its client does not read, so its socket fills up.
    async fn fill_until_given_back(ring: &Ring, slot: &Slot, pushed: &mut Vec<Entry>) {
        for ts in pushed.len() as u32..2_000 {
            let e = tag(ts, 60_000);
            pushed.push(e.clone());
            ring.push(e);
            if tokio::time::timeout(Duration::from_millis(5), slot.given_back())
                .await
                .is_ok()
            {
                return;
            }
        }
        panic!("120 MB did not fill a socket nobody reads");
    }

    #[test]
    fn the_rest_of_a_cut_write_starts_inside_the_frame_it_cut() {
        let entries: VecDeque<Entry> = (0..3).map(|ts| tag(ts, 200)).collect();
        let heads: Vec<_> = entries
            .iter()
            .map(|e| match e {
                Entry::Tag(t) => binary_frame_header(t.len()),
                Entry::End(_) => unreachable!(),
            })
            .collect();
        let pass = Pass {
            start: 0,
            entries: &entries,
            heads: &heads,
            slices: &[],
            chunk: &[],
            ended: false,
        };
        let all = framed(Vec::from(entries.clone()).as_slice());
        let one = all.len() / 3;
        // Cut inside a header, inside a tag, at a frame's edge; from the first or the
        // second tag on.
        for (from, written) in [(0, 0), (0, 2), (0, 1), (0, 50), (0, one), (1, one + 7)] {
            let rest: Vec<u8> = pass.rest(from, written).concat();
            assert_eq!(
                rest,
                all[from * one + written..],
                "from tag {from}, {written} bytes written"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shard_writes_its_players_and_gives_back_a_full_socket_with_the_rest() {
        let ring = big_ring();
        let writers = Writers::new(ring.clone(), 2);
        let start = ring.subscribe().position();
        let mut players = Vec::new();
        for _ in 0..3 {
            let (socket, client) = pair().await;
            let edge = Edge {
                target: Target::Ws(socket),
                next: start,
                bytes: 0,
            };
            players.push((writers.hand_over(edge, counters()), client));
        }
        // Live tags reach every player, each as one frame, in order.
        let first: Vec<Entry> = (0..5).map(|ts| tag(ts, 1000)).collect();
        for e in &first {
            ring.push(e.clone());
        }
        let want = framed(&first);
        for (_, client) in &mut players {
            assert!(read_exactly(client, want.len()).await == want);
        }

        // The third player stops reading: its socket fills, and the shard gives it
        // back with exactly what is left of the cut write; the others keep getting
        // every tag meanwhile.
        let (stuck, mut stuck_client) = players.pop().unwrap();
        let mut slots = Vec::new();
        let mut readers = Vec::new();
        for (slot, mut client) in players {
            slots.push(slot);
            readers.push(tokio::spawn(async move {
                let mut got = BytesMut::new();
                while client.read_buf(&mut got).await.unwrap() > 0 {}
                got
            }));
        }
        let mut pushed = first.clone();
        fill_until_given_back(&ring, &stuck, &mut pushed).await;
        let (edge, back) = stuck.take();
        let Back::Blocked(rest) = back else {
            panic!("a full socket is given back with the rest, not {back:?}")
        };
        assert!(!rest.is_empty());
        // What it would have received alone = what went out + the rest.
        let upto = (edge.next - start) as usize;
        let mut received = want.clone();
        received.extend(read_exactly(&mut stuck_client, edge.bytes as usize - want.len()).await);
        received.extend(rest.concat());
        let alone = framed(&pushed[..upto]);
        assert!(
            received == alone,
            "written + rest = {} bytes, alone it would get {}",
            received.len(),
            alone.len()
        );

        // The end is handed back to the players that are left, at its place, after
        // every tag before it.
        ring.push(Entry::End(EndReason::Unpublished));
        let end_at = start + pushed.len() as u64;
        let all = framed(&pushed);
        for (slot, reader) in slots.into_iter().zip(readers) {
            tokio::time::timeout(Duration::from_secs(10), slot.given_back())
                .await
                .expect("the end is given back");
            let (edge, back) = slot.take();
            assert!(matches!(back, Back::Behind), "{back:?}");
            assert_eq!(edge.next, end_at);
            assert_eq!(edge.bytes as usize, all.len());
            drop(edge); // the socket closes: the reader sees its end
            let got = reader.await.unwrap();
            assert!(
                got[..] == all[want.len()..],
                "a reading player got {} bytes after the first tags, not the {} pushed",
                got.len(),
                all.len() - want.len()
            );
        }
    }

    #[tokio::test]
    async fn an_http_player_gets_a_chunk_per_pass_and_is_given_back_when_its_queue_is_full() {
        let ring = Arc::new(Ring::new(
            64,
            1 << 20,
            MediaBudget::new(1 << 30),
            Duration::ZERO,
        ));
        let writers = Writers::new(ring.clone(), 1);
        let (tx, mut body) = mpsc::channel(1);
        let edge = Edge {
            target: Target::Http(tx),
            next: ring.subscribe().position(),
            bytes: 0,
        };
        let slot = writers.hand_over(edge, counters());
        let wire = |e: &Entry| match e {
            Entry::Tag(t) => t.wire().clone(),
            Entry::End(_) => unreachable!(),
        };
        // One pass, one chunk of the pass's tags.
        let first = tag(1, 100);
        ring.push(first.clone());
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(chunk, [wire(&first)]);
        // The body's queue (one chunk here) is full after the next pass; the one
        // after is given back whole, for the task to send within its timeout.
        let (second, third) = (tag(2, 100), tag(3, 100));
        ring.push(second.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        ring.push(third.clone());
        tokio::time::timeout(Duration::from_secs(5), slot.given_back())
            .await
            .expect("a full body queue is given back");
        let (edge, back) = slot.take();
        let Back::Blocked(rest) = back else {
            panic!("given back with the chunk, not {back:?}")
        };
        assert_eq!(rest, [wire(&third)]);
        assert_eq!(body.recv().await.unwrap(), [wire(&second)]);
        assert_eq!(edge.next, ring.subscribe().position());
    }

    #[test]
    fn a_chunk_header_is_the_size_in_hex_and_crlf() {
        for (len, want) in [
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (65_535, "ffff\r\n"),
            (1 << 20, "100000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let (head, n) = chunk_header(len);
            assert_eq!(std::str::from_utf8(&head[..n]).unwrap(), want);
        }
    }

    /// The data of a chunked body, checking its framing; `None` if it ends inside
    /// a chunk.
    fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
        let mut data = Vec::new();
        while !body.is_empty() {
            let eol = body.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&body[..eol]).ok()?, 16).ok()?;
            assert!(size > 0, "a chunk of 0 bytes would end the body");
            body = &body[eol + 2..];
            data.extend_from_slice(body.get(..size)?);
            assert_eq!(body.get(size..size + 2)?, b"\r\n");
            body = &body[size + 2..];
        }
        Some(data)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_http_socket_gets_a_chunk_per_pass_and_a_full_one_is_given_back_with_the_rest() {
        let ring = big_ring();
        let writers = Writers::new(ring.clone(), 1);
        let start = ring.subscribe().position();
        let (socket, mut client) = pair().await;
        let edge = Edge {
            target: Target::Chunked(socket),
            next: start,
            bytes: 0,
        };
        let slot = writers.hand_over(edge, counters());
        let wires = |entries: &[Entry]| -> Vec<u8> {
            entries
                .iter()
                .flat_map(|e| match e {
                    Entry::Tag(t) => t.wire().to_vec(),
                    Entry::End(_) => unreachable!(),
                })
                .collect()
        };
        // A pass of one tag is one chunk: its size line, the tag, CRLF.
        let first = tag(1, 300);
        ring.push(first.clone());
        let (head, n) = chunk_header(wires(std::slice::from_ref(&first)).len());
        let mut want = head[..n].to_vec();
        want.extend(wires(std::slice::from_ref(&first)));
        want.extend_from_slice(b"\r\n");
        assert!(read_exactly(&mut client, want.len()).await == want);

        // The client stops reading: the shard gives the player back once its socket
        // is full, with the rest of the cut chunk. What went out and the rest make
        // whole chunks holding every tag up to where the shard stopped.
        let mut pushed = vec![first];
        fill_until_given_back(&ring, &slot, &mut pushed).await;
        let (edge, back) = slot.take();
        let Back::Blocked(rest) = back else {
            panic!("a full socket is given back with the rest, not {back:?}")
        };
        let mut received = want.clone();
        received.extend(read_exactly(&mut client, edge.bytes as usize - want.len()).await);
        received.extend(rest.concat());
        let data = dechunk(&received).expect("whole chunks with the rest");
        let upto = (edge.next - start) as usize;
        assert!(
            data == wires(&pushed[..upto]),
            "{} bytes of tags, {} pushed up to the shard's place",
            data.len(),
            wires(&pushed[..upto]).len()
        );
    }

    /// A tag the ring shows while a pass is under way goes, in the same pass, to the
    /// players not written yet together with the pass's tags (one write each), and
    /// then to the players written before it. Every player gets both tags, in order:
    /// WebSocket players (even) as frames, HTTP-FLV players (odd) as chunks, the
    /// early ones a second chunk of their own. (One thread: the pass yields every
    /// 128 writes, tokio's task budget, and the test pushes the second tag then.)
    #[tokio::test]
    async fn a_tag_shown_during_a_pass_joins_the_write_of_the_players_after() {
        const PLAYERS: usize = 200;
        let ring = big_ring();
        let writers = Writers::new(ring.clone(), 1);
        let start = ring.subscribe().position();
        let writes = Counter::default();
        let mut clients = Vec::new();
        for i in 0..PLAYERS {
            let (socket, client) = pair().await;
            let edge = Edge {
                target: match i % 2 {
                    0 => Target::Ws(socket),
                    _ => Target::Chunked(socket),
                },
                next: start,
                bytes: 0,
            };
            let counters = WriteCounters {
                bytes_out: Counter::default(),
                writes: writes.clone(),
            };
            let _slot = writers.hand_over(edge, counters);
            clients.push(client);
        }
        let (a, b) = (tag(1, 1000), tag(2, 1000));
        ring.push(a.clone());
        // The shard runs its pass of `a` until it yields, then this pushes `b`.
        tokio::task::yield_now().await;
        ring.push(b.clone());
        let want = framed(&[a.clone(), b.clone()]);
        let data: Vec<u8> = [a, b]
            .iter()
            .flat_map(|e| e.wire().unwrap().to_vec())
            .collect();
        for (i, client) in clients.iter_mut().enumerate() {
            if i % 2 == 0 {
                assert!(read_exactly(client, want.len()).await == want);
                continue;
            }
            // One chunk or two: read until the chunks hold both tags.
            let mut got = BytesMut::new();
            let body = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    client.read_buf(&mut got).await.unwrap();
                    match dechunk(&got) {
                        Some(body) if body.len() >= data.len() => return body,
                        _ => {}
                    }
                }
            })
            .await
            .expect("both tags arrive");
            assert!(body == data, "HTTP-FLV player {i}");
        }
        let writes = writes.get() as usize;
        println!("{writes} writes for 2 tags to {PLAYERS} players");
        assert!(
            writes < 2 * PLAYERS,
            "{writes} writes: no player got both tags in one write"
        );
    }
}
