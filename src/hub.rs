//! The hub: the registry of live streams and the fan-out of their tags.
//!
//! Each [`Stream`] owns its codec state and GOP cache ([`flv::GopCache`]) and a
//! fan-out [`Ring`] of [`Frame`]s bounded in tags and bytes. A frame is encoded once, at ingest, into the
//! exact FLV bytes a player receives; every player writes that same reference-counted
//! `Bytes`, so a tag is stored once however many players read it.
//!
//! Locking: one short `std::sync::Mutex` per stream serializes "push a tag" against
//! "a player joins" (snapshot of the cache + subscription to the ring), so a joiner
//! never misses or repeats a tag. It is never held across an `.await`.
//!
//! Slow players cannot slow anyone down: the ring never waits for a reader. A reader
//! that falls more than `player_backlog_tags` (or `player_backlog_bytes`) behind is
//! told how many tags it missed and skips to the next keyframe (see
//! [`crate::egress`]).
//!
//! Memory: every GOP cache and ring counts its bytes into one [`MediaBudget`]
//! (`live.max_media_bytes`). Past it, new publishers are refused (503) and rings
//! give back what they can; each stream's own bounds (`gop_max_bytes`,
//! `player_backlog_bytes`) hold whatever the budget.
//!
//! A panic while a stream's state is locked (a bug) poisons that stream: it ends
//! for its players at once ([`EndReason::Failed`]) instead of limping on with state
//! a half-done update may have left inconsistent; other streams are untouched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use flv::{GopCache, GopCacheConfig, Header, Tag, TagType};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ring::{Reader, Ring};

use crate::config::LiveConfig;
use crate::metrics::{GaugeGuard, Metrics};
use prometheus_client::metrics::counter::Counter;

/// One tag as players receive it: the parsed [`Tag`] and its FLV encoding (11-byte
/// header, body, PreviousTagSize). `tag.body` is a slice of `wire`: one allocation.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The tag; its body shares `wire`'s allocation.
    pub tag: Tag,
    /// The encoded tag, written to players as is.
    pub wire: Bytes,
}

impl Frame {
    /// Encodes `tag` with `timestamp` (the body is copied once, here, for all players).
    pub fn encode(tag: &Tag, timestamp: u32) -> Frame {
        let mut buf = BytesMut::with_capacity(tag.encoded_len());
        tag.write_with_timestamp(timestamp, &mut buf);
        let wire = buf.freeze();
        let body = wire.slice(Tag::HEADER_LEN..Tag::HEADER_LEN + tag.body.len());
        let tag = Tag {
            tag_type: tag.tag_type,
            timestamp,
            stream_id: 0,
            body,
        };
        Frame { tag, wire }
    }

    /// The same frame with another timestamp (re-encoded; used for the few
    /// preamble tags a joining player may need moved).
    pub fn with_timestamp(&self, timestamp: u32) -> Frame {
        Frame::encode(&self.tag, timestamp)
    }
}

impl AsRef<Tag> for Frame {
    fn as_ref(&self) -> &Tag {
        &self.tag
    }
}

/// What travels on a stream's broadcast ring.
#[derive(Clone, Debug)]
pub enum Event {
    /// A tag for every player.
    Frame(Frame),
    /// The stream is over; players close with this reason.
    End(EndReason),
}

/// Why a stream ended for its players.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The publisher left and did not come back within the grace period.
    PublisherGone,
    /// The server is shutting down.
    Shutdown,
    /// An operator ended the stream (`DELETE /api/streams/NAME`).
    Kicked,
    /// A bug (a panic inside the stream's state update) ended the stream.
    Failed,
}

impl EndReason {
    /// A short human reason, used in WebSocket close frames and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::PublisherGone => "stream ended: publisher gone",
            EndReason::Shutdown => "server shutting down",
            EndReason::Kicked => "stream ended: kicked by operator",
            EndReason::Failed => "stream ended: internal error",
        }
    }
}

/// How a publisher reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP POST/PUT body, or HTTP-FLV play.
    Http,
    /// WebSocket binary messages.
    Ws,
    /// RTMP publish.
    Rtmp,
}

/// Who publishes a stream.
#[derive(Clone, Debug)]
pub struct PublisherInfo {
    /// Transport.
    pub protocol: Protocol,
    /// Client address.
    pub remote: SocketAddr,
}

