//! The cluster: several nodes sharing one Redis, which only says who owns what.
//! Media never goes through Redis; edges pull streams from their origin over
//! HTTP-FLV, the way CDN edges pull from an origin.
//!
//! What each node keeps in Redis (keys use hash tags, `{...}`, so each could live on
//! its own Redis Cluster slot later):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `wsrelay:{node:ID}` | JSON: id, URL, boot time, players, streams | `node_ttl_ms`, refreshed every `heartbeat_ms` |
//! | `wsrelay:{stream:NAME}:lease` | `NODE_ID|EPOCH`: the stream's one origin | `lease_ttl_ms`, renewed every `heartbeat_ms` while published |
//! | `wsrelay:{stream:NAME}:epoch` | a counter: the fencing epoch of the next lease | forever (one integer per name) |
//! | `wsrelay:{room:NAME}:lease`, `…:epoch` | the same for a signaling room's home node ([`rooms`]) | `lease_ttl_ms`, renewed while the room exists here |
//!
//! - **One publisher per name, cluster-wide.** A node takes the lease before it
//!   accepts a publisher (set-if-absent with an expiry, Lua); a second publisher on
//!   any node is refused as today (409 / `NetStream.Publish.BadName`). The lease is
//!   renewed only while it still holds this node's value and released only if so.
//!   A node that finds its lease taken stops its publisher (no two origins). A dead
//!   node's leases lapse within `lease_ttl_ms`.
//! - **Edges pull on demand, once** ([`pull`]): a player of a stream that is not
//!   here makes this node look up the lease holder and pull the stream from it,
//!   once per (node, stream), into a local stream that every further local player
//!   shares; the pull stops `pull_linger_ms` after the last local player left. The
//!   origin serves an internal pull only with a valid pull token ([`token`]) and
//!   only while it holds the stream's lease: no edge-of-edge chains.
//! - **Redis away:** flowing streams keep flowing (nothing on the media path
//!   touches Redis); new remote plays and new publishes are refused with 503 and a
//!   reason; nodes re-register and re-take their leases when Redis returns.
//!   `/healthz` never asks Redis.

pub mod pull;
pub mod rooms;
pub mod token;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ClusterConfig;
use crate::live::{PublishError, Streams};
use crate::metrics::Metrics;
use crate::signal::Rooms;

/// The header carrying a pull token on an internal pull.
pub const PULL_HEADER: &str = "x-wsrelay-pull";

/// Prepended to the scripts that take a lease: a call that reaches Redis after its
/// deadline (ARGV, unix ms; the caller gave up on it, e.g. Redis was stalled and
/// ran it on waking) does nothing, so it cannot leave a lease nobody knows it holds.
const STALE: &str = r"
local function stale(deadline)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(deadline)
end
";

/// How far the nodes' clocks may be from Redis's for the deadline of a lease call
/// ([`STALE`]): a call is valid until `redis_timeout_ms` plus this after it was sent.
const CLOCK_SKEW_MS: u64 = 2_000;

/// Takes a lease unless another node holds it. A value of this node's that it no
/// longer counts as held (its release is still on the way) is replaced by a new
/// epoch, so that release finds nothing to delete. Returns the value now held, or
/// nil when taken.
const ACQUIRE: &str = r"
if stale(ARGV[3]) then return false end
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(ARGV[1]) + 1) ~= ARGV[1] .. '|' then
  return false
end
local epoch = redis.call('INCR', KEYS[2])
local val = ARGV[1] .. '|' .. epoch
redis.call('SET', KEYS[1], val, 'PX', ARGV[2])
return val
";

/// Renews a lease if it is still ours (1); re-takes it if it vanished (Redis
/// restarted empty: 2); 0 when another node holds it now.
const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
";

/// Takes over a lease from a node found dead (its value is ARGV[2]) or a lapsed
/// one; returns the new value, or the holder's when a third node holds it now.
const TAKE_OVER: &str = r"
if stale(ARGV[4]) then return false end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[2] then
  return cur
