//! WebRTC signaling for wsrelay, sans-IO.
//!
//! This crate is the whole signaling protocol (v1, see `README.md` next to this
//! crate) and the room logic as a deterministic state machine. It opens no
//! sockets, spawns no tasks and reads no clock: time is passed in as an
//! [`Instant`](std::time::Instant), unix time comes from a [`WallClock`]
//! anchored by the caller, randomness from a seed. The async shell
//! (wsrelay's `src/signal.rs`) owns one [`Room`] per room in one task and does
//! only I/O.
//!
//! # Driving a room
//!
//! Feed [`Input`]s to [`Room::handle`], perform every [`Output`] in order, and
//! deliver [`Input::Tick`] when [`Room::poll_timeout`] passes:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use signaling::{Config, Input, Output, Room, WallClock};
//!
//! let t0 = Instant::now();
//! let config = Arc::new(Config::default());
//! let mut room = Room::new("lobby", config, WallClock::new(t0, 1_700_000_000_000), [7; 32]);
//!
//! // Two WebSockets connect (ConnIds are the shell's) and join.
//! room.handle(t0, Input::Connect { conn: 1 });
//! room.handle(t0, Input::Text { conn: 1, text: r#"{"type":"join","peer":"alice"}"#.into() });
//! room.handle(t0, Input::Connect { conn: 2 });
//! room.handle(t0, Input::Text { conn: 2, text: r#"{"type":"join","peer":"bob"}"#.into() });
//! // Bob (the later joiner, hence the polite side) sends an offer to alice.
//! room.handle(t0, Input::Text {
//!     conn: 2,
//!     text: r#"{"type":"offer","to":"alice","sdp":{"type":"offer","sdp":"v=0…"}}"#.into(),
//! });
//!
//! let mut to_alice = Vec::new();
//! while let Some(out) = room.poll_output() {
//!     match out {
//!         Output::Send { conn: 1, text } => to_alice.push(text), // an Arc<str>
//!         Output::Send { .. } => {}                  // write to that socket
//!         Output::Close { conn, reason } => {        // close frame, then drop
//!             let _ = (conn, reason.code(), reason.reason());
//!         }
//!         Output::Event(event) => { let _ = event; } // tracing / metrics
//!         _ => {}
//!     }
//! }
//! assert!(to_alice[0].starts_with(r#"{"type":"welcome","protocol":1,"peer":"alice""#));
//! assert_eq!(&*to_alice[1], r#"{"type":"peer-joined","peer":"bob","polite":false}"#);
//! assert_eq!(&*to_alice[2], r#"{"type":"offer","from":"bob","sdp":{"type":"offer","sdp":"v=0…"}}"#);
//!
//! // Bob's socket drops: he stays as reconnecting until the grace period ends.
//! room.handle(t0, Input::Disconnect { conn: 2 });
//! let deadline = room.poll_timeout().unwrap();
//! assert_eq!(deadline, t0 + Duration::from_millis(15_000));
//! room.handle(deadline, Input::Tick);
//! let last = room.drain_outputs().filter_map(|o| match o {
//!     Output::Send { text, .. } => Some(text),
//!     _ => None,
//! }).last();
//! assert_eq!(&*last.unwrap(), r#"{"type":"peer-left","peer":"bob","reason":"timeout"}"#);
//! ```
//!
//! # Panic policy
//!
//! Nothing a client sends can make this crate panic; a panic is a bug. The
//! few `expect`s cover invariants (serializing our own types, HMAC key sizes)
//! and say why they hold.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod config;
pub mod protocol;
mod room;

pub use auth::{Claims, WallClock};
pub use config::{Config, ConfigError, Secret};
pub use protocol::{CloseReason, ErrorCode, LeaveReason, SignalError, is_valid_id};
pub use room::{ConnId, Event, Input, Output, PeerRecord, Restore, Room, RoomSummary};