/// Who plays a stream.
#[derive(Clone, Debug)]
pub struct PlayerInfo {
    /// `Http` (HTTP-FLV) or `Ws` (WebSocket-FLV).
    pub protocol: Protocol,
    /// Client address (behind a trusted proxy: from `X-Forwarded-For`).
    pub remote: SocketAddr,
}

impl Protocol {
    /// `http`, `ws` or `rtmp` (the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Ws => "ws",
            Protocol::Rtmp => "rtmp",
        }
    }
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// Another publisher is live on that name (HTTP 409, RTMP `NetStream.Publish.BadName`).
    #[error("stream `{0}` already has a publisher")]
    AlreadyPublishing(String),
    /// `live.max_streams` reached (HTTP 503).
    #[error("too many live streams (limit {0})")]
    TooManyStreams(usize),
    /// The server is shutting down (HTTP 503).
    #[error("server shutting down")]
    ShuttingDown,
    /// Cached and buffered media of all streams exceed `live.max_media_bytes`
    /// (HTTP 503, RTMP `NetStream.Publish.Failed`).
    #[error("server media memory budget exhausted ({used} of {limit} bytes); try again later")]
    MediaBudget {
        /// Bytes in use.
        used: usize,
        /// `live.max_media_bytes`.
        limit: usize,
    },
}

/// Why a play was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlayError {
    /// No such live stream (HTTP 404; the player page retries).
    #[error("stream `{0}` is not live")]
    NotFound(String),
    /// `live.max_players` reached (HTTP 503).
    #[error("too many players (limit {0})")]
    TooManyPlayers(usize),
    /// `live.max_players_per_stream` reached (HTTP 503).
    #[error("too many players on this stream (limit {0})")]
    TooManyPlayersOnStream(usize),
}

/// Why a publisher's tag was not accepted.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushError {
    /// Another publisher took the stream over, or an operator kicked this one.
    #[error("publisher replaced or kicked")]
    Replaced,
    /// The stream has ended (server shutting down).
    #[error("stream ended")]
    Ended,
}

/// A publisher timestamp step larger than this (forward or back) is a
/// discontinuity (an encoder restart, a clock jump), not stream time: the stream
/// continues 1 ms after where players are instead of jumping. Real streams step
/// tens of milliseconds; interleaved audio and video differ by well under a second.
pub const TIMESTAMP_JUMP_MS: i64 = 10_000;

/// Maps a publisher's 32-bit timestamps onto the stream's 64-bit timeline, per
/// stream, across publishers.
///
/// - Steps are read with serial-number arithmetic (RFC 1982): the step from `last`
///   to `ts` is `(ts - last) mod 2^32` as a signed 32-bit value, so a wrap at 2^32
///   (49.7 days of a 24/7 stream, or an encoder that starts high) is a small step
///   forward, not a jump back.
/// - Small backward steps are clamped per track (players need monotonic
///   timestamps per track); steps over [`TIMESTAMP_JUMP_MS`] and a new publisher
///   rebase: the stream continues 1 ms after its newest tag.
/// - Players get the timeline modulo 2^32 (an FLV timestamp). A stream whose first
///   timestamp is within 2^31 ms of the wrap starts at 0, so no player sees the
///   wrap within 24 days of it.
#[derive(Debug, Default)]
struct Timeline {
    /// The publisher's previous A/V timestamp (raw) and where it landed (64-bit).
    anchor: Option<(u32, i64)>,
    /// A publisher resumed the stream: rebase on its first A/V tag.
    rebase_pending: bool,
    last_video: Option<i64>,
    last_audio: Option<i64>,
}

impl Timeline {
    /// The newest A/V time on the timeline.
    fn edge(&self) -> Option<i64> {
        self.last_video.max(self.last_audio)
    }

