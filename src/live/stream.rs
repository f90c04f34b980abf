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
use super::writer::Writers;
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
    /// Stream time of the last video keyframe.
    pub(super) last_keyframe: Option<u32>,
    /// Measured between the last two video keyframes.
    pub(super) keyframe_interval_ms: Option<u32>,
    /// The one info line about what is being published was logged.
    pub(super) announced: bool,
    /// Sample rate and channels read from the audio sequence header (preferred
    /// over `onMetaData`, which may lack them or lie).
    pub(super) audio_config: Option<flv::AudioConfig>,
}

/// A live stream: codec state, GOP cache and the broadcast ring.
#[derive(Debug)]
pub struct Stream {
    pub(super) name: String,
    pub(super) ring: Arc<Ring>,
    /// Writes the stream's players that are at the live edge.
    pub(crate) writers: Writers,
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
    /// Set by [`Publisher::finish`]: the publisher stopped on purpose.
    pub(super) finished: bool,
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
        if !flv::for_browser_players(&tag) {
            // Unknown tag types, and the Enhanced packets mpegts.js treats as fatal
            // (audio MultichannelConfig and video colorInfo metadata that ffmpeg 7+
            // sends with Opus, HEVC, AV1, VP9; command frames): see the rule in
            // `flv::for_browser_players`. ffmpeg, VLC and GStreamer play without them.
            tracing::debug!(tag_type = ?tag.tag_type, "dropping a tag browsers reject");
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
        let audio_config = tag
            .audio()
            .filter(|a| a.packet_type == flv::AudioPacketType::SequenceStart)
            .and_then(|_| tag.audio_config());
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
        if let Some(config) = audio_config {
            st.audio_config = Some(config);
        }
        let ts = st.timeline.map(tag.tag_type, tag.timestamp);
        if tag.tag_type == TagType::Video && tag.is_keyframe() && !tag.is_sequence_header() {
            if let Some(last) = st.last_keyframe {
                st.keyframe_interval_ms = Some(ts.wrapping_sub(last));
            }
            st.last_keyframe = Some(ts);
        }
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
        if !st.announced && st.rate.kbps > 0.0 {
            // Once per publish, when a second of bitrate is measured.
            st.announced = true;
            let summary = super::status::summary(&st);
            tracing::info!(stream = %self.stream.name, %summary, "publishing");
        }
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

impl Publisher {
    /// The publisher stopped on purpose (RTMP `FCUnpublish`/`deleteStream`, OBS
    /// "Stop Streaming"): the stream ends for its players at once. Dropping a
    /// publisher without this (a connection that just ended) keeps the grace
    /// period.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.hub.unpublish(&self.stream, self.id, self.finished);
    }
}

/// Stamps the preamble's headers for a joiner: `onMetaData` at 0 (ffmpeg reads a
/// script tag at any other time as an extra data stream, "Subtitle: text"), and
/// the sequence headers at the time the player's stream starts, the first cached
/// GOP tag's (or with no GOP cached the earliest header's), so every track starts
/// monotonic even when the metadata was re-sent with running timestamps
/// (GStreamer's `flvmux`).
pub(super) fn fix_preamble_timestamps(preamble: &mut [WireTag]) {
    let is_header = |f: &WireTag| f.tag.is_sequence_header() || f.tag.is_metadata();
    let headers = preamble.iter().take_while(|f| is_header(f)).count();
    let start = match preamble.get(headers) {
        Some(first_gop) => first_gop.tag.timestamp,
        None => match preamble.iter().map(|f| f.tag.timestamp).min() {
            Some(t) => t,
            None => return,
        },
    };
    for frame in &mut preamble[..headers] {
        let at = if frame.tag.is_metadata() { 0 } else { start };
        if frame.tag.timestamp != at {
            *frame = frame.with_timestamp(at);
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use flv::TagType;

    fn wire(tag_type: TagType, ts: u32, body: &'static [u8]) -> WireTag {
        WireTag::encode(&Tag::new(tag_type, ts, Bytes::from_static(body)), ts)
    }

    #[test]
    fn preamble_headers_start_where_the_gop_starts() {
        let meta = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09";
        let mut p = vec![
            wire(TagType::Script, 95_000, meta),
            wire(TagType::Video, 0, &[0x17, 0, 0, 0, 0, 1]),
            wire(TagType::Audio, 0, &[0xAF, 0, 0x12, 0x10]),
            wire(TagType::Video, 90_000, &[0x17, 1, 0, 0, 0, 9]),
            wire(TagType::Audio, 90_010, &[0xAF, 1, 9]),
        ];
        fix_preamble_timestamps(&mut p);
        let ts: Vec<u32> = p.iter().map(|f| f.tag.timestamp).collect();
        assert_eq!(ts, [0, 90_000, 90_000, 90_000, 90_010]);
        // The header bytes say the same as the tag.
        assert_eq!(p[1].wire()[4..7], [0x01, 0x5F, 0x90]);
        assert_eq!(p[0].wire()[4..8], [0, 0, 0, 0]);

        // No GOP cached: the headers share the earliest timestamp.
        let mut p = vec![
            wire(TagType::Script, 5_000, meta),
            wire(TagType::Audio, 40, &[0xAF, 0, 0x12, 0x10]),
        ];
        fix_preamble_timestamps(&mut p);
        assert_eq!(p[0].tag.timestamp, 0);
        assert_eq!(p[1].tag.timestamp, 40);
    }
}
