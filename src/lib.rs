//! wsrelay: a live FLV relay (WebSocket-FLV and HTTP-FLV players; HTTP, WebSocket and
//! RTMP publishers) and a WebRTC signaling server, in one process.
//!
//! The format and protocol rules live in the pure crates [`flv`] and `signaling`
//! (and the pure RTMP modules [`rtmp::chunk`], [`rtmp::command`],
//! [`rtmp::session`]); this crate is the I/O shell around them, in layers whose
//! dependencies point one way:
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | shared vocabulary | [`vocab`], [`config`], [`metrics`] | words every layer uses; every setting and its validation; Prometheus families |
//! | domains | [`access`], [`live`], `signal` | who may do what; live streams; signaling rooms |
//! | shared state | `state` | what every handler shares (`state::AppState`) |
//! | edges | `http`, [`rtmp`], `net` | HTTP routes, the RTMP connection driver, listeners |
//! | composition root | [`app`] | building, reloading and shutting down the whole |
//!
//! # One tag, from an RTMP socket to a WebSocket player
//!
//! 1. `net`'s accept loop admits the socket (`access::admission`) and hands it
//!    to [`rtmp`]'s connection driver, which feeds the bytes to a pure
//!    [`rtmp::session::Session`]; its [`rtmp::chunk::ChunkReader`] reassembles
//!    messages and [`rtmp::command::Command`] decodes `connect`/`publish` with
//!    bounds.
//! 2. On `publish` the driver asks `access::policy::admit` (tokens, hooks), then
//!    [`live::Streams::publish`] for a [`live::Publisher`].
//! 3. Each audio/video message becomes an [`flv::Tag`];
//!    [`live::Publisher::push`] maps its timestamp ([`live::timeline`]), caches it
//!    in the GOP cache, and pushes one [`live::WireTag`] (15 new bytes around the shared body) to the stream's
//!    byte-bounded [`live::ring::Ring`].
//! 4. A WebSocket player, upgraded by `http::live`, runs
//!    `live::egress::run_player`: it wrote the FLV header and the cached GOP at
//!    join, then takes whatever the ring holds for it and writes it with one
//!    vectored write (no payload copy), skipping to the next keyframe if it fell
//!    behind. At the live edge it hands its writes to one of the stream's
//!    [`live::writer`] shards, which writes the tag to every such player with one
//!    non-blocking vectored write each, and gives a player whose socket is full
//!    back to its task.
//!
//! # One signaling message, from sender to receiver
//!
//! 1. `http::signal` upgrades `/signal/ROOM` and admits the connection with
//!    `signal::Rooms`, which routes it to the room's one task.
//! 2. The connection task forwards each text frame to the room task, which feeds
//!    the pure `signaling::Room` (rate limit, parse, stamp `from`).
//! 3. The room's outputs go to the receivers' bounded outbound queues (one shared
//!    copy of the text); each receiver's connection task writes its queue.
#![warn(unreachable_pub)]

pub mod access;
pub mod app;
pub mod cluster;
pub mod config;
pub(crate) mod http;
pub mod live;
pub mod metrics;
pub(crate) mod net;
pub mod rtmp;
pub(crate) mod signal;
pub(crate) mod state;
pub mod vocab;
