//! Server configuration: embedded defaults, an optional TOML file, CLI flags on top.
//!
//! Every limit the server enforces is a named field here with its default and the
//! reason for it. Durations are milliseconds (`*_ms`) so the TOML stays plain.

pub mod auth;
pub mod cidr;
pub mod cli;
pub mod cluster;
pub mod hooks;

pub use auth::AuthConfig;
pub use cidr::Cidr;
pub use cluster::ClusterConfig;
pub use hooks::HooksConfig;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a listener binds, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Listen on this address (port 0 picks a free port).
    On(SocketAddr),
    /// The listener is disabled.
    Off,
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        s.parse()
            .map(Listen::On)
            .map_err(|e| format!("`{s}` is not `off` or an address like 127.0.0.1:8080: {e}"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::On(addr) => write!(f, "{addr}"),
            Listen::Off => f.write_str("off"),
        }
    }
}

impl Serialize for Listen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole server configuration (`--config FILE`, TOML).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP/WebSocket listener. Default `0.0.0.0:8080`.
    pub http: Listen,
    /// RTMP listener. Default `0.0.0.0:1935`.
    pub rtmp: Listen,
    /// Directory whose files replace the web pages built into the binary (`/`,
    /// `/vendor/` included), for developing the pages without rebuilding. Default
    /// none: the pages and player libraries embedded at build time are served, so
    /// the binary needs no files beside it. A directory given here must exist.
    pub static_dir: Option<PathBuf>,
    /// `Access-Control-Allow-Origin` for HTTP-FLV and the API. Default `*`: browsers
    /// fetch HTTP-FLV cross-origin from pages hosted elsewhere.
    pub cors_origin: String,
    /// Maximum simultaneous TCP connections on the HTTP and TLS listeners
    /// together; past it new connections get `503`. Default 10,000: far above what a 2-core box serves at
    /// real-time bitrates, low enough to keep file descriptors and memory bounded.
    pub max_connections: usize,
    /// Listen backlog of the HTTP, TLS and RTMP listeners (the kernel caps it at
    /// `net.core.somaxconn`). Default 4,096: with the common 128, a few hundred
    /// players joining at once overflow the accept queue and wait a SYN retransmit
    /// (about 1 s) to get in.
    pub listen_backlog: u32,
    /// Time allowed to finish a graceful shutdown before connections are dropped.
    /// Default 5,000 ms.
    pub shutdown_timeout_ms: u64,
    /// Live relay settings (`[live]`).
    pub live: LiveConfig,
    /// WebRTC signaling settings (`[signal]`); see the `signaling` crate's `Config`.
    pub signal: signaling::Config,
    /// RTMP ingest limits and timeouts (`[rtmp_settings]`).
    pub rtmp_settings: RtmpConfig,
    /// TLS (https/wss) listener serving the same routes as `http`, or `off`.
    /// Default `off`; needs `tls_cert` and `tls_key`.
    pub tls_listen: Listen,
    /// PEM certificate chain for `tls_listen`, leaf first. Default none.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`. Default none.
    pub tls_key: Option<PathBuf>,
    /// Publish/play tokens (`[auth]`); off until a secret is set. Reloaded on SIGHUP.
    pub auth: auth::AuthConfig,
    /// `on_publish` / `on_play` / `on_unpublish` HTTP hooks (`[hooks]`). Reloaded on
    /// SIGHUP.
    pub hooks: hooks::HooksConfig,
    /// `Authorization: Bearer` token the admin routes (`/api/streams/NAME` GET and
    /// DELETE, `/api/rooms/ROOM`) require. Default none: the admin routes are
    /// closed (403 naming this setting); nothing that changes state or shows client
    /// addresses is open without a secret. Reloaded on SIGHUP.
    pub admin_token: Option<signaling::Secret>,
    /// Proxies (`10.0.0.0/8`, `127.0.0.1/32`, `::1/128`) whose `X-Forwarded-For`
    /// gives the client address; from anyone else the header is ignored. Trusted
    /// proxies are also exempt from `max_connections_per_ip`. Default empty.
    /// Reloaded on SIGHUP.
    pub trusted_proxies: Vec<String>,
    /// Connections one client IP may hold open on the HTTP and TLS listeners; past
    /// it new ones get `503`. Default 256: a viewing wall of dozens of players fits,
    /// one host cannot take the whole `max_connections`. Reloaded on SIGHUP.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a complete request head (request line and
    /// headers) and to finish a TLS handshake; slower connections are closed
    /// (slow-loris). Idle keep-alive connections are closed after it too. Default
    /// 10,000 ms. Reloaded on SIGHUP (new connections).
    pub header_read_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; larger gets `431`.
    /// Default 16,384: browsers' requests with cookies are a few KiB. Reloaded on
    /// SIGHUP (new connections).
    pub max_header_bytes: usize,
    /// Most header fields in one request; more gets `431`. Default 100 (hyper's).
    /// Reloaded on SIGHUP (new connections).
    pub max_headers: usize,
    /// Several nodes sharing one Redis (`[cluster]`). Off by default.
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: Listen::On(([0, 0, 0, 0], 8080).into()),
            rtmp: Listen::On(([0, 0, 0, 0], 1935).into()),
            static_dir: None,
            cors_origin: "*".to_owned(),
            max_connections: 10_000,
            listen_backlog: 4_096,
            shutdown_timeout_ms: 5_000,
            live: LiveConfig::default(),
            signal: signaling::Config::default(),
            rtmp_settings: RtmpConfig::default(),
            tls_listen: Listen::Off,
            tls_cert: None,
            tls_key: None,
            auth: auth::AuthConfig::default(),
            hooks: hooks::HooksConfig::default(),
            admin_token: None,
            trusted_proxies: Vec::new(),
            max_connections_per_ip: 256,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 16 << 10,
            max_headers: 100,
            cluster: ClusterConfig::default(),
        }
    }
}

