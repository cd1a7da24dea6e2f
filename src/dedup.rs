//! The dedup window: an event id accepted within `dedup.window_secs` is answered
//! `"duplicate": true` and not published again. Each relay keeps its own bounded window in
//! memory (`dedup.max_entries`, oldest forgotten first); with `dedup.backend = "redis"` a
//! window in Redis, shared by every relay behind a load balancer, stands behind it.
//!
//! A second copy arriving while the first is still being made durable waits for the
//! first's outcome: if the first fails, the second is processed normally, so a 200 is
//! never given for an event that did not become durable. Across relays the same holds
//! through Redis: the first copy takes a short "pending" claim (`SET NX PX`), turned into
//! "done" (expiring after the window) only once its event is durable; a copy on another
//! relay that finds the claim pending polls until it is done (duplicate), released (a
//! failed first copy: it processes the event itself) or expired (a relay that died
//! mid-request). Redis unreachable: the relay uses its own window alone and never refuses
//! a webhook for it; a probe brings Redis back into use once it answers.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// What to do with an id.
pub enum Claim<'d> {
    /// First sighting: process it, then call [`Dedup::succeeded`] or [`Dedup::failed`].
    New(Guard<'d>),
    /// Already accepted (by this relay or, with Redis, any relay) within the window.
    Duplicate,
}

/// Held while an event is being made durable. Dropped without success (a failure, or the
/// request dropped mid-way), it frees the id here and its claim in Redis, so a waiting
/// copy processes the event itself.
pub struct Guard<'d> {
    local: Option<WindowGuard<'d>>,
    shared: Option<SharedClaim>,
}

struct SharedClaim {
    redis: Arc<Shared>,
    key: String,
    token: String,
}

/// The window this relay answers from.
pub struct Dedup {
    window: Window,
    shared: Option<Arc<Shared>>,
}

/// What `/readyz` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub backend: &'static str,
    /// Memory: always. Redis: whether the last command or probe reached it.
    pub connected: bool,
}

/// Settings of the Redis window, from `dedup.*`.
pub struct RedisOptions<'a> {
    pub url: &'a str,
    pub key_prefix: &'a str,
    pub timeout: Duration,
    /// How long a pending claim lives: longer than the slowest way to make an event
    /// durable, so it expires only for a relay that died holding it.
    pub claim_ttl: Duration,
    /// Set to 1 while Redis answers, 0 while the relay uses its own window alone.
    pub up_gauge: prometheus_client::metrics::gauge::Gauge,
}

/// Check a `dedup.redis_url` without echoing it (it may hold a password).
pub fn check_redis_url(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err("is missing (give a redis:// URL)".into());
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("is not a usable Redis URL ({})", e.kind_desc()))
}

/// A Redis error's kind, never its text (which may quote the URL).
trait KindDesc {
    fn kind_desc(&self) -> String;
}

impl KindDesc for redis::RedisError {
    fn kind_desc(&self) -> String {
        format!("{:?}", self.kind())
    }
}

/// How often the Redis connection is probed (and, while it is down, retried).
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The Redis side: one multiplexed connection manager for every request.
struct Shared {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    claim_ttl_ms: u64,
    window_ms: u64,
    up: AtomicBool,
    up_gauge: prometheus_client::metrics::gauge::Gauge,
}

/// Compare-and-delete: release a pending claim only if it is still ours (it may have
/// expired and been taken by another relay meanwhile).
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

impl Shared {
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set_up(&self, up: bool, why: Option<&redis::RedisError>) {
        let was = self.up.swap(up, Ordering::Relaxed);
        self.up_gauge.set(i64::from(up));
        match (was, up) {
            (true, false) => tracing::warn!(
                error = %why.map(|e| e.to_string()).unwrap_or_default(),
                "Redis dedup unreachable: using this relay's own window until it answers"
            ),
            (false, true) => tracing::info!("Redis dedup reachable: using the shared window"),
            _ => {}
        }
    }

    /// Run one command with the deadline; any error marks Redis down.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ()> {
        let mut conn = self.conn.clone();
        let result = match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await
        {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "Redis command timed out",
            ))),
        };
        result.map_err(|e| self.set_up(false, Some(&e)))
    }

    /// `None`: the claim is ours. `Some(value)`: someone holds it (`d` = done).
    async fn try_claim(&self, key: &str, token: &str) -> Result<Option<String>, ()> {
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.claim_ttl_ms),
            )
            .await?;
        if set.is_some() {
            return Ok(None);
        }
        // Taken: by whom? (Gone in between: try again at once.)
        let held: Option<String> = self.run(redis::cmd("GET").arg(key)).await?;
        Ok(Some(held.unwrap_or_default()))
    }

    fn spawn(self: &Arc<Self>, cmd: redis::Cmd) {
        let me = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _: Result<redis::Value, ()> = me.run(&cmd).await;
            });
        }
    }

    fn mark_done(self: &Arc<Self>, key: &str) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(DONE).arg("PX").arg(self.window_ms);
        self.spawn(cmd);
    }

    fn release(self: &Arc<Self>, key: &str, token: &str) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE).arg(1).arg(key).arg(token);
        self.spawn(cmd);
    }
}

