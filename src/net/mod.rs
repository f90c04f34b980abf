//! The listeners: one accept loop for the HTTP, TLS and RTMP listeners, each
//! connection admitted (permit and per-IP slot, [`crate::access::admission`]) before
//! it gets a task, and the HTTP connection driver (hyper with upgrades, request-head
//! limits, panic containment).
//!
//! - [`tls`]: loading the certificate and key for the TLS listener.

pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access::admission::{self, OverCap};
use crate::access::policy::Policy;
use crate::http::{self, ConnCtx};
use crate::live::socket::SharedTcp;
use crate::state::AppState;

/// What a listener serves.
#[derive(Clone)]
pub(crate) enum Service {
    /// HTTP/1.1 (and WebSocket upgrades), over TLS when an acceptor is given.
    Http(Option<tokio_rustls::TlsAcceptor>),
    /// RTMP publishers.
    Rtmp,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Service {
    fn name(&self) -> &'static str {
        match self {
            Service::Http(None) => "http",
            Service::Http(Some(_)) => "https",
            Service::Rtmp => "rtmp",
        }
    }
}

/// Sets `TCP_NOTSENT_LOWAT` (`live.notsent_lowat_bytes`; 0 = the kernel's
/// default): a player that cannot keep up then shows as behind the stream's ring
/// instead of hiding megabytes in its socket buffer.
fn limit_unsent(stream: &tokio::net::TcpStream, bytes: usize) {
    if bytes == 0 {
        return;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let lowat = u32::try_from(bytes).unwrap_or(u32::MAX);
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(lowat) {
            tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
        }
    }
}

/// The one accept loop: accepts until shutdown, admits each socket (a permit of
/// `permits` and a per-IP slot, held for the connection's whole life) or refuses it
/// at once, and runs each admitted connection in its own task with a span.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    permits: Arc<Semaphore>,
    service: Service,
) {
    loop {
        let accepted = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = service.name(), error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if matches!(service, Service::Http(_)) {
            limit_unsent(&stream, state.config.live.notsent_lowat_bytes);
        }
        let policy = state.policy.get();
        let admission = match admission::admit(&permits, &state.per_ip, &policy, remote.ip()) {
            Ok(admission) => admission,
            Err(refused) => {
                match &service {
                    Service::Http(tls) => refuse_http(&state, stream, remote, refused, tls.clone()),
                    // RTMP has no way to say "busy" before the handshake: just close.
                    Service::Rtmp => count_refusal(&state, remote, refused, "rtmp"),
                }
                continue;
            }
        };
        let st = state.clone();
        match &service {
            Service::Http(tls) => {
                let span = tracing::info_span!("conn", peer = %remote);
                let tls = tls.clone();
                state.tasks.spawn(
                    serve_http(stream, remote, st, Arc::new(admission), policy, tls)
                        .instrument(span),
                );
            }
            Service::Rtmp => {
                let span = tracing::info_span!(
                    "rtmp",
                    peer = %remote,
                    stream = tracing::field::Empty
                );
                state
                    .tasks
                    .spawn(crate::rtmp::serve(stream, remote, st, admission).instrument(span));
            }
        }
    }
}

/// One admitted HTTP connection: the TLS handshake (bounded by the request-head
/// timeout) when it is a TLS listener, then hyper.
async fn serve_http(
    stream: TcpStream,
    remote: SocketAddr,
    state: Arc<AppState>,
    admission: Arc<admission::Admission>,
    policy: Arc<Policy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut conn = ConnCtx {
        admission,
        kill: CancellationToken::new(),
        socket: None,
    };
    let Some(acceptor) = tls else {
        // hyper serves it through a socket an HTTP-FLV player can take over.
        let shared = SharedTcp::new(stream);
        conn.socket = Some(shared.clone());
        serve_connection(shared, remote, state, conn, policy).await;
        return;
    };
    match tokio::time::timeout(policy.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_connection(stream, remote, state, conn, policy).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => {
            state
                .metrics
                .connections_refused
                .get_or_create(&[("reason", "header_timeout")])
                .inc();
            tracing::debug!("TLS handshake not completed in time");
        }
    }
}

/// Back-off after a failed `accept` (out of file descriptors and the like), so the
/// loop does not spin while the condition lasts.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

async fn serve_connection<I>(
    stream: I,
    remote: SocketAddr,
    state: Arc<AppState>,
    conn: ConnCtx,
    policy: Arc<Policy>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    let kill = conn.kill.clone();
    let service = service_fn(move |req| {
        let state = state.clone();
        let conn = conn.clone();
        async move {
            let res = admission::catch_panic(http::route(state, req, remote, conn))
                .await
                .unwrap_or_else(|panic| {
                    tracing::error!(reason = %panic, "request handler panicked (a bug)");
                    http::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                });
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        // ffmpeg's POST push half-closes right after its last chunk.
        .half_close(true)
        // Slow-loris: the request head must arrive in time; bounded in size.
        .timer(TokioTimer::new())
        .header_read_timeout(policy.header_read_timeout)
        .max_header_size(policy.max_header_bytes);
    if policy.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        // Only when changed: a custom count moves hyper's header array to the heap.
        builder.max_headers(policy.max_headers);
    }
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        // Dropping the connection closes the socket, whatever hyper was waiting for.
        _ = kill.cancelled() => return,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn => r,
                _ = kill.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics
                .connections_refused
                .get_or_create(&[("reason", "header_timeout")])
                .inc();
            tracing::debug!("connection closed: request head not received in time");
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// hyper's default `max_headers`.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Refusals being written at once. Each is a task holding a socket for at most
/// [`REFUSAL_TIMEOUT`]; a flood past this many is closed without an answer, so the
/// refusals cannot become the resource exhaustion they prevent.
pub(crate) const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refused connection may take to receive its `503` (and, for TLS, to
/// finish the handshake first).
pub(crate) const REFUSAL_TIMEOUT: Duration = crate::vocab::CLOSE_TIMEOUT;

/// Counts a refusal and logs it (rate-limited by the caller's log filter).
pub(crate) fn count_refusal(
    state: &AppState,
    remote: SocketAddr,
    refused: OverCap,
    listener: &str,
) {
    state
        .metrics
        .connections_refused
        .get_or_create(&[("reason", refused.label())])
        .inc();
    // A flood over a cap gets one line per window and client, with the count.
    if let Some(suppressed) = crate::access::quiet::should_log(remote.ip(), refused.label()) {
        tracing::warn!(peer = %remote, listener, reason = %refused, suppressed, "connection refused");
    }
}

/// Refuses an HTTP (or TLS) connection: writes `503` with the reason and closes,
/// in a bounded task.
pub(crate) fn refuse_http(
    state: &Arc<AppState>,
    stream: TcpStream,
    remote: SocketAddr,
    refused: OverCap,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    count_refusal(state, remote, refused, "http");
    static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
    if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSALS_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        return; // dropping the socket closes it
    }
    state.tasks.spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            match tls {
                None => write_503(stream, refused).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        write_503(stream, refused).await;
                    }
                }
            }
        })
        .await;
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Writes a `503` without reading the request, half-closes, and reads (discarding,
/// at most 64 KiB) until the client closes, so the kernel does not reset the
/// connection over unread request bytes before the client has read the answer.
async fn write_503<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, refused: OverCap) {
    let body = format!("{refused}\n");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 5\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err()
        || stream.write_all(body.as_bytes()).await.is_err()
        || stream.shutdown().await.is_err()
    {
        return;
    }
    let mut sink = [0u8; 1024];
    let mut total = 0;
    while total < 64 << 10 {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}
