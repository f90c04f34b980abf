//! Wire format of signaling protocol v1: what clients send, what the server
//! sends, the stable error codes and the WebSocket close codes.
//!
//! Every message is one UTF-8 JSON object in one WebSocket text frame, with a
//! `type` in kebab-case. Parsing is strict: unknown fields, duplicate fields and
//! fields of the wrong type are rejected with a typed [`SignalError`] whose
//! [`code`](SignalError::code) is what the client sees. Payload fields (`sdp`,
//! `candidate`, `data`, `meta`) are kept as raw JSON and pass through the server
//! byte for byte.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Version of the protocol this crate speaks; sent in `welcome.protocol`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest peer id or room name, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Longest accepted `resume` session token, in bytes (issued tokens are 43).
pub const MAX_SESSION_LEN: usize = 128;

/// Most fields one client message may have; no message type defines more than
/// six, so anything beyond is garbage and is rejected before it is stored.
const MAX_FIELDS: usize = 8;

/// Whether `s` is a valid peer id or room name: `[A-Za-z0-9._-]{1,64}`.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A message from a client, parsed and validated by [`parse`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `{type:"join", peer?, token?, meta?, resume?}`: enter the room or resume a
    /// session. Must be the first message (only `ping` may come before it).
    Join(Join),
    /// `{type:"offer", to, sdp}`: an SDP offer for peer `to`.
    Offer {
        /// Receiving peer id.
        to: String,
        /// The session description, any JSON value, passed through unchanged.
        sdp: Box<RawValue>,
    },
    /// `{type:"answer", to, sdp}`: an SDP answer for peer `to`.
    Answer {
        /// Receiving peer id.
        to: String,
        /// The session description, any JSON value, passed through unchanged.
        sdp: Box<RawValue>,
    },
    /// `{type:"candidate", to, candidate}`: a trickled ICE candidate for `to`.
    Candidate {
        /// Receiving peer id.
        to: String,
        /// The candidate, any JSON value (`null` marks end of candidates).
        candidate: Box<RawValue>,
    },
    /// `{type:"message", to?, data}`: application data for one peer, or for
    /// every other peer of the room when `to` is absent.
    Message {
        /// Receiving peer id; `None` broadcasts.
        to: Option<String>,
        /// Any JSON value, passed through unchanged.
        data: Box<RawValue>,
    },
    /// `{type:"leave"}`: leave the room for good; the server closes with 1000.
    Leave,
    /// `{type:"ping"}`: the server answers `pong` (browsers cannot see
    /// WebSocket pings).
    Ping,
}

impl ClientMessage {
    /// The `type` string of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join(_) => "join",
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Message { .. } => "message",
            ClientMessage::Leave => "leave",
            ClientMessage::Ping => "ping",
        }
    }
}

/// Fields of a `join` message.
#[derive(Default)]
pub struct Join {
    /// Requested peer id (`[A-Za-z0-9._-]{1,64}`); the server generates one when absent.
    pub peer: Option<String>,
    /// A JWT (HS256) when the server requires auth.
    pub token: Option<String>,
    /// Application data shown to the other peers (bounded by `max_meta_bytes`).
    pub meta: Option<Box<RawValue>>,
    /// A session token from an earlier `welcome`, to resume that peer.
    pub resume: Option<String>,
}

