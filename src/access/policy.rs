//! Who may connect, publish, play and administer: the part of the configuration
//! that `SIGHUP` reloads without dropping a connection.
//!
//! [`Policy`] is built from a [`Config`] and swapped whole on reload
//! ([`PolicyCell`]); every connection and request reads the current one when it
//! needs it, so a reload applies to the next decision while established players,
//! publishers and peers carry on. Reloaded: `[auth]`, `[hooks]`, `admin_token`,
//! `trusted_proxies`, `max_connections_per_ip`, `header_read_timeout_ms`,
//! `max_header_bytes`, `max_headers`. Everything else (listeners, `[live]`,
//! `[signal]`, `[rtmp_settings]`, TLS files) needs a restart.
//!
//! Also here: the client address behind trusted proxies ([`Policy::client_addr`])
//! and the per-IP connection count ([`PerIpLimiter`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper::HeaderMap;

use crate::access::auth::AuthError;
use crate::access::hooks::{Hook, HookError, HookEvent, Hooks};
use crate::config::Config;
use crate::config::{AuthConfig, Cidr};
use crate::metrics::Metrics;
use crate::vocab::Action;
use crate::vocab::Protocol;

/// The reloadable settings, parsed and ready to use.
#[derive(Debug)]
pub(crate) struct Policy {
    /// Publish/play token rules.
    pub(crate) auth: AuthConfig,
    /// The hook caller (its own concurrency bound and timeout).
    pub(crate) hooks: Arc<Hooks>,
    /// The `/api/` bearer token.
    pub(crate) admin_token: Option<signaling::Secret>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<Cidr>,
    /// Connections per client IP on the HTTP/TLS listeners.
    pub(crate) max_connections_per_ip: usize,
    /// Time to send a request head or finish a TLS handshake.
    pub(crate) header_read_timeout: Duration,
    /// Largest request head in bytes.
    pub(crate) max_header_bytes: usize,
    /// Most header fields per request.
    pub(crate) max_headers: usize,
}

impl Policy {
    /// The policy of `config` (already validated).
    pub(crate) fn new(config: &Config, metrics: Arc<Metrics>) -> Policy {
        Policy {
            auth: config.auth.clone(),
            hooks: Arc::new(Hooks::new(config.hooks.clone(), metrics)),
            admin_token: config.admin_token.clone(),
            // Validated: every entry parses.
            trusted_proxies: config
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
            max_connections_per_ip: config.max_connections_per_ip,
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
        }
    }

    /// Whether `ip` is a trusted proxy.
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// The client's address: `remote` itself, or, when `remote` is a trusted proxy,
    /// the nearest untrusted address of `X-Forwarded-For` (read right to left, as
    /// each proxy appends the address it saw). The port of a forwarded address is
    /// unknown and reported as 0.
    pub(crate) fn client_addr(&self, remote: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.is_trusted(remote.ip()) {
            return remote;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let mut client = remote;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_forwarded_ip(hop) else {
                break; // garbage: stop at the last address we could trust
            };
            client = SocketAddr::new(ip, 0);
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }

    /// Whether `headers` carry `Authorization: Bearer <admin_token>`. Closed by
    /// default: with no admin token configured the answer is
    /// [`AdminAccess::Disabled`]. Compared in constant time.
    pub(crate) fn admin_access(&self, headers: &HeaderMap) -> AdminAccess {
        let Some(expected) = &self.admin_token else {
            return AdminAccess::Disabled;
        };
        let given = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
            AdminAccess::Granted
        } else {
            AdminAccess::Denied
        }
    }
}

/// What [`Policy::admin_access`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdminAccess {
    /// The request carries the admin token.
    Granted,
    /// An admin token is configured and the request lacks it (401).
    Denied,
    /// No `admin_token` is configured: admin routes are closed (403).
    Disabled,
}

fn parse_forwarded_ip(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a publish or play was refused before it started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Refusal {
    /// The token check failed (401 / 403).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// An `on_publish` / `on_play` hook refused (403) or failed (503).
    #[error(transparent)]
    Hook(#[from] HookError),
}

impl Refusal {
    /// What an HTTP client is told.
    pub(crate) fn status(&self) -> hyper::StatusCode {
        match self {
            Refusal::Auth(e) => e.status(),
            Refusal::Hook(e) => e.status(),
        }
    }

    /// The RTMP `onStatus` code.
    pub(crate) fn rtmp_code(&self, action: Action) -> &'static str {
        match self {
            Refusal::Auth(e) => e.rtmp_code(action),
            Refusal::Hook(e) => e.rtmp_code(action),
        }
    }

    /// The `reason` label of `wsrelay_auth_refusals_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Refusal::Auth(e) => e.label(),
            Refusal::Hook(HookError::Refused { .. }) => "hook_refused",
            Refusal::Hook(HookError::Timeout { .. }) => "hook_timeout",
            Refusal::Hook(_) => "hook_error",
        }
    }
}

