//! Edges: pulling a stream from its origin node over HTTP-FLV, once per (node,
//! stream), into a local stream every local player shares.
//!
//! A pull is one task (`Cluster::run_pull`) that connects to the origin with a pull token,
//! publishes what it receives into the local [`crate::live::Streams`] (as publisher `pull`), and
//! stops `pull_linger_ms` after the last local player left. When the origin goes
//! away (killed, its publisher moved to another node), the local stream enters its
//! publisher grace period and the task looks the origin up again, backing off with
//! jitter (100 ms doubling to `pull_retry_max_ms`), so players continue if the
//! stream is back anywhere within the grace period.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::{Cluster, ClusterError, NodeInfo, PULL_HEADER};
use crate::live::ingest::FlvIngest;
use crate::live::{PublishError, PublisherInfo};
use crate::vocab::Protocol;

/// The pulls running on this node: stream name → the origin it pulls from.
#[derive(Debug, Default)]
pub(crate) struct Pulls {
    running: Mutex<HashMap<String, NodeInfo>>,
    /// Wakes the players waiting in [`Cluster::ensure_local`] when a pull made its
    /// stream live or gave up.
    changed: tokio::sync::Notify,
}

impl Pulls {
    pub(crate) fn len(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The origin `stream` is pulled from, if it is.
    pub(crate) fn origin_of(&self, stream: &str) -> Option<NodeInfo> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned()
    }
}

/// How a pull attempt ended.
#[derive(Debug)]
enum PullEnd {
    /// No local player for `pull_linger_ms`.
    Idle,
    /// Server shutdown.
    Shutdown,
    /// The origin ended the stream cleanly (its end of the HTTP-FLV body): the
    /// local stream ends too.
    Ended,
    /// The origin refused, closed or failed.
    Lost(String),
}

impl Cluster {
    /// Makes sure `stream` is live here if it is live anywhere: starts a pull from
    /// its origin (unless one runs) and waits for its first bytes, at most
    /// `play_wait_ms`. `Ok(false)`: live nowhere (the player gets 404).
    pub async fn ensure_local(self: &Arc<Self>, stream: &str) -> Result<bool, ClusterError> {
        if self.streams.is_live(stream) {
            return Ok(true);
        }
        let running = self.pulls.origin_of(stream).is_some();
        if !running {
            let Some(origin) = self.locate(stream).await? else {
                return Ok(false);
            };
            let start = {
                let mut pulls = self.pulls.running.lock().unwrap_or_else(|e| e.into_inner());
                if pulls.contains_key(stream) {
                    false
                } else {
                    pulls.insert(stream.to_owned(), origin.clone());
                    true
                }
            };
            if start {
                self.update_gauges();
                let cluster = self.clone();
                let name = stream.to_owned();
                self.tasks
                    .spawn(async move { cluster.run_pull(name, origin).await });
            }
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.play_wait_ms);
        loop {
            // Registered before looking, so a change between the look and the wait
            // still wakes us.
            let changed = self.pulls.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.streams.is_live(stream) {
                return Ok(true);
            }
            if self.pulls.origin_of(stream).is_none() {
                // The pull gave up (the origin refused or is gone).
                return Ok(self.streams.is_live(stream));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(ClusterError::PullTimeout);
            }
        }
    }

    /// The pull task of `stream`: pulls until idle or the stream is gone for good.
    async fn run_pull(self: Arc<Self>, stream: String, mut origin: NodeInfo) {
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        let max_backoff = Duration::from_millis(self.config.pull_retry_max_ms);
        let mut pulled_once = false;
        loop {
            tracing::info!(stream, origin = %origin.url, "pull started");
            let end = self.pull_once(&stream, &origin, &mut pulled_once).await;
            let outcome = match &end {
                PullEnd::Idle => "idle",
                PullEnd::Shutdown => "shutdown",
                PullEnd::Ended => "ended",
                PullEnd::Lost(_) => "lost",
            };
            self.metrics
                .cluster_pull_starts
                .get_or_create(&[("outcome", outcome)])
                .inc();
            match end {
                PullEnd::Idle => {
                    tracing::info!(stream, "pull stopped: no local players");
                    break;
                }
                PullEnd::Shutdown => break,
                PullEnd::Ended => {
                    tracing::info!(stream, "pull stopped: the origin ended the stream");
                    break;
                }
                PullEnd::Lost(reason) => {
                    tracing::info!(stream, origin = %origin.url, reason, "pull lost");
                }
            }
            // Look the origin up again while the local stream waits in its grace
            // period (or, before the first bytes, while a player waits).
            loop {
                let waiting = self.streams.is_live(&stream)
                    || (!pulled_once
                        && started.elapsed() < Duration::from_millis(self.config.play_wait_ms));
                if !waiting || self.shutdown.is_cancelled() {
                    self.forget(&stream);
                    tracing::info!(stream, "pull stopped: the stream is gone");
                    return;
                }
                if self.holds(&stream) {
                    // The publisher came back here: this node is the origin now.
                    self.forget(&stream);
                    tracing::info!(stream, "pull stopped: the stream is published here now");
                    return;
                }
                let jitter = rand::random::<f64>() * 0.5 + 0.75;
                tokio::select! {
                    () = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                    () = self.shutdown.cancelled() => { self.forget(&stream); return; }
                }
                backoff = (backoff * 2).min(max_backoff);
                match self.locate(&stream).await {
                    Ok(Some(o)) => {
                        origin = o;
                        self.pulls
                            .running
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(stream.clone(), origin.clone());
                        break;
                    }
                    Ok(None) | Err(_) => continue,
                }
            }
        }
        self.forget(&stream);
    }

