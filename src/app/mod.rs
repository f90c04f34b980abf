//! The composition root: [`spawn`] builds every part from a [`Config`], binds the
//! listeners and starts the accept loops; [`Server`] reloads the policy on SIGHUP
//! and shuts down within `shutdown_timeout_ms` (stop accepting, end every stream —
//! players get a WebSocket close 1001 or the end of their chunked body — and wait,
//! bounded, for connections to drain). Every task is spawned on the state's
//! [`tokio_util::task::TaskTracker`], so shutdown can wait for all of
//! them. This is the only module that knows every part.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::policy::{Policy, PolicyCell};
use crate::config::{Config, ConfigError, Listen};
use crate::live::Streams;
use crate::metrics::Metrics;
use crate::net;
use crate::signal::Rooms;
use crate::state::AppState;

/// A running server.
#[derive(Debug)]
pub struct Server {
    http_addr: Option<SocketAddr>,
    rtmp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    state: Arc<AppState>,
}

/// Binds the configured listeners and starts serving.
pub async fn spawn(config: Config) -> io::Result<Server> {
    let metrics = Arc::new(Metrics::new());
    let tls = match (&config.tls_listen, &config.tls_cert, &config.tls_key) {
        (Listen::Off, _, _) => None,
        (Listen::On(addr), Some(cert), Some(key)) => Some((
            *addr,
            crate::net::tls::load(cert, key).map_err(io::Error::other)?,
        )),
        (Listen::On(_), _, _) => {
            return Err(io::Error::other(crate::net::tls::TlsError::MissingFiles));
        }
    };
    // Bind everything first: a port in use fails the start before any task runs, and
    // the state knows the bound addresses (the pages show the RTMP port).
    fn bind(
        listen: Listen,
        backlog: u32,
    ) -> io::Result<Option<(tokio::net::TcpListener, SocketAddr)>> {
        let Listen::On(addr) = listen else {
            return Ok(None);
        };
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std's TcpListener::bind does: a restart can rebind while old
        // connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(backlog)?;
        let local = listener.local_addr()?;
        Ok(Some((listener, local)))
    }
    let backlog = config.listen_backlog;
    let http = bind(config.http, backlog)?;
    let tls = match tls {
        Some((addr, acceptor)) => {
            bind(Listen::On(addr), backlog)?.map(|(listener, local)| (listener, local, acceptor))
        }
        None => None,
    };
    let rtmp = bind(config.rtmp, backlog)?;
    let http_addr = http.as_ref().map(|(_, a)| *a);
    let tls_addr = tls.as_ref().map(|(_, a, _)| *a);
    let rtmp_addr = rtmp.as_ref().map(|(_, a)| *a);

    let streams = Streams::with_metrics(config.live.clone(), metrics.clone());
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let rooms = Rooms::with_metrics(config.signal.clone(), metrics.clone());
    let cluster = if config.cluster.enabled() {
        let url = match (&config.cluster.node_url, http_addr) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(addr)) if !addr.ip().is_unspecified() => format!("http://{addr}"),
            _ => {
                return Err(io::Error::other(
                    "--cluster needs --node-url (how other nodes reach this one) when the \
                     HTTP listener is a wildcard address or off",
                ));
            }
        };
        let cluster = crate::cluster::Cluster::new(
            config.cluster.clone(),
            url,
            streams.clone(),
            rooms.clone(),
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        )
        .map_err(io::Error::other)?;
        rooms.set_node(cluster.id());
        tasks.spawn(cluster.clone().run_heartbeat());
        Some(cluster)
    } else {
        None
    };
    let state = Arc::new(AppState {
        streams,
        rooms,
        shutdown,
        tasks,
        cluster,
        policy: PolicyCell::new(Policy::new(&config, metrics.clone())),
        per_ip: Arc::default(),
        rtmp_addr,
        metrics,
        config,
    });
    // One connection budget for the plain and the TLS listener.
    let permits = Arc::new(Semaphore::new(state.config.max_connections));
    if let Some((listener, _)) = http {
        let st = state.clone();
        state.tasks.spawn(net::accept_loop(
            listener,
            st,
            permits.clone(),
            net::Service::Http(None),
        ));
    }
    if let Some((listener, _, acceptor)) = tls {
        let st = state.clone();
        state.tasks.spawn(net::accept_loop(
            listener,
            st,
            permits,
            net::Service::Http(Some(acceptor)),
        ));
    }
    if let Some((listener, _)) = rtmp {
        state.tasks.spawn(net::accept_loop(
            listener,
            state.clone(),
            Arc::new(Semaphore::new(state.config.rtmp_settings.max_connections)),
            net::Service::Rtmp,
        ));
    }
    Ok(Server {
        http_addr,
        rtmp_addr,
        tls_addr,
        state,
    })
}

impl Server {
    /// The bound HTTP address, when the listener is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound RTMP address, when the listener is on.
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.rtmp_addr
    }

    /// The bound TLS (https/wss) address, when the listener is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Applies the reloadable part of `config` (auth, hooks, admin token, trusted
    /// proxies, per-IP and request-head limits; see `access::policy`) without
    /// touching connections. Other changed keys are reported and ignored until a
    /// restart.
    pub fn reload(&self, config: &Config) -> Result<(), ConfigError> {
        config.validate()?;
        let state = &self.state;
        state.policy.set(Policy::new(config, state.metrics.clone()));
        if crate::config::needs_restart(&state.config, config) {
            tracing::warn!(
                "config reloaded; changes outside [auth], [hooks], admin_token, \
                 trusted_proxies and the connection limits need a restart"
            );
        } else {
            tracing::info!("config reloaded");
        }
        Ok(())
    }

    /// Graceful shutdown: stop accepting, close players and publishers, wait for
    /// connections to finish (at most `shutdown_timeout_ms`).
    pub async fn shutdown(self) {
        let state = self.state;
        let limit = Duration::from_millis(state.config.shutdown_timeout_ms);
        let deadline = tokio::time::Instant::now() + limit;
        // The hub first: from here no publisher that drops can start a grace period.
        state.streams.begin_shutdown();
        state.shutdown.cancel();
        state.streams.shutdown();
        state.tasks.close();
        if tokio::time::timeout_at(deadline, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = state.tasks.len(),
                "shutdown timeout: dropping remaining connections"
            );
        }
    }
}
