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
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{Config, Listen};
use crate::egress::{self, HttpSink, WsSink};
use crate::http::{self, Body, ChannelBody};
use crate::hub::{Hub, PlayError, Protocol, PublishError, PublisherInfo};
use crate::ingest;

/// HTTP-FLV body queue, in chunks (each an encoded tag shared with other players).
/// Small on purpose: it only smooths hyper's polling; the stream's ring is the real
/// backlog, and a player that cannot drain this stalls its writer, which times out.
const HTTP_PLAYER_QUEUE: usize = 64;

/// WebSocket read buffer for players, which send us next to nothing.
const PLAYER_WS_READ_BUFFER: usize = 4 << 10;

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
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    http_addr: Option<SocketAddr>,
    rtmp_addr: Option<SocketAddr>,
    state: Arc<AppState>,
}

/// Binds the configured listeners and starts serving.
pub async fn spawn(config: Config) -> io::Result<Server> {
    let state = Arc::new(AppState {
        hub: Hub::new(config.live.clone()),
        signal: crate::signal::SignalHub::new(config.signal.clone()),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        started: Instant::now(),
        config,
    });
    let http_addr = match state.config.http {
        Listen::On(addr) => {
            let listener = TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            let st = state.clone();
            state.tasks.spawn(accept_http(listener, st));
            Some(local)
        }
        Listen::Off => None,
    };
    let rtmp_addr = match state.config.rtmp {
        Listen::On(addr) => {
            let listener = TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            state
                .tasks
                .spawn(crate::rtmp::accept_loop(listener, state.clone()));
            Some(local)
        }
        Listen::Off => None,
    };
    Ok(Server {
        http_addr,
        rtmp_addr,
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

    /// Shared state (hub, config).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Graceful shutdown: stop accepting, close players and publishers, wait for
    /// connections to finish (at most `shutdown_timeout_ms`).
    pub async fn shutdown(self) {
        let state = self.state;
        state.shutdown.cancel();
        state.hub.shutdown().await;
        state.tasks.close();
        let limit = Duration::from_millis(state.config.shutdown_timeout_ms);
        if tokio::time::timeout(limit, state.tasks.wait())
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

async fn accept_http(listener: TcpListener, state: Arc<AppState>) {
    let permits = Arc::new(Semaphore::new(state.config.max_connections));
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
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Over the limit we still answer, with a 503 that says why.
        let permit = permits.clone().try_acquire_owned().ok();
        let ok = permit.is_some();
        let st = state.clone();
        let span = tracing::info_span!("conn", peer = %remote);
        state.tasks.spawn(
            async move {
                let _permit = permit;
                if !ok {
                    tracing::warn!(
                        limit = st.config.max_connections,
                        "connection refused: at connection limit"
                    );
                }
                serve_connection(stream, remote, st, ok).await;
            }
            .instrument(span),
        );
    }
}

async fn serve_connection(stream: TcpStream, remote: SocketAddr, state: Arc<AppState>, ok: bool) {
    let shutdown = state.shutdown.clone();
    let service = service_fn(move |req| {
        let state = state.clone();
        async move {
            let res = if ok {
                route(state, req, remote).await
            } else {
                http::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server at its connection limit, try again later",
                )
            };
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let conn = http1::Builder::new()
        // ffmpeg's POST push half-closes right after its last chunk.
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The router.
async fn route(state: Arc<AppState>, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let mut res = match path.as_str() {
        "/healthz" => http::text(StatusCode::OK, "ok"),
        "/api/streams" => api_streams(&state, &req),
        "/api/rooms" => crate::signal::api_rooms(&state, &req),
        p if p.starts_with("/signal/") => crate::signal::upgrade(&state, req, remote),
        p if p.starts_with("/live/") => live(state.clone(), req, remote).await,
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

fn api_streams(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    http::json(
        StatusCode::OK,
        &serde_json::json!({ "streams": state.hub.streams() }),
    )
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

async fn live(state: Arc<AppState>, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let name = match parse_live_path(&path) {
        Ok(name) => name.to_owned(),
        Err(reason) => return http::text(StatusCode::BAD_REQUEST, reason),
    };
    let upgrade = hyper_tungstenite::is_upgrade_request(&req);
    let publish = has_query_key(&req, "publish");
    match *req.method() {
        Method::GET | Method::HEAD if upgrade && publish => ws_publisher(state, req, name, remote),
        Method::GET | Method::HEAD if publish => http::text(
            StatusCode::BAD_REQUEST,
            "?publish needs a WebSocket upgrade; to publish over HTTP use POST or PUT",
        ),
        Method::GET | Method::HEAD if upgrade => ws_player(state, req, name, remote),
        Method::GET | Method::HEAD => http_player(state, name, remote),
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
) -> Response<Body> {
    let sub = match state.hub.play(&name) {
        Ok(sub) => sub,
        Err(e) => return play_refused(&e),
    };
    let live = &state.config.live;
    let config = ws_config(
        PLAYER_WS_READ_BUFFER,
        PLAYER_WS_MAX_MESSAGE,
        live.max_tag_bytes,
    );
    let (res, websocket) = match hyper_tungstenite::upgrade(&mut req, Some(config)) {
        Ok(up) => up,
        Err(e) => {
            return http::text(
                StatusCode::BAD_REQUEST,
                format!("bad WebSocket upgrade: {e}"),
            );
        }
    };
    let span = tracing::info_span!("player", stream = %name, proto = "ws");
    let st = state.clone();
    state.tasks.spawn(
        async move {
            let ws = match websocket.await {
                Ok(ws) => ws,
                Err(e) => {
                    tracing::info!(error = %e, "WebSocket upgrade failed");
                    return;
                }
            };
            tracing::info!(%remote, "player joined");
            let started = Instant::now();
            let (end, stats) =
                egress::run_player(WsSink::new(ws), sub, &st.config.live, st.shutdown.clone())
                    .await;
            log_player_end(&end, &stats, started);
        }
        .instrument(span),
    );
    http::boxed(res)
}

fn http_player(state: Arc<AppState>, name: String, remote: SocketAddr) -> Response<Body> {
    let sub = match state.hub.play(&name) {
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
        }
        .instrument(span),
    );
    let mut res = Response::new(http_body_util::BodyExt::boxed(body));
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
    let (res, websocket) = match hyper_tungstenite::upgrade(&mut req, Some(config)) {
        Ok(up) => up,
        Err(e) => {
            return http::text(
                StatusCode::BAD_REQUEST,
                format!("bad WebSocket upgrade: {e}"),
            );
        }
    };
    let span = tracing::info_span!("publisher", stream = %name, proto = "ws");
    let st = state.clone();
    state.tasks.spawn(
        async move {
            let ws = match websocket.await {
                Ok(ws) => ws,
                Err(e) => {
                    tracing::info!(error = %e, "WebSocket upgrade failed");
                    return;
                }
            };
            tracing::info!(%remote, "publisher started");
            let result =
                ingest::ws_publish(ws, publisher, &st.config.live, st.shutdown.clone()).await;
            log_publisher_end(&result);
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
