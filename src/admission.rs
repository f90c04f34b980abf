//! Admission: the one place every connection (plain HTTP, TLS, WebSocket after its
//! upgrade, RTMP) takes its share of the connection budget.
//!
//! As mini-redis takes a semaphore permit before it serves a socket, a connection
//! here holds an [`Admission`] (a permit of its listener's `max_connections` and a
//! slot of `max_connections_per_ip` for its client address) for its whole life: a
//! WebSocket keeps the admission of the HTTP connection it was upgraded from. A
//! connection over a cap is refused at once: an HTTP client gets a `503` written
//! straight to the socket (no request is read, no keep-alive), then the socket is
//! closed; an RTMP client (which cannot be told "busy" before its handshake) is
//! closed. Refusals are themselves bounded: at most [`MAX_REFUSALS_IN_FLIGHT`] are
//! being written at once; past that a refused socket is closed without a word.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::policy::{IpSlot, PerIpLimiter, Policy};
use crate::server::AppState;

/// Refusals being written at once. Each is a task holding a socket for at most
/// [`REFUSAL_TIMEOUT`]; a flood past this many is closed without an answer, so the
/// refusals cannot become the resource exhaustion they prevent.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refused connection may take to receive its `503` (and, for TLS, to
/// finish the handshake first).
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection's share of the budget; dropping it frees the permit and the slot.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    /// `None` for trusted proxies, which carry many clients.
    _slot: Option<IpSlot>,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The listener's `max_connections` is reached.
    #[error("server at connection limit, try again later")]
    ConnectionLimit,
    /// `max_connections_per_ip` is reached for this client.
    #[error("too many connections from your address, try again later")]
    PerIpLimit,
}

impl Refused {
    /// The `reason` label of `wsrelay_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::ConnectionLimit => "connection_limit",
            Refused::PerIpLimit => "per_ip_limit",
        }
    }
}

/// Takes a permit of `permits` and a per-IP slot for `ip` (trusted proxies are
/// exempt from the per-IP cap), or says which cap refused.
pub fn admit(
    permits: &Arc<Semaphore>,
    per_ip: &Arc<PerIpLimiter>,
    policy: &Policy,
    ip: IpAddr,
) -> Result<Admission, Refused> {
    let permit = permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refused::ConnectionLimit)?;
    let slot = if policy.is_trusted(ip) {
        None
    } else {
        Some(
            per_ip
                .try_acquire(ip, policy.max_connections_per_ip)
                .ok_or(Refused::PerIpLimit)?,
        )
    };
    Ok(Admission {
        _permit: permit,
        _slot: slot,
    })
}

/// Counts a refusal and logs it (rate-limited by the caller's log filter).
pub fn count_refusal(state: &AppState, remote: SocketAddr, refused: Refused, listener: &str) {
    state
        .metrics
        .connections_refused
        .get_or_create(&[("reason", refused.label())])
        .inc();
    tracing::warn!(peer = %remote, listener, reason = %refused, "connection refused");
}

/// Refuses an HTTP (or TLS) connection: writes `503` with the reason and closes,
/// in a bounded task.
pub fn refuse_http(
    state: &Arc<AppState>,
    stream: TcpStream,
    remote: SocketAddr,
    refused: Refused,
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
async fn write_503<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, refused: Refused) {
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

/// Runs `fut`, turning a panic into an error carrying the panic message, so a bug
/// hit by one client ends that client's task with a logged reason and touches
/// nothing else.
pub async fn contain<F: Future>(fut: F) -> Result<F::Output, String> {
    AssertUnwindSafe(fut).catch_unwind().await.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_becomes_an_error() {
        let r = contain(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            1
        })
        .await;
        assert_eq!(r, Err("boom".to_owned()));
        assert_eq!(contain(async { 2 }).await, Ok(2));
    }
}
