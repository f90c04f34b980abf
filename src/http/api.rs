//! The status and admin API (`/api/…`) and `/metrics`; described in
//! `docs/openapi.yaml`.
//!
//! The lists (`/api/streams`, `/api/rooms`) are the public status the web pages
//! show; `/api/streams` leaves out streams whose playing needs a token (`[auth]
//! play_prefixes`) unless the request carries the admin token or a play token for
//! them (`?token=`). The admin routes (`/api/streams/NAME` GET and DELETE,
//! `/api/rooms/ROOM`: client addresses, kicking) need `Authorization: Bearer
//! <admin_token>` and are closed (403) while no `admin_token` is configured.
//! Errors are JSON objects with a stable `code` ([`ApiError`]) and a human
//! `message`.

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::Body;
use crate::access::policy::AdminAccess;
use crate::metrics::Format;
use crate::state::AppState;
use crate::vocab::Action;

/// Why an API request failed; each maps to one status and one `code`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ApiError {
    /// `admin_token` is set and the request lacks it (401, `unauthorized`).
    #[error("admin token required: send Authorization: Bearer <admin_token>")]
    Unauthorized,
    /// No `admin_token` is configured: admin routes are closed (403,
    /// `admin_disabled`).
    #[error(
        "admin routes are disabled: set `admin_token` in the config file \
         (or --set admin_token=...) to use them"
    )]
    AdminDisabled,
    /// No such stream, room or route (404, `not_found`).
    #[error("{0}")]
    NotFound(String),
    /// The method is not served on this path (405, `method_not_allowed`).
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// The path is malformed (400, `bad_request`).
    #[error("{0}")]
    BadRequest(String),
}

impl ApiError {
    /// HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON `code`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::BadRequest(_) => "bad_request",
        }
    }

    fn response(&self) -> Response<Body> {
        #[derive(Serialize)]
        struct Wire<'a> {
            code: &'a str,
            message: String,
        }
        let mut res = super::json(
            self.status(),
            &Wire {
                code: self.code(),
                message: self.to_string(),
            },
        );
        let h = res.headers_mut();
        match self {
            ApiError::Unauthorized => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"wsrelay\""),
                );
            }
            ApiError::MethodNotAllowed(allow) => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        res
    }
}

/// Serves `/api/…`.
pub(crate) fn route(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    match handle(state, req) {
        Ok(res) => res,
        Err(e) => e.response(),
    }
}

fn handle(state: &AppState, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    let policy = state.policy.get();
    let access = policy.admin_access(req.headers());
    let admin = path.starts_with("/api/streams/") || path.starts_with("/api/rooms/");
    if admin {
        match access {
            AdminAccess::Granted => {}
            AdminAccess::Denied => return Err(ApiError::Unauthorized),
            AdminAccess::Disabled => return Err(ApiError::AdminDisabled),
        }
    }
    let read = || {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed("GET, HEAD"))
        }
    };
    match path {
        "/api/streams" => {
            read()?;
            let mut streams = state.streams.streams();
            if access != AdminAccess::Granted {
                // Play-protected streams only for holders of a play token for them.
                let query = req.uri().query();
                let now = crate::access::auth::unix_now();
                streams.retain(|s| {
                    !policy.auth.requires(Action::Play, &s.name)
                        || crate::access::auth::authorize(
                            &policy.auth,
                            Action::Play,
                            &s.name,
                            query,
                            now,
                        )
                        .is_ok()
                });
            }
            let streams: Vec<serde_json::Value> =
                streams.into_iter().map(|s| with_origin(state, s)).collect();
            Ok(super::json(
                StatusCode::OK,
                &serde_json::json!({
                    "streams": streams,
                    "rtmp_port": state.rtmp_addr.map(|a| a.port()),
                }),
            ))
        }
        "/api/rooms" => {
            read()?;
            Ok(super::json(StatusCode::OK, &state.rooms.report()))
        }
        p if p.starts_with("/api/streams/") => {
            let name = stream_name(p)?;
            match *req.method() {
                Method::GET | Method::HEAD => match state.streams.stream_detail(name) {
                    Some(detail) => Ok(super::json(StatusCode::OK, &detail)),
                    None => Err(not_live(name)),
                },
                Method::DELETE => match state.streams.kick_and_ban(name, ban(req.uri().query())?) {
                    Some(report) => {
                        tracing::info!(
                            stream = name,
                            players = report.players,
                            "kicked by operator"
                        );
                        Ok(super::json(StatusCode::OK, &report))
                    }
                    None => Err(not_live(name)),
                },
                _ => Err(ApiError::MethodNotAllowed("GET, HEAD, DELETE")),
            }
        }
        p if p.starts_with("/api/rooms/") => {
            read()?;
            let room = &p["/api/rooms/".len()..];
            state
                .rooms
                .report()
                .rooms
                .into_iter()
                .find(|r| r.summary.room == room)
                .map(|r| super::json(StatusCode::OK, &r))
                .ok_or_else(|| ApiError::NotFound(format!("no room `{room}`")))
        }
        _ => Err(ApiError::NotFound(format!("no API route {path}"))),
    }
}