end
local epoch = redis.call('INCR', KEYS[2])
local val = ARGV[1] .. '|' .. epoch
redis.call('SET', KEYS[1], val, 'PX', ARGV[3])
return val
";

/// Leases renewed per pipelined round trip in a heartbeat.
const RENEW_BATCH: usize = 256;

/// Deletes a lease only if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

fn node_key(id: &str) -> String {
    format!("wsrelay:{{node:{id}}}")
}

/// What a lease makes this node: a stream's origin or a signaling room's home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseKind {
    /// The one origin of a live stream.
    Stream,
    /// The one home of a signaling room ([`rooms`]).
    Room,
}

impl LeaseKind {
    fn prefix(self) -> &'static str {
        match self {
            LeaseKind::Stream => "stream",
            LeaseKind::Room => "room",
        }
    }
}

fn lease_key(kind: LeaseKind, name: &str) -> String {
    format!("wsrelay:{{{}:{name}}}:lease", kind.prefix())
}

fn epoch_key(kind: LeaseKind, name: &str) -> String {
    format!("wsrelay:{{{}:{name}}}:epoch", kind.prefix())
}

/// The fencing epoch of a lease value `NODE|EPOCH`.
fn lease_epoch(value: &str) -> u64 {
    value
        .rsplit('|')
        .next()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0)
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Redis did not answer in time or refused the command.
    #[error("cluster directory (Redis) unavailable")]
    Redis(#[source] redis::RedisError),
    /// Redis did not answer within `cluster.redis_timeout_ms`.
    #[error("cluster directory (Redis) did not answer in time")]
    Timeout,
    /// The stream's origin could not be pulled in time.
    #[error("stream's origin did not answer in time")]
    PullTimeout,
}

/// A node as registered in Redis (`/api/cluster`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Random per start.
    pub id: String,
    /// How other nodes reach it.
    pub url: String,
    /// When it started, unix milliseconds.
    pub boot: u64,
    /// Connected players, not counting other nodes' pulls.
    pub players: usize,
    /// Streams live on it (published or pulled).
    pub streams: Vec<String>,
    /// When it registered this value, unix milliseconds.
    pub at: u64,
}

/// This node in the cluster.
pub struct Cluster {
    config: ClusterConfig,
    id: String,
    url: String,
    boot: u64,
    secret: signaling::Secret,
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    /// Leases held: (kind, name) → the value in Redis and how many local
    /// [`LeaseGuard`]s share it (a refused duplicate or a takeover on this node
    /// shares the lease of the live publisher; every connection admitted to a room
    /// shares its room's; it is released when the last goes).
    leases: Mutex<HashMap<(LeaseKind, String), Held>>,
    /// Whether the last Redis command succeeded (for `/api/cluster` and logs).
    redis_ok: AtomicBool,
    /// Whether any Redis command ran yet.
    redis_tried: AtomicBool,
    /// Source of [`Held::instance`]s.
    next_instance: std::sync::atomic::AtomicU64,
    /// Nodes this node has signaling links with that were not registered at the
    /// last heartbeat: dead if they still are not at the next.
    suspects: Mutex<std::collections::HashSet<String>>,
    pub(crate) streams: Arc<Streams>,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) pulls: pull::Pulls,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Unix milliseconds now.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One lease this node holds.
#[derive(Debug)]
struct Held {
    value: String,
    guards: usize,
    /// Tells this holding apart from a later one of the same name (after a loss).
    instance: u64,
}

/// A lease held for a local publisher or room; dropping the last guard of a
/// lease releases it (if still ours) in the background.
#[derive(Debug)]
pub struct LeaseGuard {
    cluster: Arc<Cluster>,
    kind: LeaseKind,
    stream: String,
    /// The value when the guard was made (for its epoch).
    value: String,
    instance: u64,
}

