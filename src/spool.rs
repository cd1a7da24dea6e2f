//! The durable local spool: an embedded, crash-safe redb database under `spool.dir`.
//!
//! Appends go through one writer thread that commits everything waiting in a single
//! fsync'd transaction (group commit), so many requests share one disk flush, and the
//! whole group is stored as one entry. A drainer task publishes events in arrival order
//! with many confirms in flight; a group is deleted once the broker confirmed all of its
//! events, and the confirmed ones of a group still stored are skipped.

use crate::broker::{Broker, Outgoing, PublishError};
use crate::metrics::Metrics;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};

/// The events, one entry per group commit: key = the first event's seq, value = the
/// group's records (see [`push_record`]). One insert and one delete per group instead of
/// per event: redb's B-tree work then no longer grows with the event rate.
const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");
/// The layout before groups, one entry per event; moved into `GROUPS` on open.
const LEGACY_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Most commands one commit takes: bounds the latency of the first in a burst, and the
/// number of events in one group.
const MAX_BATCH: usize = 4096;
/// A commit's records go into groups of about this size at most (one for ordinary
/// events): bounds the copy a group costs and a value's size in redb.
const GROUP_MAX_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full (spool.max_bytes)")]
    Full,
    #[error("the spool is closed")]
    Closed,
    #[error("spool storage error: {0}")]
    Storage(String),
}

fn storage<E: std::fmt::Display>(e: E) -> SpoolError {
    SpoolError::Storage(e.to_string())
}

enum Cmd {
    Append(Vec<u8>, oneshot::Sender<Result<u64, SpoolError>>),
    /// Entries to delete; the sender (if any) hears once the deletion is committed.
    Remove(Vec<u64>, Option<oneshot::Sender<()>>),
    Close(oneshot::Sender<()>),
}

/// What is known in memory of one stored group: which of its events the broker has
/// confirmed. A group is deleted from disk once all of them are; until then the confirmed
/// ones are skipped by reads. (After a crash a partly confirmed group is published again
/// in full, under the same message ids: at least once, never lost.)
struct GroupState {
    len: u32,
    /// Bytes of its records (what counts against `spool.max_bytes`).
    bytes: u64,
    /// Events not yet confirmed.
    left: u32,
    /// One bit per event, set once confirmed; empty until the first one is.
    confirmed: Vec<u64>,
}

impl GroupState {
    fn new(len: u32, bytes: u64) -> Self {
        Self {
            len,
            bytes,
            left: len,
            confirmed: Vec::new(),
        }
    }

    fn is_confirmed(&self, i: u32) -> bool {
        self.left == 0
            || self
                .confirmed
                .get(i as usize / 64)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Marks event `i`; false if it was already.
    fn confirm(&mut self, i: u32) -> bool {
        if self.is_confirmed(i) {
            return false;
        }
        if self.confirmed.is_empty() {
            self.confirmed = vec![0; (self.len as usize).div_ceil(64)];
        }
        self.confirmed[i as usize / 64] |= 1 << (i % 64);
        self.left -= 1;
        true
    }
}

/// A group about to be stored.
struct NewGroup {
    first: u64,
    value: Vec<u8>,
}

/// Groups with some of their events confirmed, by first seq: only those. A group nobody
/// has confirmed anything of costs no memory (a long outage can spool a million events
/// one group each).
type Partial = Mutex<BTreeMap<u64, GroupState>>;

/// Events and bytes of a stored group's records.
fn measure(group: &[u8]) -> (u32, u64) {
    records(group).fold((0, 0), |(n, b), rec| (n + 1, b + rec.len() as u64))
}

/// A group's value: each record as its length (u32, little endian) and its bytes.
fn push_record(group: &mut Vec<u8>, rec: &[u8]) {
    group.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    group.extend_from_slice(rec);
}

/// The records of a group's value, in order; stops at anything malformed.
fn records(group: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = group;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            tracing::error!("truncated spool group: the rest of it is skipped");
            rest = &[];
            return None;
        }
        let (rec, tail) = tail.split_at(len);
        rest = tail;
        Some(rec)
    })
}

