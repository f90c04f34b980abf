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
//!
//! **Coalescing window** (`live.write_coalesce_ms`). With a window of 0 every push is
//! visible to readers and wakes them at once. With a window `W`, a pushed tag is
//! held back: the first push after a quiet period arms the stream's one ticker
//! ([`Ring::run_ticker`]), which `W` later makes everything pushed so far visible
//! and wakes the readers once. Each player then gathers the tags of the whole window
//! into one write: one wakeup and one `writev` per player per window instead of one
//! per tag. The end of a stream is visible at once. A reader joining mid-window
//! starts after the newest entry (its preamble already holds the held-back tags).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

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
    /// Sequence number one past the last entry readers may see.
    visible: u64,
    bytes: usize,
    /// An end was pushed: the ticker stops after its last flush.
    ended: bool,
    /// When the first tag held back for the current window was pushed (with a
    /// window; none while every entry is visible).
    opened: Option<Instant>,
}

/// The ring of one stream.
#[derive(Debug)]
pub struct Ring {
    inner: Mutex<Inner>,
    notify: Notify,
    max_items: usize,
    max_bytes: usize,
    budget: MediaBudget,
    /// The coalescing window; zero = every push is visible at once.
    window: Duration,
    /// Arms the ticker (a stored permit when it is not waiting).
    arm: Arc<Notify>,
    /// Whether [`Ring::run_ticker`] was started.
    ticking: AtomicBool,
}

/// One reader's position in a [`Ring`].
#[derive(Debug)]
pub struct Reader {
    ring: Arc<Ring>,
    next: u64,
}

impl Ring {
    /// An empty ring holding at most `max_items` entries and `max_bytes` of frames
    /// (the newest entry is always kept, whatever its size), showing pushed tags to
    /// readers once per `window` (zero: at once).
    pub fn new(max_items: usize, max_bytes: usize, budget: MediaBudget, window: Duration) -> Ring {
        Ring {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                first: 0,
                visible: 0,
                bytes: 0,
                ended: false,
                opened: None,
            }),
            notify: Notify::new(),
            max_items: max_items.max(1),
            max_bytes,
            budget,
            window,
            arm: Arc::new(Notify::new()),
            ticking: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below is complete before the guard drops; a panic cannot
        // leave the deque and its counters disagreeing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an entry and drops the oldest past the bounds. Readers see it (and
    /// wake) at once when there is no window, or when it is an end; otherwise at the
    /// end of the current window.
    pub fn push(&self, event: Entry) {
        let (size, end) = match &event {
            Entry::Tag(f) => (f.len(), false),
            Entry::End(_) => (0, true),
        };
        let mut inner = self.lock();
        inner.ended |= end;
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
        if self.window.is_zero() || end {
            inner.visible = inner.first + inner.items.len() as u64;
            drop(inner);
            self.notify.notify_waiters();
            if end {
                self.arm.notify_one(); // the ticker exits
            }
        } else {
            inner.opened.get_or_insert_with(Instant::now);
            drop(inner);
            self.arm.notify_one();
        }
    }

    /// Makes every entry pushed so far visible and wakes the readers (if any is new).
    fn flush(&self) -> bool {
        let mut inner = self.lock();
        let end = inner.first + inner.items.len() as u64;
        let fresh = inner.visible < end;
        inner.visible = end;
        inner.opened = None;
        let ended = inner.ended;
        drop(inner);
        if fresh {
            self.notify.notify_waiters();
        }
        ended
    }

    /// Whether pushed entries wait for the window's end.
    fn held_back(&self) -> Held {
        let inner = self.lock();
        match inner.opened {
            _ if inner.ended => Held::Ended,
            Some(since) => Held::Tags(since),
            None => Held::Nothing,
        }
    }

    /// Whether the ring has a window and its ticker is not running yet: the caller
    /// then spawns [`Ring::run_ticker`] (once; this returns true only once).
    pub fn needs_ticker(&self) -> bool {
        !self.window.is_zero() && !self.ticking.swap(true, Ordering::Relaxed)
    }

    /// The stream's one coalescing ticker: after the first push of a window it
    /// waits `window`, then shows the window's entries to every reader at once. It
    /// idles while nothing is pushed and ends with the stream (an end, or the ring
    /// dropped).
    pub fn run_ticker(self: &Arc<Self>) -> impl std::future::Future<Output = ()> + use<> {
        let (ring, arm, window) = (Arc::downgrade(self), self.arm.clone(), self.window);
        ticker(ring, arm, window)
    }

    /// Bytes of frames held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// A reader that starts after the newest entry.
    pub fn subscribe(self: &Arc<Self>) -> Reader {
        let inner = self.lock();
        Reader {
            ring: self.clone(),
            next: inner.first + inner.items.len() as u64,
        }
    }
}

/// The resolution of tokio's timer: a sleep ends on the first tick at or after its
/// deadline, up to this much late.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// What a ring holds back from its readers.
enum Held {
    /// Nothing: every entry is visible.
    Nothing,
    /// Tags, since this instant (the window ends `window` after it).
    Tags(Instant),
    /// The stream ended (its end is visible at once).
    Ended,
}