    /// Maps a publisher timestamp to the stream's timeline (as sent to players).
    fn map(&mut self, tag_type: TagType, ts: u32) -> u32 {
        if !matches!(tag_type, TagType::Audio | TagType::Video) {
            // Script data is stamped at the live edge: an `onMetaData` sent at 0
            // mid-stream must not look like a jump back.
            return self.edge().unwrap_or(0) as u32;
        }
        let mapped = match self.anchor {
            Some((last_raw, last)) if !self.rebase_pending => {
                let step = i64::from(ts.wrapping_sub(last_raw) as i32);
                if step.abs() > TIMESTAMP_JUMP_MS {
                    self.edge().map_or(0, |e| e + 1)
                } else {
                    last + step
                }
            }
            _ => match self.edge() {
                // A new publisher continues right after where players are.
                Some(edge) => edge + 1,
                None if ts >= 1 << 31 => 0,
                None => i64::from(ts),
            },
        };
        self.rebase_pending = false;
        self.anchor = Some((ts, mapped));
        let last = match tag_type {
            TagType::Video => &mut self.last_video,
            _ => &mut self.last_audio,
        };
        let out = last.map_or(mapped, |l| mapped.max(l));
        *last = Some(out);
        // The FLV timestamp is the timeline modulo 2^32.
        out as u32
    }
}

/// Incoming bitrate over the last full second.
#[derive(Debug)]
struct RateMeter {
    window_start: Instant,
    window_bytes: u64,
    kbps: f64,
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
struct ActivePublisher {
    id: u64,
    info: PublisherInfo,
    since: Instant,
    /// Set to true to make the publisher stop (takeover, kick, shutdown).
    stop: watch::Sender<bool>,
}

/// Bytes of media held by all streams (GOP caches and rings) against
/// `live.max_media_bytes`. A frame held by both a stream's cache and its ring is
/// counted twice: the budget errs on the safe side.
#[derive(Clone, Debug)]
pub struct MediaBudget {
    used: Arc<AtomicUsize>,
    limit: usize,
}

impl MediaBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> MediaBudget {
        MediaBudget {
            used: Arc::default(),
            limit,
        }
    }

    /// Counts `n` more bytes.
    pub fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` bytes fewer.
    pub fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// `live.max_media_bytes`.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether more than the limit is in use.
    pub fn over(&self) -> bool {
        self.used() > self.limit
    }
}

/// What `onMetaData` says, parsed once when it arrives (not on every status
/// request).
#[derive(Clone, Copy, Debug, Default)]
struct MetaSummary {
    width: Option<f64>,
    height: Option<f64>,
    fps: Option<f64>,
    sample_rate: Option<f64>,
    channels: Option<u8>,
}

impl MetaSummary {
    fn parse(body: &[u8]) -> Option<MetaSummary> {
        let m = flv::Metadata::parse(body).ok()?;
        Some(MetaSummary {
            width: m.width,
            height: m.height,
            fps: m.framerate,
            sample_rate: m.audio_sample_rate,
            channels: m.stereo.map(|s| if s { 2 } else { 1 }),
        })
    }
}

#[derive(Debug)]
struct StreamState {
    cache: GopCache<Frame>,
    /// `cache.bytes()` as last counted into the media budget.
    cache_counted: usize,
    meta: Option<MetaSummary>,
    publisher: Option<ActivePublisher>,
    /// When the publisher's grace period ends (no publisher and not ended).
    grace_until: Option<tokio::time::Instant>,
    /// The stream's one grace timer task is running.
    grace_timer: bool,
    ended: bool,
    timeline: Timeline,
    rate: RateMeter,
}

/// A live stream: codec state, GOP cache and the broadcast ring.
#[derive(Debug)]
pub struct Stream {
    name: String,
    ring: Arc<Ring>,
    state: Mutex<StreamState>,
    players: AtomicUsize,
    /// Connected players by id, for `GET /api/streams/NAME`.
    roster: Mutex<HashMap<u64, (PlayerInfo, Instant)>>,
    bytes_in: AtomicU64,
    created: Instant,
    /// Where the cache's bytes are counted.
    budget: MediaBudget,
}

impl Stream {
    /// The stream name (`live/NAME.flv` → `NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's state, or `None` when a panic poisoned it (the stream is then
    /// ended by whoever finds out; see the module docs).
    fn lock(&self) -> Option<MutexGuard<'_, StreamState>> {
        self.state.lock().ok()
    }
}