pub struct Spool {
    db: Arc<Database>,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    depth: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    partial: Arc<Partial>,
    max_bytes: u64,
    /// Set when an append was refused for space; cleared when entries are removed.
    refused: Arc<std::sync::atomic::AtomicBool>,
    appended: Arc<Notify>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A record: the routing metadata as one JSON line, then the event body.
pub fn encode(msg: &Outgoing) -> Vec<u8> {
    let mut out = serde_json::to_vec(msg).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(&msg.body);
    out
}

pub fn decode(rec: &[u8]) -> Option<Outgoing> {
    let nl = rec.iter().position(|b| *b == b'\n')?;
    let mut msg: Outgoing = serde_json::from_slice(&rec[..nl]).ok()?;
    msg.body = rec[nl + 1..].to_vec();
    Some(msg)
}

/// Moves what an earlier version stored one entry per event into groups of one.
fn migrate_legacy(db: &Database) -> Result<u64, SpoolError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut moved = 0u64;
    {
        let legacy = txn.open_table(LEGACY_EVENTS).map_err(storage)?;
        let mut groups = txn.open_table(GROUPS).map_err(storage)?;
        for row in legacy.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let mut group = Vec::with_capacity(v.value().len() + 4);
            push_record(&mut group, v.value());
            groups
                .insert(k.value(), group.as_slice())
                .map_err(storage)?;
            moved += 1;
        }
    }
    txn.delete_table(LEGACY_EVENTS).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(moved)
}

