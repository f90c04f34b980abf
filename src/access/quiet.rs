//! Rate-limited logging of refusals: a client that repeats a bad request (a wrong
//! token in a retry loop, a flood over the connection cap) gets one log line per
//! [`QUIET_WINDOW`] for the same reason, then a line saying how many were
//! suppressed, instead of hundreds of lines a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// After a line for a (client address, reason), further lines for the same pair
/// are suppressed for this long.
pub(crate) const QUIET_WINDOW: Duration = Duration::from_secs(10);

/// Pairs remembered at most; past it the oldest half is forgotten (a forgotten pair
/// just logs once more), so a scan from many addresses cannot grow memory.
pub(crate) const QUIET_MAX_KEYS: usize = 4_096;

#[derive(Debug)]
struct Seen {
    since: Instant,
    suppressed: u64,
}

/// The suppression state: one entry per recently logged (address, reason).
#[derive(Debug, Default)]
pub(crate) struct Quiet {
    seen: Mutex<HashMap<(IpAddr, &'static str), Seen>>,
}

static REFUSALS: LazyLock<Quiet> = LazyLock::new(Quiet::default);

/// Whether to log a refusal of `ip` for `reason` now: `Some(n)` with the number of
/// lines suppressed since the last one, or `None` to stay quiet.
pub(crate) fn should_log(ip: IpAddr, reason: &'static str) -> Option<u64> {
    REFUSALS.check(Instant::now(), ip, reason)
}

impl Quiet {
    /// As [`should_log`], at time `now`.
    pub(crate) fn check(&self, now: Instant, ip: IpAddr, reason: &'static str) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.get_mut(&(ip, reason)) {
            if now.duration_since(s.since) < QUIET_WINDOW {
                s.suppressed += 1;
                return None;
            }
            let suppressed = s.suppressed;
            *s = Seen {
                since: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if seen.len() >= QUIET_MAX_KEYS {
            let mut ages: Vec<Instant> = seen.values().map(|s| s.since).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            seen.retain(|_, s| s.since > cut);
        }
        seen.insert(
            (ip, reason),
            Seen {
                since: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_per_client_and_reason() {
        let q = Quiet::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(q.check(t0, a, "invalid"), Some(0));
        for i in 1..100 {
            assert_eq!(q.check(t0 + Duration::from_millis(i), a, "invalid"), None);
        }
        // Another reason or another client is logged.
        assert_eq!(q.check(t0, a, "expired"), Some(0));
        assert_eq!(q.check(t0, b, "invalid"), Some(0));
        // After the window: one line, with the count it stood for.
        assert_eq!(q.check(t0 + QUIET_WINDOW, a, "invalid"), Some(99));
        assert_eq!(q.check(t0 + QUIET_WINDOW, a, "invalid"), None);
    }

    #[test]
    fn memory_is_bounded_by_the_key_cap() {
        let q = Quiet::default();
        let t0 = Instant::now();
        for i in 0..(QUIET_MAX_KEYS as u32 * 3) {
            let ip = IpAddr::from(i.to_be_bytes());
            q.check(t0 + Duration::from_micros(u64::from(i)), ip, "x");
        }
        assert!(q.seen.lock().unwrap().len() <= QUIET_MAX_KEYS);
    }
}
