//! A client whose room lives on another node (cluster): its frames are relayed,
//! unchanged and in order, over a **link** — a WebSocket this node opens to the
//! room's home for this client — and what the home sends comes back the same way.
//!
//! The home runs the room; this node only keeps what it needs if the home dies:
//! the peer's record (id, session, place in the join order; an internal frame the
//! home sends after the join) and the roster its client was told about. When the
//! link is lost (the home died, shut down, or lost the room to another node), the
//! edge opens a link to the new home ([`Homes::connect`] finds or becomes it) and
//! restores the peer there ([`link::Frame::Restore`]): its client sees nothing but
//! the departure of peers that did not come back. Meanwhile the client's frames
//! wait in its socket.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use hyper_tungstenite::HyperWebsocketStream;
use hyper_tungstenite::tungstenite::protocol::frame::CloseFrame;
use hyper_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use signaling::{CloseReason, SignalError};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::link::{self, Frame};
use super::{IdleTimer, WRITE_BATCH, close, close_with, drain, error_json, write};
use crate::metrics::Metrics;

/// A link to a room's home node.
pub(crate) type Link = WebSocketStream<TcpStream>;

/// Why no link to a room's home could be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HomeError {
    /// The cluster directory (Redis) did not answer.
    #[error("the cluster directory (Redis) is unavailable")]
    Directory(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The home (and any node that could take its place) did not answer in time.
    #[error("the room's home node did not answer")]
    Unreachable,
    /// The home refused the link (another cluster secret?).
    #[error("the room's home node refused the link: {0}")]
    Refused(String),
}

impl HomeError {
    fn reason(&self) -> &'static str {
        match self {
            HomeError::Directory(_) => "redis",
            HomeError::Unreachable => "home_unreachable",
            HomeError::Refused(_) => "rejected",
        }
    }
}

/// Where rooms live: the cluster's side of an edge.
pub(crate) trait Homes: Send + Sync + std::fmt::Debug {
    /// Opens a link to `room`'s home, taking the room over when its home is found
    /// dead, and sends `restore` as its first frame; with a watch on the home node
    /// (none when the home is this node).
    #[allow(clippy::type_complexity)]
    fn connect<'a>(
        &'a self,
        room: &'a str,
        restore: Option<Frame>,
    ) -> Pin<Box<dyn Future<Output = Result<(Link, Option<link::Watch>), HomeError>> + Send + 'a>>;
}

/// What the edge knows of its peer, to restore it into another home.
#[derive(Debug, Default)]
struct Carried {
    /// The peer's record, once the home sent it (after `join`).
    peer: Option<(String, u64, String, Option<String>)>,
    /// The current link's home sent the record: the peer is in the room there. A
    /// restore link is unconfirmed until then, and a `moved` close before that is
    /// the home refusing the restore (the client must join again), not a home lost.
    confirmed: bool,
    /// Peers the client was told about.
    known: BTreeSet<String>,
}

impl Carried {
    /// Follows the roster the client is told about.
    fn track(&mut self, text: &str) {
        let kind = if text.starts_with(r#"{"type":"welcome""#) {
            "welcome"
        } else if text.starts_with(r#"{"type":"peer-joined""#) {
            "joined"
        } else if text.starts_with(r#"{"type":"peer-left""#) {
            "left"
        } else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return;
        };
        let id = |v: &serde_json::Value| v["peer"].as_str().map(str::to_owned);
        match kind {
            "welcome" => {
                self.known = v["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(id)
                    .collect();
            }
            "joined" => self.known.extend(id(&v)),
            _ => {
                if let Some(p) = id(&v) {
                    self.known.remove(&p);
                }
            }
        }
    }

    fn restore(&self) -> Option<Frame> {
        let (peer, seq, session, meta) = self.peer.clone()?;
        Some(Frame::Restore {
            peer,
            seq,
            session,
            meta,
            known: self.known.iter().cloned().collect(),
        })
    }
}

/// How relaying between a client and its link ended.
#[derive(Debug)]
enum End {
    /// The client closed or its socket failed.
    ClientGone,
    /// The home closed the link with this frame (the room closed the peer).
    Closed(Option<CloseFrame>),
    /// The link failed, or the home went away (shutdown, room moved).
    HomeLost(String),
    /// Server shutdown.
    Shutdown,
    /// Nothing from the client for `idle_timeout_ms`.
    Idle,
    /// A write to the client stalled.
    Slow,
}

