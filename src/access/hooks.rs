//! HTTP hooks, as SRS and nginx-rtmp users know them: `on_publish`, `on_play` and
//! `on_unpublish` URLs receive a JSON POST
//! `{"action", "stream", "client", "query", "protocol"}`.
//!
//! For `on_publish` and `on_play` the answer decides: any `2xx` allows, anything
//! else refuses, and so does a hook that does not answer within `timeout_ms` or
//! cannot be reached (logged, since the operator must fix it). `on_unpublish` is a
//! notification; its answer is ignored. At most `max_concurrent` hook calls run at
//! once; a call that cannot start within the timeout counts as timed out, so a slow
//! hook server cannot pile up requests (or tasks) without bound.
//!
//! The hook receives the request's query string as is (it may carry the client's
//! token, for hooks that check their own); queries are never logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::HooksConfig;
use crate::config::hooks::parse_url;
use crate::metrics::Metrics;
use crate::vocab::{Action, Protocol};

/// Which hook. The variants are named after the config keys they are set with
/// (`on_publish`, ...), hence the shared prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub(crate) enum Hook {
    /// Before accepting a publisher.
    OnPublish,
    /// Before accepting a player.
    OnPlay,
    /// After a publisher left (notification).
    OnUnpublish,
}

impl Hook {
    /// `on_publish`, `on_play`, `on_unpublish` (the JSON `action` and metric label).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Hook::OnPublish => "on_publish",
            Hook::OnPlay => "on_play",
            Hook::OnUnpublish => "on_unpublish",
        }
    }
}

/// What a hook is told.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct HookEvent {
    /// `on_publish`, `on_play` or `on_unpublish`.
    pub(crate) action: &'static str,
    /// The stream name.
    pub(crate) stream: String,
    /// The client's address (`ip:port`).
    pub(crate) client: String,
    /// The request's query string, if any (may carry the client's token).
    pub(crate) query: Option<String>,
    /// `http`, `ws` or `rtmp`.
    pub(crate) protocol: Protocol,
}

impl HookEvent {
    /// The event for `hook` about `stream`.
    pub(crate) fn new(
        hook: Hook,
        stream: &str,
        client: SocketAddr,
        query: Option<&str>,
        protocol: Protocol,
    ) -> HookEvent {
        HookEvent {
            action: hook.as_str(),
            stream: stream.to_owned(),
            client: client.to_string(),
            query: query.map(str::to_owned),
            protocol,
        }
    }
}

/// Why a hook refused (or could not allow) a publish or play.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HookError {
    /// The hook answered with a non-2xx status (client gets HTTP 403).
    #[error("refused by the {hook} hook (status {status})")]
    Refused {
        /// The hook.
        hook: &'static str,
        /// Its answer.
        status: u16,
    },
    /// The hook did not answer in time (client gets HTTP 503).
    #[error("the {hook} hook did not answer within {ms} ms")]
    Timeout {
        /// The hook.
        hook: &'static str,
        /// The timeout.
        ms: u64,
    },
    /// The hook could not be reached (client gets HTTP 503).
    #[error("the {hook} hook failed: {reason}")]
    Failed {
        /// The hook.
        hook: &'static str,
        /// Why.
        reason: String,
    },
}

impl HookError {
    /// What the client is told: 403 for a refusal, 503 when the hook is broken.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            HookError::Refused { .. } => StatusCode::FORBIDDEN,
            HookError::Timeout { .. } | HookError::Failed { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The RTMP `onStatus` code for a refused publish or play.
    pub(crate) fn rtmp_code(&self, action: Action) -> &'static str {
        match (self, action) {
            (HookError::Refused { .. }, Action::Publish) => "NetStream.Publish.Rejected",
            (HookError::Refused { .. }, Action::Play) => "NetStream.Play.Rejected",
            (_, Action::Publish) => "NetStream.Publish.Failed",
            (_, Action::Play) => "NetStream.Play.Failed",
        }
    }

