//! The room state machine: every rule of the protocol, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::auth::{self, Verifier, WallClock};
use crate::config::Config;
use crate::protocol::{
    self, AuthError, ClientMessage, CloseReason, ErrorCode, Join, LeaveReason, PeerEntry, Rejected,
    Request, ServerMessage, SignalError,
};

/// A connection id chosen by the shell, unique within a room for the room's
/// lifetime (the shell typically uses a global counter).
pub type ConnId = u64;

/// Something that happened to the room, fed to [`Room::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A WebSocket was accepted for this room; its `join` deadline starts.
    Connect {
        /// The new connection.
        conn: ConnId,
    },
    /// A text frame.
    Text {
        /// Sender.
        conn: ConnId,
        /// The frame's text.
        text: String,
    },
    /// A binary frame (refused: `bad-json`, close 4003).
    Binary {
        /// Sender.
        conn: ConnId,
    },
    /// A text frame that was not UTF-8 (refused: `bad-json`, close 4007).
    NotUtf8 {
        /// Sender.
        conn: ConnId,
    },
    /// A frame over the size limit that the shell did not read in full
    /// (refused: `too-large`, close 4009).
    TooLarge {
        /// Sender.
        conn: ConnId,
    },
    /// The socket is gone without `leave` (error, idle timeout, client close).
    /// A joined peer becomes reconnecting. Emits no `Close` for this conn.
    Disconnect {
        /// The lost connection.
        conn: ConnId,
    },
    /// Time passed; deliver when [`Room::poll_timeout`] is reached.
    Tick,
    /// Cluster: `conn` carries a peer that was in this room on another home node
    /// (which died or lost the room): it is put back without a `welcome`, keeping
    /// its id, session and place in the join order. See [`Restore`].
    Restore {
        /// The connection (from a cluster node, never from a client).
        conn: ConnId,
        /// The peer as its node knows it.
        restore: Restore,
    },
}

/// A peer re-homed into this room by the node its client is connected to, with
/// what that node knows ([`PeerRecord`] and the roster its client was told about).
///
/// The peers its client knew that are not (yet) here are added as *pending*:
/// reconnecting peers that only their own node's `Restore` can take back (their
/// sessions are secret to their own nodes); the others queue for them, and they
/// leave with `peer-left {timeout}` at the end of `resume_grace_ms`. Peers here that
/// its client never heard of are announced to it with `peer-joined`, and it is
/// announced to the peers that did not know it. Nothing else is sent: the clients
/// of restored peers see no change but the departures of peers that did not come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// Its peer id.
    pub peer: String,
    /// Its session token (the same as before: the client may resume with it).
    pub session: String,
    /// Its place in the join order (from [`PeerRecord::seq`]).
    pub seq: u64,
    /// Its `join.meta`, as JSON text.
    pub meta: Option<String>,
    /// The other peers its client was told about (`welcome`, `peer-joined`, not yet
    /// `peer-left`).
    pub known: Vec<String>,
}

/// What a cluster node keeps about a peer it carries, to restore it into a new
/// home after the old one died ([`Room::peer_record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Its place in the join order: the later joiner of a pair is polite.
    pub seq: u64,
    /// Its session token.
    pub session: String,
    /// Its `join.meta`, as JSON text.
    pub meta: Option<String>,
}

/// What the shell must do, drained with [`Room::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send this JSON text frame to `conn`, in order with all earlier `Send`s to it.
    Send {
        /// Receiver.
        conn: ConnId,
        /// Serialized server message. Shared: a message relayed to every peer of
        /// a room is one allocation, however many queues hold it.
        text: Arc<str>,
    },
    /// Send a close frame to `conn` after its pending messages, then drop it.
    /// The room has already forgotten `conn`.
    Close {
        /// The connection to close.
        conn: ConnId,
        /// Code and reason of the close frame.
        reason: CloseReason,
    },
    /// For logs and metrics only.
    Event(Event),
}

/// Notable changes, for the shell's tracing and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `conn` joined as `peer`.
    Joined {
        /// The connection.
        conn: ConnId,
        /// Its peer id.
        peer: String,
    },
    /// `conn` restored `peer` from another home node ([`Input::Restore`]).
    Restored {
        /// The connection.
        conn: ConnId,
        /// Its peer id.
        peer: String,
    },
    /// `conn` resumed the session of `peer`.
    Resumed {
        /// The connection.
        conn: ConnId,
        /// Its peer id.
        peer: String,
    },
    /// A client message passed the rate limiter and was parsed: its `type`
    /// (`join`, `offer`, ...), or `invalid` when it could not be parsed.
    Received {
        /// The message type.
        kind: &'static str,
    },
    /// `peer` lost its connection and may resume within the grace period.
    Reconnecting {
        /// The peer.
        peer: String,
    },
    /// `peer` left the room.
    Left {
        /// The peer.
        peer: String,
        /// Why.
        reason: LeaveReason,
    },
    /// `conn` was sent an `error`.
    Rejected {
        /// The connection.
        conn: ConnId,
        /// The error code sent.
        code: ErrorCode,
    },
}

/// A room's state for `/api/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomSummary {
    /// Room name.
    pub room: String,
    /// Peers in the room, reconnecting ones included.
    pub peers: usize,
    /// Of those, peers whose connection dropped and may still resume.
    pub reconnecting: usize,
    /// Open connections, including ones that have not joined yet.
    pub connections: usize,
    /// Peer ids in join order.
    pub peer_ids: Vec<String>,
}