/// The registry of live streams.
#[derive(Debug)]
pub struct Hub {
    config: LiveConfig,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    players: AtomicUsize,
    next_id: AtomicU64,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Grace-period timers, one per stream at most; cancelled by `cancel`.
    timers: TaskTracker,
    /// Cancelled when the hub shuts down: grace timers end at once.
    cancel: CancellationToken,
    /// Bytes of cached and buffered media of all streams.
    budget: MediaBudget,
    /// Streams, publishers, players and bytes in.
    metrics: Arc<Metrics>,
}

/// The publishing side of a stream. Dropping it starts the grace period.
#[derive(Debug)]
pub struct Publisher {
    hub: Arc<Hub>,
    stream: Arc<Stream>,
    id: u64,
    stop: watch::Receiver<bool>,
    bytes_in: Counter,
    _gauge: GaugeGuard,
}

/// A player's view of a stream: what to send first, then the live ring.
#[derive(Debug)]
pub struct Subscription {
    /// FLV header flags: the tracks the stream really has.
    pub header: Header,
    /// Metadata, sequence headers and the cached GOP from its keyframe, in order.
    pub preamble: Vec<Frame>,
    /// Live tags after the preamble.
    pub rx: Reader,
    /// The stream (for names and counters).
    pub stream: Arc<Stream>,
    /// When the player asked to play (time to first frame is measured from it).
    pub requested: Instant,
    /// How the player connected.
    pub protocol: Protocol,
    _guard: PlayerGuard,
}

impl Subscription {
    /// The server's metrics (players count bytes out, skips and disconnects).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self._guard.hub.metrics
    }
}

#[derive(Debug)]
struct PlayerGuard {
    hub: Arc<Hub>,
    stream: Arc<Stream>,
    id: u64,
    _gauge: Option<GaugeGuard>,
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

/// `GET /api/streams/NAME`: the status plus who publishes and who plays.
#[derive(Debug, Serialize)]
pub struct StreamDetail {
    /// What `/api/streams` shows.
    #[serde(flatten)]
    pub status: StreamStatus,
    /// The connected publisher, if any.
    pub publisher_info: Option<PeerStatus>,
    /// Connected players, oldest first.
    pub players_list: Vec<PeerStatus>,
}

/// A publisher or player in [`StreamDetail`].
#[derive(Debug, Serialize)]
pub struct PeerStatus {
    /// Player id (0 for the publisher).
    pub id: u64,
    /// Transport.
    pub protocol: Protocol,
    /// Client address.
    pub address: String,
    /// Seconds since it connected.
    pub connected_s: f64,
}

/// What `DELETE /api/streams/NAME` did.
#[derive(Debug, Serialize)]
pub struct KickReport {
    /// The stream.
    pub stream: String,
    /// Whether a publisher was connected (and was cut off).
    pub kicked: bool,
    /// Players that got the end of the stream.
    pub players: usize,
}

/// Status of one stream for `/api/streams`.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    /// Stream name.
    pub name: String,
    /// `live`, or `reconnecting` during a publisher's grace period.
    pub state: &'static str,
    /// Video track, if any.
    pub video: Option<VideoStatus>,
    /// Audio track, if any.
    pub audio: Option<AudioStatus>,
    /// Incoming bitrate over the last second.
    pub bitrate_kbps: f64,
    /// Connected players.
    pub players: usize,
    /// Seconds since the stream was first published.
    pub uptime_s: f64,
    /// The publisher's transport, when live.
    pub publisher: Option<Protocol>,
    /// Bytes received from publishers.
    pub bytes_in: u64,
    /// Duration of the cached GOP in milliseconds.
    pub gop_ms: u32,
}

/// Video track status.
#[derive(Debug, Serialize)]
pub struct VideoStatus {
    /// Codec name (`h264`, `hevc`, `av1`, `vp9`, ...).
    pub codec: &'static str,
    /// Width from `onMetaData`.
    pub width: Option<f64>,
    /// Height from `onMetaData`.
    pub height: Option<f64>,
    /// Frame rate from `onMetaData`.
    pub fps: Option<f64>,
}

/// Audio track status.
#[derive(Debug, Serialize)]
pub struct AudioStatus {
    /// Codec name (`aac`, `mp3`, `opus`, ...).
    pub codec: &'static str,
    /// Sample rate from `onMetaData`.
    pub sample_rate: Option<f64>,
    /// Channels from `onMetaData` (`stereo`).
    pub channels: Option<u8>,
}

