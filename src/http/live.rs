//! `/live/NAME.flv`: players (WebSocket-FLV with an upgrade, HTTP-FLV without) and
//! publishers (HTTP POST/PUT bodies, WebSocket with `?publish`). Tokens and hooks
//! decide before any upgrade, so a refusal is a plain 401/403; the stream
//! registry's refusals map to statuses in one place (`publish_refused`,
//! `play_refused`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_tungstenite::WebSocketStream;
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;
use hyper_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use super::{Body, ChannelBody, ConnCtx, has_query_key, method_not_allowed, parse_live_path};
use crate::cluster::LeaseGuard;
use crate::live::egress::{self, HttpSink, PlayerIo, WsSink};
use crate::live::ingest;
use crate::live::{PlayError, PlayerInfo, PublishError, PublisherInfo};
use crate::state::AppState;
use crate::vocab::{Action, Protocol};

/// HTTP-FLV body queue, in chunks (each one write of the player: a coalescing
/// window's tags, or what it gathered when behind, up to
/// `live.player_write_batch_bytes`). Small on purpose: it only hands batches to
/// hyper, which writes up to 16 queued chunks with one vectored write; the stream's
/// ring is the real backlog, and a player that cannot drain this stalls its
/// writer, which times out.
const HTTP_PLAYER_QUEUE: usize = 16;

/// WebSocket read buffer for players, which send us next to nothing (control frames).
/// Small on purpose: tungstenite zero-fills it before every read attempt, and a
/// player task makes one per wakeup (measured: 3.5 % of server CPU at 500 players
/// with 4 KiB, and 4 KiB of RSS per player).
const PLAYER_WS_READ_BUFFER: usize = 256;

/// Largest message a player may send (players have nothing to say but close frames).
const PLAYER_WS_MAX_MESSAGE: usize = 64 << 10;

/// WebSocket write buffer: a batch of tags is gathered up to this before a syscall.
const WS_WRITE_BUFFER: usize = 64 << 10;