async fn ticker(ring: Weak<Ring>, arm: Arc<Notify>, window: Duration) {
    loop {
        arm.notified().await;
        // Pushes during a window leave a permit that the window's flush answered
        // already: the next window opens with the next push, not at once.
        match ring.upgrade().map(|ring| ring.held_back()) {
            None | Some(Held::Ended) => return,
            Some(Held::Nothing) => continue,
            // From the push that opened the window, not from when this task ran;
            // the timer fires up to a tick late, so no tag waits longer than W.
            Some(Held::Tags(since)) => {
                tokio::time::sleep_until(since + window - window.min(TIMER_TICK)).await;
            }
        }
        let Some(ring) = ring.upgrade() else { return };
        if ring.flush() {
            return;
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let bytes = self.inner.get_mut().map(|i| i.bytes).unwrap_or(0);
        self.budget.sub(bytes);
        self.arm.notify_one(); // a waiting ticker finds the ring gone and ends
    }
}

/// The index in `inner.items` of a reader's next entry, if it is visible; a reader
/// that fell behind the ring learns how many entries it missed and moves to the
/// oldest one held.
fn position(next: &mut u64, inner: &Inner) -> Result<usize, TryRecvError> {
    if *next < inner.first {
        let missed = inner.first - *next;
        *next = inner.first;
        return Err(TryRecvError::Lagged(missed));
    }
    if *next >= inner.visible {
        return Err(TryRecvError::Empty);
    }
    Ok((*next - inner.first) as usize)
}

impl Reader {
    /// The next entry if one is queued.
    pub fn try_recv(&mut self) -> Result<Entry, TryRecvError> {
        let inner = self.ring.lock();
        let index = position(&mut self.next, &inner)?;
        match inner.items.get(index) {
            Some((event, _)) => {
                self.next += 1;
                Ok(event.clone())
            }
            None => Err(TryRecvError::Empty),
        }
    }

    /// Takes the visible entries, in order, onto `out` until `max_bytes` of tags are
    /// taken (at least one entry; a tag is always taken whole): one lock of the ring
    /// for a whole batch. Returns whether the reader is then at the live edge; a lag
    /// is reported first, as by [`Reader::try_recv`].
    pub fn try_recv_into(
        &mut self,
        out: &mut VecDeque<Entry>,
        max_bytes: usize,
    ) -> Result<bool, TryRecvError> {
        let inner = self.ring.lock();
        position(&mut self.next, &inner)?;
        let mut bytes = 0;
        while self.next < inner.visible && (bytes < max_bytes || bytes == 0) {
            let Some((event, size)) = inner.items.get((self.next - inner.first) as usize) else {
                break;
            };
            out.push_back(event.clone());
            bytes += (*size).max(1);
            self.next += 1;
        }
        Ok(self.next >= inner.visible)
    }

    /// Whether every visible entry was taken (the reader is at the live edge).
    pub fn is_empty(&self) -> bool {
        self.next >= self.ring.lock().visible
    }

    /// The sequence number of the next entry this reader takes.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Moves the reader to sequence number `next` (a position another reader of
    /// this ring had); a position the ring no longer holds reads as a lag.
    pub fn seek(&mut self, next: u64) {
        self.next = next;
    }

    /// Waits until an entry may be visible past this reader's position (or it fell
    /// behind), taking nothing: returns at once if one is, else at the next flush
    /// of the ring (callers look again). Cancel-safe.
    pub async fn wait(&self) {
        let notified = self.ring.notify.notified();
        tokio::pin!(notified);
        // Registered before looking, so a push between the look and the wait still
        // wakes us.
        notified.as_mut().enable();
        {
            let inner = self.ring.lock();
            if self.next < inner.first || self.next < inner.visible {
                return;
            }
        }
        notified.await;
    }

    /// Waits for the next entry (or the news that entries were missed). Cancel-safe.
    pub async fn recv(&mut self) -> Result<Entry, TryRecvError> {
        loop {
            match self.try_recv() {
                Err(TryRecvError::Empty) => self.wait().await,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{EndReason, WireTag};
    use bytes::Bytes;
    use flv::{Tag, TagType};

    fn tag(ts: u32) -> Entry {
        let tag = Tag::new(TagType::Audio, ts, Bytes::from_static(&[0xaf, 1, 0, 0]));
        Entry::Tag(WireTag::encode(&tag, ts))
    }

    /// A window of the test rings (20 ms) passed: no more, and at most the timer's
    /// tick less.
    fn assert_window(waited: Duration) {
        let window = Duration::from_millis(20);
        assert!(
            waited <= window && waited >= window - TIMER_TICK,
            "waited {waited:?} for a {window:?} window"
        );
    }

    fn ring(window_ms: u64) -> Arc<Ring> {
        Arc::new(Ring::new(
            64,
            1 << 20,
            MediaBudget::new(1 << 30),
            Duration::from_millis(window_ms),
        ))
    }

    fn timestamps(reader: &mut Reader) -> Vec<u32> {
        let mut out = Vec::new();
        while let Ok(Entry::Tag(t)) = reader.try_recv() {
            out.push(t.tag.timestamp);
        }
        out
    }

    #[test]
    fn without_a_window_every_push_is_visible_at_once() {
        let ring = ring(0);
        assert!(!ring.needs_ticker());
        let mut reader = ring.subscribe();
        ring.push(tag(1));
        assert_eq!(timestamps(&mut reader), [1]);
        ring.push(tag(2));
        assert_eq!(timestamps(&mut reader), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_shows_its_tags_together_once_it_has_passed() {
        let ring = ring(20);
        let mut reader = ring.subscribe();
        assert!(ring.needs_ticker());
        assert!(!ring.needs_ticker(), "one ticker per stream");
        let ticker = tokio::spawn(ring.run_ticker());
        let start = tokio::time::Instant::now();
        ring.push(tag(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
        ring.push(tag(2));
        assert_eq!(reader.try_recv().unwrap_err(), TryRecvError::Empty);
        // The reader wakes once, when the window that the first push opened ends.
        let first = reader.recv().await;
        assert_window(start.elapsed());
        assert!(matches!(first, Ok(Entry::Tag(t)) if t.tag.timestamp == 1));
        assert_eq!(timestamps(&mut reader), [2]);
        // The next push opens the next window, however soon after a flush it comes
        // (tag 2 came during the first window: its flush answered it).
        tokio::time::sleep(Duration::from_millis(5)).await;
        let opened = tokio::time::Instant::now();
        ring.push(tag(22));
        assert!(matches!(reader.recv().await, Ok(Entry::Tag(t)) if t.tag.timestamp == 22));
        assert_window(opened.elapsed());
        // A quiet ring arms no timer; the next push opens the next window.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = tokio::time::Instant::now();
        ring.push(tag(3));
        assert!(matches!(reader.recv().await, Ok(Entry::Tag(t)) if t.tag.timestamp == 3));
        assert_window(again.elapsed());
        // A reader joining mid-window starts after the newest entry, held back or not.
        ring.push(tag(4));
        let mut late = ring.subscribe();
        ring.push(tag(5));
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(timestamps(&mut late), [5]);
        assert_eq!(timestamps(&mut reader), [4, 5]);
        // The end is visible at once, and the ticker stops with it.
        ring.push(tag(6));
        ring.push(Entry::End(EndReason::Unpublished));
        assert!(matches!(reader.try_recv(), Ok(Entry::Tag(t)) if t.tag.timestamp == 6));
        assert!(matches!(
            reader.try_recv(),
            Ok(Entry::End(EndReason::Unpublished))
        ));
        tokio::time::timeout(Duration::from_millis(50), ticker)
            .await
            .expect("the ticker ends with the stream")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_ends_its_length_after_the_push_that_opened_it_when_the_ticker_runs_late() {
        let ring = ring(20);
        let mut reader = ring.subscribe();
        assert!(ring.needs_ticker());
        tokio::spawn(ring.run_ticker());
        tokio::task::yield_now().await; // the ticker waits for a push
        let pushed = tokio::time::Instant::now();
        ring.push(tag(1));
        // The clock moves on before the ticker gets to run (a busy worker).
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(matches!(reader.recv().await, Ok(Entry::Tag(t)) if t.tag.timestamp == 1));
        assert_window(pushed.elapsed());
    }

    #[test]
    fn a_batch_take_is_bounded_in_bytes_reports_the_edge_and_lags_first() {
        let ring = Arc::new(Ring::new(
            4,
            1 << 20,
            MediaBudget::new(1 << 30),
            Duration::ZERO,
        ));
        let mut reader = ring.subscribe();
        let mut out = VecDeque::new();
        assert_eq!(reader.try_recv_into(&mut out, 1), Err(TryRecvError::Empty));
        for ts in 1..=3 {
            ring.push(tag(ts));
        }
        // A budget smaller than a tag still takes one whole tag.
        assert_eq!(reader.try_recv_into(&mut out, 1), Ok(false));
        assert_eq!(out.len(), 1);
        // The rest, and the reader is at the edge.
        assert_eq!(reader.try_recv_into(&mut out, usize::MAX), Ok(true));
        let ts: Vec<u32> = out
            .drain(..)
            .map(|e| match e {
                Entry::Tag(t) => t.tag.timestamp,
                Entry::End(_) => panic!("no end pushed"),
            })
            .collect();
        assert_eq!(ts, [1, 2, 3]);
        // Six more into a ring of four: the reader missed two, told before any entry.
        for ts in 4..=9 {
            ring.push(tag(ts));
        }
        assert_eq!(
            reader.try_recv_into(&mut out, usize::MAX),
            Err(TryRecvError::Lagged(2))
        );
        assert!(out.is_empty());
        assert_eq!(reader.try_recv_into(&mut out, usize::MAX), Ok(true));
        assert_eq!(out.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_ends_when_its_ring_is_dropped() {
        let ring = ring(20);
        assert!(ring.needs_ticker());
        let ticker = tokio::spawn(ring.run_ticker());
        ring.push(tag(1));
        drop(ring);
        tokio::time::timeout(Duration::from_millis(50), ticker)
            .await
            .expect("the ticker ends without its ring")
            .unwrap();
    }
}