/// RTMP ingest limits and timeouts (`[rtmp_settings]` in TOML; the listener address
/// is the top-level `rtmp` key). An RTMP message is one FLV tag body, so its size
/// limit is `live.max_tag_bytes`; a publisher's idle timeout is
/// `live.publisher_idle_timeout_ms`, as for HTTP publishers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Maximum simultaneous RTMP connections; past it new ones are closed at once
    /// (RTMP cannot say "busy" before its handshake). Default 1,000: each is a
    /// publisher, and 1,000 publishers of 2.5 Mbit/s are more than a box ingests.
    pub max_connections: usize,
    /// A client must complete the handshake (C0..C2) this soon after connecting.
    /// Default 5,000 ms: one round trip for a real encoder; reclaims port scanners
    /// and half-open connections quickly.
    pub handshake_timeout_ms: u64,
    /// A client must send `publish` this soon after connecting. Default 10,000 ms:
    /// encoders publish within a few round trips; idle connections are closed.
    pub publish_timeout_ms: u64,
    /// A write to a client (responses only: a few hundred bytes) that takes longer
    /// than this closes the connection. Default 5,000 ms.
    pub write_timeout_ms: u64,
    /// Largest chunk size a client may set. Default 65,536 (as SRS): encoders use
    /// 4,096 to 60,000; the reassembly buffer holds at most one chunk of input.
    pub max_chunk_size: u32,
    /// Chunk streams a client may use. Default 64: encoders use fewer than 10; each
    /// one keeps a header and may hold a partly received message.
    pub max_chunk_streams: usize,
    /// Largest RTMP message accepted before a publish is admitted (tokens and hooks
    /// checked). Default 65,536: `connect`/`publish` commands are a few hundred
    /// bytes. Partly received messages of an unadmitted connection are bounded by
    /// twice this (128 KiB), not by `live.max_tag_bytes`, so idle unauthenticated
    /// connections cannot pin tag-sized buffers. After the publish, messages may be
    /// up to `live.max_tag_bytes`.
    pub pre_publish_max_message_bytes: usize,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            max_connections: 1_000,
            handshake_timeout_ms: 5_000,
            publish_timeout_ms: 10_000,
            write_timeout_ms: 5_000,
            max_chunk_size: 65_536,
            max_chunk_streams: 64,
            pre_publish_max_message_bytes: 64 << 10,
        }
    }
}

