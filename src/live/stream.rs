//! One live stream: its codec state, GOP cache, timeline and fan-out ring, the
//! publishing side ([`Publisher`]) and a player's view ([`Subscription`]).
//!
//! Locking: one `std::sync::Mutex` per stream serializes "push a tag" against "a
//! player joins" (snapshot of the cache + subscription to the ring), so a joiner
//! never misses or repeats a tag. It is never held across an `.await`; metadata is
//! parsed before it is taken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flv::{GopCache, Header, Tag, TagType};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use super::budget::MediaBudget;
use super::frame::{Entry, WireTag};
use super::registry::Streams;
use super::ring::{Reader, Ring};
use super::status::MetaSummary;
use super::timeline::Timeline;
use super::{PlayerInfo, PublisherInfo, PushError};
use crate::metrics::{GaugeGuard, Metrics};
use crate::vocab::Protocol;

/// Incoming bitrate over the last full second.
#[derive(Debug)]
pub(super) struct RateMeter {
    pub(super) window_start: Instant,
    pub(super) window_bytes: u64,
    pub(super) kbps: f64,
}

impl RateMeter {
    fn add(&mut self, now: Instant, bytes: usize) {
        self.window_bytes += bytes as u64;
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            self.kbps = self.window_bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1000.0;
            self.window_bytes = 0;
            self.window_start = now;
        }
    }
}

#[derive(Debug)]
pub(super) struct ActivePublisher {
    pub(super) id: u64,
    pub(super) info: PublisherInfo,
    pub(super) since: Instant,
    /// Set to true to make the publisher stop (takeover, kick, shutdown).
    pub(super) stop: watch::Sender<bool>,
}

#[derive(Debug)]
pub(super) struct StreamState {
    pub(super) cache: GopCache<WireTag>,
    /// `cache.bytes()` as last counted into the media budget.
    pub(super) cache_counted: usize,
    pub(super) meta: Option<MetaSummary>,
    pub(super) publisher: Option<ActivePublisher>,
    /// When the publisher's grace period ends (no publisher and not ended).
    pub(super) grace_until: Option<tokio::time::Instant>,
    /// The stream's one grace timer task is running.
    pub(super) grace_timer: bool,
    pub(super) ended: bool,
    pub(super) timeline: Timeline,
    pub(super) rate: RateMeter,
}

/// A live stream: codec state, GOP cache and the broadcast ring.
#[derive(Debug)]
pub struct Stream {
    pub(super) name: String,
    pub(super) ring: Arc<Ring>,
    pub(super) state: Mutex<StreamState>,
    pub(super) players: AtomicUsize,
    /// Connected players by id, for `GET /api/streams/NAME`.
    pub(super) roster: Mutex<HashMap<u64, (PlayerInfo, Instant)>>,
    pub(super) bytes_in: AtomicU64,
    pub(super) created: Instant,
    /// Where the cache's bytes are counted.
    pub(super) budget: MediaBudget,
}

impl Stream {
    /// The stream name (`live/NAME.flv` → `NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's state, or `None` when a panic poisoned it (the stream is then
    /// ended by whoever finds out; see the module docs).
    pub(super) fn lock(&self) -> Option<MutexGuard<'_, StreamState>> {
        self.state.lock().ok()
    }
}

/// The publishing side of a stream. Dropping it starts the grace period.
#[derive(Debug)]
pub struct Publisher {
    pub(super) hub: Arc<Streams>,
    pub(super) stream: Arc<Stream>,
    pub(super) id: u64,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) bytes_in: Counter,
    pub(super) _gauge: GaugeGuard,
}

/// A player's view of a stream: what to send first, then the live ring.
#[derive(Debug)]
pub struct Subscription {
    /// FLV header flags: the tracks the stream really has.
    pub header: Header,
    /// Metadata, sequence headers and the cached GOP from its keyframe, in order.
    pub preamble: Vec<WireTag>,
    /// Live tags after the preamble.
    pub rx: Reader,
    /// The stream (for names and counters).
    pub stream: Arc<Stream>,
    /// When the player asked to play (time to first frame is measured from it).
    pub requested: Instant,
    /// How the player connected.
    pub protocol: Protocol,
    pub(super) _guard: PlayerGuard,
}

impl Subscription {
    /// The server's metrics (players count bytes out, skips and disconnects).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self._guard.hub.metrics
    }
}

#[derive(Debug)]
pub(super) struct PlayerGuard {
    pub(super) hub: Arc<Streams>,
    pub(super) stream: Arc<Stream>,
    pub(super) id: u64,
    pub(super) _gauge: Option<GaugeGuard>,
}