impl LeaseGuard {
    /// The lease's fencing epoch (grows with every new holder of the name).
    pub fn epoch(&self) -> u64 {
        lease_epoch(&self.value)
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let removed = {
            let mut leases = self
                .cluster
                .leases
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let key = (self.kind, self.stream.clone());
            match leases.get_mut(&key) {
                Some(held) if held.instance == self.instance => {
                    held.guards = held.guards.saturating_sub(1);
                    if held.guards == 0 {
                        leases.remove(&key).map(|held| held.value)
                    } else {
                        None
                    }
                }
                _ => None,
            }
        };
        if let Some(value) = removed {
            let cluster = self.cluster.clone();
            let (stream, kind) = (self.stream.clone(), self.kind);
            self.cluster.tasks.spawn(async move {
                let key = lease_key(kind, &stream);
                let released = cluster
                    .run(|mut c| async move {
                        redis::Script::new(RELEASE)
                            .key(key)
                            .arg(value)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await;
                let kind = kind.prefix();
                match released {
                    Ok(_) => tracing::info!(kind, name = stream, "lease released"),
                    Err(e) => tracing::warn!(kind, name = stream, error = %e, "lease not released (it lapses on its own)"),
                }
            });
        }
        self.cluster.update_gauges();
    }
}

impl Cluster {
    /// This node, configured by `config` (validated), reachable at `url`.
    pub(crate) fn new(
        config: ClusterConfig,
        url: String,
        streams: Arc<Streams>,
        rooms: Arc<Rooms>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Cluster>, String> {
        let redis_url = config.redis.clone().unwrap_or_default();
        let client = redis::Client::open(redis_url.as_str()).map_err(|e| {
            let shown = crate::config::cluster::redact_url(&redis_url);
            format!("cluster.redis `{shown}`: {e}")
        })?;
        let secret = config
            .secret
            .clone()
            .ok_or("cluster.secret is required with cluster.redis")?;
        let id = format!("{:012x}", rand::random::<u64>() & 0xFFFF_FFFF_FFFF);
        Ok(Arc::new(Cluster {
            pulls: pull::Pulls::default(),
            config,
            id,
            url,
            boot: unix_ms(),
            secret,
            client,
            conn: Mutex::new(None),
            leases: Mutex::new(HashMap::new()),
            redis_ok: AtomicBool::new(false),
            redis_tried: AtomicBool::new(false),
            next_instance: std::sync::atomic::AtomicU64::new(0),
            suspects: Mutex::default(),
            streams,
            rooms,
            metrics,
            tasks,
            shutdown,
        }))
    }

    /// This node's id (random per start).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How other nodes reach this one.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Whether Redis answered the last command.
    pub fn redis_ok(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
    }

    /// Runs one Redis operation with the connection (connecting first if needed),
    /// bounded by `redis_timeout_ms`; failures are counted and remembered.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, ClusterError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let limit = Duration::from_millis(self.config.redis_timeout_ms);
        let result = tokio::time::timeout(limit, async {
            let existing = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let conn = match existing {
                Some(c) => c,
                None => {
                    let c = self
                        .client
                        .get_connection_manager()
                        .await
                        .map_err(ClusterError::Redis)?;
                    *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                    c
                }
            };
            op(conn).await.map_err(ClusterError::Redis)
        })
        .await
        .unwrap_or(Err(ClusterError::Timeout));
        let ok = result.is_ok();
        let was = self.redis_ok.swap(ok, Ordering::Relaxed);
        // The first command says how it went either way (Redis down at startup
        // is worth a warning, not silence).
        let first = !self.redis_tried.swap(true, Ordering::Relaxed);
        if !ok {
            self.metrics.cluster_redis_errors.inc();
        }
        match &result {
            Err(e) if was || first => {
                tracing::warn!(error = %crate::vocab::error_chain(e), "cluster: Redis unavailable")
            }
            Ok(_) if !was => tracing::info!("cluster: Redis available"),
            _ => {}
        }
        result
    }

    /// Takes the origin lease of `stream` for a local publisher. When this node
    /// holds it already (a second publisher here: the registry refuses it or,
    /// with `allow_takeover`, lets it replace the first), the guard shares it.
    pub async fn acquire(self: &Arc<Self>, stream: &str) -> Result<LeaseGuard, PublishError> {
        match self.acquire_lease(LeaseKind::Stream, stream).await {
            Ok(Ok(guard)) => Ok(guard),
            Ok(Err(_holder)) => Err(PublishError::AlreadyPublishing(stream.to_owned())),
            Err(e) => {
                tracing::warn!(stream, error = %crate::vocab::error_chain(&e), "lease not taken");
                Err(PublishError::DirectoryUnavailable)
            }
        }
    }

    /// The deadline (unix ms) of a lease call sent now ([`STALE`]).
    fn call_deadline(&self) -> u64 {
        unix_ms() + self.config.redis_timeout_ms + CLOCK_SKEW_MS
    }

    /// A guard sharing a lease this node holds, without asking Redis.
    pub fn share(self: &Arc<Self>, kind: LeaseKind, name: &str) -> Option<LeaseGuard> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let held = leases.get_mut(&(kind, name.to_owned()))?;
        held.guards += 1;
        Some(LeaseGuard {
            cluster: self.clone(),
            kind,
            stream: name.to_owned(),
            value: held.value.clone(),
            instance: held.instance,
        })
    }

    /// Takes (or shares) the lease of `name`; `Ok(Err(value))` when another node
    /// holds it (its value `NODE|EPOCH`).
    pub async fn acquire_lease(
        self: &Arc<Self>,
        kind: LeaseKind,
        name: &str,
    ) -> Result<Result<LeaseGuard, String>, ClusterError> {
        if let Some(guard) = self.share(kind, name) {
            return Ok(Ok(guard));
        }
        let (key, epoch, id, ttl, deadline) = (
            lease_key(kind, name),
            epoch_key(kind, name),
            self.id.clone(),
            self.config.lease_ttl_ms,
            self.call_deadline(),
        );
        let taken: Option<String> = self
            .run(|mut c| async move {
                redis::Script::new(&format!("{STALE}{ACQUIRE}"))
                    .key(key)
                    .key(epoch)
                    .arg(id)
                    .arg(ttl)
                    .arg(deadline)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match taken {
            Some(value) => Ok(Ok(self.hold(kind, name, value))),
            None => {
                let key = lease_key(kind, name);
                let holder: Option<String> = self
                    .run(
                        |mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await },
                    )
                    .await?;
                // Released in between: the caller asks again.
                Ok(Err(holder.unwrap_or_default()))
            }
        }
    }

    /// Takes over the lease of `name` from `dead` (the value of a holder found
    /// unreachable) or a lapsed one. `Ok(Err(value))`: a third node was quicker.
    pub async fn take_over(
        self: &Arc<Self>,
        kind: LeaseKind,
        name: &str,
        dead: &str,
    ) -> Result<Result<LeaseGuard, String>, ClusterError> {
        let (key, epoch, id, dead, ttl, deadline) = (
            lease_key(kind, name),
            epoch_key(kind, name),
            self.id.clone(),
            dead.to_owned(),
            self.config.lease_ttl_ms,
            self.call_deadline(),
        );
        let value: Option<String> = self
            .run(|mut c| async move {
                redis::Script::new(&format!("{STALE}{TAKE_OVER}"))
                    .key(key)
                    .key(epoch)
                    .arg(id)
                    .arg(dead)
                    .arg(ttl)
                    .arg(deadline)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match value {
            Some(value) if value.split('|').next() == Some(self.id.as_str()) => {
                tracing::info!(kind = kind.prefix(), name, lease = %value, "lease taken over from a node found dead");
                Ok(Ok(self.hold(kind, name, value)))
            }
            // A third node was quicker, or the call was too late (stale).
            other => Ok(Err(other.unwrap_or_default())),
        }
    }

    /// Records a lease value Redis gave this node; returns a guard for it.
    fn hold(self: &Arc<Self>, kind: LeaseKind, name: &str, value: String) -> LeaseGuard {
        tracing::info!(kind = kind.prefix(), name, lease = %value, "lease gained");
        let instance = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            let held = leases
                .entry((kind, name.to_owned()))
                .or_insert_with(|| Held {
                    value: value.clone(),
                    guards: 0,
                    instance: self.next_instance.fetch_add(1, Ordering::Relaxed),
                });
            // Two acquires raced past `share`: the later one replaced the earlier's
            // value in Redis with a new epoch, and both share the newest, whichever
            // order they get here in.
            if lease_epoch(&value) >= lease_epoch(&held.value) {
                held.value = value.clone();
            }
            held.guards += 1;
            held.instance
        };
        self.update_gauges();
        LeaseGuard {
            cluster: self.clone(),
            kind,
            stream: name.to_owned(),
            value,
            instance,
        }
    }

    /// The node holding a lease value `NODE|EPOCH`, if registered.
    pub async fn node_of(&self, value: &str) -> Result<Option<NodeInfo>, ClusterError> {
        let Some(owner) = value.split('|').next().filter(|o| !o.is_empty()) else {
            return Ok(None);
        };
        let key = node_key(owner);
        let node: Option<String> = self
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Ok(node.and_then(|n| serde_json::from_str(&n).ok()))
    }

    /// Whether this node holds `stream`'s lease (is its origin).
    pub fn holds(&self, stream: &str) -> bool {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&(LeaseKind::Stream, stream.to_owned()))
    }

    /// The node holding `stream`'s lease, if any other node does and is registered.
    pub async fn locate(&self, stream: &str) -> Result<Option<NodeInfo>, ClusterError> {
        let key = lease_key(LeaseKind::Stream, stream);
        let lease: Option<String> = self
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        let Some(lease) = lease.filter(|v| v.split('|').next() != Some(self.id.as_str())) else {
            return Ok(None);
        };
        self.node_of(&lease).await
    }

    /// Every registered node (`/api/cluster`).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let values: Vec<String> = self
            .run(|mut c| async move {
                let mut keys: Vec<String> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg("wsrelay:{node:*}")
                        .arg("COUNT")
                        .arg(100)
                        .query_async(&mut c)
                        .await?;
                    keys.extend(batch);
                    cursor = next;
                    if cursor == 0 || keys.len() > 10_000 {
                        break;
                    }
                }
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let values: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
                Ok(values.into_iter().flatten().collect())
            })
            .await?;
        let mut nodes: Vec<NodeInfo> = values
            .iter()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// A pull token for this node to pull `stream`.
    pub(crate) fn pull_token(&self, stream: &str) -> String {
        token::sign(
            self.secret.expose().as_bytes(),
            stream,
            &self.id,
            unix_ms() / 1000,
        )
    }

    /// Checks a pull token; returns the pulling node's id.
    pub fn verify_pull(&self, stream: &str, token: &str) -> Result<String, token::TokenError> {
        token::verify(
            self.secret.expose().as_bytes(),
            stream,
            token,
            unix_ms() / 1000,
        )
    }

    fn update_gauges(&self) {
        let leases = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|(kind, _)| *kind == LeaseKind::Stream)
            .count();
        self.metrics.cluster_leases.set(leases as i64);
        self.metrics.cluster_pulls.set(self.pulls.len() as i64);
    }