/// Decides a publish or play: the token rules, then the `on_publish` / `on_play`
/// hook. Refusals are counted and logged (never with the query: it holds tokens).
pub(crate) async fn admit(
    policy: &Policy,
    metrics: &Metrics,
    action: Action,
    protocol: Protocol,
    stream: &str,
    query: Option<&str>,
    client: SocketAddr,
) -> Result<(), Refusal> {
    let result = async {
        crate::access::auth::authorize(
            &policy.auth,
            action,
            stream,
            query,
            crate::access::auth::unix_now(),
        )?;
        let hook = match action {
            Action::Publish => Hook::OnPublish,
            Action::Play => Hook::OnPlay,
        };
        let event = HookEvent::new(hook, stream, client, query, protocol);
        policy.hooks.check(hook, &event).await?;
        Ok::<_, Refusal>(())
    }
    .await;
    if let Err(e) = &result {
        metrics.auth_refused(action.as_str(), e.label());
        // A client retrying a bad token in a loop gets one line per window.
        if let Some(suppressed) = super::quiet::should_log(client.ip(), e.label()) {
            tracing::info!(
                stream, %client, proto = protocol.as_str(), reason = %e, suppressed,
                "{action} refused"
            );
        }
    }
    result
}

/// Tells `on_unpublish` that a publisher of `stream` left (in the background).
pub(crate) fn notify_unpublished(
    policy: &Policy,
    stream: &str,
    client: SocketAddr,
    query: Option<&str>,
    protocol: Protocol,
    tasks: &tokio_util::task::TaskTracker,
) {
    let event = HookEvent::new(Hook::OnUnpublish, stream, client, query, protocol);
    policy.hooks.notify(Hook::OnUnpublish, event, tasks);
}

/// The current [`Policy`], swapped whole on reload.
#[derive(Debug)]
pub(crate) struct PolicyCell {
    current: RwLock<Arc<Policy>>,
}

impl PolicyCell {
    /// A cell holding `policy`.
    pub(crate) fn new(policy: Policy) -> PolicyCell {
        PolicyCell {
            current: RwLock::new(Arc::new(policy)),
        }
    }

    /// The policy in force now (cheap: one `Arc` clone under a read lock).
    pub(crate) fn get(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the policy; decisions from now on use `policy`.
    pub(crate) fn set(&self, policy: Policy) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }
}

/// Open connections per client IP.
#[derive(Debug, Default)]
pub(crate) struct PerIpLimiter {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct IpSlot {
    limiter: Arc<PerIpLimiter>,
    ip: IpAddr,
}

impl PerIpLimiter {
    /// Takes a slot for `ip` unless it already holds `limit`.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn policy(trusted: &[&str]) -> Policy {
        let config = Config {
            trusted_proxies: trusted.iter().map(|s| (*s).to_owned()).collect(),
            admin_token: Some(signaling::Secret::new("adm")),
            ..Config::default()
        };
        config.validate().unwrap();
        Policy::new(&config, Arc::new(Metrics::new()))
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let p = policy(&["127.0.0.1/32", "10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.0.0.5"),
        );
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        // The rightmost untrusted hop is the client; the spoofable left part is ignored.
        assert_eq!(
            p.client_addr(proxy, &h),
            "203.0.113.9:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(p.client_addr(stranger, &h), stranger);
        assert_eq!(p.client_addr(proxy, &HeaderMap::new()), proxy);
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(p.client_addr(proxy, &h), proxy);
    }

    #[test]
    fn admin_token_check() {
        let p = policy(&[]);
        let mut h = HeaderMap::new();
        assert_eq!(p.admin_access(&h), AdminAccess::Denied);
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert_eq!(p.admin_access(&h), AdminAccess::Denied);
        h.insert("authorization", HeaderValue::from_static("Bearer adm"));
        assert_eq!(p.admin_access(&h), AdminAccess::Granted);
        // Closed by default: no token configured, no access whatever is sent.
        let open = Policy::new(&Config::default(), Arc::new(Metrics::new()));
        assert_eq!(open.admin_access(&h), AdminAccess::Disabled);
    }

    #[test]
    fn per_ip_slots_are_freed() {
        let l = Arc::new(PerIpLimiter::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = l.try_acquire(ip, 2).unwrap();
        let _b = l.try_acquire(ip, 2).unwrap();
        assert!(l.try_acquire(ip, 2).is_none());
        assert!(l.try_acquire("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert_eq!(l.count(ip), 1);
        assert!(l.try_acquire(ip, 2).is_some());
    }

    #[test]
    fn validation() {
        let bad = [
            Config {
                trusted_proxies: vec!["10.0.0.0/99".into()],
                ..Config::default()
            },
            Config {
                tls_listen: crate::config::Listen::On("127.0.0.1:0".parse().unwrap()),
                ..Config::default()
            },
            Config {
                max_connections_per_ip: 0,
                ..Config::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err());
        }
        assert!(Config::default().validate().is_ok());
    }
}