impl Drop for PlayerGuard {
    fn drop(&mut self) {
        self.stream.players.fetch_sub(1, Ordering::Relaxed);
        self.hub.players.fetch_sub(1, Ordering::Relaxed);
        self.stream
            .roster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Publisher {
    /// Accepts one tag from the publisher: caches it and fans it out. Never waits.
    pub fn push(&mut self, tag: Tag) -> Result<(), PushError> {
        if *self.stop.borrow() {
            return Err(PushError::Replaced);
        }
        if let TagType::Unknown(kind) = tag.tag_type {
            // Players only understand audio, video and script data; a stray tag type
            // would at best be ignored, at worst derail a browser demuxer.
            tracing::debug!(kind, "dropping a tag of unknown type");
            return Ok(());
        }
        let tag = if tag.tag_type == TagType::Script {
            // RTMP publishers wrap metadata in `@setDataFrame`; players want it plain.
            Tag {
                body: flv::strip_set_data_frame(tag.body),
                ..tag
            }
        } else {
            tag
        };
        let now = Instant::now();
        self.stream
            .bytes_in
            .fetch_add(tag.encoded_len() as u64, Ordering::Relaxed);
        self.bytes_in.inc_by(tag.encoded_len() as u64);
        // Parsed before taking the lock; only when metadata arrives.
        let meta = tag.is_metadata().then(|| MetaSummary::parse(&tag.body));
        let Some(mut st) = self.stream.lock() else {
            self.hub.fail(&self.stream);
            return Err(PushError::Ended);
        };
        if st.ended {
            return Err(PushError::Ended);
        }
        if st.publisher.as_ref().map(|p| p.id) != Some(self.id) {
            return Err(PushError::Replaced);
        }
        st.rate.add(now, tag.encoded_len());
        if is_redundant(&st.cache, &tag) {
            return Ok(());
        }
        if tag.tag_type == TagType::Video
            && tag.is_sequence_header()
            && st.cache.video_sequence_header().is_some()
        {
            // New codec configuration: cached frames belong to the old one.
            st.cache.clear_gop();
        }
        if let Some(meta) = meta {
            st.meta = meta;
        }
        let ts = st.timeline.map(tag.tag_type, tag.timestamp);
        let frame = WireTag::encode(&tag, ts);
        st.cache.push(frame.clone());
        let cached = st.cache.bytes();
        let budget = &self.hub.budget;
        if cached >= st.cache_counted {
            budget.add(cached - st.cache_counted);
        } else {
            budget.sub(st.cache_counted - cached);
        }
        st.cache_counted = cached;
        // Pushed under the stream lock: a joiner's snapshot and subscription (also
        // under it) see each tag exactly once, in the cache or in the ring.
        self.stream.ring.push(Entry::Tag(frame));
        Ok(())
    }

    /// Resolves when this publisher must stop: taken over, kicked, or shutdown.
    pub async fn stopped(&mut self) {
        // An error means the stream state is gone: stop as well.
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // The ring gives back its own bytes when it drops; the cache's are counted
        // here (a poisoned state still holds them).
        let counted = match self.state.get_mut() {
            Ok(st) => st.cache_counted,
            Err(poisoned) => poisoned.into_inner().cache_counted,
        };
        self.budget.sub(counted);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.hub.unpublish(&self.stream, self.id);
    }
}

/// Moves preamble tags (metadata, sequence headers) that are stamped later than the
/// GOP's first tag back to it, so every track starts monotonic on a new connection.
pub(super) fn fix_preamble_timestamps(preamble: &mut [WireTag]) {
    let first_gop = preamble
        .iter()
        .position(|f| !f.tag.is_sequence_header() && !f.tag.is_metadata());
    let Some(first) = first_gop else { return };
    let start = preamble[first].tag.timestamp;
    for frame in &mut preamble[..first] {
        if frame.tag.timestamp > start {
            *frame = frame.with_timestamp(start);
        }
    }
}

/// An identical repeat of the current metadata or sequence header (a resumed
/// publisher resends them) is not forwarded: players already have it.
fn is_redundant(cache: &GopCache<WireTag>, tag: &Tag) -> bool {
    let current = if tag.is_metadata() {
        cache.metadata()
    } else if tag.is_sequence_header() {
        match tag.tag_type {
            TagType::Video => cache.video_sequence_header(),
            TagType::Audio => cache.audio_sequence_header(),
            _ => None,
        }
    } else {
        None
    };
    current.is_some_and(|c| c.tag.body == tag.body)
}
