//! `[cluster]`: several wsrelay nodes sharing one Redis (off unless `redis` is set).
//! See [`crate::cluster`] for what the nodes keep there.

use serde::{Deserialize, Serialize};
use signaling::Secret;

/// Cluster settings (`[cluster]` in TOML; `--cluster`, `--node-url`,
/// `--cluster-secret`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The shared Redis: `redis://HOST:PORT[/DB]` or `redis+unix:///path/to/sock`.
    /// Default none: a single node, no Redis.
    pub redis: Option<String>,
    /// How other nodes reach this node's HTTP listener (`http://10.0.0.5:8080`).
    /// Default none: derived from the HTTP listener when it is bound to a specific
    /// address (not `0.0.0.0` / `::`); a wildcard listener needs it.
    pub node_url: Option<String>,
    /// Shared by all nodes: signs the internal pulls between them. Required with
    /// `redis`.
    pub secret: Option<Secret>,
    /// How often a node refreshes its registration and renews its leases. Default
    /// 1,000 ms: a dead node disappears within `node_ttl_ms`, and a renewal can miss
    /// a few beats before a lease lapses.
    pub heartbeat_ms: u64,
    /// Lifetime of a node's registration without a refresh. Default 5,000 ms.
    pub node_ttl_ms: u64,
    /// Lifetime of a stream's origin lease without a renewal: how soon a stream
    /// whose origin node died can be published on another node. Default 5,000 ms.
    pub lease_ttl_ms: u64,
    /// An edge keeps pulling a stream this long after its last local player left
    /// (a page reload does not restart the pull). Default 5,000 ms.
    pub pull_linger_ms: u64,
    /// A player on an edge waits at most this long for the first pulled bytes before
    /// it is refused (503). Default 3,000 ms.
    pub play_wait_ms: u64,
    /// Longest back-off between an edge's attempts to reach a stream's origin (it
    /// starts at 100 ms, doubles, with jitter), so a restarted origin is not
    /// stampeded. Default 5,000 ms.
    pub pull_retry_max_ms: u64,
    /// A Redis command that has not answered in this time counts as Redis being
    /// away (a stalled Redis must not stall publishes or plays). Default 1,000 ms.
    pub redis_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            node_url: None,
            secret: None,
            heartbeat_ms: 1_000,
            node_ttl_ms: 5_000,
            lease_ttl_ms: 5_000,
            pull_linger_ms: 5_000,
            play_wait_ms: 3_000,
            pull_retry_max_ms: 5_000,
            redis_timeout_ms: 1_000,
        }
    }
}

impl ClusterConfig {
    /// Whether the cluster is on.
    pub fn enabled(&self) -> bool {
        self.redis.is_some()
    }

    /// Checks the settings work together.
    pub fn validate(&self) -> Result<(), String> {
        let Some(redis) = &self.redis else {
            if self.node_url.is_some() || self.secret.is_some() {
                return Err(
                    "cluster.node_url / cluster.secret need cluster.redis (--cluster)".into(),
                );
            }
            return Ok(());
        };
        // No `rediss://`: the redis crate is built without TLS.
        if !["redis://", "redis+unix://", "unix://"]
            .iter()
            .any(|p| redis.starts_with(p))
        {
            return Err(format!(
                "cluster.redis must be redis://HOST:PORT or redis+unix:///path, not `{redis}`"
            ));
        }
        match &self.secret {
            Some(s) if !s.expose().is_empty() => {}
            _ => {
                return Err(
                    "cluster.secret (--cluster-secret) is required with --cluster: every node \
                     must have the same one"
                        .into(),
                );
            }
        }
        if let Some(url) = &self.node_url {
            let ok = url.strip_prefix("http://").is_some_and(|rest| {
                let host = rest.trim_end_matches('/');
                !host.is_empty() && !host.contains('/')
            });
            if !ok {
                return Err(format!(
                    "cluster.node_url must look like http://HOST:PORT, not `{url}`"
                ));
            }
        }
        let timings = [
            ("heartbeat_ms", self.heartbeat_ms),
            ("node_ttl_ms", self.node_ttl_ms),
            ("lease_ttl_ms", self.lease_ttl_ms),
            ("pull_linger_ms", self.pull_linger_ms),
            ("play_wait_ms", self.play_wait_ms),
            ("pull_retry_max_ms", self.pull_retry_max_ms),
            ("redis_timeout_ms", self.redis_timeout_ms),
        ];
        for (name, value) in timings {
            if !(1..=86_400_000).contains(&value) {
                return Err(format!("cluster.{name} must be between 1 and 86400000"));
            }
        }
        if self.node_ttl_ms <= self.heartbeat_ms || self.lease_ttl_ms <= self.heartbeat_ms {
            return Err("cluster.node_ttl_ms and cluster.lease_ttl_ms must be longer than cluster.heartbeat_ms".into());
        }
        Ok(())
    }
}

/// `url` with any user and password replaced by `***`, for logs and printed config.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
