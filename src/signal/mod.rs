//! WebRTC signaling on `/signal/ROOM`: the async shell around [`signaling::Room`].
//!
//! Every rule of the protocol lives in the pure `signaling` crate; this module only
//! moves bytes and time:
//!
//! - [`Rooms`] is the registry of rooms. Each room is owned by **one task**
//!   (`run_room`) that holds the [`Room`] state machine and a bounded inbox, so
//!   joins, leaves and relays of a room are serialized and can never race.
//! - Each WebSocket has one task (`run_conn`) that forwards frames to its room's
//!   inbox and writes what the room sends it from a bounded outbound queue. A client
//!   that reads slower than its queue fills is dropped (4006); one that stops
//!   answering pings is closed (4005); on shutdown every socket gets a 1001 close.
//! - Global caps (`max_rooms`, `max_connections`) answer `503` before the upgrade.
//! - In a cluster a room lives on one **home** node ([`Home`], a lease kept by the
//!   room task); clients on other nodes reach it through a link ([`link`]), which
//!   is just another connection here, marked with the node it comes from.

pub(crate) mod edge;
pub(crate) mod link;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hyper_tungstenite::HyperWebsocketStream;
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use hyper_tungstenite::tungstenite::protocol::frame::CloseFrame;
use hyper_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use serde::Serialize;
use signaling::{
    CloseReason, ConnId, Event, Input, Output, Restore, Room, RoomSummary, SignalError, WallClock,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// WebSocket read buffer per signaling connection. Signaling messages are small
/// (an SDP is a few KiB) and tungstenite allocates this per socket up front, so it
/// is what dominates the memory of an idle peer (4 KiB: 10.8 KiB RSS per idle peer;
/// 2 KiB: 8.8 KiB). A larger message still arrives, in more reads.
const READ_BUFFER: usize = 2 << 10;

/// Bytes gathered before a socket write; a burst of candidates goes out in one syscall.
const WRITE_BUFFER: usize = 16 << 10;

/// Outbound messages taken from the queue per wakeup before flushing, so a busy
/// connection still gets its pings and reads serviced.
const WRITE_BATCH: usize = 64;

/// After the server sends a close frame, how long it waits for the client's
/// close reply (or, after an oversized frame, how long it drains unread input so
/// the kernel does not reset the connection before the client reads the error).
use crate::vocab::CLOSE_TIMEOUT;

/// Most bytes drained after an oversized frame before giving up on a clean close.
const DRAIN_LIMIT: usize = 8 << 20;

/// A message from a connection task to its room task.
#[derive(Debug)]
enum RoomMsg {
    /// A new connection and the queue the room writes to it through.
    Connect { conn: ConnId, out: OutQueue },
    /// Any other input for the state machine.
    Input(Input),
    /// Another node holds the room's lease now: close every connection (4012) and
    /// end the room here.
    Evict,
}

/// What makes this node a room's home in a cluster: its lease, which the room task
/// keeps for as long as the room lives here, and where its join order starts (the
/// lease epoch in the high bits, so peers joining a re-homed room come after every
/// restored one).
pub(crate) struct Home {
    pub(crate) lease: Box<dyn std::fmt::Debug + Send + Sync>,
    pub(crate) seq_base: u64,
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home")
            .field("lease", &self.lease)
            .field("seq_base", &self.seq_base)
            .finish()
    }
}

/// The room's end of one connection's outbound queue: bounded in messages (the
/// channel) and in bytes (`queued`, which the connection task decrements as it
/// writes). A message relayed to many peers is one shared `Arc<str>`.
#[derive(Clone, Debug)]
struct OutQueue {
    tx: mpsc::Sender<Outbound>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    /// The node a cluster link comes from; `None` for a client connected here.
    via: Option<Arc<str>>,
}

impl OutQueue {
    /// Queues a text frame, or says the client reads too slowly.
    fn send_text(&self, text: Arc<str>) -> Result<(), mpsc::error::TrySendError<()>> {
        let len = text.len();
        if self.queued.load(Ordering::Relaxed) + len > self.max_bytes {
            return Err(mpsc::error::TrySendError::Full(()));
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.try_send(Outbound::Text(text)).map_err(|e| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => mpsc::error::TrySendError::Full(()),
                mpsc::error::TrySendError::Closed(_) => mpsc::error::TrySendError::Closed(()),
            }
        })
    }
}