/// `?ban=SECONDS[&scope=name|client]` of a kick: ban the stream name (default) or
/// the kicked publisher's address from publishing for that long.
fn ban(
    query: Option<&str>,
) -> Result<Option<(crate::live::BanScope, std::time::Duration)>, ApiError> {
    use crate::access::auth::query_param;
    use crate::live::BanScope;
    let Some(query) = query else { return Ok(None) };
    let Some(seconds) = query_param(query, "ban") else {
        return Ok(None);
    };
    let max = crate::live::registry::MAX_BAN.as_secs();
    let seconds: u64 = seconds
        .parse()
        .ok()
        .filter(|s| (1..=max).contains(s))
        .ok_or_else(|| ApiError::BadRequest(format!("ban must be 1 to {max} seconds")))?;
    let scope = match query_param(query, "scope") {
        None | Some("name") => BanScope::Name,
        Some("client") => BanScope::Client,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "scope must be `name` or `client`, not `{other}`"
            )));
        }
    };
    Ok(Some((scope, std::time::Duration::from_secs(seconds))))
}

/// A stream's status, with where it comes from in a cluster: `origin` (the node
/// holding its lease) and, on an edge, `pulled_from`.
fn with_origin(state: &AppState, status: crate::live::StreamStatus) -> serde_json::Value {
    let name = status.name.clone();
    let mut value = serde_json::to_value(status).unwrap_or_default();
    let Some(cluster) = &state.cluster else {
        return value;
    };
    let origin = match cluster.pulls.origin_of(&name) {
        Some(o) => {
            value["pulled_from"] = serde_json::Value::String(o.id.clone());
            Some((o.id, o.url))
        }
        None if cluster.holds(&name) => Some((cluster.id().to_owned(), cluster.url().to_owned())),
        None => None,
    };
    if let Some((node, url)) = origin {
        value["origin"] = serde_json::json!({ "node": node, "url": url });
    }
    value
}

/// `GET /api/cluster`: this node, Redis reachability, every registered node.
/// `/api/rooms` and `/api/rooms/ROOM` on a cluster node: the rooms of every node
/// (each listed by its home), unless `?scope=node` asks for this node's only.
pub(crate) async fn rooms(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    let query = req.uri().query().unwrap_or("");
    let node_only = crate::access::auth::query_param(query, "scope") == Some("node");
    let Some(cluster) = state.cluster.as_ref().filter(|_| !node_only) else {
        return route(state, req);
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return ApiError::MethodNotAllowed("GET, HEAD").response();
    }
    let path = req.uri().path();
    let detail = path.strip_prefix("/api/rooms/");
    if detail.is_some() {
        match state.policy.get().admin_access(req.headers()) {
            AdminAccess::Granted => {}
            AdminAccess::Denied => return ApiError::Unauthorized.response(),
            AdminAccess::Disabled => return ApiError::AdminDisabled.response(),
        }
    }
    let local = serde_json::to_value(state.rooms.report()).unwrap_or_default();
    let report = cluster.rooms_report(local).await;
    match detail {
        None => super::json(StatusCode::OK, &report),
        Some(room) => report["rooms"]
            .as_array()
            .and_then(|rooms| rooms.iter().find(|r| r["room"] == room))
            .map(|r| super::json(StatusCode::OK, r))
            .unwrap_or_else(|| ApiError::NotFound(format!("no room `{room}`")).response()),
    }
}

pub(crate) async fn cluster(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return ApiError::MethodNotAllowed("GET, HEAD").response();
    }
    let Some(cluster) = &state.cluster else {
        return super::json(StatusCode::OK, &serde_json::json!({ "enabled": false }));
    };
    let (nodes, redis) = match cluster.nodes().await {
        Ok(nodes) => (nodes, "ok"),
        Err(_) => (Vec::new(), "unavailable"),
    };
    let now = crate::cluster::unix_ms();
    let nodes: Vec<serde_json::Value> = nodes
        .into_iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id,
                "url": n.url,
                "boot": n.boot,
                "players": n.players,
                "streams": n.streams,
                "age_ms": now.saturating_sub(n.at),
            })
        })
        .collect();
    super::json(
        StatusCode::OK,
        &serde_json::json!({
            "enabled": true,
            "node": { "id": cluster.id(), "url": cluster.url() },
            "redis": redis,
            "nodes": nodes,
        }),
    )
}

fn not_live(name: &str) -> ApiError {
    ApiError::NotFound(format!("stream `{name}` is not live"))
}

fn stream_name(path: &str) -> Result<&str, ApiError> {
    let name = &path["/api/streams/".len()..];
    // Same rules as /live/NAME.flv.
    super::parse_live_path(&format!("/live/{name}.flv")).map_err(ApiError::BadRequest)?;
    Ok(name)
}

/// Serves `/metrics`: gauges read at scrape time, then every family, in the format the
/// scraper's `Accept` asks for (Prometheus text 0.0.4 unless it prefers OpenMetrics).
pub(crate) fn metrics(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = super::text(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD");
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let rooms = state.rooms.report();
    state.metrics.signal_rooms.set(rooms.rooms.len() as i64);
    state
        .metrics
        .signal_peers
        .set(rooms.rooms.iter().map(|r| r.summary.peers as i64).sum());
    let format = Format::negotiate(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let mut res = Response::new(super::full(state.metrics.render_as(format)));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    res
}
