//! The dedup window: an event id accepted within `dedup.window_secs` is answered
//! `"duplicate": true` and not published again. Bounded in memory (`dedup.max_entries`,
//! oldest forgotten first).
//!
//! A second copy arriving while the first is still being made durable waits for the
//! first's outcome: if the first fails, the second is processed normally, so a 200 is
//! never given for an event that did not become durable.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

enum Slot {
    /// Being made durable by the holder of a [`Guard`].
    Pending,
    Done(Instant),
}

/// An event id as 16 bytes: ids are UUIDs, and a remembered id then costs ~50 bytes
/// instead of two heap strings (~250 bytes), which bounds the window's memory.
type Key = u128;

fn key(id: &str) -> Key {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => u.as_u128(),
        Err(_) => {
            // Not a UUID (never produced by the relay): fold a SHA-256 to 128 bits.
            use sha2::Digest;
            let d = sha2::Sha256::digest(id.as_bytes());
            let mut b = [0u8; 16];
            b.copy_from_slice(&d[..16]);
            u128::from_be_bytes(b)
        }
    }
}

struct Inner {
    slots: HashMap<Key, Slot>,
    /// Completed ids in completion order, for expiry and the size bound.
    order: VecDeque<(Instant, Key)>,
}

pub struct Dedup {
    window: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
    /// Wakes copies waiting on a pending id whenever any pending id is settled (rare:
    /// only concurrent copies of one event wait), so a claim allocates nothing for them.
    settled: Notify,
}

/// What to do with an id.
pub enum Claim<'d> {
    /// First sighting: process it, then call [`Dedup::succeeded`].
    New(Guard<'d>),
    /// Already accepted within the window.
    Duplicate,
}

/// Held while an event is being made durable. Dropped without success (the request
/// was dropped mid-way: client gone, shutdown), it frees the id and wakes any waiting
/// copy, which then processes the event itself.
pub struct Guard<'d> {
    dedup: &'d Dedup,
    id: Key,
    done: bool,
}

impl Dedup {
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            window,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                order: VecDeque::new(),
            }),
            settled: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((t, _)) = inner.order.front() {
            let too_old = now.duration_since(*t) > self.window;
            let too_many = inner.order.len() > self.max_entries;
            if !(too_old || too_many) {
                break;
            }
            let (t, id) = inner.order.pop_front().expect("front exists");
            // Only forget the slot if it is the same completion (not re-added since).
            if matches!(inner.slots.get(&id), Some(Slot::Done(d)) if *d == t) {
                inner.slots.remove(&id);
            }
        }
    }

    /// Claim `id`. Never holds the lock across an await.
    pub async fn claim(&self, id: &str) -> Claim<'_> {
        let id = key(id);
        loop {
            let settled = {
                let mut inner = self.lock();
                let now = Instant::now();
                self.expire(&mut inner, now);
                match inner.slots.get(&id) {
                    Some(Slot::Done(t)) if now.duration_since(*t) <= self.window => {
                        return Claim::Duplicate
                    }
                    // Created under the lock, so a settlement after it is not missed
                    // (`notify_waiters` reaches every `Notified` created before it).
                    Some(Slot::Pending) => self.settled.notified(),
                    _ => {
                        inner.slots.insert(id, Slot::Pending);
                        return Claim::New(Guard {
                            dedup: self,
                            id,
                            done: false,
                        });
                    }
                }
            };
            // Another request holds this id: wait until some pending id settles, then
            // look again.
            settled.await;
        }
    }

    /// Record success: the id is now a duplicate for `window`.
    pub fn succeeded(&self, mut guard: Guard<'_>) {
        let now = Instant::now();
        {
            let mut inner = self.lock();
            inner.slots.insert(guard.id, Slot::Done(now));
            inner.order.push_back((now, guard.id));
            self.expire(&mut inner, now);
        }
        guard.done = true;
        self.settled.notify_waiters();
    }

    /// Forget a failed claim so a retry is processed (also what dropping a guard does).
    pub fn failed(&self, guard: Guard<'_>) {
        drop(guard);
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.done {
            {
                let mut inner = self.dedup.lock();
                if matches!(inner.slots.get(&self.id), Some(Slot::Pending)) {
                    inner.slots.remove(&self.id);
                }
            }
            self.dedup.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_claim_after_success_is_duplicate() {
        let d = Dedup::new(Duration::from_secs(60), 10);
        let Claim::New(g) = d.claim("a").await else {
            panic!("first claim must be new")
        };
        d.succeeded(g);
        assert!(matches!(d.claim("a").await, Claim::Duplicate));
        assert!(matches!(d.claim("b").await, Claim::New(_)));
    }

    #[tokio::test]
    async fn failure_frees_the_id() {
        let d = Dedup::new(Duration::from_secs(60), 10);
        let Claim::New(g) = d.claim("a").await else {
            panic!()
        };
        d.failed(g);
        assert!(matches!(d.claim("a").await, Claim::New(_)));
    }

    #[tokio::test]
    async fn concurrent_copy_waits_for_the_first() {
        let d = std::sync::Arc::new(Dedup::new(Duration::from_secs(60), 10));
        let Claim::New(g) = d.claim("a").await else {
            panic!()
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { matches!(d2.claim("a").await, Claim::Duplicate) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the copy must wait while the first is pending"
        );
        d.succeeded(g);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_dropped_first_lets_the_waiting_copy_process_it() {
        let d = std::sync::Arc::new(Dedup::new(Duration::from_secs(60), 10));
        let Claim::New(g) = d.claim("a").await else {
            panic!()
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move {
            match d2.claim("a").await {
                Claim::New(g) => {
                    d2.succeeded(g);
                    true
                }
                Claim::Duplicate => false,
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(g);
        assert!(waiter.await.unwrap(), "the copy must take over the id");
        assert!(matches!(d.claim("a").await, Claim::Duplicate));
    }

    #[tokio::test]
    async fn bounded_and_windowed() {
        let d = Dedup::new(Duration::from_millis(30), 3);
        for id in ["a", "b", "c", "d"] {
            let Claim::New(g) = d.claim(id).await else {
                panic!()
            };
            d.succeeded(g);
        }
        assert!(d.len() <= 3);
        assert!(
            matches!(d.claim("a").await, Claim::New(_)),
            "oldest evicted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            matches!(d.claim("d").await, Claim::New(_)),
            "expired after the window"
        );
    }
}