impl fmt::Debug for Join {
    // Hand-written so that tokens and sessions never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Join")
            .field("peer", &self.peer)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("meta", &self.meta)
            .field("resume", &self.resume.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A parsed client message with the client's optional `id`.
#[derive(Debug)]
pub struct Request {
    /// The client's `id` (a JSON string or number), echoed in errors about
    /// this message and in `pong`.
    pub id: Option<Box<RawValue>>,
    /// The message.
    pub message: ClientMessage,
}

/// Why a client message was refused, with the `id` to echo if one was readable.
#[derive(Debug)]
pub struct Rejected {
    /// The client's `id`, if the message got far enough to read it.
    pub id: Option<Box<RawValue>>,
    /// What was wrong.
    pub error: SignalError,
}

/// Stable error codes, sent as `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not a JSON object, a field of the wrong type or shape, an unknown or
    /// duplicate field, a binary frame or a text frame that is not UTF-8.
    BadJson,
    /// `type` is not a message of protocol v1.
    UnknownType,
    /// A required field (`type`, `to`, `sdp`, `candidate`, `data`) is absent.
    MissingField,
    /// The message (or `join.meta`) exceeds its size limit.
    TooLarge,
    /// The connection sends faster than its token bucket allows.
    RateLimited,
    /// The room has `max_peers_per_room` peers already.
    RoomFull,
    /// `join.peer` names a peer in the room and no valid `resume` session was given.
    PeerIdTaken,
    /// Auth is on and the token is missing, invalid, expired or for another room/peer.
    Unauthorized,
    /// Anything but `join` or `ping` before `join`.
    NotJoined,
    /// `to` names no peer of the room (or the sender itself).
    UnknownPeer,
    /// Extension: the receiver is reconnecting and its queue is full; the
    /// message was dropped.
    QueueFull,
    /// Extension: a second `join` on a connection that has joined.
    AlreadyJoined,
    /// Cluster: the room's home node cannot be found or reached right now (the
    /// cluster directory, Redis, is away, or the home died and no node could take
    /// the room over yet). Closes with 1013; reconnecting later succeeds.
    ClusterUnavailable,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad-json",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::MissingField => "missing-field",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::PeerIdTaken => "peer-id-taken",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::QueueFull => "queue-full",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::ClusterUnavailable => "cluster-unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server closes a WebSocket, with a stable close code.
///
/// Codes 4000–4999 are reserved by RFC 6455 for applications; the last digits
/// mirror the standard code or HTTP status of the same meaning where one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// 1000: the peer sent `leave`.
    Left,
    /// 1001: the server is shutting down.
    Shutdown,
    /// 4001: auth failed (after an `unauthorized` error).
    Unauthorized,
    /// 4002: no `join` within `join_timeout_ms`.
    JoinTimeout,
    /// 4003: a binary frame (after a `bad-json` error). Mirrors 1003.
    Binary,
    /// 4004: the same session was resumed on another connection.
    Replaced,
    /// 4005: nothing received (not even a pong) for `idle_timeout_ms`.
    IdleTimeout,
    /// 4006: the connection read too slowly and its outbound queue filled up.
    SlowConsumer,
    /// 4007: a text frame that is not UTF-8 (after a `bad-json` error). Mirrors 1007.
    NotUtf8,
    /// 4009: a message over `max_message_bytes` (after a `too-large` error). Mirrors 1009.
    TooLarge,
    /// 4013: the room is full (after a `room-full` error). Mirrors 1013.
    RoomFull,
    /// 4029: more than `flood_limit` rate-limited messages in a row. Mirrors HTTP 429.
    Flood,
    /// 1013 (try again later): the cluster cannot reach the room's home node now
    /// (after a `cluster-unavailable` error).
    TryAgainLater,
    /// 4012: the room moved to another node; reconnect (and `join {resume}`).
    Moved,
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Left => 1000,
            CloseReason::Shutdown => 1001,
            CloseReason::Unauthorized => 4001,
            CloseReason::JoinTimeout => 4002,
            CloseReason::Binary => 4003,
            CloseReason::Replaced => 4004,
            CloseReason::IdleTimeout => 4005,
            CloseReason::SlowConsumer => 4006,
            CloseReason::NotUtf8 => 4007,
            CloseReason::TooLarge => 4009,
            CloseReason::RoomFull => 4013,
            CloseReason::Flood => 4029,
            CloseReason::TryAgainLater => 1013,
            CloseReason::Moved => 4012,
        }
    }

    /// The close reason text (short: a close frame holds at most 123 bytes).
    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::Left => "left",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::JoinTimeout => "join timeout",
            CloseReason::Binary => "binary frames are not supported",
            CloseReason::Replaced => "session resumed on another connection",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::SlowConsumer => "outbound queue full",
            CloseReason::NotUtf8 => "text is not UTF-8",
            CloseReason::TooLarge => "message too large",
            CloseReason::RoomFull => "room full",
            CloseReason::Flood => "flooding",
            CloseReason::TryAgainLater => "cluster unavailable, try again later",
            CloseReason::Moved => "room moved to another node",
        }
    }
}

/// Why a token was refused. The client is told only the short text; the
/// details of a bad signature are never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Auth is on and the join carries no `token`.
    #[error("a token is required")]
    MissingToken,
    /// Malformed token, wrong algorithm or bad signature.
    #[error("invalid token")]
    Invalid,
    /// `exp` is in the past (beyond the configured leeway).
    #[error("token expired")]
    Expired,
    /// The `room` claim names another room.
    #[error("token is for another room")]
    WrongRoom,
    /// The `peer` claim names another peer id than `join.peer`.
    #[error("token is for another peer id")]
    WrongPeer,
}