impl Hub {
    /// A hub with these limits (and metrics of its own).
    pub fn new(config: LiveConfig) -> Arc<Hub> {
        Hub::with_metrics(config, Arc::new(Metrics::new()))
    }

    /// A hub with these limits, counting into `metrics`.
    pub fn with_metrics(config: LiveConfig, metrics: Arc<Metrics>) -> Arc<Hub> {
        Arc::new(Hub {
            config: config.clone(),
            streams: Mutex::new(HashMap::new()),
            players: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            shutting_down: false.into(),
            timers: TaskTracker::new(),
            cancel: CancellationToken::new(),
            budget: MediaBudget::new(config.max_media_bytes),
            metrics,
        })
    }

    /// The metrics the hub counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The live settings.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<String, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts publishing `name`, or resumes it within its grace period.
    pub fn publish(
        self: &Arc<Self>,
        name: &str,
        info: PublisherInfo,
    ) -> Result<Publisher, PublishError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(PublishError::ShuttingDown);
        }
        if self.budget.over() {
            return Err(PublishError::MediaBudget {
                used: self.budget.used(),
                limit: self.budget.limit(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut streams = self.registry();
        let stream = match streams.get(name) {
            Some(s) => s.clone(),
            None => {
                if streams.len() >= self.config.max_streams {
                    return Err(PublishError::TooManyStreams(self.config.max_streams));
                }
                let stream = Arc::new(self.new_stream(name));
                streams.insert(name.to_owned(), stream.clone());
                self.metrics.streams.inc();
                stream
            }
        };
        let Some(mut st) = stream.lock() else {
            drop(streams);
            self.fail(&stream);
            return Err(PublishError::AlreadyPublishing(name.to_owned()));
        };
        if let Some(current) = &st.publisher {
            if !self.config.allow_takeover {
                return Err(PublishError::AlreadyPublishing(name.to_owned()));
            }
            tracing::info!(stream = name, old = %current.info.remote, "publisher taken over");
            let _ = current.stop.send(true);
        }
        st.timeline.rebase_pending = true;
        st.grace_until = None;
        let label = [("protocol", info.protocol.as_str())];
        st.publisher = Some(ActivePublisher {
            id,
            info,
            since: Instant::now(),
            stop: stop_tx,
        });
        drop(st);
        drop(streams);
        Ok(Publisher {
            hub: self.clone(),
            stream,
            id,
            stop: stop_rx,
            bytes_in: self.metrics.bytes_in.get_or_create_owned(&label),
            _gauge: Metrics::hold(&self.metrics.publishers, label),
        })
    }

    fn new_stream(&self, name: &str) -> Stream {
        let now = Instant::now();
        Stream {
            name: name.to_owned(),
            ring: Arc::new(Ring::new(
                self.config.player_backlog_tags,
                self.config.player_backlog_bytes,
                self.budget.clone(),
            )),
            state: Mutex::new(StreamState {
                cache: GopCache::new(GopCacheConfig {
                    max_bytes: self.config.gop_max_bytes,
                    max_duration_ms: self.config.gop_max_duration_ms,
                }),
                cache_counted: 0,
                meta: None,
                publisher: None,
                grace_until: None,
                grace_timer: false,
                ended: false,
                timeline: Timeline::default(),
                rate: RateMeter {
                    window_start: now,
                    window_bytes: 0,
                    kbps: 0.0,
                },
            }),
            players: AtomicUsize::new(0),
            roster: Mutex::new(HashMap::new()),
            bytes_in: AtomicU64::new(0),
            created: now,
            budget: self.budget.clone(),
        }
    }

    /// Joins `name` as an in-process player (benches, tests): listed as a WebSocket
    /// player at `0.0.0.0:0`. Network players use [`Hub::play_as`].
    pub fn play(self: &Arc<Self>, name: &str) -> Result<Subscription, PlayError> {
        let info = PlayerInfo {
            protocol: Protocol::Ws,
            remote: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        self.play_as(name, info)
    }

    /// Joins `name` as a player connected with `info`.
    pub fn play_as(
        self: &Arc<Self>,
        name: &str,
        info: PlayerInfo,
    ) -> Result<Subscription, PlayError> {
        let requested = Instant::now();
        let stream = self
            .registry()
            .get(name)
            .cloned()
            .ok_or_else(|| PlayError::NotFound(name.to_owned()))?;
        let total = self.players.fetch_add(1, Ordering::Relaxed);
        let on_stream = stream.players.fetch_add(1, Ordering::Relaxed);
        // The guard undoes both increments on every path out, refusals included.
        let mut guard = PlayerGuard {
            hub: self.clone(),
            stream: stream.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            _gauge: None,
        };
        if total >= self.config.max_players {
            return Err(PlayError::TooManyPlayers(self.config.max_players));
        }
        if on_stream >= self.config.max_players_per_stream {
            return Err(PlayError::TooManyPlayersOnStream(
                self.config.max_players_per_stream,
            ));
        }
        let Some(st) = stream.lock() else {
            self.fail(&stream);
            return Err(PlayError::NotFound(name.to_owned()));
        };
        if st.ended {
            return Err(PlayError::NotFound(name.to_owned()));
        }
        let header = st.cache.header();
        let mut preamble: Vec<Frame> = st.cache.join().cloned().collect();
        let rx = stream.ring.subscribe();
        drop(st);
        fix_preamble_timestamps(&mut preamble);
        let protocol = info.protocol;
        guard._gauge = Some(Metrics::hold(
            &self.metrics.players,
            [("protocol", protocol.as_str())],
        ));
        stream
            .roster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(guard.id, (info, requested));
        Ok(Subscription {
            header,
            preamble,
            rx,
            stream,
            requested,
            protocol,
            _guard: guard,
        })
    }

    /// Status of every stream, sorted by name.
    pub fn streams(&self) -> Vec<StreamStatus> {
        let streams: Vec<Arc<Stream>> = self.registry().values().cloned().collect();
        let mut out: Vec<StreamStatus> = streams.iter().filter_map(|s| status(s)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether `name` is live (or waiting for its publisher within the grace period).
    pub fn is_live(&self, name: &str) -> bool {
        self.registry().contains_key(name)
    }

    /// The media budget (cached and buffered bytes of all streams).
    pub fn budget(&self) -> &MediaBudget {
        &self.budget
    }

    /// One stream with its publisher and players.
    pub fn stream_detail(&self, name: &str) -> Option<StreamDetail> {
        let stream = self.registry().get(name).cloned()?;
        let status = status(&stream)?;
        let publisher_info = stream.lock()?.publisher.as_ref().map(|p| PeerStatus {
            id: 0,
            protocol: p.info.protocol,
            address: p.info.remote.to_string(),
            connected_s: seconds(p.since),
        });
        let mut players_list: Vec<PeerStatus> = stream
            .roster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, (info, since))| PeerStatus {
                id: *id,
                protocol: info.protocol,
                address: info.remote.to_string(),
                connected_s: seconds(*since),
            })
            .collect();
        players_list.sort_by_key(|p| p.id);
        Some(StreamDetail {
            status,
            publisher_info,
            players_list,
        })
    }

    /// Ends `name` now: its publisher is cut off and its players get the clean end
    /// ([`EndReason::Kicked`]) at once, without a grace period; the name is free for
    /// a new publisher. `None` when no such stream exists.
    pub fn kick(&self, name: &str) -> Option<KickReport> {
        let mut streams = self.registry();
        let stream = streams.remove(name)?;
        self.metrics.streams.dec();
        let publisher = match stream.lock() {
            Some(mut st) => {
                // Taking the publisher makes its later unpublish a no-op: no grace.
                let publisher = st.publisher.take();
                if let Some(p) = &publisher {
                    let _ = p.stop.send(true);
                }
                st.ended = true;
                st.grace_until = None;
                publisher
            }
            None => None,
        };
        stream.ring.push(Event::End(EndReason::Kicked));
        drop(streams);
        tracing::info!(stream = name, "stream kicked by operator");
        Some(KickReport {
            stream: name.to_owned(),
            kicked: publisher.is_some(),
            players: stream.players.load(Ordering::Relaxed),
        })
    }

    /// Refuses new publishers from now on and stops the grace timers: called first
    /// on shutdown, before connections are told, so no publisher that drops during
    /// shutdown can start a new grace period.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.cancel.cancel();
        self.timers.close();
    }

    /// Stops every publisher and ends every stream for its players. Never waits.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        let streams: Vec<Arc<Stream>> = self.registry().drain().map(|(_, s)| s).collect();
        self.metrics.streams.dec_by(streams.len() as i64);
        for stream in streams {
            if let Some(mut st) = stream.lock() {
                if let Some(p) = &st.publisher {
                    let _ = p.stop.send(true);
                }
                st.ended = true;
            }
            stream.ring.push(Event::End(EndReason::Shutdown));
        }
    }

    /// Ends a stream whose state a panic poisoned: out of the registry, players
    /// get [`EndReason::Failed`] (the ring has its own lock).
    fn fail(&self, stream: &Arc<Stream>) {
        let mut streams = self.registry();
        if streams
            .get(&stream.name)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
        {
            streams.remove(&stream.name);
            self.metrics.streams.dec();
            drop(streams);
            tracing::error!(
                stream = stream.name,
                "stream state poisoned by a panic (a bug); stream ended"
            );
            stream.ring.push(Event::End(EndReason::Failed));
        }
    }

    fn unpublish(self: &Arc<Self>, stream: &Arc<Stream>, id: u64) {
        let Some(mut st) = stream.lock() else {
            self.fail(stream);
            return;
        };
        if st.publisher.as_ref().map(|p| p.id) != Some(id) {
            return; // taken over: the new publisher owns the stream
        }
        st.publisher = None;
        if st.ended || self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let never_started = st.timeline.edge().is_none();
        if never_started && stream.players.load(Ordering::Relaxed) == 0 {
            // Nothing was published and nobody waits: no grace period to keep.
            drop(st);
            self.expire(stream);
            return;
        }
        let grace = Duration::from_millis(self.config.publisher_grace_ms);
        st.grace_until = Some(tokio::time::Instant::now() + grace);
        let spawn = !st.grace_timer;
        st.grace_timer = true;
        drop(st);
        tracing::info!(
            stream = stream.name,
            grace_ms = self.config.publisher_grace_ms,
            "publisher left; waiting for it to return"
        );
        if spawn {
            let hub = self.clone();
            let stream = stream.clone();
            self.timers
                .spawn(async move { hub.grace_timer(&stream).await });
        }
    }

    /// The one grace timer of `stream`: sleeps until the grace period in force ends
    /// (a publisher that returns and drops again moves it), then ends the stream.
    async fn grace_timer(&self, stream: &Arc<Stream>) {
        loop {
            let deadline = {
                let Some(mut st) = stream.lock() else { return };
                match st.grace_until {
                    Some(d) if st.publisher.is_none() && !st.ended => d,
                    _ => {
                        st.grace_timer = false;
                        return;
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = self.cancel.cancelled() => return,
            }
            let due = stream
                .lock()
                .is_some_and(|st| st.grace_until.is_some_and(|d| d <= deadline));
            if due {
                self.expire(stream);
                if let Some(mut st) = stream.lock() {
                    st.grace_timer = false;
                }
                return;
            }
        }
    }

    /// Ends `stream` if it still has no publisher.
    fn expire(&self, stream: &Arc<Stream>) {
        let mut streams = self.registry();
        let Some(mut st) = stream.lock() else {
            drop(streams);
            self.fail(stream);
            return;
        };
        if st.publisher.is_some() || st.ended {
            return;
        }
        st.ended = true;
        st.grace_until = None;
        if streams
            .get(&stream.name)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
        {
            streams.remove(&stream.name);
            self.metrics.streams.dec();
        }
        drop(st);
        drop(streams);
        stream.ring.push(Event::End(EndReason::PublisherGone));
        tracing::info!(
            stream = stream.name,
            "stream ended: publisher did not return"
        );
    }
}

fn seconds(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

/// Moves preamble tags (metadata, sequence headers) that are stamped later than the
/// GOP's first tag back to it, so every track starts monotonic on a new connection.
fn fix_preamble_timestamps(preamble: &mut [Frame]) {
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

fn status(stream: &Stream) -> Option<StreamStatus> {
    let st = stream.lock()?;
    let meta = st.meta.as_ref();
    let video = st
        .cache
        .video_sequence_header()
        .and_then(|f| f.tag.video())
        .map(|v| VideoStatus {
            codec: v.codec.name(),
            width: meta.and_then(|m| m.width),
            height: meta.and_then(|m| m.height),
            fps: meta.and_then(|m| m.fps),
        });
    let audio = st
        .cache
        .audio_sequence_header()
        .and_then(|f| f.tag.audio())
        .map(|a| AudioStatus {
            codec: a.codec.name(),
            sample_rate: meta.and_then(|m| m.sample_rate),
            channels: meta.and_then(|m| m.channels),
        });
    Some(StreamStatus {
        name: stream.name.clone(),
        state: if st.publisher.is_some() {
            "live"
        } else {
            "reconnecting"
        },
        video,
        audio,
        bitrate_kbps: (st.rate.kbps * 10.0).round() / 10.0,
        players: stream.players.load(Ordering::Relaxed),
        uptime_s: (stream.created.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        publisher: st.publisher.as_ref().map(|p| p.info.protocol),
        bytes_in: stream.bytes_in.load(Ordering::Relaxed),
        gop_ms: st.cache.duration_ms(),
    })
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
        let frame = Frame::encode(&tag, ts);
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
        self.stream.ring.push(Event::Frame(frame));
        Ok(())
    }

    /// Resolves when this publisher must stop: taken over, kicked, or shutdown.
    pub async fn stopped(&mut self) {
        // An error means the stream state is gone: stop as well.
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

/// An identical repeat of the current metadata or sequence header (a resumed
/// publisher resends them) is not forwarded: players already have it.
fn is_redundant(cache: &GopCache<Frame>, tag: &Tag) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_rebases_a_resumed_publisher_and_stays_monotonic() {
        let mut t = Timeline::default();
        assert_eq!(t.map(TagType::Video, 0), 0);
        assert_eq!(t.map(TagType::Audio, 23), 23);
        assert_eq!(t.map(TagType::Video, 5000), 5000);
        // A publisher going back in time on one track is clamped.
        assert_eq!(t.map(TagType::Video, 4000), 5000);
        // A new publisher starting from 0 continues right after the last tag.
        t.rebase_pending = true;
        assert_eq!(t.map(TagType::Script, 0), 5000);
        assert_eq!(t.map(TagType::Video, 0), 5001);
        assert_eq!(t.map(TagType::Audio, 21), 5022);
        assert_eq!(t.map(TagType::Video, 40), 5041);
    }

    #[test]
    fn timeline_continues_through_a_32_bit_wrap() {
        let mut t = Timeline::default();
        // A stream that starts low and runs for 49.7 days crosses the wrap...
        let start = u32::MAX - 2_000;
        // (an encoder that starts this high is moved to 0 at once)
        assert_eq!(t.map(TagType::Video, start), 0);
        let mut last = 0;
        for i in 1..200u32 {
            let ts = start.wrapping_add(i * 40);
            let out = t.map(TagType::Video, ts);
            assert_eq!(out, i * 40, "monotonic through the wrap at step {i}");
            assert!(out > last);
            last = out;
        }
        // ...and a running stream crosses it the same way.
        let mut t = Timeline::default();
        assert_eq!(t.map(TagType::Audio, 1_000), 1_000);
        t.anchor = Some((u32::MAX - 9, (1i64 << 32) - 10));
        t.last_audio = Some((1i64 << 32) - 10);
        assert_eq!(t.map(TagType::Audio, 12), 12, "2^32 + 12 on the timeline");
    }

    #[test]
    fn timeline_rebases_big_jumps_and_clamps_small_steps_back() {
        let mut t = Timeline::default();
        assert_eq!(t.map(TagType::Video, 20_000), 20_000);
        assert_eq!(t.map(TagType::Audio, 19_990), 19_990);
        // A small step back on a track is clamped.
        assert_eq!(t.map(TagType::Video, 19_000), 20_000);
        // An encoder restart from 0 mid-stream: a jump back, rebased.
        assert_eq!(t.map(TagType::Video, 0), 20_001);
        assert_eq!(t.map(TagType::Video, 40), 20_041);
        // A jump far ahead: rebased too.
        assert_eq!(t.map(TagType::Video, 3_000_000), 20_042);
        assert_eq!(t.map(TagType::Video, 3_000_040), 20_082);
        // Metadata mid-stream is stamped at the edge.
        assert_eq!(t.map(TagType::Script, 0), 20_082);
    }
}
