//! Every limit and timing of signaling, in one struct (TOML table `[signal]`).
//!
//! Durations are `u64` milliseconds. Fields marked *server* are enforced by the
//! async shell that owns the sockets (wsrelay's `src/signal.rs`); the rest by
//! [`Room`](crate::Room).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string (JWT or TURN secret) whose `Debug` output is redacted so
/// it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Signaling limits and settings. `Config::default()` is what wsrelay runs with
/// when the config file has no `[signal]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Time a new connection has to send `join` before it is closed (4002).
    /// Default 10 000: generous for a page that fetches a token first, short
    /// enough that idle half-open sockets cannot pile up.
    pub join_timeout_ms: u64,
    /// How long a peer whose connection dropped (without `leave`) stays in the
    /// room as reconnecting, with its messages queued, before the others get
    /// `peer-left {reason:"timeout"}`. Default 15 000: covers a page reload or a
    /// Wi-Fi→cellular switch; 0 removes dropped peers at once.
    pub resume_grace_ms: u64,
    /// *Server:* interval of WebSocket pings, also sent as `welcome.heartbeat_ms`
    /// so browsers send JSON `ping` as often. Default 20 000: below the 30–60 s
    /// idle timeouts of common proxies and NATs.
    pub heartbeat_interval_ms: u64,
    /// *Server:* a connection that sends nothing (no message, no pong) for this
    /// long is closed (4005). Default 50 000: two missed heartbeats plus slack.
    pub idle_timeout_ms: u64,
    /// Largest accepted message, in bytes of JSON text. Larger messages get
    /// `too-large` and a close (4009). Default 65 536: an SDP with many media
    /// sections is ~10 KiB; this leaves room without letting one client make the
    /// server buffer megabytes.
    pub max_message_bytes: usize,
    /// Largest `join.meta`, in bytes of JSON. Default 4 096: meta is repeated in
    /// every `welcome`, so it must stay small.
    pub max_meta_bytes: usize,
    /// Peers per room, reconnecting ones included. Default 32: a full mesh of
    /// 32 browsers is already beyond what WebRTC meshes handle well.
    pub max_peers_per_room: usize,
    /// *Server:* rooms that may exist at once; further upgrades get 503.
    /// Default 10 000.
    pub max_rooms: usize,
    /// *Server:* signaling connections that may be open at once; further
    /// upgrades get 503. Default 10 000.
    pub max_connections: usize,
    /// Messages held for one reconnecting peer; when full, further senders
    /// get `queue-full`. Default 256: a full renegotiation with trickled
    /// candidates with a few peers fits.
    pub max_queued_per_peer: usize,
    /// Bytes held for one reconnecting peer (same rule as the count).
    /// Default 1 MiB.
    pub max_queued_bytes_per_peer: usize,
    /// Token bucket size per connection: messages that may arrive back to back.
    /// Default 200: trickle ICE sends dozens of candidates at once per peer.
    pub rate_burst: u32,
    /// Token bucket refill per connection, messages per second. Default 50.
    /// Must be at least 1.
    pub rate_per_second: u32,
    /// Rate-limited messages a connection may send before it is closed (4029).
    /// The count restarts when its bucket has refilled completely, so a
    /// burst now and then is forgiven. Default 20.
    pub flood_limit: u32,
    /// *Server:* messages queued towards one connection's socket; a client
    /// that reads slower than that is closed (4006). Default 512.
    pub max_outbound_messages: usize,
    /// *Server:* bytes of messages queued towards one connection's socket, a
    /// bound beside `max_outbound_messages` (512 messages of up to
    /// `max_message_bytes` would be 32 MiB). Past it the client is closed (4006).
    /// Messages relayed to several peers share one copy. Default 1 MiB: a
    /// `welcome` of a full room plus hundreds of candidates.
    pub max_outbound_bytes: usize,
    /// *Server:* capacity of each room's inbox; connections wait when it is full,
    /// which slows fast senders instead of growing memory. Default 1 024.
    pub room_inbox: usize,
    /// *Server:* a socket write that does not complete within this time means
    /// the client stopped reading; the connection is dropped. Default 10 000.
    pub write_timeout_ms: u64,
    /// JWT HS256 secret; `None` (default) disables auth. With a secret, `join`
    /// needs a `token` whose claims are `room` (this room), `exp` (unix seconds)
    /// and optionally `peer` (the only peer id it may use).
    pub jwt_secret: Option<Secret>,
    /// Clock skew allowed when checking `exp`. Default 30 000.
    pub jwt_leeway_ms: u64,
    /// Shared secret of a TURN server in coturn's `use-auth-secret` mode; with
    /// `turn_urls` it makes `welcome.ice_servers` carry TURN REST credentials.
    /// Default `None`.
    pub turn_secret: Option<Secret>,
    /// TURN URLs (`turn:host:3478?transport=udp`, `turns:host:5349`). Default empty.
    pub turn_urls: Vec<String>,
    /// Lifetime of TURN credentials. Default 86 400 000 (one day, coturn's
    /// usual setting): long enough for a call, short enough to be revocable.
    pub turn_ttl_ms: u64,
    /// STUN URLs for `welcome.ice_servers`. Default empty: the server does not
    /// choose a third-party STUN server for its users.
    pub stun_urls: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            join_timeout_ms: 10_000,
            resume_grace_ms: 15_000,
            heartbeat_interval_ms: 20_000,
            idle_timeout_ms: 50_000,
            max_message_bytes: 65_536,
            max_meta_bytes: 4_096,
            max_peers_per_room: 32,
            max_rooms: 10_000,
            max_connections: 10_000,
            max_queued_per_peer: 256,
            max_queued_bytes_per_peer: 1 << 20,
            rate_burst: 200,
            rate_per_second: 50,
            flood_limit: 20,
            max_outbound_messages: 512,
            max_outbound_bytes: 1 << 20,
            room_inbox: 1_024,
            write_timeout_ms: 10_000,
            jwt_secret: None,
            jwt_leeway_ms: 30_000,
            turn_secret: None,
            turn_urls: Vec::new(),
            turn_ttl_ms: 86_400_000,
            stun_urls: Vec::new(),
        }
    }
}