    /// Metrics label: `refuse`, `timeout` or `error`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            HookError::Refused { .. } => "refuse",
            HookError::Timeout { .. } => "timeout",
            HookError::Failed { .. } => "error",
        }
    }
}

/// The hook caller: configured URLs, an HTTP client and the concurrency bound.
/// Rebuilt on config reload; calls in flight finish with the old one.
pub(crate) struct Hooks {
    config: HooksConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// A caller for `config` (validated by [`HooksConfig::validate`]).
    pub(crate) fn new(config: HooksConfig, metrics: Arc<Metrics>) -> Hooks {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout()));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let permits = Arc::new(Semaphore::new(config.max_concurrent));
        Hooks {
            config,
            client,
            permits,
            metrics,
        }
    }

    fn url(&self, hook: Hook) -> Option<&str> {
        match hook {
            Hook::OnPublish => self.config.on_publish.as_deref(),
            Hook::OnPlay => self.config.on_play.as_deref(),
            Hook::OnUnpublish => self.config.on_unpublish.as_deref(),
        }
    }

    /// Asks `hook` about `event`; `Ok` when it allows or is not configured.
    pub(crate) async fn check(&self, hook: Hook, event: &HookEvent) -> Result<(), HookError> {
        let Some(url) = self.url(hook) else {
            return Ok(());
        };
        let started = Instant::now();
        let timeout = self.config.timeout();
        let name = hook.as_str();
        let result = match tokio::time::timeout(timeout, self.call(url, name, event)).await {
            Ok(r) => r,
            Err(_) => Err(HookError::Timeout {
                hook: name,
                ms: timeout.as_millis() as u64,
            }),
        };
        let outcome = match &result {
            Ok(()) => "allow",
            Err(e) => e.label(),
        };
        self.metrics
            .hook_duration
            .get_or_create(&[("hook", name), ("outcome", outcome)])
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => tracing::debug!(hook = name, stream = %event.stream, "hook allowed"),
            Err(HookError::Refused { .. }) => {
                tracing::info!(hook = name, stream = %event.stream, reason = %result.as_ref().unwrap_err(), "hook refused")
            }
            Err(e) => {
                tracing::warn!(hook = name, stream = %event.stream, reason = %e, "hook failed")
            }
        }
        result
    }

    /// Tells `on_unpublish` about `event` in the background (tracked by `tasks`).
    pub(crate) fn notify(self: &Arc<Self>, hook: Hook, event: HookEvent, tasks: &TaskTracker) {
        if self.url(hook).is_none() {
            return;
        }
        let hooks = self.clone();
        tasks.spawn(async move {
            // The answer does not matter; failures are logged by `check`.
            let _ = hooks.check(hook, &event).await;
        });
    }

    async fn call(
        &self,
        url: &str,
        name: &'static str,
        event: &HookEvent,
    ) -> Result<(), HookError> {
        let failed = |reason: String| HookError::Failed { hook: name, reason };
        // Waiting for a slot counts against the caller's timeout.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| failed("hook caller closed".into()))?;
        let uri = parse_url(url).map_err(failed)?;
        let body = serde_json::to_vec(event).map_err(|e| failed(e.to_string()))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("wsrelay/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(e.to_string()))?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| failed(crate::vocab::error_chain(&e)))?;
        let status = res.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(HookError::Refused {
                hook: name,
                status: status.as_u16(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// A hook server answering `status` after `delay`, reporting each JSON body.
    async fn hook_server(
        status: u16,
        delay: Duration,
    ) -> (SocketAddr, mpsc::Receiver<serde_json::Value>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let _ = tx.send(serde_json::from_slice(&body).unwrap()).await;
                            tokio::time::sleep(delay).await;
                            let mut res = hyper::Response::new(Full::new(Bytes::new()));
                            *res.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, rx)
    }

    fn hooks(addr: SocketAddr, timeout_ms: u64) -> Hooks {
        Hooks::new(
            HooksConfig {
                on_publish: Some(format!("http://{addr}/hooks/publish")),
                on_play: None,
                on_unpublish: Some(format!("http://{addr}/hooks/unpublish")),
                timeout_ms,
                max_concurrent: 2,
            },
            Arc::new(Metrics::new()),
        )
    }

    fn event(hook: Hook) -> HookEvent {
        HookEvent::new(
            hook,
            "cam1",
            "127.0.0.1:5555".parse().unwrap(),
            Some("token=abc"),
            Protocol::Rtmp,
        )
    }

    #[tokio::test]
    async fn allows_on_2xx_and_posts_the_event() {
        let (addr, mut seen) = hook_server(200, Duration::ZERO).await;
        let h = hooks(addr, 2_000);
        assert_eq!(
            h.check(Hook::OnPublish, &event(Hook::OnPublish)).await,
            Ok(())
        );
        let body = seen.recv().await.unwrap();
        assert_eq!(body["action"], "on_publish");
        assert_eq!(body["stream"], "cam1");
        assert_eq!(body["client"], "127.0.0.1:5555");
        assert_eq!(body["query"], "token=abc");
        assert_eq!(body["protocol"], "rtmp");
        // Not configured: allowed without a call.
        assert_eq!(h.check(Hook::OnPlay, &event(Hook::OnPlay)).await, Ok(()));
        assert!(h.metrics.render().contains("outcome=\"allow\""));
    }

    #[tokio::test]
    async fn refuses_on_non_2xx() {
        let (addr, _seen) = hook_server(403, Duration::ZERO).await;
        let e = hooks(addr, 2_000)
            .check(Hook::OnPublish, &event(Hook::OnPublish))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HookError::Refused {
                hook: "on_publish",
                status: 403
            }
        );
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_hanging_hook_times_out_and_refuses() {
        let (addr, _seen) = hook_server(200, Duration::from_secs(30)).await;
        let started = Instant::now();
        let e = hooks(addr, 200)
            .check(Hook::OnPublish, &event(Hook::OnPublish))
            .await
            .unwrap_err();
        assert!(matches!(e, HookError::Timeout { ms: 200, .. }), "{e:?}");
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn unreachable_hook_refuses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = hooks(addr, 2_000)
            .check(Hook::OnPublish, &event(Hook::OnPublish))
            .await
            .unwrap_err();
        assert!(matches!(e, HookError::Failed { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        // Two slots, three hanging calls: the third cannot even start in time.
        let (addr, mut seen) = hook_server(200, Duration::from_secs(30)).await;
        let h = Arc::new(hooks(addr, 500));
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.check(Hook::OnPublish, &event(Hook::OnPublish)).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.unwrap().is_err());
        }
        let mut requests = 0;
        while seen.try_recv().is_ok() {
            requests += 1;
        }
        assert_eq!(
            requests, 2,
            "only max_concurrent calls reach the hook server"
        );
    }

    #[tokio::test]
    async fn unpublish_is_a_tracked_notification() {
        let (addr, mut seen) = hook_server(500, Duration::ZERO).await;
        let h = Arc::new(hooks(addr, 2_000));
        let tasks = TaskTracker::new();
        h.notify(Hook::OnUnpublish, event(Hook::OnUnpublish), &tasks);
        tasks.close();
        tasks.wait().await;
        assert_eq!(seen.recv().await.unwrap()["action"], "on_unpublish");
    }

    #[test]
    fn config_validation() {
        let mut c = HooksConfig {
            on_publish: Some("https://x/".into()),
            ..HooksConfig::default()
        };
        assert!(c.validate().is_err());
        c.on_publish = Some("http://127.0.0.1:8080/hook".into());
        assert!(c.validate().is_ok());
        c.max_concurrent = 0;
        assert!(c.validate().is_err());
    }
}
