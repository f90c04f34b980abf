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
//! closed. Writing the refusal is the listeners' job ([`crate::net`]).

use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::policy::{IpSlot, PerIpLimiter, Policy};

/// A connection's share of the budget; dropping it frees the permit and the slot.
#[derive(Debug)]
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    /// `None` for trusted proxies, which carry many clients, and once given back
    /// ([`Admission::release_ip_slot`]).
    slot: std::sync::Mutex<Option<IpSlot>>,
}

impl Admission {
    /// Gives back the per-IP slot: the connection turned out to be another cluster
    /// node's signaling link (a node carries many clients, as a trusted proxy does).
    pub(crate) fn release_ip_slot(&self) {
        drop(self.slot.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum OverCap {
    /// The listener's `max_connections` is reached.
    #[error("server at connection limit, try again later")]
    ConnectionLimit,
    /// `max_connections_per_ip` is reached for this client.
    #[error("too many connections from your address, try again later")]
    PerIpLimit,
}

impl OverCap {
    /// The `reason` label of `wsrelay_connections_refused_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            OverCap::ConnectionLimit => "connection_limit",
            OverCap::PerIpLimit => "per_ip_limit",
        }
    }
}

/// Takes a permit of `permits` and a per-IP slot for `ip` (trusted proxies are
/// exempt from the per-IP cap), or says which cap refused.
pub(crate) fn admit(
    permits: &Arc<Semaphore>,
    per_ip: &Arc<PerIpLimiter>,
    policy: &Policy,
    ip: IpAddr,
) -> Result<Admission, OverCap> {
    let permit = permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| OverCap::ConnectionLimit)?;
    let slot = if policy.is_trusted(ip) {
        None
    } else {
        Some(
            per_ip
                .try_acquire(ip, policy.max_connections_per_ip)
                .ok_or(OverCap::PerIpLimit)?,
        )
    };
    Ok(Admission {
        _permit: permit,
        slot: std::sync::Mutex::new(slot),
    })
}

/// Runs `fut`, turning a panic into an error carrying the panic message, so a bug
/// hit by one client ends that client's task with a logged reason and touches
/// nothing else.
pub(crate) async fn catch_panic<F: Future>(fut: F) -> Result<F::Output, String> {
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
        let r = catch_panic(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            1
        })
        .await;
        assert_eq!(r, Err("boom".to_owned()));
        assert_eq!(catch_panic(async { 2 }).await, Ok(2));
    }
}