/// Token bucket with exact integer arithmetic: one token is [`UNIT`] units,
/// refilled at `rate_per_second` units per nanosecond.
#[derive(Debug)]
struct Bucket {
    level: u128,
    at: Instant,
    /// Rate-limited messages since the bucket was last full.
    violations: u32,
}

const UNIT: u128 = 1_000_000_000;

impl Bucket {
    fn full(now: Instant, burst: u32) -> Self {
        Bucket {
            level: u128::from(burst) * UNIT,
            at: now,
            violations: 0,
        }
    }

    fn take(&mut self, now: Instant, burst: u32, per_second: u32) -> bool {
        let cap = u128::from(burst) * UNIT;
        let gained = now
            .saturating_duration_since(self.at)
            .as_nanos()
            .saturating_mul(u128::from(per_second));
        self.level = cap.min(self.level.saturating_add(gained));
        self.at = self.at.max(now);
        if self.level == cap {
            self.violations = 0;
        }
        if self.level >= UNIT {
            self.level -= UNIT;
            true
        } else {
            self.violations = self.violations.saturating_add(1);
            false
        }
    }
}

/// Something due at an instant; ordered so that equal instants expire in a
/// deterministic order (join deadlines first, then by conn id / peer id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    /// An unjoined connection must have joined.
    Join(ConnId),
    /// A reconnecting peer's grace period ends.
    Grace(String),
}

#[derive(Debug)]
struct Conn {
    /// The peer this connection joined as.
    peer: Option<String>,
    /// Close if not joined by then.
    join_deadline: Instant,
    bucket: Bucket,
}

#[derive(Debug)]
struct Peer {
    /// Join order; the later joiner of a pair is the polite side.
    seq: u64,
    session: String,
    meta: Option<Box<RawValue>>,
    /// `None` while reconnecting.
    conn: Option<ConnId>,
    /// Set while reconnecting: removed with `peer-left {timeout}` at this time.
    grace_until: Option<Instant>,
    /// Messages for a reconnecting peer: (sender, text), oldest first.
    queue: VecDeque<(String, Arc<str>)>,
    queued_bytes: usize,
    /// Known to a restored peer but not restored itself (yet): only its own node's
    /// `Restore` can take it back; its placeholder session resumes nothing.
    pending: bool,
}

/// One signaling room: peers, sessions, queues and limits, as a state machine.
///
/// Feed inputs with [`handle`](Self::handle), then drain
/// [`poll_output`](Self::poll_output) until `None`; call `handle(now, Input::Tick)`
/// when [`poll_timeout`](Self::poll_timeout) is reached. Outputs of one call are
/// in the order they must be performed. The room never panics on input.
#[derive(Debug)]
pub struct Room {
    name: String,
    config: Arc<Config>,
    verifier: Option<Verifier>,
    clock: WallClock,
    rng: StdRng,
    conns: BTreeMap<ConnId, Conn>,
    peers: BTreeMap<String, Peer>,
    /// Session token → peer id.
    sessions: HashMap<String, String>,
    /// Every pending join deadline and grace period, soonest first, so that
    /// each input costs O(log n) however many sockets sit in the room.
    deadlines: BTreeSet<(Instant, Deadline)>,
    next_seq: u64,
    out: VecDeque<Output>,
}

impl Room {
    /// A new, empty room. `seed` seeds the CSPRNG for peer ids and session
    /// tokens: the shell passes 32 bytes from the OS, tests a constant.
    pub fn new(
        name: impl Into<String>,
        config: Arc<Config>,
        clock: WallClock,
        seed: [u8; 32],
    ) -> Self {
        let verifier = config
            .jwt_secret
            .as_ref()
            .map(|s| Verifier::new(s, config.jwt_leeway_ms));
        Room {
            name: name.into(),
            config,
            verifier,
            clock,
            rng: StdRng::from_seed(seed),
            conns: BTreeMap::new(),
            peers: BTreeMap::new(),
            sessions: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_seq: 0,
            out: VecDeque::new(),
        }
    }

    /// Start the join order at `base` (a cluster home passes its lease epoch in the
    /// high bits, so peers joining after a re-home come after every restored one).
    #[must_use]
    pub fn with_seq_base(mut self, base: u64) -> Self {
        self.next_seq = self.next_seq.max(base);
        self
    }

    /// What a cluster node needs to restore `peer` elsewhere ([`Input::Restore`]).
    pub fn peer_record(&self, peer: &str) -> Option<PeerRecord> {
        self.peers.get(peer).map(|p| PeerRecord {
            seq: p.seq,
            session: p.session.clone(),
            meta: p.meta.as_ref().map(|m| m.get().to_owned()),
        })
    }

    /// Peers in join order with their connection (`None` while reconnecting).
    pub fn peer_conns(&self) -> Vec<(&str, Option<ConnId>)> {
        let mut peers: Vec<(&String, &Peer)> = self.peers.iter().collect();
        peers.sort_by_key(|(_, p)| p.seq);
        peers
            .into_iter()
            .map(|(id, p)| (id.as_str(), p.conn))
            .collect()
    }