    /// One heartbeat: refresh the registration, renew every lease, stop the
    /// publishers whose lease another node holds now.
    async fn beat(&self) {
        let statuses = self.streams.streams();
        let info = NodeInfo {
            id: self.id.clone(),
            url: self.url.clone(),
            boot: self.boot,
            // Viewers only: an edge's pull is a player here but not an audience.
            players: statuses
                .iter()
                .map(|s| s.players.saturating_sub(s.edges.len()))
                .sum(),
            streams: statuses.iter().map(|s| s.name.clone()).collect(),
            at: unix_ms(),
        };
        let (key, ttl) = (node_key(&self.id), self.config.node_ttl_ms);
        let json = serde_json::to_string(&info).unwrap_or_default();
        if self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(json)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
            .is_err()
        {
            return; // Redis away: leases are renewed next time (they may lapse)
        }
        let held: Vec<((LeaseKind, String), String)> = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, held)| (k.clone(), held.value.clone()))
            .collect();
        self.check_link_peers().await;
        // Renewed in pipelined batches: one round trip per batch, however many
        // streams and rooms this node holds.
        for batch in held.chunks(RENEW_BATCH) {
            let mut pipe = redis::pipe();
            for ((kind, name), value) in batch {
                pipe.cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(lease_key(*kind, name))
                    .arg(value)
                    .arg(self.config.lease_ttl_ms);
            }
            let Ok(results) = self
                .run(|mut c| async move { pipe.query_async::<Vec<i64>>(&mut c).await })
                .await
            else {
                break; // Redis away again: next beat
            };
            for (((kind, name), value), renewed) in batch.iter().zip(results) {
                self.renewed(*kind, name, value, renewed);
            }
        }
        self.update_gauges();
    }

    /// Finds the nodes this node has signaling links with whose registration
    /// lapsed (`node_ttl_ms`) and ends those links. A node must be missing at two
    /// heartbeats in a row: a Redis restarted empty is refilled within one.
    async fn check_link_peers(&self) {
        let peers = self.rooms.peers().nodes();
        if peers.is_empty() {
            self.suspects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            return;
        }
        let mut pipe = redis::pipe();
        for id in &peers {
            pipe.cmd("EXISTS").arg(node_key(id));
        }
        let Ok(exists) = self
            .run(|mut c| async move { pipe.query_async::<Vec<bool>>(&mut c).await })
            .await
        else {
            return; // Redis away: nobody is found dead
        };
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        let missing: std::collections::HashSet<String> = peers
            .into_iter()
            .zip(exists)
            .filter(|(_, exists)| !exists)
            .map(|(id, _)| id)
            .collect();
        for id in missing.intersection(&suspects) {
            tracing::warn!(node = %id, "node's registration lapsed: ending the signaling links with it");
            self.rooms.peers().dead(id);
        }
        *suspects = missing;
    }

    /// Acts on the answer of [`RENEW`] for one lease.
    fn renewed(&self, kind: LeaseKind, name: &str, value: &str, renewed: i64) {
        match renewed {
            1 => {}
            2 => tracing::info!(
                kind = kind.prefix(),
                name,
                "lease re-taken (Redis had lost it)"
            ),
            _ => {
                let removed = {
                    let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
                    let key = (kind, name.to_owned());
                    leases.get(&key).is_some_and(|h| h.value == value)
                        && leases.remove(&key).is_some()
                };
                if !removed {
                    return;
                }
                self.metrics.cluster_leases_lost.inc();
                match kind {
                    LeaseKind::Stream => {
                        tracing::warn!(
                            stream = name,
                            "lease lost: another node is the origin now; stopping the local publisher"
                        );
                        self.streams.kick(name);
                    }
                    LeaseKind::Room => {
                        tracing::warn!(
                            room = name,
                            "lease lost: another node is the room's home now; closing its connections here (4012)"
                        );
                        self.rooms.evict(name);
                    }
                }
            }
        }
    }

    /// Runs the heartbeat until shutdown, then deregisters (bounded).
    pub async fn run_heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.heartbeat_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = tick.tick() => self.beat().await,
            }
        }
        let key = node_key(&self.id);
        let _ = self
            .run(|mut c| async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await })
            .await;
    }

    /// The address an origin URL points at (for the edge stream's publisher
    /// info); `0.0.0.0:0` when it is a host name.
    pub(crate) fn url_addr(url: &str) -> SocketAddr {
        url_host(url)
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// The `host:port` of a node URL (`http://host:port`, as `--node-url` requires).
pub(crate) fn url_host(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}
