//! The registry of live streams ([`Streams`]): publish, play, kick, status,
//! grace periods and shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flv::{GopCache, GopCacheConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::budget::MediaBudget;
use super::frame::{EndReason, Entry, WireTag};
use super::ring::Ring;
use super::status::{KickReport, PeerStatus, StreamDetail, StreamStatus, seconds, status};
use super::stream::{
    ActivePublisher, PlayerGuard, Publisher, RateMeter, Stream, StreamState, Subscription,
    fix_preamble_timestamps,
};
use super::timeline::Timeline;
use super::writer::Writers;
use super::{PlayError, PlayerInfo, PublishError, PublisherInfo};
use crate::config::LiveConfig;
use crate::metrics::Metrics;
use crate::vocab::Protocol;

/// The registry of live streams.
#[derive(Debug)]
pub struct Streams {
    pub(super) config: LiveConfig,
    pub(super) streams: Mutex<HashMap<String, Arc<Stream>>>,
    pub(super) players: AtomicUsize,
    pub(super) next_id: AtomicU64,
    pub(super) shutting_down: std::sync::atomic::AtomicBool,
    /// Grace-period timers and coalescing tickers, one of each per stream at most;
    /// grace timers are cancelled by `cancel`, tickers end with their stream.
    pub(super) timers: TaskTracker,
    /// Cancelled when the hub shuts down: grace timers end at once.
    pub(super) cancel: CancellationToken,
    /// Bytes of cached and buffered media of all streams.
    pub(super) budget: MediaBudget,
    /// Streams, publishers, players and bytes in.
    pub(super) metrics: Arc<Metrics>,
    /// Publish bans set by a kick: a name or a client address, until when.
    pub(super) bans: Mutex<HashMap<Ban, Instant>>,
}

/// What a kick can ban from publishing for a while.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ban {
    /// The stream name: nobody may publish it.
    Name(String),
    /// The kicked publisher's address: it may publish nothing.
    Client(std::net::IpAddr),
}

/// Bans remembered at most (expired ones are dropped first); past it the oldest
/// goes. A ban is set only by an operator with the admin token.
pub const MAX_BANS: usize = 10_000;

/// What [`Streams::kick_and_ban`] bans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanScope {
    /// The stream name.
    Name,
    /// The kicked publisher's address.
    Client,
}

/// The longest ban a kick may set.
pub const MAX_BAN: Duration = Duration::from_secs(7 * 86_400);

impl Streams {
    /// A hub with these limits (and metrics of its own).
    pub fn new(config: LiveConfig) -> Arc<Streams> {
        Streams::with_metrics(config, Arc::new(Metrics::new()))
    }