/// A message from a room task to one connection task.
#[derive(Debug)]
enum Outbound {
    /// A JSON text frame (shared with the other receivers of the same message).
    Text(Arc<str>),
    /// Close with this reason; the room has forgotten the connection.
    Close(CloseReason),
    /// The connection joined as this peer (for its tracing span).
    Peer(String),
}

/// Why a signaling upgrade was refused before it happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AdmitError {
    /// `max_connections` signaling connections are open.
    #[error("too many signaling connections ({0}); try again later")]
    TooManyConnections(usize),
    /// `max_rooms` rooms exist and this would be a new one.
    #[error("too many signaling rooms ({0}); try again later")]
    TooManyRooms(usize),
    /// The room's inbox is full (it is flooded); try again later.
    #[error("room is busy; try again later")]
    RoomBusy,
}

#[derive(Debug)]
struct RoomHandle {
    /// Tells apart a room from a newer room of the same name.
    generation: u64,
    inbox: mpsc::Sender<RoomMsg>,
    /// Refreshed by the room task whenever its roster or connections change.
    summary: Arc<Mutex<RoomStatus>>,
}

/// A room in `/api/rooms`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RoomStatus {
    #[serde(flatten)]
    pub(crate) summary: RoomSummary,
    /// In a cluster: the node the room lives on (this one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) home: Option<String>,
    /// In a cluster: the node each peer is connected to, in join order (`null`
    /// while it is reconnecting).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) nodes: Vec<PeerNode>,
}

/// Where a peer is connected.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerNode {
    pub(crate) peer: String,
    pub(crate) node: Option<String>,
}

/// The registry of signaling rooms.
#[derive(Debug)]
pub(crate) struct Rooms {
    config: Arc<signaling::Config>,
    /// Room name → its task's inbox. A std mutex: never held across an await.
    rooms: Mutex<HashMap<String, RoomHandle>>,
    /// One permit per open signaling connection (`max_connections`).
    connections: Arc<Semaphore>,
    /// Source of [`ConnId`]s and room generations.
    next_id: AtomicU64,
    /// Unix time anchor for JWT `exp` and TURN credential expiry.
    clock: WallClock,
    /// Messages by type, errors by code, resumes.
    metrics: Arc<crate::metrics::Metrics>,
    /// This node's id, once it is part of a cluster.
    node: OnceLock<Arc<str>>,
    /// The nodes this node has links with.
    peers: Arc<link::Peers>,
}

/// `/api/rooms` body.
#[derive(Debug, Serialize)]
pub(crate) struct RoomsReport {
    /// Open signaling connections.
    pub(crate) connections: usize,
    /// Rooms by name.
    pub(crate) rooms: Vec<RoomStatus>,
}

fn now() -> std::time::Instant {
    // tokio's clock, so tests that pause time move rooms' clocks too.
    Instant::now().into_std()
}

impl Rooms {
    /// An empty registry with these limits, counting into `metrics`.
    pub(crate) fn with_metrics(
        config: signaling::Config,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Rooms> {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Arc::new(Rooms {
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config: Arc::new(config),
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            clock: WallClock::new(now(), unix_ms),
            metrics,
            node: OnceLock::new(),
            peers: Arc::default(),
        })
    }

    /// Joins a cluster as node `id`: room statuses name the node of each peer.
    pub(crate) fn set_node(&self, id: &str) {
        let _ = self.node.set(id.into());
    }

    /// The nodes this node has links with (the cluster's heartbeat checks them).
    pub(crate) fn peers(&self) -> &Arc<link::Peers> {
        &self.peers
    }

    /// Another node is the home of `name` now: its connections here are closed
    /// (4012) and their clients reconnect to the new home.
    pub(crate) fn evict(&self, name: &str) {
        if let Some(h) = self.lock_rooms().get(name) {
            let _ = h.inbox.try_send(RoomMsg::Evict);
        }
    }

    /// A connection permit for a client whose room lives on another node.
    pub(crate) fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AdmitError> {
        self.connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| AdmitError::TooManyConnections(self.config.max_connections))
    }

    /// The limits in force.
    pub(crate) fn config(&self) -> &signaling::Config {
        &self.config
    }

