//! Signaling load: P peers in R rooms relaying `message`s at a rate or as fast as
//! possible, and an idle-connection memory test.
//!
//! Each relayed message carries its send time (µs since the harness's epoch) in
//! `data.t`, so one-way delivery latency is measured in this process. In `max` mode
//! every peer keeps `--inflight` pings outstanding towards the next peer of its room,
//! which answers each with a pong (both are relayed messages): a closed loop that
//! runs as fast as the server relays without overflowing any queue.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::procfs::Proc;
use crate::server::Target;
use crate::stats::pct;

/// A signaling client's socket.
pub type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Connections opened at once while joining (keeps the accept backlog short).
const CONNECT_CONCURRENCY: usize = 128;

/// A message rate: messages per second across all peers, or as fast as possible.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// Closed loop, as fast as the server relays.
    Max,
    /// Open loop, this many messages per second in total.
    PerSec(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        s.parse::<f64>()
            .ok()
            .filter(|r| *r > 0.0)
            .map(Rate::PerSec)
            .ok_or_else(|| format!("rate must be a positive number or `max`, not `{s}`"))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::PerSec(r) => write!(f, "{r}"),
        }
    }
}

/// Settings of the signaling runs.
#[derive(Debug)]
pub struct SignalSettings {
    /// wsrelay binary.
    pub server_bin: PathBuf,
    /// External server (`--url`) and its PID.
    pub url: Option<String>,
    /// PID of the external server.
    pub server_pid: Option<u32>,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Peers.
    pub peers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Outstanding pings per peer in `max` mode.
    pub inflight: usize,
    /// Time before the window.
    pub warmup: Duration,
    /// Measurement window.
    pub window: Duration,
}

/// One signaling run (a JSON line).
#[derive(Debug, Serialize)]
pub struct SignalResult {
    /// `signal`.
    pub kind: &'static str,
    /// Server label.
    pub target: String,
    /// Connected peers.
    pub peers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Offered rate (`max` or messages/s).
    pub rate: String,
    /// Messages relayed to peers per second in the window.
    pub relayed_per_s: f64,
    /// Delivery latency ms: p50/p99/max.
    pub latency_ms: [Option<f64>; 3],
    /// Messages sent in the window.
    pub sent: u64,
    /// Messages delivered in the window.
    pub delivered: u64,
    /// `error` messages received from the server, by code.
    pub errors: BTreeMap<String, usize>,
    /// Peers that failed (connect, join, closed), by reason.
    pub failures: BTreeMap<String, usize>,
    /// Server CPU in the window, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// (RSS with peers joined − RSS before) / peers, KiB.
    pub rss_per_peer_kib: Option<f64>,
    /// Harness CPU in the window, % of one core.
    pub harness_cpu_pct: Option<f64>,
    /// Load average at the start.
    pub loadavg: String,
}

/// The idle-connection memory test (a JSON line).
#[derive(Debug, Serialize)]
pub struct IdleResult {
    /// `signal-idle`.
    pub kind: &'static str,
    /// Server label.
    pub target: String,
    /// Peers asked for.
    pub peers: usize,
    /// Peers joined.
    pub joined: usize,
    /// Server RSS before, MiB.
    pub rss_base_mib: Option<f64>,
    /// Server RSS with every peer joined, MiB.
    pub rss_mib: Option<f64>,
    /// (RSS − baseline) / joined peers, KiB.
    pub rss_per_peer_kib: Option<f64>,
    /// Time to connect and join them all, s.
    pub join_s: f64,
    /// Failures by reason.
    pub failures: BTreeMap<String, usize>,
}

fn target(s: &SignalSettings) -> Result<Target, String> {
    match &s.url {
        Some(url) => Target::external(url, s.server_pid),
        None => Target::wsrelay(&s.server_bin, &s.out_dir, false, None),
    }
}

