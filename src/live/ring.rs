//! A stream's fan-out ring: the last tags of a stream, shared by every player,
//! bounded in tags **and in bytes**.
//!
//! A publisher [`Ring::push`]es; each player holds a [`Reader`] with its own
//! position and takes what is queued. The ring never waits for a reader: when it is
//! full (`max_items` events or `max_bytes` of frames) the oldest entries are dropped,
//! and a reader that had not read them learns how many it missed
//! ([`TryRecvError::Lagged`]), exactly like `tokio::sync::broadcast` — which this
//! replaces because a broadcast channel is bounded only in items: 1,024 slots of up
//! to `live.max_tag_bytes` each let one stalled reader pin gigabytes.
//!
//! Every entry is a cheap clone (a reference-counted frame); the ring's bytes are
//! counted against the server-wide media budget ([`crate::live::MediaBudget`]).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::live::{Entry, MediaBudget};

/// Why [`Reader::try_recv`] returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing new yet.
    Empty,
    /// The reader fell this many entries behind; it now continues at the oldest
    /// entry still held.
    Lagged(u64),
}

#[derive(Debug)]
struct Inner {
    items: VecDeque<(Entry, usize)>,
    /// Sequence number of `items[0]`.
    first: u64,
    bytes: usize,
}

/// The ring of one stream.
#[derive(Debug)]
pub struct Ring {
    inner: Mutex<Inner>,
    notify: Notify,
    max_items: usize,
    max_bytes: usize,
    budget: MediaBudget,
}

/// One reader's position in a [`Ring`].
#[derive(Debug)]
pub struct Reader {
    ring: std::sync::Arc<Ring>,
    next: u64,
}

impl Ring {
    /// An empty ring holding at most `max_items` entries and `max_bytes` of frames
    /// (the newest entry is always kept, whatever its size).
    pub fn new(max_items: usize, max_bytes: usize, budget: MediaBudget) -> Ring {
        Ring {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                first: 0,
                bytes: 0,
            }),
            notify: Notify::new(),
            max_items: max_items.max(1),
            max_bytes,
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below is complete before the guard drops; a panic cannot
        // leave the deque and its counters disagreeing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an entry, drops the oldest past the bounds, wakes readers.
    pub fn push(&self, event: Entry) {
        let size = match &event {
            Entry::Tag(f) => f.len(),
            Entry::End(_) => 0,
        };
        let mut inner = self.lock();
        inner.items.push_back((event, size));
        inner.bytes += size;
        self.budget.add(size);
        // Past its own bounds the ring drops its oldest entries; while the server's
        // media budget is exceeded it also gives back down to a quarter of its own
        // byte bound (slow readers then skip ahead sooner). The newest entry stays.
        while inner.items.len() > 1 {
            let over_own = inner.items.len() > self.max_items || inner.bytes > self.max_bytes;
            let over_global = self.budget.over() && inner.bytes > self.max_bytes / 4;
            if !(over_own || over_global) {
                break;
            }
            let Some((_, n)) = inner.items.pop_front() else {
                break;
            };
            inner.first += 1;
            inner.bytes -= n;
            self.budget.sub(n);
        }
        drop(inner);
        self.notify.notify_waiters();
    }

    /// Bytes of frames held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// A reader that starts after the newest entry.
    pub fn subscribe(self: &std::sync::Arc<Self>) -> Reader {
        let inner = self.lock();
        Reader {
            ring: self.clone(),
            next: inner.first + inner.items.len() as u64,
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let bytes = self.inner.get_mut().map(|i| i.bytes).unwrap_or(0);
        self.budget.sub(bytes);
    }
}

impl Reader {
    /// The next entry if one is queued.
    pub fn try_recv(&mut self) -> Result<Entry, TryRecvError> {
        let inner = self.ring.lock();
        if self.next < inner.first {
            let missed = inner.first - self.next;
            self.next = inner.first;
            return Err(TryRecvError::Lagged(missed));
        }
        let index = (self.next - inner.first) as usize;
        match inner.items.get(index) {
            Some((event, _)) => {
                self.next += 1;
                Ok(event.clone())
            }
            None => Err(TryRecvError::Empty),
        }
    }

    /// Waits for the next entry (or the news that entries were missed). Cancel-safe.
    pub async fn recv(&mut self) -> Result<Entry, TryRecvError> {
        let ring = self.ring.clone();
        loop {
            let notified = ring.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a push between the look and the wait
            // still wakes us.
            notified.as_mut().enable();
            match self.try_recv() {
                Err(TryRecvError::Empty) => notified.await,
                other => return other,
            }
        }
    }
}