/// Serves a client of `room` whose home is another node, until either side ends.
pub(crate) async fn serve(
    mut client: HyperWebsocketStream,
    room: String,
    homes: Arc<dyn Homes>,
    cfg: Arc<signaling::Config>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let gauge = metrics
        .signal_cluster_links
        .get_or_create_owned(&[("role", "edge")]);
    gauge.inc();
    let write_timeout = Duration::from_millis(cfg.write_timeout_ms);
    let mut carried = Carried::default();
    let mut restore: Option<Frame> = None;
    // Cleared after an oversized or broken frame from the client.
    let mut reading = true;
    loop {
        let opened = tokio::select! {
            r = homes.connect(&room, restore.clone()) => r,
            () = shutdown.cancelled() => {
                close(&mut client, CloseReason::Shutdown, write_timeout).await;
                break;
            }
        };
        let (mut up, watch) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let reason = e.reason();
                metrics
                    .signal_cluster_errors
                    .get_or_create(&[("reason", reason)])
                    .inc();
                if restore.is_some() {
                    metrics
                        .signal_rehomes
                        .get_or_create(&[("outcome", "failed")])
                        .inc();
                }
                tracing::warn!(error = %crate::vocab::error_chain(&e), "no link to the room's home node");
                refuse(client, e.to_string(), write_timeout).await;
                gauge.dec();
                return;
            }
        };
        if restore.take().is_some() {
            carried.confirmed = false;
            metrics
                .signal_rehomes
                .get_or_create(&[("outcome", "restored")])
                .inc();
            tracing::info!("peer restored on the room's new home node");
        }
        let end = relay(
            &mut client,
            &mut up,
            &mut carried,
            &mut reading,
            (&cfg, watch.as_ref()),
            &metrics,
            &shutdown,
        )
        .await;
        tracing::debug!(?end, "link ended");
        match end {
            End::HomeLost(why) => {
                if let Some(frame) = carried.restore() {
                    tracing::warn!(reason = %why, "lost the room's home node; moving the peer to a new home");
                    restore = Some(frame);
                    continue;
                }
                // Not joined yet: nothing to restore; the client reconnects.
                close(&mut client, CloseReason::Moved, write_timeout).await;
            }
            End::Closed(frame) => {
                if reading {
                    close_with(&mut client, frame, write_timeout).await;
                } else if write(&mut client, vec![Message::Close(frame)], write_timeout).await {
                    // After an oversized frame, as in `run_conn`.
                    drain(&mut client).await;
                }
            }
            End::ClientGone => close_with(&mut up, None, write_timeout).await,
            End::Shutdown => {
                close(&mut client, CloseReason::Shutdown, write_timeout).await;
                close_with(&mut up, None, write_timeout).await;
            }
            End::Idle => {
                close(&mut client, CloseReason::IdleTimeout, write_timeout).await;
                close_with(&mut up, None, write_timeout).await;
            }
            End::Slow => {
                close(&mut client, CloseReason::SlowConsumer, write_timeout).await;
                close_with(&mut up, None, write_timeout).await;
            }
        }
        break;
    }
    gauge.dec();
}

