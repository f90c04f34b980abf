//! RTMP ingest: OBS, ffmpeg and hardware encoders publish to
//! `rtmp://host:1935/live/NAME`, and the stream plays at `/live/NAME.flv` like any
//! other.
//!
//! - [`chunk`]: reassembling messages from the chunk stream (pure).
//! - [`session`]: handshake, `connect` / `createStream` / `publish`, responses (pure;
//!   the `scuffle-rtmp` crate does the handshake, AMF0 commands and chunk writing).
//! - this module: the listener and one task per connection that drives a
//!   [`session::Session`] with the socket and pushes its tags into the hub.
//!
//! Each connection is its own task wrapped in `catch_unwind`: an error or a panic
//! while handling one client closes that client's socket with a logged reason and
//! touches nothing else. Connections that never finish the handshake or never
//! publish are closed after `rtmp_settings.handshake_timeout_ms` /
//! `publish_timeout_ms`; `rtmp_settings.max_connections` caps them.
//!
//! Names: app `live` + key `NAME` is stream `NAME`; another app `APP` gives
//! `APP/NAME`; a key like `NAME?token=…` is split into the name and a query kept in
//! [`PublishTarget`] (never logged). Names follow the HTTP rules
//! (`http::parse_live_path`).

pub mod chunk;
pub mod command;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::access::admission::{Admission, catch_panic};
use crate::cluster::LeaseGuard;
use crate::live::{Publisher, PublisherInfo, PushError};
use crate::state::AppState;
use crate::vocab::{Action, Protocol};
use chunk::ChunkReaderConfig;
use session::{PUBLISH_BAD_NAME, Session, SessionConfig, SessionError, SessionEvent};

/// Bytes read from the socket at once. A 2.5 Mbit/s stream arrives in a few
/// kilobytes per read; 64 KiB keeps syscalls few for 20+ Mbit/s publishers.
const READ_BUFFER: usize = 64 << 10;

/// After refusing a publish, how long we keep reading (and discarding) so the client
/// reads our error status before the socket closes (closing with unread input would
/// reset the connection and could lose the status).
const REFUSAL_LINGER: Duration = crate::vocab::CLOSE_TIMEOUT;

/// Where an RTMP publish goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishTarget {
    /// The stream name, as in `/live/NAME.flv`.
    pub name: String,
    /// The query of the stream key (and of the app, if it had one), without `?`:
    /// where publish tokens travel. `None` when there was none.
    pub query: Option<String>,
}

impl PublishTarget {
    /// Maps an RTMP app and stream key to a stream name (see the module docs).
    pub fn from_rtmp(app: &str, key: &str) -> Result<PublishTarget, String> {
        let (app, app_query) = split_query(app);
        let (key, key_query) = split_query(key);
        let (app, key) = (app.trim_matches('/'), key.trim_matches('/'));
        if app.is_empty() {
            return Err("no application in the URL: publish to rtmp://HOST/live/NAME".into());
        }
        if key.is_empty() {
            return Err("empty stream key".into());
        }
        let name = if app == "live" {
            key.to_owned()
        } else {
            format!("{app}/{key}")
        };
        crate::http::parse_live_path(&format!("/live/{name}.flv"))?;
        let queries: Vec<&str> = [key_query, app_query].into_iter().flatten().collect();
        Ok(PublishTarget {
            name,
            query: (!queries.is_empty()).then(|| queries.join("&")),
        })
    }
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((path, query)) => (path, (!query.is_empty()).then_some(query)),
        None => (s, None),
    }
}

