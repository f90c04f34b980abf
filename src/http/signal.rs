//! `GET /signal/ROOM` with a WebSocket upgrade: checks the request, admits the
//! connection with the room registry ([`crate::signal::Rooms`]), upgrades, and runs
//! it in a task that keeps the HTTP connection's permit and per-IP slot.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tracing::Instrument;

use super::{Body, ConnCtx};
use crate::state::AppState;

/// Serves `/signal/ROOM`.
pub(crate) fn upgrade(
    state: &Arc<AppState>,
    mut req: Request<Incoming>,
    remote: SocketAddr,
    http_conn: &ConnCtx,
) -> Response<Body> {
    let name = req
        .uri()
        .path()
        .strip_prefix("/signal/")
        .unwrap_or_default()
        .to_owned();
    if !signaling::is_valid_id(&name) {
        return super::text(
            StatusCode::BAD_REQUEST,
            "room names are 1 to 64 characters of A-Z a-z 0-9 . _ -",
        );
    }
    if req.method() != Method::GET {
        return super::method_not_allowed("GET");
    }
    if !hyper_tungstenite::is_upgrade_request(&req) {
        let mut res = super::text(
            StatusCode::UPGRADE_REQUIRED,
            "signaling needs a WebSocket: ws(s)://HOST/signal/ROOM",
        );
        res.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return res;
    }
    let rooms = state.rooms.clone();
    let admitted = match rooms.admit_connection(&name, &state.tasks, &state.shutdown) {
        Ok(admitted) => admitted,
        Err(e) => {
            tracing::warn!(room = %name, reason = %e, "signaling upgrade refused");
            return super::text(StatusCode::SERVICE_UNAVAILABLE, e);
        }
    };
    let config = crate::signal::ws_config(rooms.config());
    let (res, websocket) = match hyper_tungstenite::upgrade(&mut req, Some(config)) {
        Ok(up) => up,
        Err(e) => {
            state.tasks.spawn(admitted.abandon());
            return super::text(
                StatusCode::BAD_REQUEST,
                format!("bad WebSocket upgrade: {e}"),
            );
        }
    };
    let conn = admitted.conn();
    let span = tracing::info_span!("signal", room = %name, conn, peer = tracing::field::Empty);
    let shutdown = state.shutdown.clone();
    // The socket keeps its connection's permit and per-IP slot for its whole life.
    let admission = http_conn.admission.clone();
    state.tasks.spawn(
        async move {
            let _admission = admission;
            match websocket.await {
                Ok(ws) => {
                    tracing::debug!(%remote, "signaling connection open");
                    admitted.serve(ws, shutdown).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket upgrade failed");
                    admitted.abandon().await;
                }
            }
        }
        .instrument(span),
    );
    super::boxed(res)
}
