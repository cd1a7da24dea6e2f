//! The budget for request bodies in flight (`server.max_inflight_body_bytes`): a body is
//! reserved here before the relay reads it, so the bodies held in memory never add up to
//! more than the budget, however many clients send at once.
//!
//! Shares, so that senders who have not proved who they are cannot take it all:
//!
//! - A request whose headers already proved its sender ([`Standing::Authenticated`]:
//!   Kommunicate's token, CometChat's Basic credentials) may use the whole budget.
//! - Requests whose credentials can only be checked on the body ([`Standing::Unproven`]:
//!   Chatwoot's HMAC, sources without credentials) hold at most half of it together, so
//!   at least half is always there for authenticated ones.
//! - Within that half, one client (one IPv4 address, one IPv6 /64) holds at most an
//!   eighth of the budget, so a flood from one place leaves room for everyone else.
//!
//! Every share is at least `server.max_body_bytes`, so one body of the largest size always
//! fits once the others have drained. A request that does not fit waits up to a second
//! (at most [`BodyBudget::max_waiters`] at once; a waiting request costs only the HTTP
//! layer's own buffers, which stop reading at about 160 KiB), then is refused. A
//! [`Reservation`] gives its bytes back when dropped, whatever the request's outcome.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest a request waits for room before it is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// What the headers have established about a request's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The credentials in the headers were checked and are right.
    Authenticated,
    /// Nothing is proven until the body has been read; the client's address (`None` when
    /// unknown; all unknown clients share one share).
    Unproven(Option<IpAddr>),
}

/// There is no room for the body now: answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the in-flight body budget is exhausted")]
pub struct Exhausted;

/// The client key of the per-client share: an IPv4 address, or an IPv6 /64 (one host
/// usually has a whole /64 to pick addresses from).
fn client_key(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1_u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    })
}

#[derive(Debug, Default)]
struct State {
    /// Everything reserved.
    reserved: u64,
    /// What unproven requests hold together.
    unproven: u64,
    /// What each client's unproven requests hold (entries at 0 are removed).
    clients: HashMap<Option<IpAddr>, u64>,
    waiters: usize,
}

/// The relay's one budget, shared by every HTTP worker.
#[derive(Debug)]
pub struct BodyBudget {
    capacity: u64,
    unproven_cap: u64,
    client_cap: u64,
    max_waiters: usize,
    state: Mutex<State>,
    freed: Notify,
    gauge: Gauge,
    exhausted: Counter,
}

impl BodyBudget {
    /// `capacity` is `server.max_inflight_body_bytes` (validated to be at least
    /// `max_body`); `gauge` follows the bytes reserved, `exhausted` counts refusals.
    pub fn new(capacity: u64, max_body: u64, gauge: Gauge, exhausted: Counter) -> Self {
        let capacity = capacity.max(max_body);
        let unproven_cap = (capacity / 2).max(max_body).min(capacity);
        let client_cap = (capacity / 8).max(max_body).min(unproven_cap);
        // One waiter per MiB of budget, at least 16: 128 MiB lets 128 requests wait,
        // which costs at most about 20 MiB of the HTTP layer's buffers.
        let max_waiters = usize::try_from(capacity >> 20)
            .unwrap_or(usize::MAX)
            .max(16);
        gauge.set(0);
        Self {
            capacity,
            unproven_cap,
            client_cap,
            max_waiters,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            gauge,
            exhausted,
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Most of the budget unproven requests may hold together.
    pub fn unproven_cap(&self) -> u64 {
        self.unproven_cap
    }

    /// Most of the budget one client's unproven requests may hold.
    pub fn client_cap(&self) -> u64 {
        self.client_cap
    }

    /// Most requests waiting for room at once; past it a request is refused at once.
    pub fn max_waiters(&self) -> usize {
        self.max_waiters
    }

    /// Bytes reserved right now.
    pub fn reserved(&self) -> u64 {
        self.lock().reserved
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take `n` more bytes for a request of `standing` if every share it counts against
    /// has room.
    fn try_take(&self, n: u64, standing: Standing) -> bool {
        let mut st = self.lock();
        if st.reserved + n > self.capacity {
            return false;
        }
        if let Standing::Unproven(ip) = standing {
            let key = client_key(ip);
            let client = st.clients.get(&key).copied().unwrap_or(0);
            if st.unproven + n > self.unproven_cap || client + n > self.client_cap {
                return false;
            }
            st.unproven += n;
            *st.clients.entry(key).or_insert(0) += n;
        }
        st.reserved += n;
        self.gauge
            .set(i64::try_from(st.reserved).unwrap_or(i64::MAX));
        true
    }

    fn give_back(&self, n: u64, standing: Standing) {
        if n == 0 {
            return;
        }
        {
            let mut st = self.lock();
            st.reserved = st.reserved.saturating_sub(n);
            if let Standing::Unproven(ip) = standing {
                let key = client_key(ip);
                st.unproven = st.unproven.saturating_sub(n);
                if let Some(held) = st.clients.get_mut(&key) {
                    *held = held.saturating_sub(n);
                    if *held == 0 {
                        st.clients.remove(&key);
                    }
                }
            }
            self.gauge
                .set(i64::try_from(st.reserved).unwrap_or(i64::MAX));
        }
        self.freed.notify_waiters();
    }

    /// Reserve `n` bytes, waiting for room until `deadline` (and at most [`MAX_WAIT`]).
    pub async fn reserve(
        self: &Arc<Self>,
        n: u64,
        standing: Standing,
        deadline: Instant,
    ) -> Result<Reservation, Exhausted> {
        let mut r = Reservation {
            budget: self.clone(),
            bytes: 0,
            standing,
            deadline,
        };
        r.grow_to(n).await?;
        Ok(r)
    }

    /// Wait until `more` bytes fit or the wait is over.
    async fn take_waiting(
        &self,
        more: u64,
        standing: Standing,
        deadline: Instant,
    ) -> Result<(), Exhausted> {
        if self.try_take(more, standing) {
            return Ok(());
        }
        let deadline = deadline.min(Instant::now() + MAX_WAIT);
        let _waiting = {
            let mut st = self.lock();
            if st.waiters >= self.max_waiters {
                drop(st);
                self.exhausted.inc();
                return Err(Exhausted);
            }
            st.waiters += 1;
            Waiting(self)
        };
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release between the two is not missed.
            freed.as_mut().enable();
            if self.try_take(more, standing) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                if self.try_take(more, standing) {
                    return Ok(());
                }
                self.exhausted.inc();
                return Err(Exhausted);
            }
        }
    }
}

/// Counts one waiting request while it lives.
struct Waiting<'a>(&'a BodyBudget);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.waiters = st.waiters.saturating_sub(1);
    }
}