/// Connects and joins `peer` to `room`; returns the socket after `welcome`.
pub async fn join(addr: SocketAddr, room: &str, peer: &str) -> Result<Ws, String> {
    let sock = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = sock.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(4 << 10);
    let url = format!("ws://{addr}/signal/{room}");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, sock, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    ws.send(Message::text(format!(
        r#"{{"type":"join","peer":"{peer}"}}"#
    )))
    .await
    .map_err(|e| format!("send join: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no welcome in time".to_owned())?;
        match msg {
            Some(Ok(Message::Text(t))) if t.starts_with(r#"{"type":"welcome""#) => return Ok(ws),
            Some(Ok(Message::Text(t))) if t.starts_with(r#"{"type":"error""#) => {
                return Err(format!("join refused: {}", error_code(&t)));
            }
            Some(Ok(Message::Close(c))) => return Err(format!("closed at join: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("join: {e}")),
            None => return Err("eof at join".into()),
        }
    }
}

fn error_code(text: &str) -> String {
    field(text, r#""code":""#).unwrap_or("?").to_owned()
}

/// The string value after `key` (which ends with the opening quote).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// The unsigned number after `key`.
fn number(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

/// A peer to join: the node it connects to, its room and its id.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// The node's HTTP listener.
    pub addr: SocketAddr,
    /// Room name.
    pub room: String,
    /// Peer id.
    pub peer: String,
}

/// `p{i}` in room `r{i % rooms}` for i in 0..peers, all on `addr`.
fn specs(addr: SocketAddr, peers: usize, rooms: usize) -> Vec<JoinSpec> {
    (0..peers)
        .map(|i| JoinSpec {
            addr,
            room: format!("r{}", i % rooms),
            peer: format!("p{i}"),
        })
        .collect()
}

/// Joins `specs` with bounded concurrency; `None` for those that failed.
pub async fn join_all(
    specs: &[JoinSpec],
    failures: &mut BTreeMap<String, usize>,
) -> Vec<Option<Ws>> {
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut handles = Vec::with_capacity(specs.len());
    for spec in specs {
        let sem = sem.clone();
        let spec = spec.clone();
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            join(spec.addr, &spec.room, &spec.peer).await
        }));
    }
    let mut out = Vec::with_capacity(specs.len());
    for h in handles {
        match h.await {
            Ok(Ok(ws)) => out.push(Some(ws)),
            Ok(Err(e)) => {
                *failures.entry(e).or_insert(0) += 1;
                out.push(None);
            }
            Err(e) => {
                *failures.entry(format!("task: {e}")).or_insert(0) += 1;
                out.push(None);
            }
        }
    }
    out
}

#[derive(Debug, Default)]
struct PeerOut {
    latency_us: Vec<u32>,
    errors: BTreeMap<String, usize>,
    failure: Option<String>,
}

struct Counters {
    sent: AtomicU64,
    delivered: AtomicU64,
}

struct PeerPlan {
    me: usize,
    to: usize,
    rate: Rate,
    per_peer_rate: f64,
    inflight: usize,
    epoch: Instant,
    window: (Instant, Instant),
    counters: Arc<Counters>,
}

fn message(to: usize, epoch: Instant, kind: u8) -> Message {
    let t = epoch.elapsed().as_micros();
    Message::text(format!(
        r#"{{"type":"message","to":"p{to}","data":{{"t":{t},"k":{kind}}}}}"#
    ))
}

async fn peer(ws: Ws, plan: PeerPlan, stop: CancellationToken) -> PeerOut {
    let mut out = PeerOut::default();
    let (mut tx, mut rx) = ws.split();
    let in_window = |now: Instant| now >= plan.window.0 && now < plan.window.1;
    let tick = Duration::from_millis(10);
    // Peers tick at spread-out phases, as independent clients would, not in lockstep.
    let phase = tick.mul_f64((plan.me % 97) as f64 / 97.0);
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + phase, tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut credit = 0.0;
    if plan.rate == Rate::Max {
        for _ in 0..plan.inflight {
            if tx.feed(message(plan.to, plan.epoch, 0)).await.is_err() {
                break;
            }
        }
        let _ = tx.flush().await;
    }
    let result: Result<(), String> = async {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = interval.tick(), if plan.rate != Rate::Max => {
                    credit += plan.per_peer_rate * tick.as_secs_f64();
                    let mut n = 0;
                    while credit >= 1.0 {
                        credit -= 1.0;
                        tx.feed(message(plan.to, plan.epoch, 2)).await.map_err(|e| format!("send: {e}"))?;
                        n += 1;
                    }
                    if n > 0 {
                        tx.flush().await.map_err(|e| format!("send: {e}"))?;
                        if in_window(Instant::now()) {
                            plan.counters.sent.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                }
                msg = rx.next() => {
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(c))) => return Err(format!("closed by server: {:?}", c.map(|c| u16::from(c.code)))),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(format!("read: {e}")),
                        None => return Err("eof".into()),
                    };
                    let now = Instant::now();
                    if text.starts_with(r#"{"type":"error""#) {
                        *out.errors.entry(error_code(&text)).or_insert(0) += 1;
                        continue;
                    }
                    if !text.starts_with(r#"{"type":"message""#) {
                        continue;
                    }
                    let (Some(t), Some(kind)) = (number(&text, r#""t":"#), number(&text, r#""k":"#)) else {
                        continue;
                    };
                    if in_window(now) {
                        let lat = now.duration_since(plan.epoch).as_micros() as u64;
                        out.latency_us.push(lat.saturating_sub(t).min(u64::from(u32::MAX)) as u32);
                        plan.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    if plan.rate == Rate::Max {
                        // Ping → pong to its sender; pong → next ping.
                        let (to, reply) = if kind == 0 {
                            let from = field(&text, r#""from":"p"#).and_then(|f| f.parse().ok()).unwrap_or(plan.to);
                            (from, 1)
                        } else {
                            (plan.to, 0)
                        };
                        tx.send(message(to, plan.epoch, reply)).await.map_err(|e| format!("send: {e}"))?;
                        if in_window(Instant::now()) {
                            plan.counters.sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result
        && !stop.is_cancelled()
    {
        out.failure = Some(e);
    }
    let _ = tx.close().await;
    out
}

/// A peer that sends to another: its socket, its index (`p{me}`) and its
/// counterpart's (`p{to}`).
pub struct Talker {
    /// The joined socket.
    pub ws: Ws,
    /// This peer is `p{me}`.
    pub me: usize,
    /// It sends to `p{to}` (in `max` mode: pings, which `p{to}` answers).
    pub to: usize,
}

/// Talkers running: the window is `w_from..w_to`; [`Traffic::finish`] stops them.
pub struct Traffic {
    /// Start of the measurement window.
    pub w_from: Instant,
    /// End of the measurement window.
    pub w_to: Instant,
    counters: Arc<Counters>,
    stop: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<PeerOut>>,
}

/// What the talkers saw in the window.
pub struct TrafficOut {
    /// Delivery latencies of messages received in the window, µs, sorted.
    pub lat_us: Vec<u32>,
    /// `error` messages by code.
    pub errors: BTreeMap<String, usize>,
    /// Talkers that failed, by reason.
    pub failures: BTreeMap<String, usize>,
    /// Messages sent in the window.
    pub sent: u64,
    /// Messages delivered in the window.
    pub delivered: u64,
}

impl TrafficOut {
    /// Latency ms: p50/p99/max.
    pub fn latency_ms(&self) -> [Option<f64>; 3] {
        [
            pct(&self.lat_us, 0.50).map(|v| f64::from(v) / 1e3),
            pct(&self.lat_us, 0.99).map(|v| f64::from(v) / 1e3),
            self.lat_us.last().map(|v| f64::from(*v) / 1e3),
        ]
    }

    /// Whether an open-loop run lost messages (over 2 % of those sent in the window
    /// did not arrive in it), or a closed loop delivered nothing.
    pub fn lost(&self, rate: Rate) -> bool {
        match rate {
            Rate::PerSec(_) => self.delivered + self.delivered / 50 < self.sent,
            Rate::Max => self.delivered == 0,
        }
    }
}

/// Starts `talkers` at `rate` in total (`inflight` pings each in `max` mode); the
/// window opens `warmup` from now and lasts `window`.
pub fn start(
    talkers: Vec<Talker>,
    rate: Rate,
    inflight: usize,
    warmup: Duration,
    window: Duration,
) -> Traffic {
    let epoch = Instant::now();
    let w_from = epoch + warmup;
    let w_to = w_from + window;
    let counters = Arc::new(Counters {
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let per_peer_rate = match rate {
        Rate::PerSec(r) => r / talkers.len().max(1) as f64,
        Rate::Max => 0.0,
    };
    let handles = talkers
        .into_iter()
        .map(|t| {
            let plan = PeerPlan {
                me: t.me,
                to: t.to,
                rate,
                per_peer_rate,
                inflight,
                epoch,
                window: (w_from, w_to),
                counters: counters.clone(),
            };
            tokio::spawn(peer(t.ws, plan, stop.clone()))
        })
        .collect();
    Traffic {
        w_from,
        w_to,
        counters,
        stop,
        handles,
    }
}

impl Traffic {
    /// Lets messages sent just before the window's end arrive, stops the talkers
    /// and collects what they saw.
    pub async fn finish(self) -> Result<TrafficOut, String> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.stop.cancel();
        let mut lat = Vec::new();
        let mut errors = BTreeMap::new();
        let mut failures = BTreeMap::new();
        for h in self.handles {
            let out = h.await.map_err(|e| format!("peer task: {e}"))?;
            lat.extend(out.latency_us);
            for (k, v) in out.errors {
                *errors.entry(k).or_insert(0) += v;
            }
            if let Some(f) = out.failure {
                *failures.entry(f).or_insert(0) += 1;
            }
        }
        lat.sort_unstable();
        Ok(TrafficOut {
            lat_us: lat,
            errors,
            failures,
            sent: self.counters.sent.load(Ordering::Relaxed),
            delivered: self.counters.delivered.load(Ordering::Relaxed),
        })
    }
}

/// One traffic run at `rate`.
pub async fn run(s: &SignalSettings, rate: Rate) -> Result<SignalResult, String> {
    let loadavg = crate::procfs::loadavg();
    let target = target(s)?;
    let srv = target.pid.map(Proc::Pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_base = srv.and_then(|p| p.rss_bytes());
    let mut failures = BTreeMap::new();
    let sockets = join_all(&specs(target.http, s.peers, s.rooms), &mut failures).await;
    let joined = sockets.iter().filter(|w| w.is_some()).count();
    let rss_joined = srv.and_then(|p| p.rss_bytes());

    let mut talkers = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let Some(ws) = ws else { continue };
        // The next peer of the same room (peers i, i+R, i+2R… share room i % R).
        let room_size = s.peers.div_ceil(s.rooms);
        let pos = i / s.rooms;
        let next_pos = (pos + 1) % room_size;
        let mut to = next_pos * s.rooms + i % s.rooms;
        if to >= s.peers {
            to = i % s.rooms;
        }
        talkers.push(Talker { ws, me: i, to });
    }
    let traffic = start(talkers, rate, s.inflight, s.warmup, s.window);
    tokio::time::sleep_until(traffic.w_from.into()).await;
    let srv0 = srv.map(|p| p.sample());
    let me0 = Proc::Myself.sample();
    tokio::time::sleep_until(traffic.w_to.into()).await;
    let srv1 = srv.map(|p| p.sample());
    let me1 = Proc::Myself.sample();
    let out = traffic.finish().await?;
    drop(target);
    for (k, v) in &out.failures {
        *failures.entry(k.clone()).or_insert(0) += v;
    }
    let server_cpu = match (srv0, srv1) {
        (Some(a), Some(b)) => a.until(&b),
        _ => None,
    };
    Ok(SignalResult {
        kind: "signal",
        target: if s.url.is_some() { "url" } else { "wsrelay" }.to_owned(),
        peers: joined,
        rooms: s.rooms,
        rate: rate.to_string(),
        relayed_per_s: out.delivered as f64 / s.window.as_secs_f64(),
        latency_ms: out.latency_ms(),
        sent: out.sent,
        delivered: out.delivered,
        errors: out.errors,
        failures,
        server_cpu_pct: server_cpu.map(|c| c.1),
        rss_per_peer_kib: match (rss_base, rss_joined) {
            (Some(a), Some(b)) if joined > 0 => {
                Some((b as f64 - a as f64) / 1024.0 / joined as f64)
            }
            _ => None,
        },
        harness_cpu_pct: me0.until(&me1).map(|c| c.1),
        loadavg,
    })
}

/// Joined sockets kept open and read (answers the server's pings, sees closes).
pub struct Holders {
    stop: CancellationToken,
    readers: Vec<tokio::task::JoinHandle<bool>>,
}

/// Keeps `sockets` open, reading them, until [`Holders::release`].
pub fn hold(sockets: impl IntoIterator<Item = Ws>) -> Holders {
    let stop = CancellationToken::new();
    let readers = sockets
        .into_iter()
        .map(|ws| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut ws = ws;
                tokio::select! {
                    _ = stop.cancelled() => true,
                    _ = async { while let Some(Ok(_)) = ws.next().await {} } => false,
                }
            })
        })
        .collect();
    Holders { stop, readers }
}

impl Holders {
    /// Closes the sockets; counts those the server had closed in `failures`.
    pub async fn release(self, failures: &mut BTreeMap<String, usize>) {
        self.stop.cancel();
        for r in self.readers {
            if let Ok(false) = r.await {
                *failures.entry("closed while idle".to_owned()).or_insert(0) += 1;
            }
        }
    }
}

/// Connects `peers` idle peers (rooms of `per_room`) and measures the server's RSS.
pub async fn idle(s: &SignalSettings, peers: usize, per_room: usize) -> Result<IdleResult, String> {
    let target = target(s)?;
    let srv = target.pid.map(Proc::Pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_base = srv.and_then(|p| p.rss_bytes());
    let mut failures = BTreeMap::new();
    let t0 = Instant::now();
    let rooms = peers.div_ceil(per_room.max(1));
    let sockets = join_all(&specs(target.http, peers, rooms), &mut failures).await;
    let join_s = t0.elapsed().as_secs_f64();
    let joined = sockets.iter().filter(|w| w.is_some()).count();
    let holders = hold(sockets.into_iter().flatten());
    // Memory settles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = srv.and_then(|p| p.rss_bytes());
    holders.release(&mut failures).await;
    drop(target);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    Ok(IdleResult {
        kind: "signal-idle",
        target: if s.url.is_some() { "url" } else { "wsrelay" }.to_owned(),
        peers,
        joined,
        rss_base_mib: rss_base.map(mib),
        rss_mib: rss.map(mib),
        rss_per_peer_kib: match (rss_base, rss) {
            (Some(a), Some(b)) if joined > 0 => {
                Some((b as f64 - a as f64) / 1024.0 / joined as f64)
            }
            _ => None,
        },
        join_s,
        failures,
    })
}