/// Why an RTMP connection ended; every connection logs one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtmpEnd {
    /// The client closed the connection (the normal end of a publish).
    #[error("client closed the connection")]
    Closed,
    /// No complete handshake within `rtmp_settings.handshake_timeout_ms`.
    #[error("handshake not completed within {0} ms")]
    HandshakeTimeout(u64),
    /// No `publish` within `rtmp_settings.publish_timeout_ms` of connecting.
    #[error("no publish within {0} ms")]
    PublishTimeout(u64),
    /// A publisher sent nothing for `live.publisher_idle_timeout_ms`.
    #[error("no data for {0} ms")]
    Idle(u64),
    /// The client broke the protocol (garbage, malformed chunk or command, play).
    #[error("{0}")]
    Session(#[from] SessionError),
    /// The publish was refused (bad name, name taken, too many streams); the client
    /// got an error `onStatus`.
    #[error("publish refused: {0}")]
    Refused(String),
    /// The stream was taken over by another publisher or ended.
    #[error("{0}")]
    Push(#[from] PushError),
    /// A write to the client did not finish within `rtmp_settings.write_timeout_ms`.
    #[error("write to the client timed out")]
    WriteTimeout,
    /// The connection failed.
    #[error("connection lost: {0}")]
    Io(#[source] std::io::Error),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
}

/// What a connection carried.
#[derive(Debug, Default)]
struct Stats {
    bytes: u64,
    tags: u64,
}

/// Runs one admitted RTMP connection to its end (the accept loop is
/// [`crate::net::accept_loop`]); a panic is contained and logged as a bug.
pub(crate) async fn serve(
    socket: TcpStream,
    remote: SocketAddr,
    state: Arc<AppState>,
    admission: Admission,
) {
    let _admission = admission;
    let started = Instant::now();
    let outcome = catch_panic(connection(socket, remote, state)).await;
    log_end(remote, outcome, started);
}

fn log_end(remote: SocketAddr, outcome: Result<(RtmpEnd, Stats), String>, started: Instant) {
    let duration = crate::vocab::Human(started.elapsed());
    match outcome {
        Ok((end @ (RtmpEnd::Closed | RtmpEnd::Shutdown), stats)) => tracing::info!(
            peer = %remote, reason = %crate::vocab::error_chain(&end), bytes = stats.bytes, tags = stats.tags, %duration,
            "RTMP connection closed"
        ),
        Ok((end, stats)) => tracing::warn!(
            peer = %remote, reason = %crate::vocab::error_chain(&end), bytes = stats.bytes, tags = stats.tags, %duration,
            "RTMP connection closed"
        ),
        Err(panic) => tracing::error!(
            peer = %remote, reason = %panic, %duration,
            "RTMP session panicked (a bug); connection closed"
        ),
    }
}

/// Drives one connection to its end.
async fn connection(
    mut socket: TcpStream,
    remote: SocketAddr,
    state: Arc<AppState>,
) -> (RtmpEnd, Stats) {
    let cfg = &state.config.rtmp_settings;
    let started = Instant::now();
    let handshake_deadline = started + Duration::from_millis(cfg.handshake_timeout_ms);
    let publish_deadline = started + Duration::from_millis(cfg.publish_timeout_ms);
    let idle_ms = state.config.live.publisher_idle_timeout_ms;
    let write_timeout = Duration::from_millis(cfg.write_timeout_ms);
    let mut session = Session::new(SessionConfig {
        chunk: ChunkReaderConfig {
            // One RTMP message is one FLV tag body.
            max_message_bytes: state.config.live.max_tag_bytes,
            max_chunk_size: cfg.max_chunk_size,
            max_chunk_streams: cfg.max_chunk_streams,
        },
        pre_publish_max_message_bytes: cfg.pre_publish_max_message_bytes,
    });
    let mut publisher: Option<Publisher> = None;
    // The stream's cluster lease, held as long as the publisher.
    let mut lease: Option<LeaseGuard> = None;
    // What was published, for the `on_unpublish` hook.
    let mut target: Option<PublishTarget> = None;
    let mut published = false;
    let mut stats = Stats::default();
    let mut buf = vec![0u8; READ_BUFFER];
    let end = loop {
        let (deadline, timeout_end) = if !session.handshake_done() {
            (
                handshake_deadline,
                RtmpEnd::HandshakeTimeout(cfg.handshake_timeout_ms),
            )
        } else if !published {
            (
                publish_deadline,
                RtmpEnd::PublishTimeout(cfg.publish_timeout_ms),
            )
        } else {
            (
                Instant::now() + Duration::from_millis(idle_ms),
                RtmpEnd::Idle(idle_ms),
            )
        };
        let read = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break RtmpEnd::Shutdown,
            _ = stopped(&mut publisher) => break RtmpEnd::Push(PushError::Replaced),
            read = tokio::time::timeout_at(deadline, socket.read(&mut buf)) => read,
        };
        let n = match read {
            Err(_) => break timeout_end,
            Ok(Ok(0)) => break RtmpEnd::Closed,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => break RtmpEnd::Io(e),
        };
        stats.bytes += n as u64;
        if let Err(e) = session.handle_input(&buf[..n]) {
            break e.into();
        }
        let outcome = handle_events(
            &mut session,
            &mut publisher,
            &mut lease,
            &mut target,
            &state,
            remote,
            &mut stats,
        )
        .await;
        published |= publisher.is_some();
        let out = session.take_output();
        if !out.is_empty() {
            match tokio::time::timeout(write_timeout, socket.write_all(&out)).await {
                Err(_) => break RtmpEnd::WriteTimeout,
                Ok(Err(e)) => break RtmpEnd::Io(e),
                Ok(Ok(())) => {}
            }
        }
        if let Err(end) = outcome {
            break end;
        }
    };
    // The stream's grace period starts now, whatever happens to the socket.
    drop(publisher);
    drop(lease);
    if let Some(t) = &target {
        let policy = state.policy.get();
        let query = t.query.as_deref();
        crate::access::policy::notify_unpublished(
            &policy,
            &t.name,
            remote,
            query,
            Protocol::Rtmp,
            &state.tasks,
        );
    }
    if !matches!(
        end,
        RtmpEnd::Closed | RtmpEnd::Io(_) | RtmpEnd::WriteTimeout
    ) {
        // Best effort: the reason as an onStatus (already produced), then a FIN.
        let out = session.take_output();
        let _ = tokio::time::timeout(write_timeout, async {
            socket.write_all(&out).await?;
            socket.shutdown().await
        })
        .await;
        if matches!(
            end,
            RtmpEnd::Refused(_) | RtmpEnd::Session(SessionError::PlayNotSupported)
        ) {
            linger(&mut socket).await;
        }
    }
    (end, stats)
}

/// Acts on what the session reported: publish decisions (tokens and hooks, then
/// the hub), tags for the hub.
async fn handle_events(
    session: &mut Session,
    publisher: &mut Option<Publisher>,
    lease: &mut Option<LeaseGuard>,
    published: &mut Option<PublishTarget>,
    state: &AppState,
    remote: SocketAddr,
    stats: &mut Stats,
) -> Result<(), RtmpEnd> {
    while let Some(event) = session.poll_event() {
        match event {
            SessionEvent::Media(tag) => {
                if let Some(p) = publisher.as_mut() {
                    p.push(tag)?;
                    stats.tags += 1;
                }
            }
            SessionEvent::Connected { app } => {
                tracing::debug!(app = split_query(&app).0, "connected");
            }
            SessionEvent::PublishRequested { app, key } => {
                let target = match PublishTarget::from_rtmp(&app, &key) {
                    Ok(t) => t,
                    Err(reason) => {
                        session.reject_publish(PUBLISH_BAD_NAME, &reason);
                        return Err(RtmpEnd::Refused(reason));
                    }
                };
                tracing::Span::current().record("stream", target.name.as_str());
                let policy = state.policy.get();
                if let Err(refusal) = crate::access::policy::admit(
                    &policy,
                    &state.metrics,
                    Action::Publish,
                    Protocol::Rtmp,
                    &target.name,
                    target.query.as_deref(),
                    remote,
                )
                .await
                {
                    session
                        .reject_publish(refusal.rtmp_code(Action::Publish), &refusal.to_string());
                    return Err(RtmpEnd::Refused(refusal.to_string()));
                }
                let info = PublisherInfo {
                    protocol: Protocol::Rtmp,
                    remote,
                };
                if let Some(cluster) = &state.cluster {
                    match cluster.acquire(&target.name).await {
                        Ok(l) => *lease = Some(l),
                        Err(e) => {
                            session.reject_publish(e.rtmp_code(), &e.to_string());
                            return Err(RtmpEnd::Refused(e.to_string()));
                        }
                    }
                }
                match state.streams.publish(&target.name, info) {
                    Ok(p) => {
                        *publisher = Some(p);
                        *published = Some(target.clone());
                        tracing::info!("publisher started");
                        session.accept_publish(&format!("publishing {}", target.name))?;
                    }
                    Err(e) => {
                        session.reject_publish(e.rtmp_code(), &e.to_string());
                        return Err(RtmpEnd::Refused(e.to_string()));
                    }
                }
            }
            SessionEvent::Unpublished => {
                if let Some(p) = publisher.take() {
                    tracing::info!("publisher stopped publishing");
                    p.finish();
                }
                lease.take();
            }
        }
    }
    Ok(())
}

async fn stopped(publisher: &mut Option<Publisher>) {
    match publisher {
        Some(p) => p.stopped().await,
        None => std::future::pending().await,
    }
}

/// Reads and discards until the client closes or [`REFUSAL_LINGER`] passes.
async fn linger(socket: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        while let Ok(n) = socket.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_like_nginx_rtmp() {
        let t = |app, key| PublishTarget::from_rtmp(app, key);
        assert_eq!(
            t("live", "cam"),
            Ok(PublishTarget {
                name: "cam".into(),
                query: None
            })
        );
        assert_eq!(t("live/", "a/b").unwrap().name, "a/b");
        assert_eq!(t("myapp", "cam").unwrap().name, "myapp/cam");
        assert_eq!(
            t("live", "cam?token=x"),
            Ok(PublishTarget {
                name: "cam".into(),
                query: Some("token=x".into())
            })
        );
        assert_eq!(
            t("live?sig=1", "cam?token=x").unwrap().query.as_deref(),
            Some("token=x&sig=1")
        );
        assert!(t("", "cam").is_err());
        assert!(t("live", "").is_err());
        assert!(t("live", "?token=x").is_err());
        assert!(t("live", "a b").is_err());
        assert!(t("live", "../x").is_err());
    }
}
