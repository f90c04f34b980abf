//! The hub: the registry of live streams and the fan-out of their tags.
//!
//! Each [`Stream`] owns its codec state and GOP cache ([`flv::GopCache`]) and a
//! bounded broadcast ring of [`Frame`]s. A frame is encoded once, at ingest, into the
//! exact FLV bytes a player receives; every player writes that same reference-counted
//! `Bytes`, so a tag is stored once however many players read it.
//!
//! Locking: one short `std::sync::Mutex` per stream serializes "push a tag" against
//! "a player joins" (snapshot of the cache + subscription to the ring), so a joiner
//! never misses or repeats a tag. It is never held across an `.await`.
//!
//! Slow players cannot slow anyone down: the ring never waits for a reader. A reader
//! that falls more than `player_backlog_tags` behind is told how many tags it missed
//! and skips to the next keyframe (see [`crate::egress`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use flv::{GopCache, GopCacheConfig, Header, Tag, TagType};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::task::TaskTracker;

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
}

impl EndReason {
    /// A short human reason, used in WebSocket close frames and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::PublisherGone => "stream ended: publisher gone",
            EndReason::Shutdown => "server shutting down",
            EndReason::Kicked => "stream ended: kicked by operator",
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

/// Per-track timestamp continuity across publishers.
#[derive(Debug, Default)]
struct Timeline {
    /// Added to the publisher's timestamps (set when a publisher resumes a stream).
    offset: i64,
    /// A publisher resumed the stream: compute `offset` from its first A/V tag.
    rebase_pending: bool,
    last_video: Option<u32>,
    last_audio: Option<u32>,
}

impl Timeline {
    /// Maps a publisher timestamp to the stream's timeline: rebased after a publisher
    /// change, and never going back on a track (players need monotonic timestamps).
    fn map(&mut self, tag_type: TagType, ts: u32) -> u32 {
        let av = matches!(tag_type, TagType::Audio | TagType::Video);
        if self.rebase_pending && av {
            let last = self.last_video.max(self.last_audio);
            // Continue one millisecond after where players are: no gap to wait out.
            let next = last.map_or(0, |l| i64::from(l) + 1);
            self.offset = next - i64::from(ts);
            self.rebase_pending = false;
        }
        let mapped = (i64::from(ts) + self.offset).clamp(0, i64::from(u32::MAX)) as u32;
        let last = match tag_type {
            TagType::Video => &mut self.last_video,
            TagType::Audio => &mut self.last_audio,
            _ => return mapped,
        };
        let out = last.map_or(mapped, |l| mapped.max(l));
        *last = Some(out);
        out
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

#[derive(Debug)]
struct StreamState {
    cache: GopCache<Frame>,
    publisher: Option<ActivePublisher>,
    /// Bumped on each publish/unpublish: a grace timer only ends the stream if nothing
    /// happened since it started.
    generation: u64,
    ended: bool,
    timeline: Timeline,
    rate: RateMeter,
}

/// A live stream: codec state, GOP cache and the broadcast ring.
#[derive(Debug)]
pub struct Stream {
    name: String,
    tx: broadcast::Sender<Event>,
    state: Mutex<StreamState>,
    players: AtomicUsize,
    /// Connected players by id, for `GET /api/streams/NAME`.
    roster: Mutex<HashMap<u64, (PlayerInfo, Instant)>>,
    bytes_in: AtomicU64,
    created: Instant,
}

impl Stream {
    /// The stream name (`live/NAME.flv` → `NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        // A poisoned lock means a bug panicked while holding it; the state is still
        // consistent enough to serve (every update is a single assignment or push).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
    /// Grace-period timers; closed and awaited on shutdown.
    timers: TaskTracker,
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
    pub rx: broadcast::Receiver<Event>,
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
            config,
            streams: Mutex::new(HashMap::new()),
            players: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            shutting_down: false.into(),
            timers: TaskTracker::new(),
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
        let mut st = stream.lock();
        if let Some(current) = &st.publisher {
            if !self.config.allow_takeover {
                return Err(PublishError::AlreadyPublishing(name.to_owned()));
            }
            tracing::info!(stream = name, old = %current.info.remote, "publisher taken over");
            let _ = current.stop.send(true);
        }
        let resumed = st.timeline.last_video.is_some() || st.timeline.last_audio.is_some();
        st.timeline.rebase_pending = resumed;
        st.generation += 1;
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
        let (tx, _) = broadcast::channel(self.config.player_backlog_tags);
        let now = Instant::now();
        Stream {
            name: name.to_owned(),
            tx,
            state: Mutex::new(StreamState {
                cache: GopCache::new(GopCacheConfig {
                    max_bytes: self.config.gop_max_bytes,
                    max_duration_ms: self.config.gop_max_duration_ms,
                }),
                publisher: None,
                generation: 0,
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
        let st = stream.lock();
        if st.ended {
            return Err(PlayError::NotFound(name.to_owned()));
        }
        let header = st.cache.header();
        let mut preamble: Vec<Frame> = st.cache.join().cloned().collect();
        let rx = stream.tx.subscribe();
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
        let mut out: Vec<StreamStatus> = streams.iter().map(|s| status(s)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Status of one stream.
    pub fn stream(&self, name: &str) -> Option<StreamStatus> {
        let stream = self.registry().get(name).cloned()?;
        Some(status(&stream))
    }

    /// One stream with its publisher and players.
    pub fn stream_detail(&self, name: &str) -> Option<StreamDetail> {
        let stream = self.registry().get(name).cloned()?;
        let status = status(&stream);
        let publisher_info = stream.lock().publisher.as_ref().map(|p| PeerStatus {
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
        let mut st = stream.lock();
        // Taking the publisher makes its later unpublish a no-op: no grace timer.
        let publisher = st.publisher.take();
        if let Some(p) = &publisher {
            let _ = p.stop.send(true);
        }
        st.ended = true;
        st.generation += 1;
        let _ = stream.tx.send(Event::End(EndReason::Kicked));
        drop(st);
        drop(streams);
        tracing::info!(stream = name, "stream kicked by operator");
        Some(KickReport {
            stream: name.to_owned(),
            kicked: publisher.is_some(),
            players: stream.players.load(Ordering::Relaxed),
        })
    }

    /// Number of connected players.
    pub fn player_count(&self) -> usize {
        self.players.load(Ordering::Relaxed)
    }

    /// Stops every publisher and ends every stream for its players.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        let streams: Vec<Arc<Stream>> = self.registry().drain().map(|(_, s)| s).collect();
        self.metrics.streams.dec_by(streams.len() as i64);
        for stream in streams {
            let mut st = stream.lock();
            if let Some(p) = &st.publisher {
                let _ = p.stop.send(true);
            }
            st.ended = true;
            let _ = stream.tx.send(Event::End(EndReason::Shutdown));
        }
        self.timers.close();
        self.timers.wait().await;
    }

    fn unpublish(self: &Arc<Self>, stream: &Arc<Stream>, id: u64) {
        let mut st = stream.lock();
        if st.publisher.as_ref().map(|p| p.id) != Some(id) {
            return; // taken over: the new publisher owns the stream
        }
        st.publisher = None;
        st.generation += 1;
        let generation = st.generation;
        let never_started = st.timeline.last_video.is_none() && st.timeline.last_audio.is_none();
        drop(st);
        if self.shutting_down.load(Ordering::Relaxed) {
            return;
        }
        if never_started && stream.players.load(Ordering::Relaxed) == 0 {
            // Nothing was published and nobody waits: no grace period to keep.
            self.expire(stream, generation);
            return;
        }
        let grace = Duration::from_millis(self.config.publisher_grace_ms);
        tracing::info!(
            stream = stream.name,
            grace_ms = self.config.publisher_grace_ms,
            "publisher left; waiting for it to return"
        );
        let hub = self.clone();
        let stream = stream.clone();
        self.timers.spawn(async move {
            tokio::time::sleep(grace).await;
            hub.expire(&stream, generation);
        });
    }

    /// Ends `stream` if nothing happened since its publisher left.
    fn expire(&self, stream: &Arc<Stream>, generation: u64) {
        let mut streams = self.registry();
        let mut st = stream.lock();
        if st.generation != generation || st.publisher.is_some() || st.ended {
            return;
        }
        st.ended = true;
        if streams
            .get(&stream.name)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
        {
            streams.remove(&stream.name);
            self.metrics.streams.dec();
        }
        let _ = stream.tx.send(Event::End(EndReason::PublisherGone));
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

fn status(stream: &Stream) -> StreamStatus {
    let st = stream.lock();
    let meta = st
        .cache
        .metadata()
        .and_then(|m| flv::Metadata::parse(&m.tag.body).ok());
    let meta = meta.as_ref();
    let video = st
        .cache
        .video_sequence_header()
        .and_then(|f| f.tag.video())
        .map(|v| VideoStatus {
            codec: v.codec.name(),
            width: meta.and_then(|m| m.width),
            height: meta.and_then(|m| m.height),
            fps: meta.and_then(|m| m.framerate),
        });
    let audio = st
        .cache
        .audio_sequence_header()
        .and_then(|f| f.tag.audio())
        .map(|a| AudioStatus {
            codec: a.codec.name(),
            sample_rate: meta.and_then(|m| m.audio_sample_rate),
            channels: meta.and_then(|m| m.stereo).map(|s| if s { 2 } else { 1 }),
        });
    StreamStatus {
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
    }
}

impl Publisher {
    /// The stream being published.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

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
        let mut st = self.stream.lock();
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
        let ts = st.timeline.map(tag.tag_type, tag.timestamp);
        let frame = Frame::encode(&tag, ts);
        st.cache.push(frame.clone());
        // No receivers is fine: the tag is cached for the next player.
        let _ = self.stream.tx.send(Event::Frame(frame));
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
        assert_eq!(t.map(TagType::Script, 0), 0);
        assert_eq!(t.map(TagType::Video, 0), 5001);
        assert_eq!(t.map(TagType::Audio, 21), 5022);
        assert_eq!(t.map(TagType::Video, 40), 5041);
    }
}