    /// A hub with these limits, counting into `metrics`.
    pub fn with_metrics(config: LiveConfig, metrics: Arc<Metrics>) -> Arc<Streams> {
        Arc::new(Streams {
            config: config.clone(),
            streams: Mutex::new(HashMap::new()),
            players: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            shutting_down: false.into(),
            timers: TaskTracker::new(),
            cancel: CancellationToken::new(),
            bans: Mutex::new(HashMap::new()),
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
        if let Some(remaining) = self.banned(name, info.remote.ip()) {
            return Err(PublishError::Banned {
                seconds: remaining.as_secs().max(1),
            });
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
        st.announced = false;
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
            finished: false,
        })
    }

    fn new_stream(&self, name: &str) -> Stream {
        let now = Instant::now();
        let ring = Arc::new(Ring::new(
            self.config.player_backlog_tags,
            self.config.player_backlog_bytes,
            self.budget.clone(),
            std::time::Duration::from_millis(self.config.write_coalesce_ms),
        ));
        // One writer shard per worker thread: a stream's players are written on every core.
        let shards = tokio::runtime::Handle::try_current()
            .map(|rt| rt.metrics().num_workers())
            .unwrap_or(1);
        Stream {
            name: name.to_owned(),
            writers: Writers::new(ring.clone(), shards),
            ring,
            state: Mutex::new(StreamState {
                cache: GopCache::new(GopCacheConfig {
                    max_bytes: self.config.gop_max_bytes,
                    max_duration_ms: self.config.gop_max_duration_ms,
                }),
                cache_counted: 0,
                last_keyframe: None,
                keyframe_interval_ms: None,
                announced: false,
                audio_config: None,
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
    /// player at `0.0.0.0:0`. Network players use [`Streams::play_as`].
    pub fn play(self: &Arc<Self>, name: &str) -> Result<Subscription, PlayError> {
        let info = PlayerInfo {
            protocol: Protocol::Ws,
            remote: SocketAddr::from(([0, 0, 0, 0], 0)),
            edge: None,
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
        let mut preamble: Vec<WireTag> = st.cache.join().cloned().collect();
        let rx = stream.ring.subscribe();
        drop(st);
        if stream.ring.needs_ticker() {
            // The stream's one coalescing timer, from its first player on.
            self.timers.spawn(stream.ring.run_ticker());
        }
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

    /// Players connected to `name` (0 when it is not live).
    pub fn players_on(&self, name: &str) -> usize {
        self.registry()
            .get(name)
            .map_or(0, |s| s.players.load(Ordering::Relaxed))
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
        self.kick_and_ban(name, None)
    }

    /// [`Streams::kick`], then bans the name ([`Ban::Name`]) or the kicked
    /// publisher's address ([`Ban::Client`]) from publishing for `ban.1` (at most
    /// [`MAX_BAN`]): an encoder that reconnects on its own (OBS retries after 2 s)
    /// is refused until then.
    pub fn kick_and_ban(
        &self,
        name: &str,
        ban: Option<(BanScope, Duration)>,
    ) -> Option<KickReport> {
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
        // Counted before the end is pushed: a player that sees it leaves at once,
        // and the report is of the players this kick ended.
        let players = stream.players.load(Ordering::Relaxed);
        stream.ring.push(Entry::End(EndReason::Kicked));
        drop(streams);
        let banned = ban.and_then(|(scope, duration)| {
            let duration = duration.min(MAX_BAN);
            let key = match scope {
                BanScope::Name => Ban::Name(name.to_owned()),
                BanScope::Client => Ban::Client(publisher.as_ref()?.info.remote.ip()),
            };
            self.ban(key, duration);
            Some(duration.as_secs())
        });
        tracing::info!(stream = name, ban_s = banned, "stream kicked by operator");
        Some(KickReport {
            stream: name.to_owned(),
            kicked: publisher.is_some(),
            players,
            banned_s: banned,
        })
    }

    fn ban(&self, key: Ban, duration: Duration) {
        let now = Instant::now();
        let mut bans = self.bans.lock().unwrap_or_else(|e| e.into_inner());
        bans.retain(|_, until| *until > now);
        if bans.len() >= MAX_BANS
            && let Some(oldest) = bans.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone())
        {
            bans.remove(&oldest);
        }
        bans.insert(key, now + duration);
    }

    /// How long `name` or `ip` is still banned from publishing, if it is.
    fn banned(&self, name: &str, ip: std::net::IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let bans = self.bans.lock().unwrap_or_else(|e| e.into_inner());
        [Ban::Name(name.to_owned()), Ban::Client(ip)]
            .iter()
            .filter_map(|k| bans.get(k))
            .filter(|until| **until > now)
            .map(|until| *until - now)
            .max()
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
            stream.ring.push(Entry::End(EndReason::Shutdown));
        }
    }

    /// Ends a stream whose state a panic poisoned: out of the registry, players
    /// get [`EndReason::Failed`] (the ring has its own lock).
    pub(super) fn fail(&self, stream: &Arc<Stream>) {
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
            stream.ring.push(Entry::End(EndReason::Failed));
        }
    }

    pub(super) fn unpublish(self: &Arc<Self>, stream: &Arc<Stream>, id: u64, explicit: bool) {
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
        if explicit || (never_started && stream.players.load(Ordering::Relaxed) == 0) {
            // The publisher said it stopped (RTMP `FCUnpublish`/`deleteStream`):
            // players get the clean end now, not after a grace period meant for
            // network drops. Or nothing was published and nobody waits.
            drop(st);
            let reason = if explicit {
                EndReason::Unpublished
            } else {
                EndReason::PublisherGone
            };
            self.expire(stream, reason);
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
                self.expire(stream, EndReason::PublisherGone);
                if let Some(mut st) = stream.lock() {
                    st.grace_timer = false;
                }
                return;
            }
        }
    }

    /// Ends `stream` if it still has no publisher.
    fn expire(&self, stream: &Arc<Stream>, reason: EndReason) {
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
        stream.ring.push(Entry::End(reason));
        tracing::info!(
            stream = stream.name,
            reason = reason.as_str(),
            "stream ended"
        );
    }
}
