//! `GET /signal/ROOM` with a WebSocket upgrade: checks the request, admits the
//! connection with the room registry ([`crate::signal::Rooms`]), upgrades, and runs
//! it in a task that keeps the HTTP connection's permit and per-IP slot.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tracing::Instrument;

use tokio::sync::OwnedSemaphorePermit;

use super::{Body, ConnCtx};
use crate::cluster::{Cluster, LeaseGuard, LeaseKind};
use crate::signal::Home;
use crate::state::AppState;

/// Where a signaling connection goes.
enum Route {
    /// The room lives here (or will): admit it into the room registry.
    Here {
        /// The node a cluster link comes from.
        via: Option<Arc<str>>,
        /// This node's lease on the room, in a cluster.
        home: Option<Home>,
    },
    /// The room lives on another node: relay the client over a link.
    Elsewhere(Arc<Cluster>),
    /// The cluster directory cannot say where the room lives.
    Unavailable(String),
}

/// A connection admitted before its upgrade.
enum Admission {
    Here(crate::signal::Admitted),
    Elsewhere(Arc<Cluster>, OwnedSemaphorePermit),
    Unavailable(String, OwnedSemaphorePermit),
}

fn home(lease: LeaseGuard) -> Home {
    Home {
        seq_base: lease.epoch() << 32,
        lease: Box::new(lease),
    }
}

/// Decides where the connection for room `name` goes; an error response for a
/// link this node cannot take.
async fn route(
    state: &AppState,
    name: &str,
    req: &Request<Incoming>,
    (remote, http_conn): (SocketAddr, &ConnCtx),
) -> Result<Route, Response<Body>> {
    let Some(cluster) = &state.cluster else {
        return Ok(Route::Here {
            via: None,
            home: None,
        });
    };
    if let Some(token) = req.headers().get(crate::signal::link::HEADER) {
        // A link from another node: only the room's home takes it (no chains).
        let node = token
            .to_str()
            .ok()
            .and_then(|t| cluster.verify_link(name, t).ok())
            .ok_or_else(|| {
                let remote = remote.ip();
                if let Some(suppressed) = crate::access::quiet::should_log(remote, "link_token") {
                    tracing::error!(%remote, room = %name, suppressed, "refused a cluster link with a bad token: is cluster.secret the same on every node?");
                }
                super::text(StatusCode::UNAUTHORIZED, "bad cluster link token")
            })?;
        // A node carries many clients: its links are not one client's connections.
        http_conn.admission.release_ip_slot();
        let Some(lease) = cluster.share(LeaseKind::Room, name) else {
            return Err(super::text(
                StatusCode::MISDIRECTED_REQUEST,
                "this node is not the room's home",
            ));
        };
        return Ok(Route::Here {
            via: Some(node.into()),
            home: Some(home(lease)),
        });
    }
    match cluster.acquire_lease(LeaseKind::Room, name).await {
        Ok(Ok(lease)) => Ok(Route::Here {
            via: None,
            home: Some(home(lease)),
        }),
        Ok(Err(_)) => Ok(Route::Elsewhere(cluster.clone())),
        Err(e) => {
            tracing::warn!(room = %name, error = %crate::vocab::error_chain(&e), "cannot find the room's home node");
            Ok(Route::Unavailable(e.to_string()))
        }
    }
}

/// Serves `/signal/ROOM`.
pub(crate) async fn upgrade(
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
    let route = match route(state, &name, &req, (remote, http_conn)).await {
        Ok(route) => route,
        Err(res) => return res,
    };
    // Limits are answered before the upgrade (503), as on a single node.
    let admitted = match route {
        Route::Here { via, home } => rooms
            .admit_connection(&name, via, home, &state.tasks, &state.shutdown)
            .map(Admission::Here),
        Route::Elsewhere(cluster) => rooms
            .permit()
            .map(|permit| Admission::Elsewhere(cluster, permit)),
        Route::Unavailable(why) => rooms.permit().map(|p| Admission::Unavailable(why, p)),
    };
    let admitted = match admitted {
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
            if let Admission::Here(admitted) = admitted {
                state.tasks.spawn(admitted.abandon());
            }
            return super::text(
                StatusCode::BAD_REQUEST,
                format!("bad WebSocket upgrade: {e}"),
            );
        }
    };
    // `conn`: the room's id of the connection, when the room lives here.
    let span = tracing::info_span!(
        "signal",
        room = %name,
        conn = tracing::field::Empty,
        peer = tracing::field::Empty
    );
    if let Admission::Here(a) = &admitted {
        span.record("conn", a.conn());
    }
    let shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    let cfg = Arc::new(rooms.config().clone());
    // The socket keeps its connection's permit and per-IP slot for its whole life.
    let admission = http_conn.admission.clone();
    state.tasks.spawn(
        async move {
            let _admission = admission;
            let ws = match websocket.await {
                Ok(ws) => ws,
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket upgrade failed");
                    if let Admission::Here(admitted) = admitted {
                        admitted.abandon().await;
                    }
                    return;
                }
            };
            tracing::debug!(%remote, "signaling connection open");
            match admitted {
                Admission::Here(admitted) => admitted.serve(ws, shutdown).await,
                Admission::Elsewhere(cluster, _permit) => {
                    tracing::debug!("room lives on another node: relaying");
                    let homes = Arc::new(crate::cluster::rooms::ClusterHomes(cluster));
                    crate::signal::edge::serve(ws, name, homes, cfg, metrics, shutdown).await;
                }
                Admission::Unavailable(why, _permit) => {
                    metrics
                        .signal_cluster_errors
                        .get_or_create(&[("reason", "redis")])
                        .inc();
                    let limit = std::time::Duration::from_millis(cfg.write_timeout_ms);
                    crate::signal::edge::refuse(ws, why, limit).await;
                }
            }
        }
        .instrument(span),
    );
    super::boxed(res)
}
