//! The listeners, the HTTP router and the server's lifecycle.
//!
//! [`spawn`] binds the listeners and returns a [`Server`] handle; [`Server::shutdown`]
//! stops accepting, ends every stream (players get a WebSocket close 1001 or the end of
//! their chunked body), and waits, bounded by `shutdown_timeout_ms`, for connections to
//! drain. Every task is spawned on the state's [`TaskTracker`], so shutdown can wait for
//! all of them.

use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::Action;
use crate::config::{Config, ConfigError, Listen};
use crate::egress::{self, HttpSink, WsSink};
use crate::http::{self, Body, ChannelBody};
use crate::hub::{Hub, PlayError, PlayerInfo, Protocol, PublishError, PublisherInfo};
use crate::ingest;
use crate::metrics::Metrics;
use crate::policy::{PerIpLimiter, Policy, PolicyCell};
use bytes::Bytes;

/// HTTP-FLV body queue, in chunks (each an encoded tag shared with other players).
/// Small on purpose: it only smooths hyper's polling; the stream's ring is the real
/// backlog, and a player that cannot drain this stalls its writer, which times out.
const HTTP_PLAYER_QUEUE: usize = 64;

/// WebSocket read buffer for players, which send us next to nothing (control frames).
/// Small on purpose: tungstenite zero-fills it before every read attempt, and a
/// player task makes one per wakeup (measured: 3.5 % of server CPU at 500 players
/// with 4 KiB, and 4 KiB of RSS per player).
const PLAYER_WS_READ_BUFFER: usize = 256;

/// Largest message a player may send (players have nothing to say but close frames).
const PLAYER_WS_MAX_MESSAGE: usize = 64 << 10;

/// WebSocket write buffer: a batch of tags is gathered up to this before a syscall.
const WS_WRITE_BUFFER: usize = 64 << 10;