/// Relays frames both ways until one side ends.
async fn relay(
    client: &mut HyperWebsocketStream,
    up: &mut Link,
    carried: &mut Carried,
    reading: &mut bool,
    (cfg, watch): (&signaling::Config, Option<&link::Watch>),
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> End {
    let heartbeat = Duration::from_millis(cfg.heartbeat_interval_ms);
    let idle = Duration::from_millis(cfg.idle_timeout_ms);
    let write_timeout = Duration::from_millis(cfg.write_timeout_ms);
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    // The link ends when the cluster finds the home node dead.
    let home_dead = async {
        match watch {
            Some(w) => w.dead.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(home_dead);
    let (mut client_seen, mut home_seen) = (Instant::now(), Instant::now());
    let (mut client_idle, mut home_idle) = (IdleTimer::new(idle), IdleTimer::new(idle));
    let to_home = metrics
        .signal_cluster_frames
        .get_or_create_owned(&[("direction", "to_home")]);
    let from_home = metrics
        .signal_cluster_frames
        .get_or_create_owned(&[("direction", "from_home")]);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return End::Shutdown,
            () = &mut home_dead => {
                return End::HomeLost("the home node is dead (its cluster registration lapsed)".into());
            }
            frame = up.next() => {
                home_seen = Instant::now();
                // What the home sent since, too, in one write to the client.
                let mut batch = Vec::new();
                let mut next = Some(frame);
                let mut end = None;
                while let Some(frame) = next.take() {
                    match frame {
                        Some(Ok(Message::Text(t))) => {
                            if !link::is_internal(t.as_str()) {
                                carried.track(t.as_str());
                                batch.push(Message::Text(t));
                            } else if let Some(Frame::Peer { peer, seq, session, meta }) =
                                Frame::parse(t.as_str())
                            {
                                tracing::Span::current().record("peer", peer.as_str());
                                carried.peer = Some((peer, seq, session, meta));
                                carried.confirmed = true;
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            // A home shutting down or losing the room: move on.
                            let code = frame.as_ref().map(|f| u16::from(f.code));
                            let refused = code == Some(4012) && !carried.confirmed;
                            end = Some(if matches!(code, Some(1001 | 4012)) && !refused {
                                End::HomeLost(format!("home closed the link ({})", code.unwrap_or(0)))
                            } else {
                                End::Closed(frame)
                            });
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => end = Some(End::HomeLost(e.to_string())),
                        None => end = Some(End::HomeLost("link closed".into())),
                    }
                    if end.is_none() && batch.len() < WRITE_BATCH {
                        next = up.next().now_or_never();
                    }
                }
                if !batch.is_empty() {
                    from_home.inc_by(batch.len() as u64);
                    if !write(client, batch, write_timeout).await {
                        return End::Slow;
                    }
                }
                if let Some(end) = end {
                    return end;
                }
            }
            frame = client.next(), if *reading => {
                client_seen = Instant::now();
                // What the client sent since, too, in one write to the home.
                let mut batch = Vec::new();
                let mut next = Some(frame);
                let mut gone = false;
                while let Some(frame) = next.take() {
                    match frame {
                        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => batch.push(m),
                        Some(Ok(_)) => {}
                        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                            *reading = false;
                            batch.push(Message::text(Frame::TooLarge.to_json()));
                        }
                        Some(Err(WsError::Utf8(_))) => {
                            *reading = false;
                            batch.push(Message::text(Frame::NotUtf8.to_json()));
                        }
                        Some(Err(_)) | None => gone = true,
                    }
                    if *reading && !gone && batch.len() < WRITE_BATCH {
                        next = client.next().now_or_never();
                    }
                }
                if !batch.is_empty() {
                    to_home.inc_by(batch.len() as u64);
                    if !write(up, batch, write_timeout).await {
                        return End::HomeLost("write to the home node failed".into());
                    }
                }
                if gone {
                    return End::ClientGone;
                }
            }
            () = client_idle.expired(client_seen) => return End::Idle,
            () = home_idle.expired(home_seen) => {
                return End::HomeLost("home node silent".into());
            }
            _ = ping.tick() => {
                let ping = || vec![Message::Ping(Default::default())];
                if !write(client, ping(), write_timeout).await {
                    return End::Slow;
                }
                if !write(up, ping(), write_timeout).await {
                    return End::HomeLost("write to the home node failed".into());
                }
            }
        }
    }
}

/// A client refused before reaching any room: `error cluster-unavailable`, close 1013.
pub(crate) async fn refuse(mut client: HyperWebsocketStream, why: String, write_timeout: Duration) {
    let err = SignalError::ClusterUnavailable(why);
    if write(
        &mut client,
        vec![Message::text(error_json(&err))],
        write_timeout,
    )
    .await
    {
        close(&mut client, CloseReason::TryAgainLater, write_timeout).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_follows_the_roster_the_client_is_told() {
        let mut c = Carried::default();
        c.track(r#"{"type":"welcome","protocol":1,"peer":"a","session":"s","resumed":false,"peers":[{"peer":"b","polite":true,"reconnecting":false},{"peer":"c","polite":true,"reconnecting":true}],"heartbeat_ms":1,"ice_servers":[]}"#);
        c.track(r#"{"type":"peer-joined","peer":"d","polite":false}"#);
        c.track(r#"{"type":"peer-left","peer":"b","reason":"leave"}"#);
        c.track(r#"{"type":"message","from":"x","data":{"type":"peer-joined","peer":"e"}}"#);
        assert_eq!(
            c.restore(),
            None,
            "nothing to restore before the home's record"
        );
        c.peer = Some(("a".into(), 7, "s".into(), None));
        assert_eq!(
            c.restore(),
            Some(Frame::Restore {
                peer: "a".into(),
                seq: 7,
                session: "s".into(),
                meta: None,
                known: vec!["c".into(), "d".into()],
            })
        );
    }
}