pub(crate) async fn serve(
    state: Arc<AppState>,
    req: Request<Incoming>,
    remote: SocketAddr,
    conn: ConnCtx,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let name = match parse_live_path(&path) {
        Ok(name) => name.to_owned(),
        Err(reason) => return super::text(StatusCode::BAD_REQUEST, reason),
    };
    if let Some(token) = req.headers().get(crate::cluster::PULL_HEADER) {
        // Another node of the cluster pulls this stream (it authorized its players).
        let token = token.to_str().unwrap_or("").to_owned();
        return pull_play(state, &req, name, remote, conn, &token);
    }
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
        if let Err(refusal) = crate::access::policy::admit(
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
            let mut res = super::text(refusal.status(), &refusal);
            if refusal.status() == StatusCode::UNAUTHORIZED {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"wsrelay\""),
                );
            }
            return res;
        }
    }
    let plays = matches!(*req.method(), Method::GET | Method::HEAD) && !publish;
    if plays
        && let Some(cluster) = &state.cluster
        && !state.streams.is_live(&name)
    {
        // Live on another node? Pull it here (once, shared by every local player).
        match cluster.ensure_local(&name).await {
            Ok(true) => {}
            Ok(false) => return play_refused(&PlayError::NotFound(name)),
            Err(e) => {
                tracing::warn!(stream = %name, reason = %crate::vocab::error_chain(&e), "remote play refused");
                return super::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{e}; try again later"),
                );
            }
        }
    }
    let publishes = matches!(*req.method(), Method::POST | Method::PUT)
        || (*req.method() == Method::GET && upgrade && publish);
    let lease = match (&state.cluster, publishes) {
        (Some(cluster), true) => match cluster.acquire(&name).await {
            Ok(lease) => Some(lease),
            Err(e) => return publish_refused(&e, remote),
        },
        _ => None,
    };
    match *req.method() {
        Method::GET if upgrade && publish => ws_publisher(state, req, name, remote, conn, lease),
        Method::GET | Method::HEAD if publish => super::text(
            StatusCode::BAD_REQUEST,
            "?publish needs a WebSocket upgrade; to publish over HTTP use POST or PUT",
        ),
        Method::GET if upgrade => ws_player(state, req, name, remote, conn),
        Method::GET => http_player(state, req.version(), name, remote, conn, None),
        // What a GET would answer, without starting a player.
        Method::HEAD => match state.streams.is_live(&name) {
            true => flv_response(super::full(Bytes::new())),
            false => play_refused(&PlayError::NotFound(name)),
        },
        Method::POST | Method::PUT => http_publisher(state, req, name, remote, lease).await,
        Method::OPTIONS => {
            let mut res = super::text(StatusCode::NO_CONTENT, "");
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

/// An internal pull from another node of the cluster (`x-wsrelay-pull` header): a
/// valid pull token, a plain GET, and this node must be the stream's origin (hold
/// its lease) — an edge never serves another edge. Player tokens and hooks do not
/// apply: the pulling node checked its own players.
fn pull_play(
    state: Arc<AppState>,
    req: &Request<Incoming>,
    name: String,
    remote: SocketAddr,
    conn: ConnCtx,
    token: &str,
) -> Response<Body> {
    let Some(cluster) = &state.cluster else {
        tracing::warn!(%remote, stream = %name, "pull refused: this node is not in a cluster");
        return super::text(StatusCode::UNAUTHORIZED, "not a cluster node");
    };
    let edge = match cluster.verify_pull(&name, token) {
        Ok(node) => node,
        Err(e) => {
            if let Some(suppressed) = crate::access::quiet::should_log(remote.ip(), "pull_token") {
                tracing::warn!(%remote, stream = %name, reason = %e, suppressed, "pull refused");
            }
            return super::text(StatusCode::UNAUTHORIZED, e);
        }
    };
    if req.method() != Method::GET || hyper_tungstenite::is_upgrade_request(req) {
        return super::text(StatusCode::BAD_REQUEST, "a pull is a plain GET (HTTP-FLV)");
    }
    if !cluster.holds(&name) {
        return super::text(
            StatusCode::CONFLICT,
            format!("this node is not the origin of `{name}`"),
        );
    }
    // One node pulls many streams: its pulls are not one client's connections.
    conn.admission.release_ip_slot();
    tracing::info!(%remote, stream = %name, edge, "edge pull served");
    http_player(state, req.version(), name, remote, conn, Some(edge))
}

fn publish_refused(e: &PublishError, remote: SocketAddr) -> Response<Body> {
    if let Some(suppressed) = crate::access::quiet::should_log(remote.ip(), e.label()) {
        tracing::warn!(reason = %e, suppressed, "publish refused");
    }
    super::text(e.http_status(), e)
}

fn play_refused(e: &PlayError) -> Response<Body> {
    tracing::debug!(reason = %e, "play refused");
    super::text(e.http_status(), e)
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
        edge: None,
    };
    let sub = match state.streams.play_as(&name, info) {
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
    let io = PlayerIo::new;
    upgrade_and_spawn(
        &state,
        &mut req,
        config,
        span,
        conn,
        io,
        move |ws| async move {
            tracing::info!(%remote, "player joined");
            let started = Instant::now();
            let (end, stats) =
                egress::run_player(WsSink::new(ws), sub, &st.config.live, st.shutdown.clone())
                    .await;
            log_player_end(&end, &stats, started);
        },
    )
}

fn http_player(
    state: Arc<AppState>,
    version: hyper::Version,
    name: String,
    remote: SocketAddr,
    conn: ConnCtx,
    edge: Option<String>,
) -> Response<Body> {
    let info = PlayerInfo {
        protocol: Protocol::Http,
        remote,
        edge,
    };
    let sub = match state.streams.play_as(&name, info) {
        Ok(sub) => sub,
        Err(e) => return play_refused(&e),
    };
    let (tx, body) = ChannelBody::channel(HTTP_PLAYER_QUEUE);
    // HTTP/1.1 on plain TCP: the player writes its chunks to the socket itself once
    // hyper has written the head. (HTTP/1.0 has no chunks; TLS cannot be shared.)
    let direct = conn
        .socket
        .clone()
        .filter(|_| version == hyper::Version::HTTP_11);
    let body = match &direct {
        Some(shared) => body.handing_off(shared.handoff().clone()),
        None => body,
    };
    let span = tracing::info_span!("player", stream = %name, proto = "http");
    let st = state.clone();
    state.tasks.spawn(
        async move {
            tracing::info!(%remote, "player joined");
            let started = Instant::now();
            let live = &st.config.live;
            let sink = match direct {
                None => HttpSink::channel(tx),
                Some(shared) => {
                    let wait = Duration::from_millis(live.player_write_timeout_ms);
                    tokio::select! {
                        () = shared.handoff().taken() => {}
                        () = tx.closed() => {
                            tracing::info!("player left before its response head went out");
                            return;
                        }
                        () = tokio::time::sleep(wait) => {
                            tracing::warn!(timeout_ms = live.player_write_timeout_ms, "player disconnected: the response head was not written in time");
                            conn.kill.cancel();
                            return;
                        }
                    }
                    let (socket, handoff) = (shared.socket().clone(), shared.handoff().clone());
                    HttpSink::direct(tx, socket, handoff, conn.kill.clone())
                }
            };
            let (end, stats) =
                egress::run_player(sink, sub, live, st.shutdown.clone()).await;
            log_player_end(&end, &stats, started);
            if matches!(
                end,
                egress::PlayerEnd::WriteStalled(_) | egress::PlayerEnd::TooSlow(_)
            ) {
                // hyper is blocked writing to a client that does not read, or the
                // player's own write stalled: close the socket (and free its permit
                // and per-IP slot) instead of waiting.
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
    let duration = crate::vocab::Human(started.elapsed());
    match end {
        egress::PlayerEnd::TooSlow(_) | egress::PlayerEnd::WriteStalled(_) => tracing::warn!(
            reason = %end, bytes = stats.bytes, skipped = stats.skipped, lags = stats.lags, %duration,
            "player disconnected"
        ),
        _ => tracing::info!(
            reason = %end, bytes = stats.bytes, skipped = stats.skipped, lags = stats.lags, %duration,
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
    lease: Option<LeaseGuard>,
) -> Response<Body> {
    let info = PublisherInfo {
        protocol: Protocol::Ws,
        remote,
    };
    let publisher = match state.streams.publish(&name, info) {
        Ok(p) => p,
        Err(e) => return publish_refused(&e, remote),
    };
    let live = &state.config.live;
    let config = ws_config(16 << 10, live.max_publish_message_bytes, 0);
    let query = req.uri().query().map(str::to_owned);
    let span = tracing::info_span!("publisher", stream = %name, proto = "ws");
    let st = state.clone();
    let io = TokioIo::new;
    upgrade_and_spawn(
        &state,
        &mut req,
        config,
        span,
        conn,
        io,
        move |ws| async move {
            tracing::info!(%remote, "publisher started");
            // The cluster lease is held as long as the publisher (released after it).
            let _lease = lease;
            let result =
                ingest::ws_publish(ws, publisher, &st.config.live, st.shutdown.clone()).await;
            log_publisher_end(&result);
            let policy = st.policy.get();
            let query = query.as_deref();
            crate::access::policy::notify_unpublished(
                &policy,
                &name,
                remote,
                query,
                Protocol::Ws,
                &st.tasks,
            );
        },
    )
}

/// Answers a WebSocket upgrade and runs `serve` on the socket in its own task, within
/// `span`; `io` makes the upgraded connection the socket `serve` reads and writes. A
/// failed upgrade is a `400` (before) or a log line (after the `101`).
fn upgrade_and_spawn<Io, F, Fut>(
    state: &AppState,
    req: &mut Request<Incoming>,
    config: WebSocketConfig,
    span: tracing::Span,
    conn: ConnCtx,
    io: fn(Upgraded) -> Io,
    serve: F,
) -> Response<Body>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(WebSocketStream<Io>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    // hyper_tungstenite::upgrade's checks and answer, keeping the upgrade itself so
    // that a player's plain TCP socket can be taken out of it.
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return super::text(
            StatusCode::BAD_REQUEST,
            "bad WebSocket upgrade: no Sec-WebSocket-Key header",
        );
    };
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return super::text(
            StatusCode::BAD_REQUEST,
            "bad WebSocket upgrade: Sec-WebSocket-Version must be 13",
        );
    }
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    state.tasks.spawn(
        async move {
            // Held for the socket's whole life (see `ConnCtx::admission`).
            let _admission = conn.admission;
            match upgrade.await {
                Ok(upgraded) => {
                    let ws =
                        WebSocketStream::from_raw_socket(io(upgraded), Role::Server, Some(config))
                            .await;
                    if let Err(panic) = crate::access::admission::catch_panic(serve(ws)).await {
                        tracing::error!(reason = %panic, "WebSocket task panicked (a bug)");
                    }
                }
                Err(e) => tracing::info!(error = %e, "WebSocket upgrade failed"),
            }
        }
        .instrument(span),
    );
    let mut res = Response::new(super::full(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    match HeaderValue::from_str(&accept) {
        Ok(v) => {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        Err(_) => unreachable!("a base64 digest is a valid header value"),
    }
    res
}

async fn http_publisher(
    state: Arc<AppState>,
    req: Request<Incoming>,
    name: String,
    remote: SocketAddr,
    lease: Option<LeaseGuard>,
) -> Response<Body> {
    let info = PublisherInfo {
        protocol: Protocol::Http,
        remote,
    };
    let publisher = match state.streams.publish(&name, info) {
        Ok(p) => p,
        Err(e) => return publish_refused(&e, remote),
    };
    let query = req.uri().query().map(str::to_owned);
    let span = tracing::info_span!("publisher", stream = %name, proto = "http");
    async move {
        tracing::info!(%remote, "publisher started");
        let _lease = lease;
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
        crate::access::policy::notify_unpublished(
            &policy,
            &name,
            remote,
            query,
            Protocol::Http,
            &state.tasks,
        );
        match result {
            Ok(stats) => super::text(
                StatusCode::OK,
                format!("published {} bytes in {} tags", stats.bytes, stats.tags),
            ),
            Err(e) => super::text(e.status(), e),
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