    /// Rooms and their peers, sorted by name.
    pub(crate) fn report(&self) -> RoomsReport {
        let mut rooms: Vec<RoomStatus> = self
            .lock_rooms()
            .values()
            .map(|h| h.summary.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        rooms.sort_by(|a, b| a.summary.room.cmp(&b.summary.room));
        RoomsReport {
            connections: self.config.max_connections - self.connections.available_permits(),
            rooms,
        }
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomHandle>> {
        // A poisoned lock means a panic elsewhere; the map itself is still consistent
        // (every mutation is a single insert or remove).
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register `conn` with room `name`, creating the room (and its task) if needed.
    fn admit(
        self: &Arc<Self>,
        name: &str,
        conn: ConnId,
        out: OutQueue,
        home: Option<Home>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<mpsc::Sender<RoomMsg>, AdmitError> {
        let mut rooms = self.lock_rooms();
        if rooms.get(name).is_some_and(|h| h.inbox.is_closed()) {
            // Its task ended without unregistering (only on a bug); replace it.
            rooms.remove(name);
        }
        if !rooms.contains_key(name) {
            if rooms.len() >= self.config.max_rooms {
                return Err(AdmitError::TooManyRooms(self.config.max_rooms));
            }
            let generation = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = mpsc::channel(self.config.room_inbox);
            let seq_base = home.as_ref().map_or(0, |h| h.seq_base);
            let room = Room::new(name, self.config.clone(), self.clock, rand::random())
                .with_seq_base(seq_base);
            let summary = Arc::new(Mutex::new(self.status(&room, &HashMap::new())));
            // A root span: the room outlives the connection that created it.
            let span = tracing::info_span!(parent: None, "room", room = %name);
            tasks.spawn(
                run_room(
                    self.clone(),
                    room,
                    home,
                    generation,
                    rx,
                    summary.clone(),
                    shutdown.clone(),
                )
                .instrument(span),
            );
            rooms.insert(
                name.to_owned(),
                RoomHandle {
                    generation,
                    inbox: tx,
                    summary,
                },
            );
        }
        let handle = &rooms[name];
        // Sent under the registry lock: a room only unregisters itself, under the
        // same lock, when its inbox is empty, so this connect cannot be lost.
        handle
            .inbox
            .try_send(RoomMsg::Connect { conn, out })
            .map_err(|_| AdmitError::RoomBusy)?;
        Ok(handle.inbox.clone())
    }

    /// A room's status for `/api/rooms`, with each peer's node in a cluster.
    fn status(&self, room: &Room, conns: &HashMap<ConnId, OutQueue>) -> RoomStatus {
        let home = self.node.get().map(|n| n.to_string());
        let nodes = match &home {
            None => Vec::new(),
            Some(here) => room
                .peer_conns()
                .into_iter()
                .map(|(peer, conn)| PeerNode {
                    peer: peer.to_owned(),
                    node: conn.map(|c| match conns.get(&c).and_then(|q| q.via.as_deref()) {
                        Some(via) => via.to_owned(),
                        None => here.clone(),
                    }),
                })
                .collect(),
        };
        RoomStatus {
            summary: room.summary(),
            home,
            nodes,
        }
    }

    /// Unregisters room `name` of `generation` whatever it holds (it was evicted).
    fn remove(&self, name: &str, generation: u64) {
        let mut rooms = self.lock_rooms();
        if rooms.get(name).is_some_and(|h| h.generation == generation) {
            rooms.remove(name);
        }
    }

    /// Called by an empty room: unregister it unless a message is waiting.
    fn retire(&self, name: &str, generation: u64, inbox: &mpsc::Receiver<RoomMsg>) -> bool {
        let mut rooms = self.lock_rooms();
        if !inbox.is_empty() {
            return false;
        }
        if rooms.get(name).is_some_and(|h| h.generation == generation) {
            rooms.remove(name);
        }
        true
    }
}

/// The task that owns one room.
async fn run_room(
    hub: Arc<Rooms>,
    mut room: Room,
    home: Option<Home>,
    generation: u64,
    mut inbox: mpsc::Receiver<RoomMsg>,
    summary: Arc<Mutex<RoomStatus>>,
    shutdown: CancellationToken,
) {
    // Each connection's outbound queue.
    let mut conns: HashMap<ConnId, OutQueue> = HashMap::new();
    // The room's outputs of one round, reused.
    let mut batch: Vec<Output> = Vec::new();
    // Released (in Redis) when the room ends here.
    let _home = home;
    tracing::debug!("room opened");
    loop {
        let deadline = room.poll_timeout();
        let msg = tokio::select! {
            msg = inbox.recv() => msg,
            () = sleep_until_opt(deadline), if deadline.is_some() => Some(RoomMsg::Input(Input::Tick)),
            () = shutdown.cancelled() => None,
        };
        // `None` from the inbox cannot happen while registered (the hub keeps a
        // sender); treat it like shutdown.
        let Some(msg) = msg else { break };
        let t = now();
        // Connects and disconnects change `connections` of the summary.
        let changed = matches!(
            msg,
            RoomMsg::Connect { .. } | RoomMsg::Input(Input::Disconnect { .. })
        );
        match msg {
            RoomMsg::Connect { conn, out } => {
                if out.via.is_some() {
                    links(&hub.metrics).inc();
                }
                conns.insert(conn, out);
                room.handle(t, Input::Connect { conn });
            }
            RoomMsg::Input(input) => {
                if let Input::Disconnect { conn } = &input {
                    forget(&mut conns, *conn, &hub.metrics);
                }
                room.handle(t, input);
            }
            RoomMsg::Evict => {
                let ids: Vec<ConnId> = conns.keys().copied().collect();
                for conn in ids {
                    if let Some(q) = forget(&mut conns, conn, &hub.metrics) {
                        let _ = q.tx.try_send(Outbound::Close(CloseReason::Moved));
                    }
                }
                hub.remove(room.name(), generation);
                break;
            }
        }
        apply_outputs(
            &hub, &mut room, &mut conns, t, &summary, &mut batch, changed,
        );
        if room.is_empty() && hub.retire(room.name(), generation, &inbox) {
            break;
        }
    }
    tracing::debug!("room closed");
}

fn links(metrics: &crate::metrics::Metrics) -> prometheus_client::metrics::gauge::Gauge {
    metrics
        .signal_cluster_links
        .get_or_create_owned(&[("role", "home")])
}

/// The room no longer writes to `conn`.
fn forget(
    conns: &mut HashMap<ConnId, OutQueue>,
    conn: ConnId,
    metrics: &crate::metrics::Metrics,
) -> Option<OutQueue> {
    let q = conns.remove(&conn)?;
    if q.via.is_some() {
        links(metrics).dec();
    }
    Some(q)
}

async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(Instant::from_std(d)).await;
    }
}

/// Carries out the room's outputs and keeps its `/api/rooms` summary current.
/// `changed`: the input itself changed the connections.
///
/// A round that changes the roster is published before any of its messages is
/// handed to a connection: a client that got its `welcome` (or a `peer-joined`)
/// finds the roster in `/api/rooms` already, even if this thread is preempted
/// between the two. Sends that drop a connection (queue full, task gone) make
/// another round; the summary is published again at the end if they changed it.
fn apply_outputs(
    hub: &Rooms,
    room: &mut Room,
    conns: &mut HashMap<ConnId, OutQueue>,
    t: std::time::Instant,
    summary: &Mutex<RoomStatus>,
    batch: &mut Vec<Output>,
    mut changed: bool,
) {
    let metrics = &hub.metrics;
    loop {
        batch.extend(room.drain_outputs());
        if batch.is_empty() {
            break;
        }
        if changed || batch.iter().any(changes_roster) {
            *summary.lock().unwrap_or_else(|e| e.into_inner()) = hub.status(room, conns);
            changed = false;
        }
        for out in batch.drain(..) {
            match out {
                Output::Send { conn, text } => {
                    let Some(tx) = conns.get(&conn) else { continue };
                    if let Err(e) = tx.send_text(text) {
                        // Full: the client reads too slowly. Closed: its task is gone
                        // and a Disconnect is on the way. Either way the room forgets it;
                        // dropping the sender tells the task to close with 4006.
                        if matches!(e, mpsc::error::TrySendError::Full(_)) {
                            tracing::info!(conn, "signaling client too slow: outbound queue full");
                        }
                        forget(conns, conn, metrics);
                        changed = true;
                        room.handle(t, Input::Disconnect { conn });
                    }
                }
                Output::Close { conn, reason } => {
                    changed = true;
                    if let Some(q) = forget(conns, conn, metrics) {
                        let _ = q.tx.try_send(Outbound::Close(reason));
                    }
                }
                // Published above, before the round's sends.
                Output::Event(event) => {
                    if !matches!(event, Event::Received { .. }) {
                        log_event(&event);
                    }
                    match &event {
                        Event::Rejected { code, .. } => {
                            let errors = &metrics.signal_errors;
                            errors.get_or_create(&[("code", code.as_str())]).inc();
                        }
                        Event::Resumed { .. } => {
                            metrics.signal_resumes.inc();
                        }
                        Event::Received { kind } => {
                            metrics
                                .signal_messages
                                .get_or_create(&[("type", *kind)])
                                .inc();
                        }
                        _ => {}
                    }
                    if let Event::Joined { conn, peer }
                    | Event::Resumed { conn, peer }
                    | Event::Restored { conn, peer } = event
                        && let Some(q) = conns.get(&conn)
                    {
                        if q.via.is_some()
                            && let Some(rec) = room.peer_record(&peer)
                        {
                            // What the link's node keeps to restore the peer elsewhere.
                            let frame = link::Frame::Peer {
                                peer: peer.clone(),
                                seq: rec.seq,
                                session: rec.session,
                                meta: rec.meta,
                            };
                            let _ = q.send_text(frame.to_json().into());
                        }
                        let _ = q.tx.try_send(Outbound::Peer(peer));
                    }
                }
                _ => {}
            }
        }
    }
    if changed {
        *summary.lock().unwrap_or_else(|e| e.into_inner()) = hub.status(room, conns);
    }
}

/// An output after which `/api/rooms` must show a different roster or connections.
fn changes_roster(out: &Output) -> bool {
    match out {
        Output::Send { .. } => false,
        Output::Event(event) => !matches!(event, Event::Rejected { .. } | Event::Received { .. }),
        // A close, or an output this code does not know yet.
        _ => true,
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Joined { conn, peer } => tracing::info!(conn, peer = %peer, "peer joined"),
        Event::Resumed { conn, peer } => tracing::info!(conn, peer = %peer, "peer resumed"),
        Event::Restored { conn, peer } => {
            tracing::info!(conn, peer = %peer, "peer restored from a lost home node")
        }
        Event::Reconnecting { peer } => tracing::info!(peer = %peer, "peer reconnecting"),
        Event::Left { peer, reason } => tracing::info!(peer = %peer, ?reason, "peer left"),
        Event::Rejected { conn, code } => tracing::debug!(conn, %code, "client error"),
        _ => tracing::debug!(?event, "room event"),
    }
}

/// The WebSocket limits of a signaling socket.
pub(crate) fn ws_config(cfg: &signaling::Config) -> WebSocketConfig {
    // The largest message the server writes is a `welcome` listing every peer
    // with its meta; relayed messages are at most a client message plus `from`.
    let largest_out = cfg
        .max_message_bytes
        .max(cfg.max_peers_per_room * (cfg.max_meta_bytes + 256))
        + 4096;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + largest_out)
        .max_message_size(Some(cfg.max_message_bytes))
        .max_frame_size(Some(cfg.max_message_bytes))
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnEnd {
    /// The room closed it (leave, error, replaced...).
    Closed(CloseReason),
    /// The client closed or the socket failed.
    Lost,
    /// Server shutdown.
    Shutdown,
    /// No frame within `idle_timeout_ms`.
    Idle,
    /// Queue full or a write stalled.
    Slow,
}

/// Forward frames between one WebSocket and its room until either side ends.
/// The connection task's end of its outbound queue.
#[derive(Debug)]
struct Outbox {
    rx: mpsc::Receiver<Outbound>,
    /// Bytes queued; decremented as frames are handed to the socket.
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    async fn recv(&mut self) -> Option<Outbound> {
        let msg = self.rx.recv().await;
        self.taken(&msg);
        msg
    }

    fn try_recv(&mut self) -> Option<Outbound> {
        let msg = self.rx.try_recv().ok();
        self.taken(&msg);
        msg
    }

    fn taken(&self, msg: &Option<Outbound>) {
        if let Some(Outbound::Text(t)) = msg {
            self.queued.fetch_sub(t.len(), Ordering::Relaxed);
        }
    }
}

async fn run_conn(
    mut ws: HyperWebsocketStream,
    conn: ConnId,
    link: Option<link::Watch>,
    room: mpsc::Sender<RoomMsg>,
    mut out: Outbox,
    cfg: &signaling::Config,
    shutdown: CancellationToken,
) -> ConnEnd {
    let heartbeat = Duration::from_millis(cfg.heartbeat_interval_ms);
    let idle = Duration::from_millis(cfg.idle_timeout_ms);
    // A link ends when the cluster finds its node dead.
    let node_dead = async {
        match &link {
            Some(watch) => watch.dead.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(node_dead);
    let write_timeout = Duration::from_millis(cfg.write_timeout_ms);
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let mut last_seen = Instant::now();
    let mut idle_timer = IdleTimer::new(idle);
    // Cleared after an oversized or broken frame: tungstenite must not read on.
    let mut reading = true;
    let to_room = |input| RoomMsg::Input(input);
    let end = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break ConnEnd::Shutdown,
            () = &mut node_dead => {
                tracing::info!("the node of this link is dead (its cluster registration lapsed)");
                break ConnEnd::Lost;
            }
            msg = out.recv() => match msg {
                Some(Outbound::Text(text)) => {
                    let mut batch = vec![text_frame(text)];
                    let mut closing = None;
                    while batch.len() < WRITE_BATCH {
                        match out.try_recv() {
                            Some(Outbound::Text(t)) => batch.push(text_frame(t)),
                            Some(Outbound::Close(r)) => { closing = Some(r); break; }
                            Some(Outbound::Peer(p)) => { tracing::Span::current().record("peer", p.as_str()); }
                            None => break,
                        }
                    }
                    if !write(&mut ws, batch, write_timeout).await {
                        break ConnEnd::Slow;
                    }
                    if let Some(reason) = closing {
                        break ConnEnd::Closed(reason);
                    }
                }
                Some(Outbound::Close(reason)) => break ConnEnd::Closed(reason),
                Some(Outbound::Peer(p)) => { tracing::Span::current().record("peer", p.as_str()); }
                // The room dropped us: our queue overflowed.
                None => break ConnEnd::Slow,
            },
            frame = ws.next(), if reading => {
                last_seen = Instant::now();
                let input = match frame {
                    Some(Ok(Message::Text(t))) if link.is_some() && link::is_internal(t.as_str()) => {
                        match link_input(conn, t.as_str()) {
                            Some(input) => input,
                            None => continue,
                        }
                    }
                    Some(Ok(Message::Text(t))) => Input::Text { conn, text: t.as_str().to_owned() },
                    Some(Ok(Message::Binary(_))) => Input::Binary { conn },
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    // The client closes; tungstenite answers and ends the stream.
                    Some(Ok(Message::Close(_))) => continue,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                        reading = false;
                        Input::TooLarge { conn }
                    }
                    Some(Err(WsError::Utf8(_))) => {
                        reading = false;
                        Input::NotUtf8 { conn }
                    }
                    Some(Err(_)) | None => break ConnEnd::Lost,
                };
                if room.send(to_room(input)).await.is_err() {
                    // The room is gone (shutdown).
                    break ConnEnd::Shutdown;
                }
            }
            () = idle_timer.expired(last_seen) => break ConnEnd::Idle,
            _ = ping.tick() => {
                if !write(&mut ws, vec![Message::Ping(Default::default())], write_timeout).await {
                    break ConnEnd::Slow;
                }
            }
        }
    };
    if !matches!(end, ConnEnd::Closed(_) | ConnEnd::Shutdown) {
        // The room still thinks this connection is open; tell it first, so the
        // other peers hear `peer-reconnecting` without waiting for our close.
        let _ = room.send(to_room(Input::Disconnect { conn })).await;
    }
    match end {
        ConnEnd::Closed(reason) if !reading => {
            // After an oversized frame the rest of it is still unread: send the
            // close, then drain without parsing so the kernel does not answer
            // the unread bytes with a reset that would swallow our error.
            let frame = close_frame(reason);
            if write(&mut ws, vec![Message::Close(Some(frame))], write_timeout).await {
                drain(&mut ws).await;
            }
        }
        ConnEnd::Closed(reason) => close(&mut ws, reason, write_timeout).await,
        ConnEnd::Shutdown => close(&mut ws, CloseReason::Shutdown, write_timeout).await,
        ConnEnd::Idle => close(&mut ws, CloseReason::IdleTimeout, write_timeout).await,
        ConnEnd::Slow => close(&mut ws, CloseReason::SlowConsumer, write_timeout).await,
        ConnEnd::Lost => {}
    }
    end
}

/// A connection's idle deadline: `idle` after the last frame seen. One timer for
/// the connection's life: a frame only moves the time it was seen, and the timer
/// is set again when it fires early, instead of a new timer per frame.
pub(super) struct IdleTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    idle: Duration,
}

