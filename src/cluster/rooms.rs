//! Signaling rooms that span nodes: each room has one **home** node, the holder
//! of its lease in Redis (`wsrelay:{room:NAME}:lease`), which runs the room as a
//! single node does. A client that connects to another node is relayed to the home
//! over a link ([`crate::signal::edge`]): one WebSocket per such client, opened by
//! its node with a link token. Messages never go through Redis, so a Redis outage
//! does not stop rooms that are running; it only stops clients from finding a home
//! they are not already linked to.
//!
//! Finding the home ([`Cluster::connect_home`]): take the lease if it is free
//! (this node becomes the home), else link to its holder. A holder that is not
//! registered any more, or that refuses connections twice, is taken to be dead: the
//! lease is taken over (a compare-and-set on its old value, so of several edges
//! exactly one wins) and the others link to the winner. Peers are restored there
//! from their edges ([`signaling::Restore`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::{Cluster, LeaseKind, token, unix_ms};
use crate::signal::edge::{HomeError, Homes, Link};
use crate::signal::link::{self, Frame};

/// How long a link's TCP connect and WebSocket handshake may take.
const LINK_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection failures after which a lease holder is taken to be dead.
const DEAD_AFTER_FAILURES: u32 = 2;

/// The name a link token is signed for (never a stream name: those have no space).
fn link_subject(room: &str) -> String {
    format!("room {room}")
}

/// Why one attempt to open a link failed.
#[derive(Debug)]
enum Attempt {
    /// The node answered that it is not the room's home (any more).
    NotHome,
    /// The node refused the link token.
    Refused(String),
    /// No connection, or no WebSocket, in time.
    Unreachable(String),
}

impl Cluster {
    /// A token for this node to open a link for `room`.
    fn link_token(&self, room: &str) -> String {
        token::sign(
            self.secret.expose().as_bytes(),
            &link_subject(room),
            &self.id,
            unix_ms() / 1000,
        )
    }

    /// Checks a link token for `room`; returns the linking node's id.
    pub fn verify_link(&self, room: &str, token: &str) -> Result<String, token::TokenError> {
        token::verify(
            self.secret.expose().as_bytes(),
            &link_subject(room),
            token,
            unix_ms() / 1000,
        )
    }