    /// The room name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// No connections and no peers (not even reconnecting ones): the shell may
    /// drop the room.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.peers.is_empty()
    }

    /// Number of open connections, joined or not.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Peer count and ids, for `/api/rooms`.
    pub fn summary(&self) -> RoomSummary {
        let mut peers: Vec<(&String, &Peer)> = self.peers.iter().collect();
        peers.sort_by_key(|(_, p)| p.seq);
        RoomSummary {
            room: self.name.clone(),
            peers: peers.len(),
            reconnecting: peers.iter().filter(|(_, p)| p.conn.is_none()).count(),
            connections: self.conns.len(),
            peer_ids: peers.into_iter().map(|(id, _)| id.clone()).collect(),
        }
    }

    /// The next instant at which `handle(now, Input::Tick)` has work to do: a
    /// join deadline or the end of a grace period.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// The next output, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// All pending outputs, oldest first.
    pub fn drain_outputs(&mut self) -> impl Iterator<Item = Output> + '_ {
        self.out.drain(..)
    }

    /// Process one input at `now`. Deadlines that passed by `now` are applied
    /// first, so a `resume` after the grace period fails even if no `Tick` came.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.expire(now);
        match input {
            Input::Connect { conn } => {
                if !self.conns.contains_key(&conn) {
                    let join_deadline = now + Duration::from_millis(self.config.join_timeout_ms);
                    self.deadlines.insert((join_deadline, Deadline::Join(conn)));
                    let bucket = Bucket::full(now, self.config.rate_burst);
                    let c = Conn {
                        peer: None,
                        join_deadline,
                        bucket,
                    };
                    self.conns.insert(conn, c);
                }
            }
            Input::Text { conn, text } => self.on_text(now, conn, &text),
            Input::Binary { conn } => self.reject(conn, None, SignalError::Binary),
            Input::NotUtf8 { conn } => self.reject(conn, None, SignalError::NotUtf8),
            Input::TooLarge { conn } => {
                let limit = self.config.max_message_bytes;
                self.reject(conn, None, SignalError::TooLarge { limit });
            }
            Input::Disconnect { conn } => self.disconnect(now, conn),
            Input::Tick => {}
            Input::Restore { conn, restore } => self.restore(now, conn, restore),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.deadlines.first()
            && *t <= now
        {
            let Some((_, due)) = self.deadlines.pop_first() else {
                break;
            };
            match due {
                Deadline::Join(conn) => {
                    if self.drop_conn(conn).is_some() {
                        self.out.push_back(Output::Close {
                            conn,
                            reason: CloseReason::JoinTimeout,
                        });
                    }
                }
                Deadline::Grace(peer) => {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.grace_until = None;
                    }
                    self.remove_peer(&peer, LeaveReason::Timeout);
                }
            }
        }
    }

    /// Forget `conn`, with its join deadline if it had not joined.
    fn drop_conn(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        if c.peer.is_none() {
            self.deadlines
                .remove(&(c.join_deadline, Deadline::Join(conn)));
        }
        Some(c)
    }

    /// `conn` joined (or resumed): its join deadline no longer applies.
    fn mark_joined(&mut self, conn: ConnId, peer: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.peer.is_none() {
                self.deadlines
                    .remove(&(c.join_deadline, Deadline::Join(conn)));
            }
            c.peer = Some(peer.to_owned());
        }
    }

    fn on_text(&mut self, now: Instant, conn: ConnId, text: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if text.len() > self.config.max_message_bytes {
            let limit = self.config.max_message_bytes;
            return self.reject(conn, None, SignalError::TooLarge { limit });
        }
        let (burst, per_second) = (self.config.rate_burst, self.config.rate_per_second);
        if !c.bucket.take(now, burst, per_second) {
            // Rate-limited messages are not parsed: a flood costs the server
            // as little as possible.
            let err = if c.bucket.violations > self.config.flood_limit {
                SignalError::Flood(c.bucket.violations)
            } else {
                SignalError::RateLimited { per_second, burst }
            };
            return self.reject(conn, None, err);
        }
        let joined = c.peer.clone();
        let Request { id, message } = match protocol::parse(text) {
            Ok(r) => r,
            Err(Rejected { id, error }) => {
                self.out
                    .push_back(Output::Event(Event::Received { kind: "invalid" }));
                return self.reject(conn, id.as_deref(), error);
            }
        };
        self.out.push_back(Output::Event(Event::Received {
            kind: message.type_name(),
        }));
        let id = id.as_deref();
        match (message, joined) {
            (ClientMessage::Ping, _) => self.send(conn, &ServerMessage::Pong { id }),
            (ClientMessage::Join(join), None) => self.join(now, conn, id, join),
            (ClientMessage::Join(_), Some(peer)) => {
                self.reject(conn, id, SignalError::AlreadyJoined(peer))
            }
            (_, None) => self.reject(conn, id, SignalError::NotJoined),
            (ClientMessage::Leave, Some(_)) => {
                self.close(conn, CloseReason::Left, LeaveReason::Leave)
            }
            (ClientMessage::Offer { to, sdp }, Some(from)) => {
                let text = ServerMessage::Offer {
                    from: &from,
                    sdp: &sdp,
                }
                .to_json();
                self.relay(conn, id, &from, Some(to), text);
            }
            (ClientMessage::Answer { to, sdp }, Some(from)) => {
                let text = ServerMessage::Answer {
                    from: &from,
                    sdp: &sdp,
                }
                .to_json();
                self.relay(conn, id, &from, Some(to), text);
            }
            (ClientMessage::Candidate { to, candidate }, Some(from)) => {
                let text = ServerMessage::Candidate {
                    from: &from,
                    candidate: &candidate,
                }
                .to_json();
                self.relay(conn, id, &from, Some(to), text);
            }
            (ClientMessage::Message { to, data }, Some(from)) => {
                let text = ServerMessage::Message {
                    from: &from,
                    data: &data,
                }
                .to_json();
                self.relay(conn, id, &from, to, text);
            }
        }
    }

    fn join(&mut self, now: Instant, conn: ConnId, id: Option<&RawValue>, join: Join) {
        if let Some(peer) = join
            .resume
            .as_ref()
            .and_then(|s| self.sessions.get(s))
            .cloned()
        {
            return self.resume(now, conn, peer);
        }
        let mut wanted = join.peer;
        if let Some(verifier) = &self.verifier {
            let Some(token) = &join.token else {
                return self.reject(conn, id, SignalError::Unauthorized(AuthError::MissingToken));
            };
            match verifier.verify(token, &self.name, self.clock.unix_ms(now)) {
                Err(e) => return self.reject(conn, id, SignalError::Unauthorized(e)),
                Ok(claims) => match (claims.peer, &wanted) {
                    (Some(p), _) if !protocol::is_valid_id(&p) => {
                        return self.reject(
                            conn,
                            id,
                            SignalError::Unauthorized(AuthError::Invalid),
                        );
                    }
                    (Some(p), Some(w)) if p != *w => {
                        return self.reject(
                            conn,
                            id,
                            SignalError::Unauthorized(AuthError::WrongPeer),
                        );
                    }
                    (Some(p), _) => wanted = Some(p),
                    (None, _) => {}
                },
            }
        }
        if let Some(meta) = &join.meta {
            let (size, limit) = (meta.get().len(), self.config.max_meta_bytes);
            if size > limit {
                return self.reject(conn, id, SignalError::MetaTooLarge { size, limit });
            }
        }
        if let Some(p) = &wanted
            && self.peers.contains_key(p)
        {
            return self.reject(conn, id, SignalError::PeerIdTaken(p.clone()));
        }
        if self.peers.len() >= self.config.max_peers_per_room {
            let max = self.config.max_peers_per_room;
            return self.reject(conn, id, SignalError::RoomFull { max });
        }
        let peer = match wanted {
            Some(p) => p,
            None => self.fresh_peer_id(),
        };
        let session = self.fresh_session();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sessions.insert(session.clone(), peer.clone());
        self.peers.insert(
            peer.clone(),
            Peer {
                seq,
                session,
                meta: join.meta,
                conn: Some(conn),
                grace_until: None,
                queue: VecDeque::new(),
                queued_bytes: 0,
                pending: false,
            },
        );
        self.mark_joined(conn, &peer);
        self.welcome(now, conn, &peer, false);
        self.announce_joined(&peer);
        self.out
            .push_back(Output::Event(Event::Joined { conn, peer }));
    }

    fn resume(&mut self, now: Instant, conn: ConnId, peer_id: String) {
        // The old socket may be half-open or still alive (e.g. the page was
        // reloaded before the server noticed): the session moves here.
        let queued = self.take_over(conn, &peer_id);
        self.welcome(now, conn, &peer_id, true);
        self.send_all(conn, queued);
        let text: Arc<str> = ServerMessage::PeerResumed { peer: &peer_id }
            .to_json()
            .into();
        self.broadcast_event(&peer_id, &text);
        self.out.push_back(Output::Event(Event::Resumed {
            conn,
            peer: peer_id,
        }));
    }

    fn restore(&mut self, now: Instant, conn: ConnId, r: Restore) {
        if self.conns.get(&conn).is_none_or(|c| c.peer.is_some()) {
            return;
        }
        let meta = match r.meta.map(RawValue::from_string).transpose() {
            Ok(meta) if protocol::is_valid_id(&r.peer) => meta,
            _ => return self.reject(conn, None, SignalError::BadJson("bad restore".into())),
        };
        let known: BTreeSet<String> = r.known.into_iter().filter(|k| *k != r.peer).collect();
        let peer_id = r.peer;
        match self.peers.get(&peer_id) {
            // Its old home is alive and still has it (the link to it broke): the
            // session moves to this connection, like a resume without `welcome`.
            Some(p) if p.session == r.session => {
                let was_reconnecting = p.conn.is_none();
                let queued = self.take_over(conn, &peer_id);
                self.send_all(conn, queued);
                if was_reconnecting {
                    let text: Arc<str> = ServerMessage::PeerResumed { peer: &peer_id }
                        .to_json()
                        .into();
                    self.broadcast_event(&peer_id, &text);
                }
            }
            // Another restored peer knew it: it takes its place silently.
            Some(p) if p.pending => {
                let placeholder = p.session.clone();
                self.sessions.remove(&placeholder);
                self.sessions.insert(r.session.clone(), peer_id.clone());
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.session = r.session;
                    p.seq = r.seq;
                    p.meta = meta;
                    p.pending = false;
                }
                let queued = self.take_over(conn, &peer_id);
                self.send_all(conn, queued);
            }
            Some(_) => {
                return self.refuse_restore(conn, SignalError::PeerIdTaken(peer_id));
            }
            None => {
                if self.peers.len() >= self.config.max_peers_per_room {
                    let max = self.config.max_peers_per_room;
                    return self.refuse_restore(conn, SignalError::RoomFull { max });
                }
                self.sessions.insert(r.session.clone(), peer_id.clone());
                self.peers.insert(
                    peer_id.clone(),
                    Peer {
                        seq: r.seq,
                        session: r.session,
                        meta,
                        conn: Some(conn),
                        grace_until: None,
                        queue: VecDeque::new(),
                        queued_bytes: 0,
                        pending: false,
                    },
                );
                self.mark_joined(conn, &peer_id);
                // New to the peers already here (none of them knew it).
                self.announce_joined(&peer_id);
            }
        }
        self.next_seq = self.next_seq.max(r.seq.saturating_add(1));
        // Peers here its client never heard of.
        let me_seq = self.peers[&peer_id].seq;
        let mut unknown: Vec<(&String, &Peer)> = self
            .peers
            .iter()
            .filter(|(id, _)| **id != peer_id && !known.contains(*id))
            .collect();
        unknown.sort_by_key(|(_, p)| p.seq);
        let announce: Vec<Arc<str>> = unknown
            .into_iter()
            .map(|(id, p)| {
                ServerMessage::PeerJoined {
                    peer: id,
                    meta: p.meta.as_deref(),
                    polite: me_seq > p.seq,
                }
                .to_json()
                .into()
            })
            .collect();
        self.send_all(conn, announce);
        // Peers its client knew that are not here: pending until their own node
        // restores them, or until the grace period ends.
        let grace = now + Duration::from_millis(self.config.resume_grace_ms);
        for id in known {
            if self.peers.contains_key(&id) || self.peers.len() >= self.config.max_peers_per_room {
                continue;
            }
            let placeholder = self.fresh_session();
            self.sessions.insert(placeholder.clone(), id.clone());
            self.deadlines.insert((grace, Deadline::Grace(id.clone())));
            self.peers.insert(
                id,
                Peer {
                    // Before every peer joining from now on (see `with_seq_base`).
                    seq: 0,
                    session: placeholder,
                    meta: None,
                    conn: None,
                    grace_until: Some(grace),
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                    pending: true,
                },
            );
        }
        self.out.push_back(Output::Event(Event::Restored {
            conn,
            peer: peer_id,
        }));
    }

    /// `peer` continues on `conn`: an older connection of it is closed (4004) and
    /// its grace period ends. Returns what was queued for it, oldest first.
    fn take_over(&mut self, conn: ConnId, peer_id: &str) -> Vec<Arc<str>> {
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return Vec::new();
        };
        let old = peer.conn.replace(conn);
        let grace = peer.grace_until.take();
        let queued = std::mem::take(&mut peer.queue);
        peer.queued_bytes = 0;
        if let Some(old) = old {
            self.drop_conn(old);
            self.out.push_back(Output::Close {
                conn: old,
                reason: CloseReason::Replaced,
            });
        }
        if let Some(t) = grace {
            self.deadlines
                .remove(&(t, Deadline::Grace(peer_id.to_owned())));
        }
        self.mark_joined(conn, peer_id);
        queued.into_iter().map(|(_, text)| text).collect()
    }

    fn welcome(&mut self, now: Instant, conn: ConnId, peer: &str, resumed: bool) {
        let me = &self.peers[peer];
        let mut others: Vec<(&String, &Peer)> =
            self.peers.iter().filter(|(id, _)| *id != peer).collect();
        others.sort_by_key(|(_, p)| p.seq);
        let msg = ServerMessage::Welcome {
            protocol: protocol::PROTOCOL_VERSION,
            peer,
            session: &me.session,
            resumed,
            peers: others
                .into_iter()
                .map(|(id, p)| PeerEntry {
                    peer: id,
                    meta: p.meta.as_deref(),
                    polite: me.seq > p.seq,
                    reconnecting: p.conn.is_none(),
                })
                .collect(),
            heartbeat_ms: self.config.heartbeat_interval_ms,
            ice_servers: auth::ice_servers(&self.config, peer, self.clock.unix_ms(now)),
        };
        let text = msg.to_json().into();
        self.out.push_back(Output::Send { conn, text });
    }

    /// Deliver `text` from `from` to `to`, or to every other peer when `to` is `None`.
    fn relay(
        &mut self,
        conn: ConnId,
        id: Option<&RawValue>,
        from: &str,
        to: Option<String>,
        text: String,
    ) {
        let text: Arc<str> = text.into();
        let targets: Vec<String> = match to {
            Some(to) if to != from && self.peers.contains_key(&to) => vec![to],
            Some(to) => return self.reject(conn, id, SignalError::UnknownPeer(to)),
            None => self.peers.keys().filter(|p| *p != from).cloned().collect(),
        };
        let (max_queued, max_bytes) = (
            self.config.max_queued_per_peer,
            self.config.max_queued_bytes_per_peer,
        );
        let mut full = Vec::new();
        for target in targets {
            let Some(p) = self.peers.get_mut(&target) else {
                continue;
            };
            match p.conn {
                Some(c) => self.out.push_back(Output::Send {
                    conn: c,
                    text: text.clone(),
                }),
                None if p.queue.len() < max_queued && p.queued_bytes + text.len() <= max_bytes => {
                    p.queued_bytes += text.len();
                    p.queue.push_back((from.to_owned(), text.clone()));
                }
                None => full.push(target),
            }
        }
        for target in full {
            self.reject(conn, id, SignalError::QueueFull(target));
        }
    }

    fn disconnect(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.drop_conn(conn) else {
            return;
        };
        let Some(peer_id) = c.peer else {
            return;
        };
        if self.config.resume_grace_ms == 0 {
            return self.remove_peer(&peer_id, LeaveReason::Timeout);
        }
        let grace = now + Duration::from_millis(self.config.resume_grace_ms);
        if let Some(p) = self.peers.get_mut(&peer_id)
            && p.conn == Some(conn)
        {
            p.conn = None;
            p.grace_until = Some(grace);
            self.deadlines
                .insert((grace, Deadline::Grace(peer_id.clone())));
            let text: Arc<str> = ServerMessage::PeerReconnecting { peer: &peer_id }
                .to_json()
                .into();
            self.broadcast_event(&peer_id, &text);
            self.out
                .push_back(Output::Event(Event::Reconnecting { peer: peer_id }));
        }
    }

    /// Send `error` to `conn`; close it if the error breaks the protocol.
    fn reject(&mut self, conn: ConnId, id: Option<&RawValue>, error: SignalError) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let code = error.code();
        let msg = ServerMessage::Error {
            code,
            message: error.to_string(),
            id,
        };
        self.send(conn, &msg);
        self.out
            .push_back(Output::Event(Event::Rejected { conn, code }));
        if let Some(reason) = error.close() {
            self.close(conn, reason, LeaveReason::Closed);
        }
    }

    /// A restore this home cannot take. Its client believes it is still in the room,
    /// so an error alone would leave it connected but outside it: it gets the error,
    /// then the close `moved`, and joins again as a client whose room moved does.
    fn refuse_restore(&mut self, conn: ConnId, error: SignalError) {
        self.reject(conn, None, error);
        self.close(conn, CloseReason::Moved, LeaveReason::Closed);
    }

    /// Close `conn`; its peer, if any, leaves the room at once with `why`.
    fn close(&mut self, conn: ConnId, reason: CloseReason, why: LeaveReason) {
        let Some(c) = self.drop_conn(conn) else {
            return;
        };
        self.out.push_back(Output::Close { conn, reason });
        if let Some(peer) = c.peer
            && self.peers.get(&peer).is_some_and(|p| p.conn == Some(conn))
        {
            self.remove_peer(&peer, why);
        }
    }

    fn remove_peer(&mut self, peer_id: &str, reason: LeaveReason) {
        let Some(peer) = self.peers.remove(peer_id) else {
            return;
        };
        self.sessions.remove(&peer.session);
        if let Some(t) = peer.grace_until {
            self.deadlines
                .remove(&(t, Deadline::Grace(peer_id.to_owned())));
        }
        if let Some(conn) = peer.conn {
            // Only reachable with `resume_grace_ms == 0` from `disconnect` or
            // from `close`, both of which already dropped the conn.
            self.drop_conn(conn);
        }
        for p in self.peers.values_mut() {
            // Messages from a peer that is gone would reach its receiver
            // after `peer-left`; drop them.
            if p.queue.iter().any(|(from, _)| from == peer_id) {
                p.queue.retain(|(from, _)| from != peer_id);
                p.queued_bytes = p.queue.iter().map(|(_, t)| t.len()).sum();
            }
        }
        let text: Arc<str> = ServerMessage::PeerLeft {
            peer: peer_id,
            reason,
        }
        .to_json()
        .into();
        self.broadcast_event(peer_id, &text);
        self.out.push_back(Output::Event(Event::Left {
            peer: peer_id.to_owned(),
            reason,
        }));
    }

    /// `peer-joined` about `peer` to every other connected peer, each with its own
    /// `polite` flag.
    fn announce_joined(&mut self, peer: &str) {
        let Some(me) = self.peers.get(peer) else {
            return;
        };
        for (other_id, other) in &self.peers {
            if let (Some(c), true) = (other.conn, other_id != peer) {
                let msg = ServerMessage::PeerJoined {
                    peer,
                    meta: me.meta.as_deref(),
                    polite: other.seq > me.seq,
                };
                self.out.push_back(Output::Send {
                    conn: c,
                    text: msg.to_json().into(),
                });
            }
        }
    }

    /// Send a roster event about `about` to every other connected peer.
    fn broadcast_event(&mut self, about: &str, text: &Arc<str>) {
        for (id, p) in &self.peers {
            if let (Some(conn), true) = (p.conn, id != about) {
                self.out.push_back(Output::Send {
                    conn,
                    text: text.clone(),
                });
            }
        }
    }

    fn send_all(&mut self, conn: ConnId, texts: Vec<Arc<str>>) {
        for text in texts {
            self.out.push_back(Output::Send { conn, text });
        }
    }

    fn send(&mut self, conn: ConnId, msg: &ServerMessage<'_>) {
        self.out.push_back(Output::Send {
            conn,
            text: msg.to_json().into(),
        });
    }

    fn fresh_peer_id(&mut self) -> String {
        loop {
            let mut bytes = [0u8; 9];
            self.rng.fill_bytes(&mut bytes);
            let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            if !self.peers.contains_key(&id) {
                return id;
            }
        }
    }

    fn fresh_session(&mut self) -> String {
        let mut bytes = [0u8; 32];
        self.rng.fill_bytes(&mut bytes);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    impl Room {
        /// Internal consistency: the deadline set mirrors conns and peers exactly,
        /// and conns, peers and sessions point at each other.
        fn check(&self) {
            let mut want = BTreeSet::new();
            for (id, c) in &self.conns {
                match &c.peer {
                    None => {
                        want.insert((c.join_deadline, Deadline::Join(*id)));
                    }
                    Some(p) => assert_eq!(self.peers[p].conn, Some(*id), "conn {id} ↔ peer {p}"),
                }
            }
            for (id, p) in &self.peers {
                if let Some(t) = p.grace_until {
                    assert!(p.conn.is_none());
                    want.insert((t, Deadline::Grace(id.clone())));
                }
                if let Some(c) = p.conn {
                    assert_eq!(self.conns[&c].peer.as_deref(), Some(id.as_str()));
                }
                assert_eq!(self.sessions[&p.session], *id);
            }
            assert_eq!(self.sessions.len(), self.peers.len());
            assert_eq!(self.deadlines, want);
        }
    }

    /// Sends (receiver, text) drained from `room`.
    fn sends(room: &mut Room) -> Vec<(ConnId, String)> {
        room.drain_outputs()
            .filter_map(|o| match o {
                Output::Send { conn, text } => Some((conn, text.to_string())),
                _ => None,
            })
            .collect()
    }

    fn join(room: &mut Room, now: Instant, conn: ConnId, peer: &str) {
        room.handle(now, Input::Connect { conn });
        let text = format!(r#"{{"type":"join","peer":"{peer}"}}"#);
        room.handle(now, Input::Text { conn, text });
    }

    fn restore(
        room: &mut Room,
        now: Instant,
        conn: ConnId,
        peer: &str,
        rec: &PeerRecord,
        known: &[&str],
    ) {
        room.handle(now, Input::Connect { conn });
        let restore = Restore {
            peer: peer.into(),
            session: rec.session.clone(),
            seq: rec.seq,
            meta: rec.meta.clone(),
            known: known.iter().map(|k| (*k).to_owned()).collect(),
        };
        room.handle(now, Input::Restore { conn, restore });
    }

    /// alice, bob (each on their own node) and carol (on the home node) in an old
    /// room; the records their nodes keep.
    fn old_room(t0: Instant) -> (PeerRecord, PeerRecord, PeerRecord) {
        let mut old = Room::new(
            "r",
            Arc::new(Config::default()),
            WallClock::new(t0, 0),
            [2; 32],
        );
        join(&mut old, t0, 1, "alice");
        let text = r#"{"type":"join","peer":"bob","meta":{"n":1}}"#.into();
        old.handle(t0, Input::Connect { conn: 2 });
        old.handle(t0, Input::Text { conn: 2, text });
        join(&mut old, t0, 3, "carol");
        let rec = |p| old.peer_record(p).unwrap();
        (rec("alice"), rec("bob"), rec("carol"))
    }

    #[test]
    fn a_rehomed_room_is_silent_for_restored_peers_and_times_out_the_others() {
        let t0 = Instant::now();
        let (alice, bob, _carol) = old_room(t0);
        let config = Arc::new(Config::default());
        let mut room =
            Room::new("r", config, WallClock::new(t0, 0), [3; 32]).with_seq_base(2 << 32);
        restore(&mut room, t0, 10, "alice", &alice, &["bob", "carol"]);
        assert_eq!(
            sends(&mut room),
            vec![],
            "alice knows everyone: nothing to say"
        );
        // alice talks to bob before bob's node restored him: queued, not refused.
        let msg = |to: &str, n: u32| Input::Text {
            conn: 10,
            text: format!(r#"{{"type":"message","to":"{to}","data":{n}}}"#),
        };
        room.handle(t0, msg("bob", 1));
        room.handle(t0, msg("bob", 2));
        assert_eq!(sends(&mut room), vec![]);
        restore(&mut room, t0, 11, "bob", &bob, &["alice", "carol"]);
        assert_eq!(
            sends(&mut room),
            vec![
                (
                    11,
                    r#"{"type":"message","from":"alice","data":1}"#.to_owned()
                ),
                (
                    11,
                    r#"{"type":"message","from":"alice","data":2}"#.to_owned()
                ),
            ]
        );
        room.check();
        // bob keeps his session: his client can resume with it on any node.
        room.handle(t0, Input::Disconnect { conn: 11 });
        let _ = sends(&mut room);
        room.handle(t0, Input::Connect { conn: 12 });
        let text = format!(r#"{{"type":"join","resume":"{}"}}"#, bob.session);
        room.handle(t0, Input::Text { conn: 12, text });
        let out = sends(&mut room);
        assert!(out[0].1.contains(r#""resumed":true"#), "{out:?}");
        // A newcomer comes after both in the join order (polite towards them) and
        // sees carol as reconnecting.
        join(&mut room, t0, 13, "dave");
        let out = sends(&mut room);
        let welcome: serde_json::Value = serde_json::from_str(&out[0].1).unwrap();
        assert_eq!(welcome["peers"].as_array().unwrap().len(), 3, "{welcome}");
        for p in welcome["peers"].as_array().unwrap() {
            assert_eq!(p["polite"], true, "{p}");
            assert_eq!(p["reconnecting"], p["peer"] == "carol", "{p}");
        }
        assert!(out.contains(&(
            10,
            r#"{"type":"peer-joined","peer":"dave","polite":false}"#.to_owned()
        )));
        // carol never comes back: she leaves at the end of the grace period.
        let end = room.poll_timeout().unwrap();
        assert_eq!(end, t0 + Duration::from_millis(15_000));
        room.handle(end, Input::Tick);
        let left = r#"{"type":"peer-left","peer":"carol","reason":"timeout"}"#;
        let out = sends(&mut room);
        for conn in [10, 12, 13] {
            assert!(out.contains(&(conn, left.to_owned())), "{out:?}");
        }
        room.check();
        assert_eq!(room.summary().peer_ids, ["alice", "bob", "dave"]);
    }

    #[test]
    fn a_restored_peer_hears_of_peers_it_did_not_know_and_they_of_it() {
        let t0 = Instant::now();
        let (alice, bob, _) = old_room(t0);
        let mut room = Room::new(
            "r",
            Arc::new(Config::default()),
            WallClock::new(t0, 0),
            [3; 32],
        )
        .with_seq_base(2 << 32);
        // alice's node had not seen bob's peer-joined yet.
        restore(&mut room, t0, 10, "alice", &alice, &[]);
        assert_eq!(sends(&mut room), vec![]);
        restore(&mut room, t0, 11, "bob", &bob, &["alice"]);
        assert_eq!(
            sends(&mut room),
            vec![(
                10,
                r#"{"type":"peer-joined","peer":"bob","meta":{"n":1},"polite":false}"#.to_owned()
            )]
        );
        // A forged or stale restore of a peer that is here is refused.
        let mut other = bob.clone();
        other.session = "forged".into();
        restore(&mut room, t0, 12, "bob", &other, &[]);
        let out: Vec<Output> = room.drain_outputs().collect();
        assert!(
            matches!(&out[0], Output::Send { conn: 12, text } if text.contains("peer-id-taken")),
            "{out:?}"
        );
        // …and closed `moved`, so its client joins again instead of staying outside.
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Close {
                    conn: 12,
                    reason: CloseReason::Moved
                }
            )),
            "{out:?}"
        );
        // The room is unchanged: bob's own connection is still bob.
        assert_eq!(
            room.peer_conns(),
            vec![("alice", Some(10)), ("bob", Some(11))]
        );
        room.check();
    }

    #[test]
    fn restoring_into_a_living_home_resumes_without_a_welcome() {
        let t0 = Instant::now();
        let mut room = Room::new(
            "r",
            Arc::new(Config::default()),
            WallClock::new(t0, 0),
            [3; 32],
        );
        join(&mut room, t0, 1, "alice");
        join(&mut room, t0, 2, "bob");
        let bob = room.peer_record("bob").unwrap();
        room.handle(t0, Input::Disconnect { conn: 2 });
        room.handle(
            t0,
            Input::Text {
                conn: 1,
                text: r#"{"type":"message","to":"bob","data":7}"#.into(),
            },
        );
        let _ = sends(&mut room);
        restore(&mut room, t0, 3, "bob", &bob, &["alice"]);
        assert_eq!(
            sends(&mut room),
            vec![
                (
                    3,
                    r#"{"type":"message","from":"alice","data":7}"#.to_owned()
                ),
                (1, r#"{"type":"peer-resumed","peer":"bob"}"#.to_owned()),
            ]
        );
        room.check();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Connect,
        Join(usize, usize),
        Resume(usize, usize),
        Text(usize, &'static str),
        Drop(usize),
        Wait(u64),
        /// Restore the peer of a recorded welcome on a new connection, knowing
        /// some peer ids.
        Restore(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Connect),
            3 => (0..8usize, 0..4usize).prop_map(|(c, p)| Op::Join(c, p)),
            2 => (0..8usize, 0..4usize).prop_map(|(c, p)| Op::Resume(c, p)),
            2 => (0..8usize, prop_oneof![
                Just(r#"{"type":"leave"}"#),
                Just(r#"{"type":"message","data":1}"#),
                Just(r#"{"type":"message","to":"p1","data":1}"#),
                Just("garbage"),
            ]).prop_map(|(c, t)| Op::Text(c, t)),
            2 => (0..8usize).prop_map(Op::Drop),
            2 => (0..20_000u64).prop_map(Op::Wait),
            1 => (0..8usize, 0..4usize).prop_map(|(s, k)| Op::Restore(s, k)),
        ]
    }

    proptest! {
        #[test]
        fn deadlines_stay_consistent(ops in proptest::collection::vec(op(), 1..120)) {
            let t0 = Instant::now();
            let config = Config { max_peers_per_room: 3, ..Config::default() };
            let mut room = Room::new("r", Arc::new(config), WallClock::new(t0, 0), [1; 32]);
            let mut now = t0;
            let mut conns: Vec<ConnId> = Vec::new();
            let mut sessions: Vec<String> = Vec::new();
            let mut records: Vec<(String, PeerRecord)> = Vec::new();
            for op in ops {
                let pick = |i: usize| conns.get(i % conns.len().max(1)).copied();
                match op {
                    Op::Connect => {
                        let c = conns.len() as ConnId;
                        conns.push(c);
                        room.handle(now, Input::Connect { conn: c });
                    }
                    Op::Join(i, p) => if let Some(c) = pick(i) {
                        let text = format!(r#"{{"type":"join","peer":"p{p}"}}"#);
                        room.handle(now, Input::Text { conn: c, text });
                    },
                    Op::Resume(i, s) => if let (Some(c), Some(sess)) = (pick(i), sessions.get(s)) {
                        let text = format!(r#"{{"type":"join","resume":"{sess}"}}"#);
                        room.handle(now, Input::Text { conn: c, text });
                    },
                    Op::Text(i, t) => if let Some(c) = pick(i) {
                        room.handle(now, Input::Text { conn: c, text: t.into() });
                    },
                    Op::Drop(i) => if let Some(c) = pick(i) {
                        room.handle(now, Input::Disconnect { conn: c });
                    },
                    Op::Wait(ms) => {
                        now += Duration::from_millis(ms);
                        room.handle(now, Input::Tick);
                    }
                    Op::Restore(s, k) => if let Some((peer, rec)) = records.get(s).cloned() {
                        let c = conns.len() as ConnId;
                        conns.push(c);
                        room.handle(now, Input::Connect { conn: c });
                        let known = (0..k).map(|i| format!("p{i}")).collect();
                        let restore = Restore { peer, session: rec.session, seq: rec.seq, meta: rec.meta, known };
                        room.handle(now, Input::Restore { conn: c, restore });
                    },
                }
                while let Some(out) = room.poll_output() {
                    if let Output::Send { text, .. } = out
                        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                        && v["type"] == "welcome"
                    {
                        sessions.push(v["session"].as_str().unwrap_or_default().to_owned());
                        let peer = v["peer"].as_str().unwrap_or_default().to_owned();
                        if let Some(rec) = room.peer_record(&peer) {
                            records.push((peer, rec));
                        }
                    }
                }
                room.check();
                if let Some(t) = room.poll_timeout() {
                    prop_assert!(t > now, "a deadline at or before now was not applied");
                }
            }
        }
    }
}