impl IdleTimer {
    pub(super) fn new(idle: Duration) -> IdleTimer {
        IdleTimer {
            sleep: Box::pin(tokio::time::sleep(idle)),
            idle,
        }
    }

    /// Resolves once nothing was seen for `idle` since `seen`. Cancel-safe.
    pub(super) async fn expired(&mut self, seen: Instant) {
        loop {
            self.sleep.as_mut().await;
            let due = seen + self.idle;
            if due <= Instant::now() {
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// An `error` message about no client message in particular, as JSON text.
fn error_json(error: &SignalError) -> String {
    signaling::protocol::ServerMessage::Error {
        code: error.code(),
        message: error.to_string(),
        id: None,
    }
    .to_json()
}

/// The input an internal frame of a cluster link stands for.
fn link_input(conn: ConnId, text: &str) -> Option<Input> {
    match link::Frame::parse(text) {
        Some(link::Frame::Restore {
            peer,
            seq,
            session,
            meta,
            known,
        }) => Some(Input::Restore {
            conn,
            restore: Restore {
                peer,
                session,
                seq,
                meta,
                known,
            },
        }),
        Some(link::Frame::TooLarge) => Some(Input::TooLarge { conn }),
        Some(link::Frame::NotUtf8) => Some(Input::NotUtf8 { conn }),
        Some(link::Frame::Peer { .. }) | None => {
            tracing::warn!("unexpected internal frame on a cluster link (ignored)");
            None
        }
    }
}

/// A text frame of a shared message: the bytes are not copied (tungstenite checks
/// they are UTF-8, which they are).
fn text_frame(text: Arc<str>) -> Message {
    struct Shared(Arc<str>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    let bytes = bytes::Bytes::from_owner(Shared(text));
    match hyper_tungstenite::tungstenite::Utf8Bytes::try_from(bytes) {
        Ok(utf8) => Message::Text(utf8),
        // Cannot happen: the bytes come from a `str`.
        Err(_) => Message::text(""),
    }
}

fn close_frame(reason: CloseReason) -> CloseFrame {
    CloseFrame {
        code: reason.code().into(),
        reason: reason.reason().into(),
    }
}

/// Write and flush `msgs`; false if the socket failed or stalled.
async fn write<S>(ws: &mut WebSocketStream<S>, msgs: Vec<Message>, limit: Duration) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let fut = async {
        for m in msgs {
            ws.feed(m).await?;
        }
        ws.flush().await
    };
    matches!(tokio::time::timeout(limit, fut).await, Ok(Ok(())))
}

/// Close handshake: send our close frame, wait (bounded) for the client's.
async fn close<S>(ws: &mut WebSocketStream<S>, reason: CloseReason, limit: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    close_with(ws, Some(close_frame(reason)), limit).await;
}

/// Close handshake with this frame (`None`: an empty close frame).
async fn close_with<S>(ws: &mut WebSocketStream<S>, frame: Option<CloseFrame>, limit: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let handshake = async {
        ws.close(frame).await?;
        while let Some(frame) = ws.next().await {
            frame?;
        }
        Ok::<_, WsError>(())
    };
    let _ = tokio::time::timeout(limit.min(CLOSE_TIMEOUT), handshake).await;
}

/// Half-close and discard unread input, bounded in time and bytes.
async fn drain<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let io = ws.get_mut();
    let _ = io.shutdown().await;
    let mut buf = vec![0u8; 16 << 10];
    let mut total = 0;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while total < DRAIN_LIMIT {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// A signaling connection admitted before its WebSocket upgrade: it holds one of
/// `max_connections` and is registered with its room (whose inbox and outbound
/// queue are ready), so the upgrade either serves it ([`Admitted::serve`]) or gives
/// it back ([`Admitted::abandon`]).
#[derive(Debug)]
pub(crate) struct Admitted {
    conn: ConnId,
    /// A cluster link from another node (it may send internal frames), watched
    /// for that node's death.
    link: Option<link::Watch>,
    room: mpsc::Sender<RoomMsg>,
    outbox: Outbox,
    cfg: Arc<signaling::Config>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Rooms {
    /// Takes a connection permit and registers a new connection with room `name`,
    /// which lives here. `via`: the node a cluster link comes from. `home`: this
    /// node's lease on the room (kept by the room if this creates it).
    pub(crate) fn admit_connection(
        self: &Arc<Self>,
        name: &str,
        via: Option<Arc<str>>,
        home: Option<Home>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<Admitted, AdmitError> {
        let cfg = self.config.clone();
        let permit = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| AdmitError::TooManyConnections(cfg.max_connections))?;
        let conn = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (out_tx, out_rx) = mpsc::channel(cfg.max_outbound_messages);
        let queued = Arc::new(AtomicUsize::new(0));
        let link = via.as_deref().map(|node| self.peers.watch(node));
        let out_queue = OutQueue {
            tx: out_tx,
            queued: queued.clone(),
            max_bytes: cfg.max_outbound_bytes,
            via,
        };
        let room = self.admit(name, conn, out_queue, home, tasks, shutdown)?;
        Ok(Admitted {
            conn,
            link,
            room,
            outbox: Outbox { rx: out_rx, queued },
            cfg,
            _permit: permit,
        })
    }
}

impl Admitted {
    /// The connection id (for the tracing span).
    pub(crate) fn conn(&self) -> ConnId {
        self.conn
    }

    /// Runs the connection until either side ends it; a panic (a bug) ends only
    /// this connection, and its room hears that it is gone.
    pub(crate) async fn serve(self, ws: HyperWebsocketStream, shutdown: CancellationToken) {
        let Admitted {
            conn,
            link,
            room,
            outbox,
            cfg,
            _permit,
        } = self;
        let run = run_conn(ws, conn, link, room.clone(), outbox, &cfg, shutdown);
        match crate::access::admission::catch_panic(run).await {
            Ok(end) => tracing::debug!(?end, "signaling connection closed"),
            Err(panic) => {
                tracing::error!(reason = %panic, "signaling task panicked (a bug)");
                let _ = room.send(RoomMsg::Input(Input::Disconnect { conn })).await;
            }
        }
    }

    /// The upgrade failed: the room forgets the connection.
    pub(crate) async fn abandon(self) {
        let _ = self
            .room
            .send(RoomMsg::Input(Input::Disconnect { conn: self.conn }))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that got its `welcome` finds itself in `/api/rooms`: the room
    /// publishes the roster before it hands the `welcome` to the connection. The
    /// test holds the room's summary lock while the join is handled, so a room
    /// that sent first and published second would deliver the `welcome` here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_joined_peer_is_in_the_report_before_its_welcome_is_sent() {
        let hub = Rooms::with_metrics(
            signaling::Config::default(),
            Arc::new(crate::metrics::Metrics::new()),
        );
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let admitted = hub
            .admit_connection("r", None, None, &tasks, &shutdown)
            .expect("admitted");
        let (conn, room, mut outbox) = (admitted.conn, admitted.room.clone(), admitted.outbox);
        let summary = hub.lock_rooms()["r"].summary.clone();
        // The connect is published first (connections 1), with no peer yet.
        let deadline = Instant::now() + Duration::from_secs(5);
        while hub.report().rooms[0].summary.connections != 1 {
            assert!(Instant::now() < deadline, "the connect was never published");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(hub.report().rooms[0].summary.peers, 0);

        let held = summary.lock().unwrap();
        let text = r#"{"type":"join","peer":"alice"}"#.to_owned();
        room.try_send(RoomMsg::Input(Input::Text { conn, text }))
            .expect("room inbox has room");
        // The room task is now blocked publishing; nothing may have been sent.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            outbox.rx.try_recv().is_err(),
            "the welcome went out before the roster was published"
        );
        drop(held);

        let first = tokio::time::timeout(Duration::from_secs(5), outbox.rx.recv())
            .await
            .expect("a welcome in time")
            .expect("the queue open");
        let Outbound::Text(welcome) = first else {
            panic!("expected the welcome text, got {first:?}");
        };
        assert!(welcome.starts_with(r#"{"type":"welcome""#), "{welcome}");
        let report = hub.report();
        assert_eq!(report.rooms[0].summary.peers, 1);
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_fires_idle_after_the_last_frame_seen() {
        let idle = Duration::from_millis(100);
        let start = Instant::now();
        let mut timer = IdleTimer::new(idle);
        // Frames seen at 60 and 130 ms: each moves the deadline, the timer is the same.
        let mut seen = start;
        for at in [60, 130] {
            let frame = tokio::time::sleep_until(start + Duration::from_millis(at));
            tokio::select! {
                () = timer.expired(seen) => panic!("fired at {:?}", start.elapsed()),
                () = frame => seen = Instant::now(),
            }
        }
        timer.expired(seen).await;
        assert_eq!(start.elapsed(), Duration::from_millis(230));
    }
}