/// A config value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit that must be positive is zero.
    #[error("signal.{0} must be greater than 0")]
    Zero(&'static str),
    /// `idle_timeout_ms` must exceed `heartbeat_interval_ms`, or every
    /// connection would be closed between two pings.
    #[error("signal.idle_timeout_ms must be greater than signal.heartbeat_interval_ms")]
    IdleBelowHeartbeat,
    /// A value past its sane maximum (durations over a week would overflow
    /// deadlines; counts and sizes past the bound are a typo, not a plan).
    #[error("signal.{name} must be at most {max}")]
    TooLarge {
        /// The setting.
        name: &'static str,
        /// Its largest accepted value.
        max: u64,
    },
    /// `turn_urls` without `turn_secret` (or the reverse).
    #[error("signal.turn_urls and signal.turn_secret must be set together")]
    TurnHalfConfigured,
}

impl Config {
    /// Check that the values can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, u64); 13] = [
            ("join_timeout_ms", self.join_timeout_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("max_message_bytes", self.max_message_bytes as u64),
            ("max_peers_per_room", self.max_peers_per_room as u64),
            ("max_rooms", self.max_rooms as u64),
            ("max_connections", self.max_connections as u64),
            ("rate_burst", u64::from(self.rate_burst)),
            ("rate_per_second", u64::from(self.rate_per_second)),
            ("max_outbound_messages", self.max_outbound_messages as u64),
            ("max_outbound_bytes", self.max_outbound_bytes as u64),
            ("room_inbox", self.room_inbox as u64),
            ("write_timeout_ms", self.write_timeout_ms),
            ("turn_ttl_ms", self.turn_ttl_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        const WEEK_MS: u64 = 7 * 86_400_000;
        let bounded: [(&'static str, u64, u64); 14] = [
            ("join_timeout_ms", self.join_timeout_ms, WEEK_MS),
            ("resume_grace_ms", self.resume_grace_ms, WEEK_MS),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms, WEEK_MS),
            ("idle_timeout_ms", self.idle_timeout_ms, WEEK_MS),
            ("write_timeout_ms", self.write_timeout_ms, WEEK_MS),
            ("jwt_leeway_ms", self.jwt_leeway_ms, WEEK_MS),
            ("turn_ttl_ms", self.turn_ttl_ms, 365 * 86_400_000),
            ("max_message_bytes", self.max_message_bytes as u64, 16 << 20),
            (
                "max_peers_per_room",
                self.max_peers_per_room as u64,
                100_000,
            ),
            ("max_rooms", self.max_rooms as u64, 10_000_000),
            ("max_connections", self.max_connections as u64, 10_000_000),
            (
                "max_outbound_messages",
                self.max_outbound_messages as u64,
                1 << 20,
            ),
            (
                "max_outbound_bytes",
                self.max_outbound_bytes as u64,
                1 << 30,
            ),
            ("room_inbox", self.room_inbox as u64, 1 << 20),
        ];
        if let Some((name, _, max)) = bounded.iter().find(|(_, v, max)| v > max) {
            return Err(ConfigError::TooLarge { name, max: *max });
        }
        if self.idle_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::IdleBelowHeartbeat);
        }
        if self.turn_secret.is_some() == self.turn_urls.is_empty() {
            return Err(ConfigError::TurnHalfConfigured);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_secrets_redacted() {
        let c = Config {
            jwt_secret: Some(Secret::new("hunter2")),
            ..Config::default()
        };
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn partial_json_fills_defaults_and_rejects_typos() {
        let c: Config =
            serde_json::from_str(r#"{"max_peers_per_room": 4, "jwt_secret": "s"}"#).unwrap();
        assert_eq!(c.max_peers_per_room, 4);
        assert_eq!(c.join_timeout_ms, 10_000);
        assert_eq!(c.jwt_secret.unwrap().expose(), "s");
        assert!(serde_json::from_str::<Config>(r#"{"max_peer_per_room": 4}"#).is_err());
    }

    #[test]
    fn invalid_combinations() {
        let c = Config {
            rate_per_second: 0,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("rate_per_second")));
        let c = Config {
            idle_timeout_ms: 1_000,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::IdleBelowHeartbeat));
        let c = Config {
            turn_urls: vec!["turn:x".into()],
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::TurnHalfConfigured));
    }
}