/// Bytes of the budget one request holds; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: u64,
    standing: Standing,
    deadline: Instant,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Hold `total` bytes in all (a body without a declared length grows), waiting for
    /// room as [`BodyBudget::reserve`] does.
    pub async fn grow_to(&mut self, total: u64) -> Result<(), Exhausted> {
        if total <= self.bytes {
            return Ok(());
        }
        let more = total - self.bytes;
        self.budget
            .take_waiting(more, self.standing, self.deadline)
            .await?;
        self.bytes = total;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes, self.standing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn budget(capacity: u64, max_body: u64) -> Arc<BodyBudget> {
        Arc::new(BodyBudget::new(
            capacity,
            max_body,
            Gauge::default(),
            Counter::default(),
        ))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[test]
    fn shares_are_never_below_one_largest_body() {
        let b = budget(128 * MIB, 2 * MIB);
        assert_eq!(b.unproven_cap(), 64 * MIB);
        assert_eq!(b.client_cap(), 16 * MIB);
        assert_eq!(b.max_waiters(), 128);
        let small = budget(3 * MIB, 2 * MIB);
        assert_eq!(small.unproven_cap(), 2 * MIB);
        assert_eq!(small.client_cap(), 2 * MIB);
        assert_eq!(small.max_waiters(), 16);
        // A budget below the largest body could never admit one: raised to it.
        assert_eq!(budget(MIB, 2 * MIB).capacity(), 2 * MIB);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(client_key(None), None);
    }

    #[tokio::test]
    async fn one_client_cannot_take_the_unproven_share_nor_unproven_the_budget() {
        let b = budget(8 * MIB, MIB);
        let a = Standing::Unproven(ip("192.0.2.1"));
        let first = b.reserve(MIB, a, soon()).await.unwrap();
        // One client: an eighth (1 MiB) of 8 MiB.
        assert_eq!(b.reserve(1, a, soon()).await.unwrap_err(), Exhausted);
        // Others fill the unproven half, then no more unproven bytes fit.
        let mut held = Vec::new();
        for i in 2..=4 {
            let c = Standing::Unproven(ip(&format!("192.0.2.{i}")));
            held.push(b.reserve(MIB, c, soon()).await.unwrap());
        }
        let late = Standing::Unproven(ip("192.0.2.9"));
        assert!(b.reserve(MIB, late, soon()).await.is_err());
        // Authenticated requests still have the other half.
        let auth = b
            .reserve(4 * MIB, Standing::Authenticated, soon())
            .await
            .unwrap();
        assert_eq!(b.reserved(), 8 * MIB);
        assert!(b.reserve(1, Standing::Authenticated, soon()).await.is_err());
        drop((first, held, auth));
        assert_eq!(b.reserved(), 0);
        assert!(b.lock().clients.is_empty());
        assert_eq!(b.exhausted.get(), 3);
    }

    #[tokio::test]
    async fn a_waiter_gets_room_when_it_is_given_back() {
        let b = budget(2 * MIB, MIB);
        let held = b
            .reserve(2 * MIB, Standing::Authenticated, soon())
            .await
            .unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            b2.reserve(MIB, Standing::Authenticated, deadline)
                .await
                .map(|r| r.bytes())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(b.lock().waiters, 1);
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(MIB));
        assert_eq!(b.reserved(), 0);
        assert_eq!(b.lock().waiters, 0);
    }

    #[tokio::test]
    async fn growth_counts_and_is_given_back_whole() {
        let b = budget(4 * MIB, MIB);
        let c = Standing::Unproven(ip("198.51.100.7"));
        let mut r = b.reserve(0, c, soon()).await.unwrap();
        r.grow_to(64 * 1024).await.unwrap();
        r.grow_to(MIB).await.unwrap();
        assert_eq!(b.reserved(), MIB);
        // Past the client's share (1 MiB here): refused, and what it holds is kept.
        assert!(r.grow_to(MIB + 1).await.is_err());
        assert_eq!(r.bytes(), MIB);
        drop(r);
        assert_eq!(b.reserved(), 0);
        assert_eq!(b.gauge.get(), 0);
    }
}
