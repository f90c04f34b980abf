//! What every connection handler shares: the configuration, the live streams, the
//! signaling rooms, the access policy, metrics, and the shutdown signal with the
//! tracker of every task. Built by [`crate::app`], read by the edges
//! ([`crate::http`], [`crate::net`], [`crate::rtmp`]).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::policy::{PerIpLimiter, PolicyCell};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::live::Streams;
use crate::metrics::Metrics;
use crate::signal::Rooms;

/// What every connection handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    /// The effective configuration.
    pub(crate) config: Config,
    /// Live streams.
    pub(crate) streams: Arc<Streams>,
    /// Signaling rooms.
    pub(crate) rooms: Arc<Rooms>,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Every connection and player task, awaited on shutdown.
    pub(crate) tasks: TaskTracker,
    /// Prometheus metrics (`/metrics`).
    pub(crate) metrics: Arc<Metrics>,
    /// Auth, hooks, admin token, proxies and connection limits; swapped on SIGHUP.
    pub(crate) policy: PolicyCell,
    /// Open connections per client IP on the HTTP and TLS listeners.
    pub(crate) per_ip: Arc<PerIpLimiter>,
    /// The bound RTMP address, when RTMP is on (shown to users in `/api/streams`).
    pub(crate) rtmp_addr: Option<SocketAddr>,
    /// This node in a cluster (`--cluster`), or `None` for a single node.
    pub(crate) cluster: Option<Arc<Cluster>>,
}
