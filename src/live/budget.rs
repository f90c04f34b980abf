//! The server-wide budget for cached and buffered media (`live.max_media_bytes`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of media held by all streams (GOP caches and rings) against
/// `live.max_media_bytes`. A frame held by both a stream's cache and its ring is
/// counted twice: the budget errs on the safe side.
#[derive(Clone, Debug)]
pub struct MediaBudget {
    used: Arc<AtomicUsize>,
    limit: usize,
}

impl MediaBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> MediaBudget {
        MediaBudget {
            used: Arc::default(),
            limit,
        }
    }

    /// Counts `n` more bytes.
    pub fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` bytes fewer.
    pub fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// `live.max_media_bytes`.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether more than the limit is in use.
    pub fn over(&self) -> bool {
        self.used() > self.limit
    }
}