    /// Opens a link to `room`'s home (this node when it holds or takes the lease),
    /// sending `restore` first; returns it with the home's node id. Gives up after
    /// the room's old lease could have lapsed (`lease_ttl_ms`) and two more seconds.
    pub(crate) async fn connect_home(
        self: &Arc<Self>,
        room: &str,
        restore: Option<Frame>,
    ) -> Result<(Link, Option<String>), HomeError> {
        let deadline =
            Instant::now() + Duration::from_millis(self.config.lease_ttl_ms) + LINK_CONNECT_TIMEOUT;
        let mut failures: HashMap<String, u32> = HashMap::new();
        let mut backoff = Duration::from_millis(50);
        let directory = |e: super::ClusterError| HomeError::Directory(Box::new(e));
        // A lease taken over here, kept until the link to this node is open (the
        // next round shares it; dropping it at once would release it).
        let mut taken = None;
        loop {
            if Instant::now() > deadline {
                return Err(HomeError::Unreachable);
            }
            // Held until the link is open: the home's room then holds its own share.
            let (url, holder, _lease) = match self
                .acquire_lease(LeaseKind::Room, room)
                .await
                .map_err(directory)?
            {
                Ok(lease) => (self.url.clone(), None, Some(lease)),
                // Released meanwhile: ask again (after the backoff below).
                Err(value) if value.is_empty() => (String::new(), None, None),
                Err(value) => match self.node_of(&value).await.map_err(directory)? {
                    Some(node) => (node.url, Some(value), None),
                    None => {
                        // Its node is not registered any more: dead.
                        tracing::info!(room, lease = %value, "room's home node is gone; taking the room over");
                        taken = self
                            .take_over(LeaseKind::Room, room, &value)
                            .await
                            .map_err(directory)?
                            .ok();
                        continue;
                    }
                },
            };
            let attempt = if url.is_empty() {
                Err(Attempt::NotHome)
            } else {
                self.open_link(&url, room, restore.as_ref()).await
            };
            match attempt {
                Ok(link) => {
                    drop(taken);
                    let home = holder
                        .as_deref()
                        .and_then(|v| v.split('|').next())
                        .map(str::to_owned);
                    return Ok((link, home));
                }
                Err(Attempt::Refused(why)) => return Err(HomeError::Refused(why)),
                Err(Attempt::NotHome) => {}
                Err(Attempt::Unreachable(why)) => {
                    tracing::debug!(room, url, reason = %why, "room's home node unreachable");
                    if let Some(value) = holder {
                        let n = failures.entry(value.clone()).or_default();
                        *n += 1;
                        if *n >= DEAD_AFTER_FAILURES {
                            tracing::info!(room, lease = %value, "room's home node does not answer; taking the room over");
                            taken = self
                                .take_over(LeaseKind::Room, room, &value)
                                .await
                                .map_err(directory)?
                                .ok();
                            continue;
                        }
                    }
                }
            }
            if Instant::now() + backoff > deadline {
                return Err(HomeError::Unreachable);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// One attempt to open a link to the node at `url`.
    async fn open_link(
        &self,
        url: &str,
        room: &str,
        restore: Option<&Frame>,
    ) -> Result<Link, Attempt> {
        let host = super::url_host(url);
        let mut request = format!("ws://{host}/signal/{room}")
            .into_client_request()
            .map_err(|e| Attempt::Unreachable(e.to_string()))?;
        let token = HeaderValue::from_str(&self.link_token(room))
            .map_err(|e| Attempt::Unreachable(e.to_string()))?;
        request.headers_mut().insert(link::HEADER, token);
        let config = crate::signal::ws_config(self.rooms.config());
        let open = async {
            let tcp = tokio::net::TcpStream::connect(&host)
                .await
                .map_err(|e| Attempt::Unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(res) => match res.status().as_u16()
                    {
                        421 => Attempt::NotHome,
                        401 | 403 => Attempt::Refused(format!(
                            "HTTP {} (is cluster.secret the same on every node?)",
                            res.status()
                        )),
                        _ => Attempt::Unreachable(format!("HTTP {}", res.status())),
                    },
                    e => Attempt::Unreachable(e.to_string()),
                })
        };
        let (mut ws, _) = tokio::time::timeout(LINK_CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| Attempt::Unreachable("timed out".into()))??;
        if let Some(frame) = restore {
            ws.send(Message::text(frame.to_json()))
                .await
                .map_err(|e| Attempt::Unreachable(e.to_string()))?;
        }
        Ok(ws)
    }
}

/// The cluster as the edges' directory of homes.
#[derive(Debug, Clone)]
pub(crate) struct ClusterHomes(pub(crate) Arc<Cluster>);

impl Homes for ClusterHomes {
    fn connect<'a>(
        &'a self,
        room: &'a str,
        restore: Option<Frame>,
    ) -> Pin<Box<dyn Future<Output = Result<(Link, Option<link::Watch>), HomeError>> + Send + 'a>>
    {
        Box::pin(async move {
            let (link, home) = self.0.connect_home(room, restore).await?;
            // A link to this node itself (it took the room over) needs no watching.
            let watch = home
                .filter(|id| *id != self.0.id)
                .map(|id| self.0.rooms.peers().watch(&id));
            Ok((link, watch))
        })
    }
}

/// How long `/api/rooms` waits for each other node's rooms.
const ROOMS_FETCH_TIMEOUT: Duration = Duration::from_secs(1);

impl Cluster {
    /// `/api/rooms` cluster-wide: this node's rooms (`local`, from
    /// [`crate::signal::Rooms::report`]) and every other registered node's
    /// (`GET URL/api/rooms?scope=node`, concurrently, at most
    /// [`ROOMS_FETCH_TIMEOUT`] each). Each room is listed by its home; nodes that did
    /// not answer are listed in `unreachable`.
    pub(crate) async fn rooms_report(&self, local: serde_json::Value) -> serde_json::Value {
        use serde_json::{Value, json};
        let nodes = match self.nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                let mut local = local;
                local["unreachable"] = json!([]);
                local["error"] = json!(e.to_string());
                return local;
            }
        };
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let fetches = nodes.iter().filter(|n| n.id != self.id).map(|n| {
            let client = client.clone();
            let url = format!("{}/api/rooms?scope=node", n.url);
            let id = n.id.clone();
            async move {
                let get = async {
                    let res = client.get(url.parse().ok()?).await.ok()?;
                    if !res.status().is_success() {
                        return None;
                    }
                    let body = http_body_util::BodyExt::collect(res.into_body())
                        .await
                        .ok()?;
                    serde_json::from_slice::<Value>(&body.to_bytes()).ok()
                };
                (
                    id,
                    tokio::time::timeout(ROOMS_FETCH_TIMEOUT, get)
                        .await
                        .ok()
                        .flatten(),
                )
            }
        });
        let answers = futures_util::future::join_all(fetches).await;
        let mut connections = local["connections"].as_u64().unwrap_or(0);
        let mut rooms: Vec<Value> = local["rooms"].as_array().cloned().unwrap_or_default();
        let mut unreachable = Vec::new();
        for (id, answer) in answers {
            match answer {
                Some(v) => {
                    connections += v["connections"].as_u64().unwrap_or(0);
                    rooms.extend(v["rooms"].as_array().cloned().unwrap_or_default());
                }
                None => unreachable.push(id),
            }
        }
        rooms.sort_by(|a, b| {
            let key = |v: &Value| {
                (
                    v["room"].as_str().unwrap_or("").to_owned(),
                    v["home"].as_str().unwrap_or("").to_owned(),
                )
            };
            key(a).cmp(&key(b))
        });
        json!({ "connections": connections, "rooms": rooms, "unreachable": unreachable })
    }
}
