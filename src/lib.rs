//! wsrelay: a live FLV relay (WebSocket-FLV and HTTP-FLV players; HTTP, WebSocket and
//! RTMP publishers) and a WebRTC signaling server, in one process.
//!
//! The format and protocol rules live in the pure crates [`flv`] and `signaling`;
//! this crate is the I/O shell around them:
//!
//! - [`config`] / [`cli`]: embedded defaults, TOML file, flags.
//! - [`server`]: listeners, the HTTP router, lifecycle and graceful shutdown.
//! - [`hub`]: the registry of live streams and the shared fan-out ring.
//! - [`ingest`]: HTTP and WebSocket publishers. [`egress`]: players.
//! - [`rtmp`]: RTMP publishers (OBS, ffmpeg).

pub mod admission;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod egress;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod policy;
pub mod ring;
pub mod rtmp;
pub mod server;
pub mod signal;
pub mod tls;