impl Spool {
    /// Open (or create) the spool in `dir`, counting what an earlier run left in it.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Self>, SpoolError> {
        std::fs::create_dir_all(dir).map_err(storage)?;
        // A small page cache: the spool is written once and read once, so a big cache
        // (redb's default allows 1 GiB) would only inflate RSS under load.
        let db = Database::builder()
            .set_cache_size(16 << 20)
            .create(dir.join("spool.redb"))
            .map_err(storage)?;
        let migrated = migrate_legacy(&db)?;
        if migrated > 0 {
            tracing::info!(events = migrated, "spool moved to the grouped layout");
        }
        let (mut depth, mut bytes, mut next_seq) = (0u64, 0u64, 1u64);
        {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(GROUPS).map_err(storage)?;
            for row in table.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let (len, size) = measure(v.value());
                depth += u64::from(len);
                bytes += size;
                next_seq = k.value() + u64::from(len);
            }
        }
        let db = Arc::new(db);
        let spool = Arc::new(Self {
            db: db.clone(),
            tx: Mutex::new(None),
            depth: Arc::new(AtomicU64::new(depth)),
            bytes: Arc::new(AtomicU64::new(bytes)),
            partial: Arc::new(Mutex::new(BTreeMap::new())),
            max_bytes,
            refused: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            appended: Arc::new(Notify::new()),
            writer: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            db,
            depth: spool.depth.clone(),
            bytes: spool.bytes.clone(),
            partial: spool.partial.clone(),
            appended: spool.appended.clone(),
            refused: spool.refused.clone(),
            max_bytes,
            next_seq,
            drops: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(storage)?;
        *spool.tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        *spool.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        if depth > 0 {
            tracing::info!(
                depth,
                bytes,
                "spool holds events from an earlier run; they will be published"
            );
        }
        Ok(spool)
    }

    fn send(&self, cmd: Cmd) -> Result<(), SpoolError> {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .ok_or(SpoolError::Closed)?
            .send(cmd)
            .map_err(|_| SpoolError::Closed)
    }

    /// Store one event durably (fsync'd, shared with whatever else is waiting).
    pub async fn append(&self, msg: &Outgoing) -> Result<u64, SpoolError> {
        let rec = encode(msg);
        if self.bytes.load(Ordering::Relaxed) + rec.len() as u64 > self.max_bytes {
            self.refused.store(true, Ordering::Relaxed);
            return Err(SpoolError::Full);
        }
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Append(rec, tx))?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Forget entries the broker confirmed.
    pub fn remove(&self, seqs: Vec<u64>) {
        if !seqs.is_empty() {
            let _ = self.send(Cmd::Remove(seqs, None));
        }
    }

    /// As [`Spool::remove`], returning once the deletion is committed, together with
    /// every removal sent before it (so a later read cannot see, and republish, what was
    /// confirmed). With no `seqs` it is only that barrier.
    pub async fn remove_committed(&self, seqs: Vec<u64>) {
        let (tx, rx) = oneshot::channel();
        if self.send(Cmd::Remove(seqs, Some(tx))).is_ok() {
            let _ = rx.await;
        }
    }

    /// Up to `limit` entries after `after`, oldest first, without those removed.
    pub fn read_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Outgoing)>, SpoolError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(GROUPS).map_err(storage)?;
        let start = after.map_or(0, |a| a + 1);
        // The group holding `start` began at or before it.
        let from = match table.range(..=start).map_err(storage)?.next_back() {
            Some(row) => row.map_err(storage)?.0.value(),
            None => start,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for row in table.range(from..).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let first = k.value();
            // Which of its events are confirmed (not in `partial`: none yet).
            let done: Option<(u32, Vec<u64>)> = {
                let partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
                partial.get(&first).map(|g| (g.left, g.confirmed.clone()))
            };
            if done.as_ref().is_some_and(|(left, _)| *left == 0) {
                continue;
            }
            for (i, rec) in records(v.value()).enumerate() {
                let seq = first + i as u64;
                let confirmed = done.as_ref().is_some_and(|(_, bits)| {
                    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
                });
                if seq < start || confirmed {
                    continue;
                }
                match decode(rec) {
                    Some(msg) => out.push((seq, msg)),
                    None => tracing::error!(seq, "undecodable spool record skipped"),
                }
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// True once an append was refused for space, until entries are removed.
    pub fn is_full(&self) -> bool {
        self.refused.load(Ordering::Relaxed) || self.bytes() >= self.max_bytes
    }

    /// Unix seconds of the oldest entry, 0 when empty. Looked up only when asked (by
    /// `/metrics`), not after every commit.
    pub fn oldest_timestamp(&self) -> u64 {
        if self.depth() == 0 {
            return 0;
        }
        match self.read_after(None, 1) {
            Ok(first) => first.first().map_or(0, |(_, m)| m.timestamp),
            Err(_) => 0,
        }
    }

    /// Fires after each commit that added entries.
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    /// Finish pending writes, persist removals, stop the writer thread.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Cmd::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

struct Writer {
    db: Arc<Database>,
    depth: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    partial: Arc<Partial>,
    appended: Arc<Notify>,
    refused: Arc<std::sync::atomic::AtomicBool>,
    max_bytes: u64,
    next_seq: u64,
    /// Fully confirmed groups whose deletion is not committed yet: first seq, bytes.
    drops: Vec<(u64, u64)>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            if self.commit(batch) {
                break;
            }
        }
    }

    /// Marks confirmed events in memory; groups with none left join `drops`.
    fn confirm(&mut self, seqs: &[u64]) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        let mut stored = None;
        let mut confirmed = 0u64;
        for &seq in seqs {
            let known = partial
                .range(..=seq)
                .next_back()
                .filter(|(first, g)| seq - **first < u64::from(g.len))
                .map(|(first, _)| *first);
            let first = match known {
                Some(first) => first,
                // The first confirmation of a group: learn its size from the spool.
                None => match self.stored_group(&mut stored, seq) {
                    Ok(Some((first, len, bytes))) => {
                        partial.insert(first, GroupState::new(len, bytes));
                        first
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        // Left unconfirmed: published again later, never lost.
                        tracing::error!(error = %e, seq, "spool lookup failed");
                        continue;
                    }
                },
            };
            let Some(group) = partial.get_mut(&first) else {
                continue;
            };
            if !group.confirm((seq - first) as u32) {
                continue;
            }
            confirmed += 1;
            if group.left == 0 {
                self.drops.push((first, group.bytes));
            }
        }
        drop(partial);
        self.depth.fetch_sub(confirmed, Ordering::Relaxed);
    }

    /// The stored group holding `seq`: first seq, events, bytes. `table` is opened on
    /// first use and kept for the rest of the batch.
    fn stored_group(
        &self,
        table: &mut Option<redb::ReadOnlyTable<u64, &'static [u8]>>,
        seq: u64,
    ) -> Result<Option<(u64, u32, u64)>, SpoolError> {
        if table.is_none() {
            let txn = self.db.begin_read().map_err(storage)?;
            *table = Some(txn.open_table(GROUPS).map_err(storage)?);
        }
        let Some(table) = table.as_ref() else {
            return Ok(None);
        };
        let Some(row) = table.range(..=seq).map_err(storage)?.next_back() else {
            return Ok(None);
        };
        let (k, v) = row.map_err(storage)?;
        let (len, bytes) = measure(v.value());
        Ok((seq - k.value() < u64::from(len)).then_some((k.value(), len, bytes)))
    }

    /// One transaction for the whole batch. Returns true when asked to close.
    fn commit(&mut self, batch: Vec<Cmd>) -> bool {
        let mut appends = Vec::new();
        let mut closes = Vec::new();
        let mut removed_acks = Vec::new();
        for cmd in batch {
            match cmd {
                Cmd::Append(rec, reply) => appends.push((rec, reply)),
                Cmd::Remove(seqs, ack) => {
                    self.confirm(&seqs);
                    removed_acks.extend(ack);
                }
                Cmd::Close(reply) => closes.push(reply),
            }
        }
        let drops = self.drops.len();
        // The batch's records as groups of at most GROUP_MAX_BYTES each (usually one).
        let mut groups: Vec<NewGroup> = Vec::new();
        let mut results = Vec::with_capacity(appends.len());
        let mut next = self.next_seq;
        let freed: u64 = self.drops.iter().map(|(_, b)| b).sum();
        let mut bytes_now = self.bytes.load(Ordering::Relaxed).saturating_sub(freed);
        let mut left: usize = appends.iter().map(|(r, _)| r.len() + 4).sum();
        for (rec, _) in &appends {
            left -= rec.len() + 4;
            if bytes_now + rec.len() as u64 > self.max_bytes {
                self.refused.store(true, Ordering::Relaxed);
                results.push(Err(SpoolError::Full));
                continue;
            }
            let full = groups
                .last()
                .is_none_or(|g| !g.value.is_empty() && g.value.len() + rec.len() > GROUP_MAX_BYTES);
            if full {
                // One allocation per group: what is left of the batch, up to the cap.
                let room = (left + rec.len() + 4).min(GROUP_MAX_BYTES + rec.len() + 4);
                groups.push(NewGroup {
                    first: next,
                    value: Vec::with_capacity(room),
                });
            }
            let g = groups.last_mut().expect("a group was just pushed");
            push_record(&mut g.value, rec);
            results.push(Ok(next));
            next += 1;
            bytes_now += rec.len() as u64;
        }
        let added = next - self.next_seq;
        let result = (|| -> Result<(), SpoolError> {
            let mut txn = self.db.begin_write().map_err(storage)?;
            // Appends must be on disk before their 200; removals may ride on the next
            // durable commit (a crash then only republishes, under the same message_id).
            // (Durability::None for removal-only commits was measured: no faster, and
            // 10 MiB more peak RSS, as redb keeps their pages until a durable commit.)
            txn.set_durability(if added == 0 && closes.is_empty() {
                Durability::Eventual
            } else {
                Durability::Immediate
            });
            {
                let mut table = txn.open_table(GROUPS).map_err(storage)?;
                for (key, _) in &self.drops[..drops] {
                    table.remove(*key).map_err(storage)?;
                }
                for g in &groups {
                    table.insert(g.first, g.value.as_slice()).map_err(storage)?;
                }
            }
            txn.commit().map_err(storage)
        })();
        match result {
            Ok(()) => {
                if drops > 0 {
                    let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
                    for (key, _) in self.drops.drain(..drops) {
                        partial.remove(&key);
                    }
                    drop(partial);
                    self.refused.store(false, Ordering::Relaxed);
                }
                self.next_seq = next;
                self.depth.fetch_add(added, Ordering::Relaxed);
                self.bytes.store(bytes_now, Ordering::Relaxed);
                for ((_, reply), r) in appends.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
                if added > 0 {
                    self.appended.notify_one();
                }
            }
            Err(e) => {
                // Deletions are tried again with the next commit; appends are refused.
                tracing::error!(error = %e, "spool commit failed");
                for (_, reply) in appends {
                    let _ = reply.send(Err(SpoolError::Storage(e.to_string())));
                }
            }
        }
        for ack in removed_acks {
            let _ = ack.send(());
        }
        let closing = !closes.is_empty();
        for c in closes {
            let _ = c.send(());
        }
        closing
    }
}

