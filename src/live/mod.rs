//! Live streams: the registry, each stream's state, and the fan-out of its tags.
//!
//! Each [`stream::Stream`] owns its codec state and GOP cache ([`flv::GopCache`])
//! and a fan-out [`ring::Ring`] of [`WireTag`]s bounded in tags and bytes. A frame
//! is encoded once, at ingest, into the exact FLV bytes a player receives (the
//! tag body is copied once there, under the stream's lock); every player writes
//! that same reference-counted `Bytes`, so a tag is stored once however many
//! players read it.
//!
//! Locking: one `std::sync::Mutex` per stream serializes "push a tag" against "a
//! player joins" (snapshot of the cache + subscription to the ring), so a joiner
//! never misses or repeats a tag. It is never held across an `.await`; metadata is
//! parsed before it is taken, and status requests read a summary parsed once.
//!
//! Slow players cannot slow anyone down: the ring never waits for a reader. A reader
//! that falls more than `player_backlog_tags` (or `player_backlog_bytes`) behind is
//! told how many tags it missed and skips to the next keyframe (see
//! [`egress`]).
//!
//! Memory: every GOP cache and ring counts its bytes into one [`MediaBudget`]
//! (`live.max_media_bytes`). Past it, new publishers are refused (503) and rings
//! give back what they can; each stream's own bounds (`gop_max_bytes`,
//! `player_backlog_bytes`) hold whatever the budget.
//!
//! A panic while a stream's state is locked (a bug) poisons that stream: it ends
//! for its players at once ([`EndReason::Failed`]) instead of limping on with state
//! a half-done update may have left inconsistent; other streams are untouched.

//!
//! - [`registry`]: the registry ([`Streams`]); [`stream`]: one stream, its
//!   [`Publisher`] and a player's [`Subscription`]; [`frame`]: what players receive;
//!   [`ring`]: the byte-bounded fan-out; [`timeline`]: timestamps; [`budget`]: the
//!   media memory budget; [`status`]: what the API shows; [`writer`]: the shards
//!   that write a stream's players at the live edge.
//! - [`socket`]: a plain TCP socket hyper shares with an HTTP-FLV player's writers.
//! - [`ingest`]: FLV byte streams (HTTP bodies, WebSocket messages) into a
//!   [`Publisher`]; [`egress`]: the player loop and its WebSocket and HTTP sinks.
//! - [`directory`]: where a stream's publisher is (the seam a cluster fills in).

pub mod budget;
pub mod directory;
pub mod egress;
pub mod frame;
pub mod ingest;
pub mod registry;
pub mod ring;
pub mod socket;
pub mod status;
pub mod stream;
pub mod timeline;
pub mod writer;

use std::net::SocketAddr;

pub use budget::MediaBudget;
pub use frame::{EndReason, Entry, WireTag};
pub use registry::{Ban, BanScope, Streams};
pub use status::{KickReport, StreamDetail, StreamStatus};
pub use stream::{Publisher, Subscription};

use crate::vocab::Protocol;

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
    /// The cluster node this player pulls the stream for (an edge), if it is one.
    pub edge: Option<String>,
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
    /// The cluster's directory (Redis) is unavailable, so the name's cluster-wide
    /// lease cannot be taken (HTTP 503, RTMP `NetStream.Publish.Failed`).
    #[error("cluster directory unavailable; try again later")]
    DirectoryUnavailable,
    /// An operator's kick banned this name or client from publishing (HTTP 403,
    /// RTMP `NetStream.Publish.Rejected`).
    #[error("publishing refused by an operator for another {seconds} s")]
    Banned {
        /// Seconds left.
        seconds: u64,
    },
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

impl PublishError {
    /// What an HTTP or WebSocket publisher is told: 409 for a name in use, 503
    /// otherwise (limits, budget, shutdown: try again later).
    pub fn http_status(&self) -> hyper::StatusCode {
        match self {
            PublishError::AlreadyPublishing(_) => hyper::StatusCode::CONFLICT,
            PublishError::Banned { .. } => hyper::StatusCode::FORBIDDEN,
            _ => hyper::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable label (logs, rate-limited refusal lines).
    pub fn label(&self) -> &'static str {
        match self {
            PublishError::AlreadyPublishing(_) => "already_publishing",
            PublishError::TooManyStreams(_) => "too_many_streams",
            PublishError::ShuttingDown => "shutting_down",
            PublishError::MediaBudget { .. } => "media_budget",
            PublishError::Banned { .. } => "banned",
            PublishError::DirectoryUnavailable => "directory_unavailable",
        }
    }

    /// The RTMP `onStatus` code an RTMP publisher is told.
    pub fn rtmp_code(&self) -> &'static str {
        match self {
            PublishError::AlreadyPublishing(_) => "NetStream.Publish.BadName",
            PublishError::Banned { .. } => "NetStream.Publish.Rejected",
            _ => "NetStream.Publish.Failed",
        }
    }
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

impl PlayError {
    /// What an HTTP-FLV or WebSocket-FLV player is told: 404 for a stream that is
    /// not live (the player page retries), 503 for limits.
    pub fn http_status(&self) -> hyper::StatusCode {
        match self {
            PlayError::NotFound(_) => hyper::StatusCode::NOT_FOUND,
            _ => hyper::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
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