    fn forget(&self, stream: &str) {
        self.pulls
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(stream);
        self.pulls.changed.notify_waiters();
        self.update_gauges();
    }

    /// One connection to the origin: publish what it sends until it ends, the
    /// local players are gone for `pull_linger_ms`, or shutdown.
    async fn pull_once(&self, stream: &str, origin: &NodeInfo, pulled_once: &mut bool) -> PullEnd {
        let url = format!("{}/live/{stream}.flv", origin.url.trim_end_matches('/'));
        let req = match hyper::Request::get(&url)
            .header(PULL_HEADER, self.pull_token(stream))
            .body(Empty::<Bytes>::new())
        {
            Ok(r) => r,
            Err(e) => return PullEnd::Lost(format!("bad origin URL {url}: {e}")),
        };
        let client = Client::builder(TokioExecutor::new()).build_http();
        let connect = tokio::time::timeout(
            Duration::from_millis(self.config.play_wait_ms),
            client.request(req),
        );
        let res = tokio::select! {
            r = connect => r,
            () = self.shutdown.cancelled() => return PullEnd::Shutdown,
        };
        let res = match res {
            Err(_) => return PullEnd::Lost("origin did not answer in time".into()),
            Ok(Err(e)) => return PullEnd::Lost(crate::vocab::error_chain(&e)),
            Ok(Ok(res)) => res,
        };
        if matches!(
            res.status(),
            hyper::StatusCode::UNAUTHORIZED | hyper::StatusCode::FORBIDDEN
        ) {
            // Not a transient failure: the nodes disagree on the cluster secret.
            tracing::error!(
                stream,
                origin = %origin.url,
                status = %res.status(),
                "the origin refused this node's pull token: is cluster.secret the same on every node?"
            );
        }
        if res.status() != hyper::StatusCode::OK {
            return PullEnd::Lost(format!("origin answered {}", res.status()));
        }
        let info = PublisherInfo {
            protocol: Protocol::Pull,
            remote: Cluster::url_addr(&origin.url),
        };
        let publisher = match self.streams.publish(stream, info) {
            Ok(p) => p,
            Err(PublishError::AlreadyPublishing(_)) => {
                return PullEnd::Lost("a local publisher has the name".into());
            }
            Err(e) => return PullEnd::Lost(e.to_string()),
        };
        *pulled_once = true;
        self.pulls.changed.notify_waiters();
        let live = &self.streams.config().clone();
        let mut ingest = FlvIngest::new(publisher, live);
        let mut body = res.into_body();
        let linger = Duration::from_millis(self.config.pull_linger_ms);
        let mut idle_since: Option<Instant> = None;
        let mut check = tokio::time::interval(Duration::from_millis(250));
        // An origin that vanished without closing the connection (a partition)
        // goes silent: after the publisher idle timeout the edge looks again.
        let idle = Duration::from_millis(self.streams.config().publisher_idle_timeout_ms);
        let mut last_bytes = Instant::now();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return PullEnd::Shutdown,
                _ = check.tick() => {
                    if last_bytes.elapsed() > idle {
                        return PullEnd::Lost(format!("no data from the origin for {}", crate::vocab::Human(idle)));
                    }
                    if self.streams.players_on(stream) == 0 {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= linger {
                            // Not a drop: end the local stream now.
                            ingest.into_publisher().finish();
                            return PullEnd::Idle;
                        }
                    } else {
                        idle_since = None;
                    }
                }
                frame = body.frame() => match frame {
                    None => {
                        ingest.into_publisher().finish();
                        return PullEnd::Ended;
                    }
                    Some(Err(e)) => return PullEnd::Lost(crate::vocab::error_chain(&e)),
                    Some(Ok(frame)) => {
                        last_bytes = Instant::now();
                        if let Some(data) = frame.data_ref()
                            && let Err(e) = ingest.feed(data)
                        {
                            return PullEnd::Lost(e.to_string());
                        }
                    }
                },
            }
        }
    }
}