/// The value of a key whose event is durable.
const DONE: &str = "d";

/// Probe Redis every second for as long as the window exists: notices an outage while
/// no webhook arrives, and the return of Redis after one.
async fn probe(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(s) = shared.upgrade() else { return };
        if s.run::<String>(&redis::cmd("PING")).await.is_ok() {
            s.set_up(true, None);
        }
    }
}

impl Dedup {
    /// The in-process window alone (`dedup.backend = "memory"`).
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            window: Window::new(window, max_entries),
            shared: None,
        }
    }

    /// The in-process window in front of a Redis window shared by every relay. Redis
    /// need not answer yet: until it does, the relay uses its own window.
    pub async fn with_redis(
        window: Duration,
        max_entries: usize,
        opts: RedisOptions<'_>,
    ) -> Result<Self, String> {
        let client = redis::Client::open(opts.url)
            .map_err(|e| format!("dedup.redis_url is not usable ({})", e.kind_desc()))?;
        // One multiplexed connection for every request, reconnected by the manager
        // (one quick retry: the probe retries every second anyway).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("Redis dedup: {}", e.kind_desc()))?;
        let shared = Arc::new(Shared {
            conn,
            prefix: opts.key_prefix.to_owned(),
            timeout: opts.timeout,
            claim_ttl_ms: opts.claim_ttl.as_millis().max(1) as u64,
            window_ms: window.as_millis().max(1) as u64,
            up: AtomicBool::new(true),
            up_gauge: opts.up_gauge,
        });
        // Start in the state Redis is in, so the first requests need not find out.
        let first = shared.run::<String>(&redis::cmd("PING")).await;
        shared.set_up(first.is_ok(), None);
        if first.is_ok() {
            tracing::info!("dedup window shared through Redis");
        }
        tokio::spawn(probe(Arc::downgrade(&shared)));
        Ok(Self {
            window: Window::new(window, max_entries),
            shared: Some(shared),
        })
    }

    pub fn status(&self) -> Status {
        match &self.shared {
            None => Status {
                backend: "memory",
                connected: true,
            },
            Some(s) => Status {
                backend: "redis",
                connected: s.is_up(),
            },
        }
    }

    /// Claim `id`: this relay's window first (copies racing within one relay wait on
    /// each other there), then Redis.
    pub async fn claim(&self, id: &str) -> Claim<'_> {
        let local = match self.window.claim(id).await {
            WindowClaim::Duplicate => return Claim::Duplicate,
            WindowClaim::New(g) => g,
        };
        let alone = |local| {
            Claim::New(Guard {
                local: Some(local),
                shared: None,
            })
        };
        let Some(redis) = self.shared.as_ref().filter(|s| s.is_up()) else {
            return alone(local);
        };
        let key = format!("{}{id}", redis.prefix);
        let token = format!("p:{}", uuid::Uuid::new_v4().simple());
        // A pending claim ends within its TTL (done, released or expired); past that
        // (a relay configured with a longer one), process it here rather than wait on.
        let give_up = tokio::time::Instant::now()
            + Duration::from_millis(redis.claim_ttl_ms)
            + Duration::from_secs(1);
        let mut pause = Duration::from_millis(5);
        loop {
            match redis.try_claim(&key, &token).await {
                Ok(None) => {
                    return Claim::New(Guard {
                        local: Some(local),
                        shared: Some(SharedClaim {
                            redis: redis.clone(),
                            key,
                            token,
                        }),
                    })
                }
                Ok(Some(v)) if v == DONE => {
                    // Durable on another relay: remember it here too.
                    self.window.succeeded(local);
                    return Claim::Duplicate;
                }
                // Gone between SET and GET: try again at once.
                Ok(Some(v)) if v.is_empty() => continue,
                Ok(Some(_pending)) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                // Redis went away (already logged), or the wait is over.
                Ok(Some(_)) | Err(()) => return alone(local),
            }
        }
    }

    /// Record success: the id is now a duplicate for `window`, here and in Redis. The
    /// answer does not wait for Redis: until "done" lands, other relays see the pending
    /// claim and wait for it.
    pub fn succeeded(&self, mut guard: Guard<'_>) {
        if let Some(local) = guard.local.take() {
            self.window.succeeded(local);
        }
        if let Some(c) = guard.shared.take() {
            c.redis.mark_done(&c.key);
        }
    }

    /// Forget a failed claim so a retry is processed (also what dropping a guard does).
    pub fn failed(&self, guard: Guard<'_>) {
        drop(guard);
    }

    /// Ids in this relay's own window.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // The local guard frees its id in its own Drop; the Redis claim is released
        // (compare-and-delete) in the background.
        if let Some(c) = self.shared.take() {
            c.redis.release(&c.key, &c.token);
        }
    }
}

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