/// Everything that can go wrong with one client input.
///
/// [`code`](Self::code) is the stable `error.code` the client is sent;
/// [`close`](Self::close) says whether the connection is closed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// Not a JSON object, or a field of the wrong type/shape, unknown or repeated.
    #[error("bad JSON: {0}")]
    BadJson(String),
    /// A binary WebSocket frame; protocol v1 is JSON text only. Closes (4003).
    #[error("binary frames are not supported; send JSON text")]
    Binary,
    /// A text frame that is not valid UTF-8. Closes (4007).
    #[error("message is not valid UTF-8")]
    NotUtf8,
    /// `type` is not a message of protocol v1.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// A required field is absent.
    #[error("`{ty}` needs the field `{field}`")]
    MissingField {
        /// The message type (`"message"` when `type` itself is missing).
        ty: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// The message exceeds `max_message_bytes`. Closes (4009).
    #[error("message too large (limit {limit} bytes)")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// `join.meta` exceeds `max_meta_bytes` (the join is refused, the socket stays).
    #[error("meta too large ({size} bytes, limit {limit})")]
    MetaTooLarge {
        /// Size of the given meta.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The connection's token bucket is empty; the message was dropped.
    #[error("rate limited: at most {per_second} messages/s in bursts of {burst}")]
    RateLimited {
        /// Refill rate.
        per_second: u32,
        /// Bucket size.
        burst: u32,
    },
    /// More than `flood_limit` rate-limited messages in a row. Closes (4029).
    #[error("too many rate-limited messages ({0}); closing")]
    Flood(u32),
    /// The room has `max_peers_per_room` peers. Closes (4013).
    #[error("room is full ({max} peers)")]
    RoomFull {
        /// The configured limit.
        max: usize,
    },
    /// The requested peer id is in the room and no valid session was given.
    #[error("peer id `{0}` is taken; choose another or resume with its session")]
    PeerIdTaken(String),
    /// Auth failed. Closes (4001).
    #[error("unauthorized: {0}")]
    Unauthorized(AuthError),
    /// A message other than `join`/`ping` before `join`.
    #[error("send `join` first")]
    NotJoined,
    /// A second `join` on a joined connection.
    #[error("already joined as `{0}`")]
    AlreadyJoined(String),
    /// `to` names no peer of the room, or the sender itself.
    #[error("no peer `{0}` to send to in this room")]
    UnknownPeer(String),
    /// The receiver is reconnecting and its queue is full; the message was dropped.
    #[error("peer `{0}` is reconnecting and its queue is full; message dropped")]
    QueueFull(String),
    /// Cluster: the room's home node cannot be reached now. Closes (1013).
    #[error("cluster unavailable: {0}; reconnect in a moment")]
    ClusterUnavailable(String),
}

impl SignalError {
    /// The stable code sent as `error.code`.
    pub fn code(&self) -> ErrorCode {
        match self {
            SignalError::BadJson(_) | SignalError::Binary | SignalError::NotUtf8 => {
                ErrorCode::BadJson
            }
            SignalError::UnknownType(_) => ErrorCode::UnknownType,
            SignalError::MissingField { .. } => ErrorCode::MissingField,
            SignalError::TooLarge { .. } | SignalError::MetaTooLarge { .. } => ErrorCode::TooLarge,
            SignalError::RateLimited { .. } | SignalError::Flood(_) => ErrorCode::RateLimited,
            SignalError::RoomFull { .. } => ErrorCode::RoomFull,
            SignalError::PeerIdTaken(_) => ErrorCode::PeerIdTaken,
            SignalError::Unauthorized(_) => ErrorCode::Unauthorized,
            SignalError::NotJoined => ErrorCode::NotJoined,
            SignalError::AlreadyJoined(_) => ErrorCode::AlreadyJoined,
            SignalError::UnknownPeer(_) => ErrorCode::UnknownPeer,
            SignalError::QueueFull(_) => ErrorCode::QueueFull,
            SignalError::ClusterUnavailable(_) => ErrorCode::ClusterUnavailable,
        }
    }

    /// `Some` when the error breaks the protocol and the server closes the
    /// connection right after sending the `error` message.
    pub fn close(&self) -> Option<CloseReason> {
        match self {
            SignalError::Binary => Some(CloseReason::Binary),
            SignalError::NotUtf8 => Some(CloseReason::NotUtf8),
            SignalError::TooLarge { .. } => Some(CloseReason::TooLarge),
            SignalError::Flood(_) => Some(CloseReason::Flood),
            SignalError::RoomFull { .. } => Some(CloseReason::RoomFull),
            SignalError::Unauthorized(_) => Some(CloseReason::Unauthorized),
            SignalError::ClusterUnavailable(_) => Some(CloseReason::TryAgainLater),
            _ => None,
        }
    }
}

/// Why a peer left, sent as `peer-left.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LeaveReason {
    /// It sent `leave`.
    Leave,
    /// Its connection dropped and it did not resume within `resume_grace_ms`.
    Timeout,
    /// The server closed its connection for a protocol violation.
    Closed,
}