/// Live relay limits and timings (`[live]` in TOML).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// How long players stay connected after their publisher drops, waiting for it to
    /// come back. Default 10,000 ms: covers an encoder restart or an OBS reconnect.
    pub publisher_grace_ms: u64,
    /// A publisher that sends no bytes for this long is cut off. Default 30,000 ms.
    pub publisher_idle_timeout_ms: u64,
    /// Largest FLV tag body accepted from a publisher. Default 8 MiB: a 4K keyframe
    /// is well under that; more is garbage or an attack.
    pub max_tag_bytes: usize,
    /// Largest WebSocket message a WebSocket publisher may send. Default 4 MiB.
    pub max_publish_message_bytes: usize,
    /// GOP cache bound in bytes (whole GOPs are evicted). Default 16 MiB: one GOP of
    /// a 20 Mbit/s stream with a 4 s keyframe interval.
    pub gop_max_bytes: usize,
    /// GOP cache bound in stream time. Default 10,000 ms.
    pub gop_max_duration_ms: u32,
    /// Tags a player may be behind the live edge before it skips to the next
    /// keyframe. This is the length of the stream's shared ring (tags are stored once
    /// for all players). Default 1,024: about 15 s of a 25 fps + AAC stream.
    pub player_backlog_tags: usize,
    /// Bytes of tags the stream's shared ring holds, whatever their count; a player
    /// further behind skips to the next keyframe. Default 16 MiB: 50 s of a
    /// 2.5 Mbit/s stream, 6 s of 20 Mbit/s. This (not the tag count) bounds what one
    /// stalled player can pin: 1,024 tags of up to `max_tag_bytes` would be 8 GiB.
    pub player_backlog_bytes: usize,
    /// Bytes of cached and buffered media (GOP caches and rings of all streams
    /// together). Past it new publishers are refused (HTTP 503, RTMP
    /// `NetStream.Publish.Failed`) and rings shrink to a quarter of
    /// `player_backlog_bytes`. Default 2 GiB: about 400 streams of 2.5 Mbit/s with
    /// full caches and rings; `max_streams` × (`gop_max_bytes` +
    /// `player_backlog_bytes`) would be 32 GiB.
    pub max_media_bytes: usize,
    /// A player that has not caught up with the live edge for this long is
    /// disconnected. Default 10,000 ms.
    pub player_max_behind_ms: u64,
    /// A single write to a player that takes longer than this disconnects it (a
    /// stalled reader). Default 10,000 ms.
    pub player_write_timeout_ms: u64,
    /// Bytes of tags gathered into one write to a player. Default 64 KiB: amortizes
    /// syscalls without delaying a live tag (only what is already queued is merged).
    pub player_write_batch_bytes: usize,
    /// The latency budget for writes: a stream shows its new tags to its players
    /// once per window, and each player writes the window's tags with one vectored
    /// write (WebSocket-FLV) or one HTTP chunk (HTTP-FLV). One timer per stream: a
    /// window opens with the first tag pushed after the last flush and ends this
    /// long after it, so no tag waits longer; a joining player's preamble (header,
    /// metadata, sequence headers, cached GOP) is written at once, never delayed.
    /// 0 = every tag is written as it comes; at most 1,000.
    ///
    /// Default 50 ms. On loopback a write costs about 9 µs of CPU whatever its size
    /// (syscall, socket wakeup, task wakeup) and the bytes only ~0.3 ms per MB, so
    /// the number of writes sets the cost of fan-out. Measured with 500 WebSocket
    /// players of a 2.5 Mbit/s stream (73 tags/s; README's benchmark table, medians
    /// of three rounds): 0 ms = 71 writes per player per second, 0.22 CPU s per
    /// delivered Gbit, latency p50/p99 3/8 ms; 20 ms = 42 writes, 0.15 CPU s/Gbit,
    /// 22/28 ms; 50 ms = 15 writes, 0.064 CPU s/Gbit, 30/56 ms. 50 ms adds about
    /// 27 ms on average, small beside a browser player's playback buffer, and takes
    /// fan-out CPU to 29 % of writing each tag; under CPU contention it also keeps
    /// players nearer the live edge (fewer, larger writes).
    pub write_coalesce_ms: u64,
    /// `TCP_NOTSENT_LOWAT` on every accepted connection: the most bytes the kernel
    /// keeps queued but unsent on a socket before it reports the socket as not
    /// writable. Without it a player's socket buffer (up to 4 MiB on Linux) hides
    /// seconds of backlog from the slow-player rules (skip to keyframe,
    /// `player_max_behind_ms`); with it, a player that cannot keep up is seen behind
    /// the ring within about this many bytes. Default 128 KiB (0.4 s at 2.5 Mbit/s);
    /// 0 leaves the kernel's default (unlimited).
    pub notsent_lowat_bytes: usize,
    /// Maximum live streams. Default 1,000.
    pub max_streams: usize,
    /// Maximum players across all streams. Default 10,000.
    pub max_players: usize,
    /// Maximum players on one stream. Default 5,000.
    pub max_players_per_stream: usize,
    /// Let a new publisher take over a name that is live (the old one is cut off)
    /// instead of refusing it with 409. Default false.
    pub allow_takeover: bool,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            publisher_grace_ms: 10_000,
            publisher_idle_timeout_ms: 30_000,
            max_tag_bytes: 8 << 20,
            max_publish_message_bytes: 4 << 20,
            gop_max_bytes: 16 << 20,
            gop_max_duration_ms: 10_000,
            player_backlog_tags: 1_024,
            player_backlog_bytes: 16 << 20,
            max_media_bytes: 2 << 30,
            player_max_behind_ms: 10_000,
            player_write_timeout_ms: 10_000,
            player_write_batch_bytes: 64 << 10,
            write_coalesce_ms: 50,
            notsent_lowat_bytes: 128 << 10,
            max_streams: 1_000,
            max_players: 10_000,
            max_players_per_stream: 5_000,
            allow_takeover: false,
        }
    }
}

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for [`Config`].
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML config file; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::read_table(path)?
            .try_into()
            .map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            })
    }

    /// Reads a TOML config file as a table (for `--set` overrides on top of it).
    pub fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks values that would make the server misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            let why = if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(ConfigError::Invalid(format!(
                "static_dir {}: {why} (leave static_dir unset to serve the pages built into the binary)",
                dir.display()
            )));
        }
        let live = &self.live;
        let positive = [
            ("live.max_tag_bytes", live.max_tag_bytes),
            (
                "live.max_publish_message_bytes",
                live.max_publish_message_bytes,
            ),
            ("live.player_backlog_tags", live.player_backlog_tags),
            (
                "live.player_write_batch_bytes",
                live.player_write_batch_bytes,
            ),
            ("live.max_streams", live.max_streams),
            ("live.max_players", live.max_players),
            ("live.max_players_per_stream", live.max_players_per_stream),
            ("max_connections", self.max_connections),
            (
                "rtmp_settings.max_connections",
                self.rtmp_settings.max_connections,
            ),
            (
                "rtmp_settings.max_chunk_size",
                self.rtmp_settings.max_chunk_size as usize,
            ),
            (
                "rtmp_settings.max_chunk_streams",
                self.rtmp_settings.max_chunk_streams,
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        const DAY_MS: u64 = 86_400_000;
        const MAX_WRITE_COALESCE_MS: u64 = 1_000;
        const GIB: usize = 1 << 30;
        let rtmp = &self.rtmp_settings;
        // Durations feed `Instant + Duration` and timers: past a day they are typos
        // (and past ~10^11 years they would panic). Zero where a zero cannot work.
        let durations = [
            ("shutdown_timeout_ms", self.shutdown_timeout_ms, 1),
            ("header_read_timeout_ms", self.header_read_timeout_ms, 1),
            ("live.publisher_grace_ms", live.publisher_grace_ms, 0),
            (
                "live.publisher_idle_timeout_ms",
                live.publisher_idle_timeout_ms,
                1,
            ),
            (
                "live.gop_max_duration_ms",
                u64::from(live.gop_max_duration_ms),
                1,
            ),
            ("live.player_max_behind_ms", live.player_max_behind_ms, 1),
            ("live.write_coalesce_ms", live.write_coalesce_ms, 0),
            (
                "live.player_write_timeout_ms",
                live.player_write_timeout_ms,
                1,
            ),
            (
                "rtmp_settings.handshake_timeout_ms",
                rtmp.handshake_timeout_ms,
                1,
            ),
            (
                "rtmp_settings.publish_timeout_ms",
                rtmp.publish_timeout_ms,
                1,
            ),
            ("rtmp_settings.write_timeout_ms", rtmp.write_timeout_ms, 1),
        ];
        for (name, value, min) in durations {
            if !(min..=DAY_MS).contains(&value) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between {min} and {DAY_MS} (one day), not {value}"
                )));
            }
        }
        if live.write_coalesce_ms > MAX_WRITE_COALESCE_MS {
            return Err(ConfigError::Invalid(format!(
                "live.write_coalesce_ms is a latency budget of at most {MAX_WRITE_COALESCE_MS} ms, not {}",
                live.write_coalesce_ms
            )));
        }
        // Sizes and counts: each bounds memory, tasks or file descriptors, so a
        // value past these is a mistake, not a plan.
        let bounded = [
            ("live.max_tag_bytes", live.max_tag_bytes, 256 << 20),
            (
                "live.max_publish_message_bytes",
                live.max_publish_message_bytes,
                256 << 20,
            ),
            ("live.gop_max_bytes", live.gop_max_bytes, 4 * GIB),
            (
                "live.player_backlog_bytes",
                live.player_backlog_bytes,
                4 * GIB,
            ),
            (
                "live.player_backlog_tags",
                live.player_backlog_tags,
                1 << 20,
            ),
            (
                "live.player_write_batch_bytes",
                live.player_write_batch_bytes,
                64 << 20,
            ),
            (
                "live.notsent_lowat_bytes",
                live.notsent_lowat_bytes,
                1 << 30,
            ),
            ("live.max_media_bytes", live.max_media_bytes, 1024 * GIB),
            ("live.max_streams", live.max_streams, 1_000_000),
            ("live.max_players", live.max_players, 10_000_000),
            (
                "live.max_players_per_stream",
                live.max_players_per_stream,
                10_000_000,
            ),
            ("max_connections", self.max_connections, 10_000_000),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip,
                10_000_000,
            ),
            (
                "rtmp_settings.max_connections",
                rtmp.max_connections,
                1_000_000,
            ),
            (
                "rtmp_settings.max_chunk_streams",
                rtmp.max_chunk_streams,
                65_600,
            ),
            (
                "rtmp_settings.max_chunk_size",
                rtmp.max_chunk_size as usize,
                0x7FFF_FFFF,
            ),
            (
                "rtmp_settings.pre_publish_max_message_bytes",
                rtmp.pre_publish_max_message_bytes,
                16 << 20,
            ),
            ("max_header_bytes", self.max_header_bytes, 1 << 20),
            ("max_headers", self.max_headers, 10_000),
        ];
        for (name, value, max) in bounded {
            if value > max {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at most {max}, not {value}"
                )));
            }
        }
        if live.max_media_bytes == 0 || rtmp.pre_publish_max_message_bytes == 0 {
            return Err(ConfigError::Invalid(
                "live.max_media_bytes and rtmp_settings.pre_publish_max_message_bytes \
                 must be greater than 0"
                    .into(),
            ));
        }
        validate_access(self).map_err(ConfigError::Invalid)?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        self.signal
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }
}

