//! The HTTP edge: the router (`route`, dispatch only) and the handlers behind it.
//!
//! - [`live`]: `/live/NAME.flv`: players (WebSocket-FLV, HTTP-FLV) and publishers
//!   (HTTP POST/PUT, WebSocket).
//! - [`api`]: `/api/…` status and admin routes, `/metrics`.
//! - [`signal`]: `/signal/ROOM` WebSocket upgrades.
//! - [`static_files`]: the web pages.
//! - [`response`]: the one set of response helpers every handler uses.

pub(crate) mod api;
pub(crate) mod live;
pub(crate) mod response;
pub(crate) mod signal;
pub(crate) mod static_files;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

pub(crate) use response::{Body, ChannelBody, boxed, full, json, text};

use crate::state::AppState;

/// What the handlers of one HTTP connection share.
#[derive(Clone, Debug)]
pub(crate) struct ConnCtx {
    /// The connection's permit and per-IP slot. An upgraded WebSocket keeps a clone
    /// for its whole life: the hyper task ends at the upgrade, the socket does not.
    pub(crate) admission: Arc<crate::access::admission::Admission>,
    /// Cancelled to close the connection at once (an HTTP-FLV player whose writes
    /// stalled: hyper would otherwise keep the socket until the client leaves).
    pub(crate) kill: CancellationToken,
    /// A plain TCP connection's socket, which an HTTP-FLV player may take from
    /// hyper ([`crate::live::socket`]); `None` under TLS.
    pub(crate) socket: Option<crate::live::socket::SharedTcp>,
}

/// The router.
pub(crate) async fn route(
    state: Arc<AppState>,
    req: Request<Incoming>,
    remote: SocketAddr,
    conn: ConnCtx,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    // Behind a trusted proxy, the client is the one X-Forwarded-For names.
    let remote = state.policy.get().client_addr(remote, req.headers());
    let mut res = match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok"),
        "/metrics" => crate::http::api::metrics(&state, &req),
        "/api/cluster" => api::cluster(&state, &req).await,
        p if p == "/api/rooms" || p.starts_with("/api/rooms/") => api::rooms(&state, &req).await,
        p if p.starts_with("/api/") => crate::http::api::route(&state, &req),
        p if p.starts_with("/signal/") => signal::upgrade(&state, req, remote, &conn).await,
        p if p.starts_with("/live/") => live::serve(state.clone(), req, remote, conn).await,
        _ => static_files::serve(&state, &req).await,
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
    let mut res = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// Validates `/live/NAME.flv` and returns `NAME`.
pub(crate) fn parse_live_path(path: &str) -> Result<&str, String> {
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
    // The one query-string parser (tokens use it too).
    req.uri()
        .query()
        .is_some_and(|q| crate::access::auth::query_param(q, key).is_some())
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
}