/// One entry of `welcome.peers`.
#[derive(Debug, Serialize)]
pub struct PeerEntry<'a> {
    /// The peer id.
    pub peer: &'a str,
    /// Its `join.meta`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<&'a RawValue>,
    /// Whether the receiver of the `welcome` is the polite side towards this peer.
    pub polite: bool,
    /// Whether this peer's connection dropped and it may still resume.
    pub reconnecting: bool,
}

/// An entry of `welcome.ice_servers`, shaped like the browser's `RTCIceServer`
/// so it can be handed to `new RTCPeerConnection({iceServers})` unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN REST username `expiry:peer` (absent for STUN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN REST credential, base64(HMAC-SHA1(secret, username)) (absent for STUN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A message from the server. Serialize with [`to_json`](Self::to_json).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ServerMessage<'a> {
    /// Reply to a successful `join`.
    Welcome {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The receiver's peer id.
        peer: &'a str,
        /// Secret session token for `join {resume}` after a dropped connection.
        session: &'a str,
        /// Whether this join resumed an existing session.
        resumed: bool,
        /// The other peers in the room, in join order.
        peers: Vec<PeerEntry<'a>>,
        /// How often to send `ping` (and the WebSocket ping interval).
        heartbeat_ms: u64,
        /// STUN/TURN servers, with TURN REST credentials when configured.
        ice_servers: Vec<IceServer>,
    },
    /// A new peer joined.
    PeerJoined {
        /// Its id.
        peer: &'a str,
        /// Its `join.meta`.
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<&'a RawValue>,
        /// Whether the receiver is the polite side towards it.
        polite: bool,
    },
    /// A peer left the room.
    PeerLeft {
        /// Its id.
        peer: &'a str,
        /// Why.
        reason: LeaveReason,
    },
    /// A peer's connection dropped; messages to it are queued for a while.
    PeerReconnecting {
        /// Its id.
        peer: &'a str,
    },
    /// A peer resumed its session (queued messages have been delivered to it).
    PeerResumed {
        /// Its id.
        peer: &'a str,
    },
    /// Relayed `offer`.
    Offer {
        /// Sender id, stamped by the server.
        from: &'a str,
        /// Unchanged payload.
        sdp: &'a RawValue,
    },
    /// Relayed `answer`.
    Answer {
        /// Sender id, stamped by the server.
        from: &'a str,
        /// Unchanged payload.
        sdp: &'a RawValue,
    },
    /// Relayed `candidate`.
    Candidate {
        /// Sender id, stamped by the server.
        from: &'a str,
        /// Unchanged payload.
        candidate: &'a RawValue,
    },
    /// Relayed `message`.
    Message {
        /// Sender id, stamped by the server.
        from: &'a str,
        /// Unchanged payload.
        data: &'a RawValue,
    },
    /// Reply to `ping`.
    Pong {
        /// The ping's `id`, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    /// Something was wrong with a client message.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
        /// The offending message's `id`, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
}

impl ServerMessage<'_> {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Cannot fail: every field is a string, number, bool, list or a
        // `RawValue` that was valid JSON when parsed, and all map keys are strings.
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// The fields of a JSON object as raw values, in order, duplicates refused.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    if fields.len() == MAX_FIELDS {
                        return Err(de::Error::custom("too many fields"));
                    }
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    fn only(&self, ty: &str, allowed: &[&str]) -> Result<(), SignalError> {
        for (k, _) in &self.0 {
            if k != "type" && k != "id" && !allowed.contains(&k.as_str()) {
                return Err(SignalError::BadJson(format!(
                    "unknown field `{k}` in `{ty}`"
                )));
            }
        }
        Ok(())
    }

    fn string(&self, key: &'static str) -> Result<Option<String>, SignalError> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map(Some)
                .map_err(|_| SignalError::BadJson(format!("`{key}` must be a string"))),
        }
    }

    fn required_string(&self, ty: &'static str, key: &'static str) -> Result<String, SignalError> {
        self.string(key)?
            .ok_or(SignalError::MissingField { ty, field: key })
    }

    fn required_raw(
        &self,
        ty: &'static str,
        key: &'static str,
    ) -> Result<Box<RawValue>, SignalError> {
        self.get(key)
            .map(RawValue::to_owned)
            .ok_or(SignalError::MissingField { ty, field: key })
    }
}