/// Publish spooled events in arrival order, many confirms in flight, deleting each only
/// after its confirm. Runs until `shutdown`; then waits (bounded by the confirm timeout)
/// for the confirms already in flight and leaves everything unconfirmed in the spool.
pub async fn run_drainer(
    spool: Arc<Spool>,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    inflight: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut link = broker.subscribe();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if !(broker.is_connected() && spool.depth() > 0) {
            tokio::select! {
                _ = spool.appended().notified() => {}
                _ = link.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        if let Err(e) = drain_pass(&spool, &broker, &metrics, inflight, &mut shutdown).await {
            tracing::warn!(error = %e, depth = spool.depth(), "spool drain paused");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

async fn drain_pass(
    spool: &Arc<Spool>,
    broker: &Arc<Broker>,
    metrics: &Arc<Metrics>,
    inflight: usize,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), PublishError> {
    let mut cursor: Option<u64> = None;
    let mut pending = FuturesOrdered::new();
    let mut confirmed: Vec<u64> = Vec::new();
    let mut failure: Option<PublishError> = None;
    let mut exhausted = false;
    loop {
        let stopping = *shutdown.borrow() || failure.is_some();
        if !stopping && !exhausted && pending.len() <= inflight / 2 {
            let want = inflight - pending.len();
            let batch = spool.read_after(cursor, want).map_err(|e| {
                PublishError::Amqp(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(
                    std::io::Error::other(e.to_string()),
                ))))
            })?;
            exhausted = batch.len() < want;
            for (seq, msg) in batch {
                // The first poll queues the frames (see `Broker::publish_on`), so the
                // channel sees the spool's order without a wait per message.
                let mut publish = Box::pin(broker.publish_ordered(msg, 0));
                let first = std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await;
                let early = match first {
                    Poll::Ready(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                    Poll::Ready(Ok(())) => true,
                    Poll::Pending => false,
                };
                cursor = Some(seq);
                pending.push_back(async move {
                    let r = if early { Ok(()) } else { publish.await };
                    (seq, r)
                });
            }
        }
        if pending.is_empty() {
            spool.remove_committed(std::mem::take(&mut confirmed)).await;
            return match failure {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        tokio::select! {
            Some((seq, r)) = pending.next() => match r {
                Ok(()) => {
                    metrics.republished.inc();
                    confirmed.push(seq);
                    if confirmed.len() >= 64 {
                        spool.remove(std::mem::take(&mut confirmed));
                    }
                }
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(e);
                    }
                }
            },
            _ = spool.appended().notified(), if exhausted => {
                exhausted = false;
            }
            _ = shutdown.changed(), if !*shutdown.borrow() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u64) -> Outgoing {
        Outgoing {
            id: format!("id-{i}"),
            routing_key: "k.message.created".into(),
            vendor: "kommunicate".into(),
            source: "k".into(),
            event: "message.created".into(),
            timestamp: 1_700_000_000 + i,
            body: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    /// `n` appends at once, each from its own task; their seqs, sorted.
    async fn append_concurrently(spool: &Arc<Spool>, n: u64) -> Vec<u64> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let s = spool.clone();
                tokio::spawn(async move { s.append(&msg(i)).await.unwrap() })
            })
            .collect();
        let mut seqs = vec![];
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort();
        seqs
    }

    /// The seqs `read_after` gives.
    fn seqs_after(spool: &Spool, after: Option<u64>, limit: usize) -> Vec<u64> {
        let rows = spool.read_after(after, limit).unwrap();
        rows.iter().map(|(seq, _)| *seq).collect()
    }

    /// Events and bytes of each stored group.
    fn stored_groups(spool: &Spool) -> Vec<(u32, u64)> {
        let txn = spool.db.begin_read().unwrap();
        let table = txn.open_table(GROUPS).unwrap();
        let rows = table.iter().unwrap();
        rows.map(|r| measure(r.unwrap().1.value())).collect()
    }

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "hookrelay-spool-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn appends_survive_reopen_in_order_and_removals_stick() {
        let dir = tmpdir("reopen");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let mut seqs = vec![];
        for i in 0..10 {
            seqs.push(spool.append(&msg(i)).await.unwrap());
        }
        assert_eq!(spool.depth(), 10);
        spool.remove(seqs[..3].to_vec());
        spool.close().await;
        drop(spool);
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(spool.depth(), 7);
        let rows = spool.read_after(None, 100).unwrap();
        let ids: Vec<_> = rows.iter().map(|(_, m)| m.id.clone()).collect();
        assert_eq!(ids, (3..10).map(|i| format!("id-{i}")).collect::<Vec<_>>());
        assert_eq!(rows[0].1, msg(3));
        assert_eq!(spool.oldest_timestamp(), 1_700_000_003);
        spool.close().await;
    }

    #[tokio::test]
    async fn an_empty_committed_removal_is_a_barrier_for_earlier_removals() {
        // The drainer sends confirmed seqs in batches without waiting, then ends its pass
        // with `remove_committed` of whatever is left, possibly nothing. The next pass
        // reads from the start: it must not see (and republish) the earlier batches.
        let dir = tmpdir("barrier");
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        let seqs = append_concurrently(&spool, 2048).await;
        for chunk in seqs.chunks(64) {
            spool.remove(chunk.to_vec());
        }
        spool.remove_committed(Vec::new()).await;
        let left = spool.read_after(None, 4096).unwrap();
        assert!(
            left.is_empty(),
            "{} removed entries still readable",
            left.len()
        );
        assert_eq!(spool.depth(), 0);
        spool.close().await;
    }

    #[tokio::test]
    async fn a_group_is_read_from_any_cursor_without_its_confirmed_events_and_deleted_when_all_are()
    {
        let dir = tmpdir("groups");
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        let seqs = append_concurrently(&spool, 300).await;
        let stored = stored_groups(&spool).len();
        assert!(
            spool.partial.lock().unwrap().is_empty(),
            "memory for untouched groups"
        );
        assert!(stored < 300, "300 concurrent appends took {stored} groups");
        // Confirm every third event: reads skip exactly those, from any cursor.
        let confirmed: Vec<u64> = seqs.iter().copied().step_by(3).collect();
        spool.remove_committed(confirmed.clone()).await;
        assert_eq!(spool.depth(), 200);
        let rest: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| s % 3 != seqs[0] % 3)
            .collect();
        let all = seqs_after(&spool, None, 1000);
        assert_eq!(all, rest);
        let cursor = rest[120];
        let tail = seqs_after(&spool, Some(cursor), 1000);
        assert_eq!(tail, rest[121..]);
        let five = spool.read_after(Some(cursor), 5).unwrap();
        assert_eq!(five.len(), 5);
        assert_eq!(five[0].1, msg(rest[121] - seqs[0]));
        // The rest confirmed: every group is deleted and its space given back.
        let touched = spool.partial.lock().unwrap().len();
        assert!(
            (1..=stored).contains(&touched),
            "{touched} of {stored} groups in memory"
        );
        spool.remove_committed(rest).await;
        assert_eq!((spool.depth(), spool.bytes()), (0, 0));
        assert!(
            spool.partial.lock().unwrap().is_empty(),
            "memory kept after deletion"
        );
        assert!(stored_groups(&spool).is_empty());
        assert!(spool.read_after(None, 1000).unwrap().is_empty());
        spool.close().await;
        drop(spool);
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        assert_eq!((spool.depth(), spool.bytes()), (0, 0));
        let seq = spool.append(&msg(7)).await.unwrap();
        assert_eq!(spool.read_after(None, 10).unwrap(), vec![(seq, msg(7))]);
        spool.close().await;
    }

    #[tokio::test]
    async fn big_records_are_split_into_groups_of_bounded_size() {
        let dir = tmpdir("bigrecs");
        let spool = Spool::open(&dir, 1 << 30).unwrap();
        let big = |i: u64| Outgoing {
            body: vec![b'a' + i as u8; 1 << 20],
            ..msg(i)
        };
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let s = spool.clone();
                tokio::spawn(async move { (s.append(&big(i)).await.unwrap(), i) })
            })
            .collect();
        let mut stored = vec![];
        for t in tasks {
            stored.push(t.await.unwrap());
        }
        stored.sort();
        {
            let groups = stored_groups(&spool);
            assert!(groups.len() >= 5, "20 MiB in {} groups", groups.len());
            assert!(groups
                .iter()
                .all(|(_, bytes)| *bytes <= (GROUP_MAX_BYTES + (1 << 20) + 512) as u64));
        }
        let rows = spool.read_after(None, 100).unwrap();
        assert_eq!(rows.len(), 20);
        for ((seq, m), (want_seq, i)) in rows.iter().zip(&stored) {
            assert_eq!((seq, m), (want_seq, &big(*i)));
        }
        spool
            .remove_committed(stored.iter().map(|(s, _)| *s).collect())
            .await;
        assert_eq!((spool.depth(), spool.bytes()), (0, 0));
        spool.close().await;
    }

    #[tokio::test]
    async fn a_partly_confirmed_group_comes_back_whole_after_a_restart() {
        // Confirmations of a group still on disk live in memory: after a crash or a
        // restart its confirmed events are published again (same ids), never lost.
        let dir = tmpdir("partial");
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        let seqs = append_concurrently(&spool, 50).await;
        let (first, _) = spool.read_after(None, 1).unwrap()[0].clone();
        spool.remove_committed(vec![first]).await;
        let depth = spool.depth();
        spool.close().await;
        drop(spool);
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        let back = seqs_after(&spool, None, 100);
        // The group holding `first` had more than it, or it would have been deleted.
        assert_eq!(spool.depth(), depth + u64::from(back.contains(&first)));
        assert_eq!(back.len() as u64, spool.depth());
        assert!(back.iter().all(|s| seqs.contains(s)));
        spool.close().await;
    }

    #[tokio::test]
    async fn a_spool_of_the_one_entry_per_event_layout_is_moved_to_groups() {
        let dir = tmpdir("legacy");
        std::fs::create_dir_all(&dir).unwrap();
        {
            let db = Database::create(dir.join("spool.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(LEGACY_EVENTS).unwrap();
                for i in [3u64, 4, 9] {
                    t.insert(i, encode(&msg(i)).as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        assert_eq!(spool.depth(), 3);
        let rows = spool.read_after(None, 10).unwrap();
        let expect: Vec<(u64, Outgoing)> = [3u64, 4, 9].iter().map(|&i| (i, msg(i))).collect();
        assert_eq!(rows, expect);
        assert_eq!(spool.oldest_timestamp(), msg(3).timestamp);
        assert_eq!(spool.append(&msg(10)).await.unwrap(), 10);
        spool.remove_committed(vec![3, 4, 9, 10]).await;
        assert_eq!(spool.depth(), 0);
        spool.close().await;
    }

    #[tokio::test]
    async fn full_spool_refuses() {
        let dir = tmpdir("full");
        let one = encode(&msg(0)).len() as u64;
        let spool = Spool::open(&dir, one * 2).unwrap();
        spool.append(&msg(0)).await.unwrap();
        spool.append(&msg(1)).await.unwrap();
        assert!(matches!(spool.append(&msg(2)).await, Err(SpoolError::Full)));
        assert_eq!(spool.depth(), 2);
        spool.close().await;
    }

    #[tokio::test]
    async fn concurrent_appends_share_commits_and_all_land() {
        let dir = tmpdir("group");
        let spool = Spool::open(&dir, 1 << 24).unwrap();
        let mut seqs = append_concurrently(&spool, 200).await;
        seqs.dedup();
        assert_eq!(seqs.len(), 200);
        assert_eq!(spool.depth(), 200);
        spool.close().await;
    }
}