/// What every connection handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The effective configuration.
    pub config: Config,
    /// Live streams.
    pub hub: Arc<Hub>,
    /// Signaling rooms.
    pub signal: Arc<crate::signal::SignalHub>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every connection and player task, awaited on shutdown.
    pub tasks: TaskTracker,
    /// When the server started.
    pub started: Instant,
    /// Prometheus metrics (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// Auth, hooks, admin token, proxies and connection limits; swapped on SIGHUP.
    pub policy: PolicyCell,
    /// Open connections per client IP on the HTTP and TLS listeners.
    pub per_ip: Arc<PerIpLimiter>,
    /// The bound RTMP address, when RTMP is on (shown to users in `/api/streams`).
    pub rtmp_addr: Option<SocketAddr>,
}

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
            crate::tls::load(cert, key).map_err(io::Error::other)?,
        )),
        (Listen::On(_), _, _) => {
            return Err(io::Error::other(crate::tls::TlsError::MissingFiles));
        }
    };
    // Bind everything first: a port in use fails the start before any task runs, and
    // the state knows the bound addresses (the pages show the RTMP port).
    fn bind(listen: Listen, backlog: u32) -> io::Result<Option<(TcpListener, SocketAddr)>> {
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

    let state = Arc::new(AppState {
        hub: Hub::with_metrics(config.live.clone(), metrics.clone()),
        signal: crate::signal::SignalHub::with_metrics(config.signal.clone(), metrics.clone()),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        started: Instant::now(),
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
        state
            .tasks
            .spawn(accept_http(listener, st, permits.clone(), None));
    }
    if let Some((listener, _, acceptor)) = tls {
        let st = state.clone();
        state
            .tasks
            .spawn(accept_http(listener, st, permits, Some(acceptor)));
    }
    if let Some((listener, _)) = rtmp {
        state
            .tasks
            .spawn(crate::rtmp::accept_loop(listener, state.clone()));
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
    /// proxies, per-IP and request-head limits; see [`crate::policy`]) without
    /// touching connections. Other changed keys are reported and ignored until a
    /// restart.
    pub fn reload(&self, config: &Config) -> Result<(), ConfigError> {
        config.validate()?;
        let state = &self.state;
        state.policy.set(Policy::new(config, state.metrics.clone()));
        if crate::policy::needs_restart(&state.config, config) {
            tracing::warn!(
                "config reloaded; changes outside [auth], [hooks], admin_token, \
                 trusted_proxies and the connection limits need a restart"
            );
        } else {
            tracing::info!("config reloaded");
        }
        Ok(())
    }

    /// Shared state (hub, config).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Graceful shutdown: stop accepting, close players and publishers, wait for
    /// connections to finish (at most `shutdown_timeout_ms`).
    pub async fn shutdown(self) {
        let state = self.state;
        let limit = Duration::from_millis(state.config.shutdown_timeout_ms);
        let deadline = tokio::time::Instant::now() + limit;
        // The hub first: from here no publisher that drops can start a grace period.
        state.hub.begin_shutdown();
        state.shutdown.cancel();
        state.hub.shutdown();
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

async fn accept_http(
    listener: TcpListener,
    state: Arc<AppState>,
    permits: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let policy = state.policy.get();
        let admission = match crate::admission::admit(&permits, &state.per_ip, &policy, remote.ip())
        {
            Ok(admission) => Arc::new(admission),
            Err(refused) => {
                crate::admission::refuse_http(&state, stream, remote, refused, tls.clone());
                continue;
            }
        };
        let st = state.clone();
        let tls = tls.clone();
        let span = tracing::info_span!("conn", peer = %remote);
        state.tasks.spawn(
            async move {
                let conn = ConnCtx {
                    admission,
                    kill: CancellationToken::new(),
                };
                let Some(acceptor) = tls else {
                    serve_connection(stream, remote, st, conn, policy).await;
                    return;
                };
                match tokio::time::timeout(policy.header_read_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(stream)) => serve_connection(stream, remote, st, conn, policy).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => {
                        st.metrics
                            .connections_refused
                            .get_or_create(&[("reason", "header_timeout")])
                            .inc();
                        tracing::debug!("TLS handshake not completed in time");
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// Back-off after a failed `accept` (out of file descriptors and the like), so the
/// loop does not spin while the condition lasts.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the handlers of one HTTP connection share.
#[derive(Clone, Debug)]
pub(crate) struct ConnCtx {
    /// The connection's permit and per-IP slot. An upgraded WebSocket keeps a clone
    /// for its whole life: the hyper task ends at the upgrade, the socket does not.
    pub(crate) admission: Arc<crate::admission::Admission>,
    /// Cancelled to close the connection at once (an HTTP-FLV player whose writes
    /// stalled: hyper would otherwise keep the socket until the client leaves).
    pub(crate) kill: CancellationToken,
}

async fn serve_connection<I>(
    stream: I,
    remote: SocketAddr,
    state: Arc<AppState>,
    conn: ConnCtx,
    policy: Arc<Policy>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    let kill = conn.kill.clone();
    let service = service_fn(move |req| {
        let state = state.clone();
        let conn = conn.clone();
        async move {
            let res = crate::admission::contain(route(state, req, remote, conn))
                .await
                .unwrap_or_else(|panic| {
                    tracing::error!(reason = %panic, "request handler panicked (a bug)");
                    http::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                });
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        // ffmpeg's POST push half-closes right after its last chunk.
        .half_close(true)
        // Slow-loris: the request head must arrive in time; bounded in size.
        .timer(TokioTimer::new())
        .header_read_timeout(policy.header_read_timeout)
        .max_header_size(policy.max_header_bytes);
    if policy.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        // Only when changed: a custom count moves hyper's header array to the heap.
        builder.max_headers(policy.max_headers);
    }
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        // Dropping the connection closes the socket, whatever hyper was waiting for.
        _ = kill.cancelled() => return,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn => r,
                _ = kill.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics
                .connections_refused
                .get_or_create(&[("reason", "header_timeout")])
                .inc();
            tracing::debug!("connection closed: request head not received in time");
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// hyper's default `max_headers`.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The router.
async fn route(
    state: Arc<AppState>,
    req: Request<Incoming>,
    remote: SocketAddr,
    conn: ConnCtx,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    // Behind a trusted proxy, the client is the one X-Forwarded-For names.
    let remote = state.policy.get().client_addr(remote, req.headers());
    let mut res = match path.as_str() {
        "/healthz" => http::text(StatusCode::OK, "ok"),
        "/metrics" => crate::api::metrics(&state, &req),
        p if p.starts_with("/api/") => crate::api::route(&state, &req),
        p if p.starts_with("/signal/") => crate::signal::upgrade(&state, req, remote, &conn),
        p if p.starts_with("/live/") => live(state.clone(), req, remote, conn).await,
        _ => static_file(&state, &req).await,
    };
    if (path.starts_with("/live/") || path.starts_with("/api/"))
        && let Ok(origin) = HeaderValue::from_str(&state.config.cors_origin)
    {
        res.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    res
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = http::text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// Validates `/live/NAME.flv` and returns `NAME`.
pub fn parse_live_path(path: &str) -> Result<&str, String> {
    let rest = path.strip_prefix("/live/").unwrap_or(path);
    let name = rest
        .strip_suffix(".flv")
        .ok_or("stream URLs look like /live/NAME.flv")?;
    if name.is_empty() || name.len() > 255 {
        return Err("stream name must be 1 to 255 characters".into());
    }
    for segment in name.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err("stream name has an empty, `.` or `..` path segment".into());
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("stream name may only contain A-Z a-z 0-9 . _ - and /".into());
        }
    }
    Ok(name)
}

fn has_query_key(req: &Request<Incoming>, key: &str) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair.split('=').next() == Some(key)))
}

async fn live(
    state: Arc<AppState>,
    req: Request<Incoming>,
    remote: SocketAddr,
    conn: ConnCtx,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let name = match parse_live_path(&path) {
        Ok(name) => name.to_owned(),
        Err(reason) => return http::text(StatusCode::BAD_REQUEST, reason),
    };
    let upgrade = hyper_tungstenite::is_upgrade_request(&req);
    let publish = has_query_key(&req, "publish");
    // Tokens and hooks decide before any upgrade, so a refusal is a plain 401/403.
    let wants = match *req.method() {
        Method::GET | Method::HEAD if upgrade && publish => Some((Action::Publish, Protocol::Ws)),
        Method::GET | Method::HEAD if upgrade && !publish => Some((Action::Play, Protocol::Ws)),
        Method::GET | Method::HEAD if !publish => Some((Action::Play, Protocol::Http)),
        Method::POST | Method::PUT => Some((Action::Publish, Protocol::Http)),
        _ => None,
    };
    if let Some((action, protocol)) = wants {
        let policy = state.policy.get();
        let query = req.uri().query();
        if let Err(refusal) = crate::policy::admit(
            &policy,
            &state.metrics,
            action,
            protocol,
            &name,
            query,
            remote,
        )
        .await
        {
            let mut res = http::text(refusal.status(), &refusal);
            if refusal.status() == StatusCode::UNAUTHORIZED {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"wsrelay\""),
                );
            }
            return res;
        }
    }
    match *req.method() {
        Method::GET if upgrade && publish => ws_publisher(state, req, name, remote, conn),
        Method::GET | Method::HEAD if publish => http::text(
            StatusCode::BAD_REQUEST,
            "?publish needs a WebSocket upgrade; to publish over HTTP use POST or PUT",
        ),
        Method::GET if upgrade => ws_player(state, req, name, remote, conn),
        Method::GET => http_player(state, name, remote, conn),
        // What a GET would answer, without starting a player.
        Method::HEAD => match state.hub.is_live(&name) {
            true => flv_response(http::full(Bytes::new())),
            false => play_refused(&PlayError::NotFound(name)),
        },
        Method::POST | Method::PUT => http_publisher(state, req, name, remote).await,
        Method::OPTIONS => {
            let mut res = http::text(StatusCode::NO_CONTENT, "");
            let h = res.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, POST, PUT, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("*"),
            );
            res
        }
        _ => method_not_allowed("GET, HEAD, POST, PUT, OPTIONS"),
    }
}

fn publish_refused(e: &PublishError) -> Response<Body> {
    let status = match e {
        PublishError::AlreadyPublishing(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    tracing::warn!(reason = %e, "publish refused");
    http::text(status, e)
}

fn play_refused(e: &PlayError) -> Response<Body> {
    let status = match e {
        PlayError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    tracing::debug!(reason = %e, "play refused");
    http::text(status, e)
}

fn ws_config(read_buffer: usize, max_message: usize, max_tag: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .write_buffer_size(WS_WRITE_BUFFER)
        // One whole tag past the batch target; more means the peer is not reading.
        .max_write_buffer_size(WS_WRITE_BUFFER + max_tag + 1024)
}

fn ws_player(
    state: Arc<AppState>,
    mut req: Request<Incoming>,
    name: String,
    remote: SocketAddr,
    conn: ConnCtx,
) -> Response<Body> {
    let info = PlayerInfo {
        protocol: Protocol::Ws,
        remote,
    };
    let sub = match state.hub.play_as(&name, info) {
        Ok(sub) => sub,
        Err(e) => return play_refused(&e),
    };
    let live = &state.config.live;
    let config = ws_config(
        PLAYER_WS_READ_BUFFER,
        PLAYER_WS_MAX_MESSAGE,
        live.max_tag_bytes,
    );
    let span = tracing::info_span!("player", stream = %name, proto = "ws");
    let st = state.clone();
    upgrade_and_spawn(&state, &mut req, config, span, conn, move |ws| async move {
        tracing::info!(%remote, "player joined");
        let started = Instant::now();
        let (end, stats) =
            egress::run_player(WsSink::new(ws), sub, &st.config.live, st.shutdown.clone()).await;
        log_player_end(&end, &stats, started);
    })
}

fn http_player(
    state: Arc<AppState>,
    name: String,
    remote: SocketAddr,
    conn: ConnCtx,
) -> Response<Body> {
    let info = PlayerInfo {
        protocol: Protocol::Http,
        remote,
    };
    let sub = match state.hub.play_as(&name, info) {
        Ok(sub) => sub,
        Err(e) => return play_refused(&e),
    };
    let (tx, body) = ChannelBody::channel(HTTP_PLAYER_QUEUE);
    let span = tracing::info_span!("player", stream = %name, proto = "http");
    let st = state.clone();
    state.tasks.spawn(
        async move {
            tracing::info!(%remote, "player joined");
            let started = Instant::now();
            let (end, stats) =
                egress::run_player(HttpSink { tx }, sub, &st.config.live, st.shutdown.clone())
                    .await;
            log_player_end(&end, &stats, started);
            if matches!(
                end,
                egress::PlayerEnd::WriteStalled(_) | egress::PlayerEnd::TooSlow(_)
            ) {
                // hyper is blocked writing to a client that does not read: close the
                // socket (and free its permit and per-IP slot) instead of waiting.
                conn.kill.cancel();
            }
        }
        .instrument(span),
    );
    flv_response(http_body_util::BodyExt::boxed(body))
}

/// The headers of an HTTP-FLV response around `body`.
fn flv_response(body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("video/x-flv"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    res
}

fn log_player_end(end: &egress::PlayerEnd, stats: &egress::PlayerStats, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    match end {
        egress::PlayerEnd::TooSlow(_) | egress::PlayerEnd::WriteStalled(_) => tracing::warn!(
            reason = %end, bytes = stats.bytes, skipped = stats.skipped, lags = stats.lags, secs,
            "player disconnected"
        ),
        _ => tracing::info!(
            reason = %end, bytes = stats.bytes, skipped = stats.skipped, lags = stats.lags, secs,
            "player left"
        ),
    }
}

fn ws_publisher(
    state: Arc<AppState>,
    mut req: Request<Incoming>,
    name: String,
    remote: SocketAddr,
    conn: ConnCtx,
) -> Response<Body> {
    let info = PublisherInfo {
        protocol: Protocol::Ws,
        remote,
    };
    let publisher = match state.hub.publish(&name, info) {
        Ok(p) => p,
        Err(e) => return publish_refused(&e),
    };
    let live = &state.config.live;
    let config = ws_config(16 << 10, live.max_publish_message_bytes, 0);
    let query = req.uri().query().map(str::to_owned);
    let span = tracing::info_span!("publisher", stream = %name, proto = "ws");
    let st = state.clone();
    upgrade_and_spawn(&state, &mut req, config, span, conn, move |ws| async move {
        tracing::info!(%remote, "publisher started");
        let result = ingest::ws_publish(ws, publisher, &st.config.live, st.shutdown.clone()).await;
        log_publisher_end(&result);
        let policy = st.policy.get();
        let query = query.as_deref();
        crate::policy::unpublished(&policy, &name, remote, query, Protocol::Ws, &st.tasks);
    })
}

/// Answers a WebSocket upgrade and runs `serve` on the socket in its own task, within
/// `span`. A failed upgrade is a `400` (before) or a log line (after the `101`).
fn upgrade_and_spawn<F, Fut>(
    state: &AppState,
    req: &mut Request<Incoming>,
    config: WebSocketConfig,
    span: tracing::Span,
    conn: ConnCtx,
    serve: F,
) -> Response<Body>
where
    F: FnOnce(egress::Ws) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (res, websocket) = match hyper_tungstenite::upgrade(req, Some(config)) {
        Ok(up) => up,
        Err(e) => {
            return http::text(
                StatusCode::BAD_REQUEST,
                format!("bad WebSocket upgrade: {e}"),
            );
        }
    };
    state.tasks.spawn(
        async move {
            // Held for the socket's whole life (see `ConnCtx::admission`).
            let _admission = conn.admission;
            match websocket.await {
                Ok(ws) => {
                    if let Err(panic) = crate::admission::contain(serve(ws)).await {
                        tracing::error!(reason = %panic, "WebSocket task panicked (a bug)");
                    }
                }
                Err(e) => tracing::info!(error = %e, "WebSocket upgrade failed"),
            }
        }
        .instrument(span),
    );
    http::boxed(res)
}

async fn http_publisher(
    state: Arc<AppState>,
    req: Request<Incoming>,
    name: String,
    remote: SocketAddr,
) -> Response<Body> {
    let info = PublisherInfo {
        protocol: Protocol::Http,
        remote,
    };
    let publisher = match state.hub.publish(&name, info) {
        Ok(p) => p,
        Err(e) => return publish_refused(&e),
    };
    let query = req.uri().query().map(str::to_owned);
    let span = tracing::info_span!("publisher", stream = %name, proto = "http");
    async move {
        tracing::info!(%remote, "publisher started");
        let result = ingest::http_publish(
            req.into_body(),
            publisher,
            &state.config.live,
            state.shutdown.clone(),
        )
        .await;
        log_publisher_end(&result);
        let policy = state.policy.get();
        let query = query.as_deref();
        crate::policy::unpublished(&policy, &name, remote, query, Protocol::Http, &state.tasks);
        match result {
            Ok(stats) => http::text(
                StatusCode::OK,
                format!("published {} bytes in {} tags", stats.bytes, stats.tags),
            ),
            Err(e) => http::text(e.status(), e),
        }
    }
    .instrument(span)
    .await
}

fn log_publisher_end(result: &Result<ingest::IngestStats, ingest::IngestError>) {
    match result {
        Ok(stats) => tracing::info!(bytes = stats.bytes, tags = stats.tags, "publisher finished"),
        Err(e) => tracing::warn!(reason = %e, "publisher cut off"),
    }
}

/// Serves the web pages from `static_dir` and `/vendor/` from its `node_modules`.
async fn static_file(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let path = req.uri().path();
    let Some(file) = static_path(&state.config.static_dir, path) else {
        return http::text(StatusCode::NOT_FOUND, "not found");
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut res = Response::new(http::full(bytes));
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        }
        Err(_) if path.starts_with("/vendor/") => http::text(
            StatusCode::NOT_FOUND,
            "vendor library not installed: run `npm ci --prefix static`",
        ),
        Err(_) => http::text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Maps a URL path to a file under `root`, refusing anything that could leave it.
fn static_path(root: &Path, url_path: &str) -> Option<PathBuf> {
    let (base, rest) = match url_path.strip_prefix("/vendor/") {
        Some(rest) => (root.join("node_modules"), rest),
        None => (root.to_owned(), url_path.trim_start_matches('/')),
    };
    let rest = if rest.is_empty() || rest.ends_with('/') {
        format!("{rest}index.html")
    } else {
        rest.to_owned()
    };
    let relative = Path::new(&rest);
    let safe = relative
        .components()
        .all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('.')));
    safe.then(|| base.join(relative))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_paths() {
        assert_eq!(parse_live_path("/live/cam1.flv"), Ok("cam1"));
        assert_eq!(
            parse_live_path("/live/app/cam-1_x.y.flv"),
            Ok("app/cam-1_x.y")
        );
        assert!(parse_live_path("/live/cam1").is_err());
        assert!(parse_live_path("/live/.flv").is_err());
        assert!(parse_live_path("/live/a//b.flv").is_err());
        assert!(parse_live_path("/live/../x.flv").is_err());
        assert!(parse_live_path("/live/a%20b.flv").is_err());
        assert!(parse_live_path("/live/a b.flv").is_err());
    }

    #[test]
    fn static_paths_stay_inside_the_root() {
        let root = Path::new("/srv/static");
        assert_eq!(static_path(root, "/"), Some(root.join("index.html")));
        assert_eq!(
            static_path(root, "/js/signaling.js"),
            Some(root.join("js/signaling.js"))
        );
        assert_eq!(
            static_path(root, "/vendor/mpegts.js/dist/mpegts.js"),
            Some(root.join("node_modules/mpegts.js/dist/mpegts.js"))
        );
        assert_eq!(static_path(root, "/../etc/passwd"), None);
        assert_eq!(static_path(root, "/vendor/../../x"), None);
        assert_eq!(static_path(root, "/.git/config"), None);
    }
}