/// This process's own window.
pub struct Window {
    window: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
    /// Wakes copies waiting on a pending id whenever any pending id is settled (rare:
    /// only concurrent copies of one event wait), so a claim allocates nothing for them.
    settled: Notify,
}

/// What to do with an id (in this process's window).
pub enum WindowClaim<'d> {
    /// First sighting: process it, then call [`Dedup::succeeded`].
    New(WindowGuard<'d>),
    /// Already accepted within the window.
    Duplicate,
}

/// Held while an event is being made durable. Dropped without success (the request
/// was dropped mid-way: client gone, shutdown), it frees the id and wakes any waiting
/// copy, which then processes the event itself.
pub struct WindowGuard<'d> {
    dedup: &'d Window,
    id: Key,
    done: bool,
}

impl Window {
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
    pub async fn claim(&self, id: &str) -> WindowClaim<'_> {
        let id = key(id);
        loop {
            let settled = {
                let mut inner = self.lock();
                let now = Instant::now();
                self.expire(&mut inner, now);
                match inner.slots.get(&id) {
                    Some(Slot::Done(t)) if now.duration_since(*t) <= self.window => {
                        return WindowClaim::Duplicate
                    }
                    // Created under the lock, so a settlement after it is not missed
                    // (`notify_waiters` reaches every `Notified` created before it).
                    Some(Slot::Pending) => self.settled.notified(),
                    _ => {
                        inner.slots.insert(id, Slot::Pending);
                        return WindowClaim::New(WindowGuard {
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
    pub fn succeeded(&self, mut guard: WindowGuard<'_>) {
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
    pub fn failed(&self, guard: WindowGuard<'_>) {
        drop(guard);
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for WindowGuard<'_> {
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
        let d = Window::new(Duration::from_secs(60), 10);
        let WindowClaim::New(g) = d.claim("a").await else {
            panic!("first claim must be new")
        };
        d.succeeded(g);
        assert!(matches!(d.claim("a").await, WindowClaim::Duplicate));
        assert!(matches!(d.claim("b").await, WindowClaim::New(_)));
    }

    #[tokio::test]
    async fn failure_frees_the_id() {
        let d = Window::new(Duration::from_secs(60), 10);
        let WindowClaim::New(g) = d.claim("a").await else {
            panic!()
        };
        d.failed(g);
        assert!(matches!(d.claim("a").await, WindowClaim::New(_)));
    }

    #[tokio::test]
    async fn concurrent_copy_waits_for_the_first() {
        let d = std::sync::Arc::new(Window::new(Duration::from_secs(60), 10));
        let WindowClaim::New(g) = d.claim("a").await else {
            panic!()
        };
        let d2 = d.clone();
        let waiter =
            tokio::spawn(async move { matches!(d2.claim("a").await, WindowClaim::Duplicate) });
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
        let d = std::sync::Arc::new(Window::new(Duration::from_secs(60), 10));
        let WindowClaim::New(g) = d.claim("a").await else {
            panic!()
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move {
            match d2.claim("a").await {
                WindowClaim::New(g) => {
                    d2.succeeded(g);
                    true
                }
                WindowClaim::Duplicate => false,
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(g);
        assert!(waiter.await.unwrap(), "the copy must take over the id");
        assert!(matches!(d.claim("a").await, WindowClaim::Duplicate));
    }

    #[tokio::test]
    async fn bounded_and_windowed() {
        let d = Window::new(Duration::from_millis(30), 3);
        for id in ["a", "b", "c", "d"] {
            let WindowClaim::New(g) = d.claim(id).await else {
                panic!()
            };
            d.succeeded(g);
        }
        assert!(d.len() <= 3);
        assert!(
            matches!(d.claim("a").await, WindowClaim::New(_)),
            "oldest evicted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            matches!(d.claim("d").await, WindowClaim::New(_)),
            "expired after the window"
        );
    }

    #[tokio::test]
    async fn memory_backend_status_and_claims() {
        let d = Dedup::new(Duration::from_secs(60), 10);
        assert_eq!(
            d.status(),
            Status {
                backend: "memory",
                connected: true
            }
        );
        let Claim::New(g) = d.claim("a").await else {
            panic!()
        };
        d.failed(g);
        let Claim::New(g) = d.claim("a").await else {
            panic!("a failed claim frees the id")
        };
        d.succeeded(g);
        assert!(matches!(d.claim("a").await, Claim::Duplicate));
    }

    #[test]
    fn redis_url_checked_without_echo() {
        assert!(check_redis_url("redis://127.0.0.1:6379/0").is_ok());
        let e = check_redis_url("http://user:hunter2@x/").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(check_redis_url("").is_err());
    }
}