/// Checks the access settings: tokens, hooks, proxies, admin token, limits.
fn validate_access(config: &Config) -> Result<(), String> {
    config.auth.validate()?;
    config.hooks.validate()?;
    for p in &config.trusted_proxies {
        p.parse::<Cidr>()
            .map_err(|e| format!("trusted_proxies: {e}"))?;
    }
    if config
        .admin_token
        .as_ref()
        .is_some_and(|t| t.expose().is_empty())
    {
        return Err("admin_token must not be empty".into());
    }
    let positive = [
        ("max_connections_per_ip", config.max_connections_per_ip),
        ("max_header_bytes", config.max_header_bytes),
        ("max_headers", config.max_headers),
        (
            "header_read_timeout_ms",
            usize::from(config.header_read_timeout_ms > 0),
        ),
    ];
    for (name, value) in positive {
        if value == 0 {
            return Err(format!("{name} must be greater than 0"));
        }
    }
    if config.tls_listen != Listen::Off && (config.tls_cert.is_none() || config.tls_key.is_none()) {
        return Err("tls_listen needs both tls_cert and tls_key".into());
    }
    Ok(())
}

/// Whether `new` differs from `old` outside the reloadable keys.
pub fn needs_restart(old: &Config, new: &Config) -> bool {
    fn fixed(c: &Config) -> String {
        let mut c = c.clone();
        let d = Config::default();
        c.auth = d.auth;
        c.hooks = d.hooks;
        c.admin_token = d.admin_token;
        c.trusted_proxies = d.trusted_proxies;
        c.max_connections_per_ip = d.max_connections_per_ip;
        c.header_read_timeout_ms = d.header_read_timeout_ms;
        c.max_header_bytes = d.max_header_bytes;
        c.max_headers = d.max_headers;
        toml::to_string(&c).unwrap_or_default()
    }
    fixed(old) != fixed(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = toml::to_string(&Config::default()).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.http, Config::default().http);
        assert_eq!(back.live.publisher_grace_ms, 10_000);
    }

    #[test]
    fn partial_file_keeps_defaults_and_rejects_unknown_keys() {
        let c: Config =
            toml::from_str("http = \"127.0.0.1:0\"\n[live]\npublisher_grace_ms = 5\n").unwrap();
        assert_eq!(c.http, Listen::On("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.rtmp, Config::default().rtmp);
        assert_eq!(c.live.publisher_grace_ms, 5);
        assert!(toml::from_str::<Config>("htp = \"x\"").is_err());
        assert!(toml::from_str::<Config>("rtmp = \"off\"").unwrap().rtmp == Listen::Off);
        assert!(toml::from_str::<Config>("rtmp = \"nonsense\"").is_err());
    }

    #[test]
    fn zero_limits_are_rejected() {
        let mut c = Config::default();
        c.live.max_players = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn absurd_values_are_rejected_with_the_key_named() {
        Config::default().validate().unwrap();
        type Case = (&'static str, fn(&mut Config));
        let cases: [Case; 6] = [
            ("shutdown_timeout_ms", |c| c.shutdown_timeout_ms = u64::MAX),
            ("live.player_write_timeout_ms", |c| {
                c.live.player_write_timeout_ms = 0
            }),
            ("live.player_backlog_tags", |c| {
                c.live.player_backlog_tags = usize::MAX
            }),
            ("rtmp_settings.publish_timeout_ms", |c| {
                c.rtmp_settings.publish_timeout_ms = 1 << 60
            }),
            ("max_connections", |c| c.max_connections = usize::MAX),
            ("signal.resume_grace_ms", |c| {
                c.signal.resume_grace_ms = u64::MAX
            }),
        ];
        for (key, set) in cases {
            let mut c = Config::default();
            set(&mut c);
            let e = c.validate().expect_err(key).to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