/// Parse one client text message.
///
/// Order of checks: JSON object → `id` → `type` present, a string, known →
/// no unknown fields → required fields present → field types and values.
pub fn parse(text: &str) -> Result<Request, Rejected> {
    let fields: Fields<'_> = serde_json::from_str(text).map_err(|e| Rejected {
        id: None,
        error: SignalError::BadJson(e.to_string()),
    })?;
    let id = match fields.get("id") {
        None => None,
        Some(raw) => {
            let first = raw.get().as_bytes().first().copied();
            if !matches!(first, Some(b'"' | b'-' | b'0'..=b'9')) {
                return Err(Rejected {
                    id: None,
                    error: SignalError::BadJson("`id` must be a string or a number".into()),
                });
            }
            Some(raw.to_owned())
        }
    };
    match parse_message(&fields) {
        Ok(message) => Ok(Request { id, message }),
        Err(error) => Err(Rejected { id, error }),
    }
}

fn parse_message(fields: &Fields<'_>) -> Result<ClientMessage, SignalError> {
    let ty = fields.string("type")?.ok_or(SignalError::MissingField {
        ty: "message",
        field: "type",
    })?;
    let msg = match ty.as_str() {
        "join" => {
            fields.only("join", &["peer", "token", "meta", "resume"])?;
            let peer = fields.string("peer")?;
            if let Some(p) = &peer
                && !is_valid_id(p)
            {
                return Err(SignalError::BadJson(
                    "`peer` must match [A-Za-z0-9._-]{1,64}".into(),
                ));
            }
            let resume = fields.string("resume")?;
            if resume.as_ref().is_some_and(|s| s.len() > MAX_SESSION_LEN) {
                return Err(SignalError::BadJson(
                    "`resume` is not a session token".into(),
                ));
            }
            ClientMessage::Join(Join {
                peer,
                token: fields.string("token")?,
                meta: fields.get("meta").map(RawValue::to_owned),
                resume,
            })
        }
        "offer" | "answer" => {
            let ty = if ty == "offer" { "offer" } else { "answer" };
            fields.only(ty, &["to", "sdp", "from"])?;
            let to = fields.required_string(ty, "to")?;
            let sdp = fields.required_raw(ty, "sdp")?;
            if ty == "offer" {
                ClientMessage::Offer { to, sdp }
            } else {
                ClientMessage::Answer { to, sdp }
            }
        }
        "candidate" => {
            fields.only("candidate", &["to", "candidate", "from"])?;
            ClientMessage::Candidate {
                to: fields.required_string("candidate", "to")?,
                candidate: fields.required_raw("candidate", "candidate")?,
            }
        }
        "message" => {
            fields.only("message", &["to", "data", "from"])?;
            ClientMessage::Message {
                to: fields.string("to")?,
                data: fields.required_raw("message", "data")?,
            }
        }
        "leave" => {
            fields.only("leave", &[])?;
            ClientMessage::Leave
        }
        "ping" => {
            fields.only("ping", &[])?;
            ClientMessage::Ping
        }
        _ => {
            let mut shown = ty;
            if shown.len() > MAX_ID_LEN {
                // Keep error messages small whatever the client sent.
                let mut cut = MAX_ID_LEN;
                while !shown.is_char_boundary(cut) {
                    cut -= 1;
                }
                shown.truncate(cut);
                shown.push('…');
            }
            return Err(SignalError::UnknownType(shown));
        }
    };
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse(text).unwrap_err().error.code()
    }

    #[test]
    fn parses_every_client_message() {
        let j = parse(
            r#"{"type":"join","peer":"a.b_c-1","token":"t","meta":{"n":1},"resume":"s","id":7}"#,
        )
        .unwrap();
        assert_eq!(j.id.unwrap().get(), "7");
        let ClientMessage::Join(join) = j.message else {
            panic!()
        };
        assert_eq!(join.peer.as_deref(), Some("a.b_c-1"));
        assert_eq!(join.meta.unwrap().get(), r#"{"n":1}"#);
        assert!(
            !format!(
                "{:?}",
                Join {
                    token: Some("secret".into()),
                    ..Join::default()
                }
            )
            .contains("secret")
        );

        let o =
            parse(r#"{"type":"offer","to":"b","sdp":{"type":"offer","sdp":"v=0\r\n"}}"#).unwrap();
        let ClientMessage::Offer { to, sdp } = o.message else {
            panic!()
        };
        assert_eq!(
            (to.as_str(), sdp.get()),
            ("b", r#"{"type":"offer","sdp":"v=0\r\n"}"#)
        );
        assert!(matches!(
            parse(r#"{"type":"answer","to":"b","sdp":"x"}"#)
                .unwrap()
                .message,
            ClientMessage::Answer { .. }
        ));
        let c = parse(r#"{"type":"candidate","to":"b","candidate":null}"#).unwrap();
        assert!(
            matches!(c.message, ClientMessage::Candidate { ref candidate, .. } if candidate.get() == "null")
        );
        let m = parse(r#"{"type":"message","data":[1, 2 ,3]}"#).unwrap();
        assert!(
            matches!(m.message, ClientMessage::Message { to: None, ref data } if data.get() == "[1, 2 ,3]")
        );
        assert!(matches!(
            parse(r#"{"type":"leave"}"#).unwrap().message,
            ClientMessage::Leave
        ));
        assert!(matches!(
            parse(r#" {"id":"x","type":"ping"} "#).unwrap().message,
            ClientMessage::Ping
        ));
        // A client-sent `from` is accepted and ignored (the server stamps its own).
        assert!(parse(r#"{"type":"message","data":1,"from":"mallory"}"#).is_ok());
    }

    #[test]
    fn error_codes() {
        assert_eq!(code("nope"), ErrorCode::BadJson);
        assert_eq!(code("[1]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"ping"} x"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"ping","type":"ping"}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"ping","extra":1}"#), ErrorCode::BadJson);
        assert_eq!(
            code(r#"{"type":"offer","to":1,"sdp":""}"#),
            ErrorCode::BadJson
        );
        assert_eq!(
            code(r#"{"type":"join","peer":"has space"}"#),
            ErrorCode::BadJson
        );
        assert_eq!(code(r#"{"type":"ping","id":{"a":1}}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"to":"b"}"#), ErrorCode::MissingField);
        assert_eq!(
            code(r#"{"type":"offer","sdp":"x"}"#),
            ErrorCode::MissingField
        );
        assert_eq!(
            code(r#"{"type":"offer","to":"b"}"#),
            ErrorCode::MissingField
        );
        assert_eq!(
            code(r#"{"type":"candidate","to":"b"}"#),
            ErrorCode::MissingField
        );
        assert_eq!(code(r#"{"type":"message"}"#), ErrorCode::MissingField);
        let r = parse(r#"{"type":"offer","id":"q1","sdp":"x"}"#).unwrap_err();
        assert_eq!(r.id.unwrap().get(), r#""q1""#);
        assert_eq!(
            r.error,
            SignalError::MissingField {
                ty: "offer",
                field: "to"
            }
        );
        let long = format!(r#"{{"type":"{}"}}"#, "é".repeat(100));
        let SignalError::UnknownType(t) = parse(&long).unwrap_err().error else {
            panic!()
        };
        assert!(t.len() <= MAX_ID_LEN + 3);
    }

    #[test]
    fn server_messages_serialize_with_kebab_types_and_raw_payloads() {
        let sdp = RawValue::from_string(r#"{"sdp":"v=0","type":"offer"}"#.into()).unwrap();
        let m = ServerMessage::Offer {
            from: "a",
            sdp: &sdp,
        }
        .to_json();
        assert_eq!(
            m,
            r#"{"type":"offer","from":"a","sdp":{"sdp":"v=0","type":"offer"}}"#
        );
        let e = ServerMessage::Error {
            code: ErrorCode::PeerIdTaken,
            message: "x".into(),
            id: None,
        };
        assert_eq!(
            e.to_json(),
            r#"{"type":"error","code":"peer-id-taken","message":"x"}"#
        );
        let l = ServerMessage::PeerLeft {
            peer: "a",
            reason: LeaveReason::Timeout,
        }
        .to_json();
        assert_eq!(l, r#"{"type":"peer-left","peer":"a","reason":"timeout"}"#);
        for code in [
            ErrorCode::BadJson,
            ErrorCode::QueueFull,
            ErrorCode::AlreadyJoined,
        ] {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{code}\""));
        }
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("Room_1.x-y"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("ä"));
    }
}
