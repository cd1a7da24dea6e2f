//! The durable local spool: an embedded, crash-safe redb database under `spool.dir`.
//!
//! Appends go through one writer thread ([`writer`]) that commits everything waiting in
//! a single fsync'd transaction (group commit), so many requests share one disk flush,
//! and the whole group is stored as one entry ([`record`]). A drainer task ([`drainer`])
//! publishes events in arrival order with many confirms in flight; a group is deleted
//! once the broker confirmed all of its events, and the confirmed ones of a group still
//! stored are skipped ([`groups`]).
//!
//! Faults: a failed commit (disk full, I/O error) refuses that commit's appends, marks
//! the spool unhealthy and closes the store (redb refuses everything after an I/O error
//! until it is reopened). The writer then reopens it with backoff, so the drainer can
//! publish what it holds, and declares it healthy again once a probe write of an
//! event's size succeeds ([`store`] has the safe open and the probe).

// redb's error type is large (160 bytes); the closures returning it run once per commit
// or scan, and exist to catch the store's panics at this boundary.
#![allow(clippy::result_large_err)]

pub mod drainer;
pub mod error;
pub mod groups;
pub mod record;
pub mod store;
mod writer;

pub use drainer::{drain_once, run_drainer, DrainError};
pub use error::SpoolError;
pub use record::{decode, encode};

use groups::{bit, Partial};
#[cfg(test)]
use record::measure;
use record::records;
use redb::{Database, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use tokio::sync::{oneshot, watch, Notify};

use crate::broker::Outgoing;

/// The events, one entry per group commit: key = the first event's seq, value = the
/// group's records (see [`record::push_record`]). One insert and one delete per group
/// instead of per event: redb's B-tree work then no longer grows with the event rate.
pub(crate) const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");

/// The spool's state as `/readyz` and the drainer see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Appends can be stored (the last write, or the probe after a fault, succeeded).
    pub writable: bool,
    /// The store is open: what it holds can be read and published.
    pub readable: bool,
    /// Why not, while not writable: a short reason.
    pub error: Option<String>,
}

impl Health {
    fn ok() -> Self {
        Self {
            writable: true,
            readable: true,
            error: None,
        }
    }
}

/// What the spool handle, the writer thread and the readers share.
pub(crate) struct Shared {
    dir: PathBuf,
    /// The open store; None while it is closed after a fault (until the writer reopens
    /// it). Readers clone the `Arc` for one read.
    db: RwLock<Option<Arc<Database>>>,
    depth: AtomicU64,
    bytes: AtomicU64,
    partial: Partial,
    max_bytes: u64,
    /// Set when an append was refused for space; cleared when entries are removed.
    refused: AtomicBool,
    appended: Notify,
    health: watch::Sender<Health>,
    /// Store operations that failed (commits, reopen attempts, probes).
    errors: AtomicU64,
}

impl Shared {
    fn db(&self) -> Option<Arc<Database>> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_db(&self, db: Option<Arc<Database>>) {
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = db;
    }

    fn unavailable(&self) -> SpoolError {
        let reason = self.health.borrow().error.clone();
        SpoolError::Unavailable(reason.unwrap_or_else(|| "the store is closed".into()))
    }
}

/// Where an append hears its seq, or why it was refused.
pub(crate) type Reply = oneshot::Sender<Result<u64, SpoolError>>;

pub(crate) enum Cmd {
    Append(Vec<u8>, Reply),
    /// Confirmed events; the sender (if any) hears once their deletion is committed.
    Confirmed(Vec<u64>, Option<oneshot::Sender<()>>),
    Close(oneshot::Sender<()>),
    /// A read failed (the store, or what it holds, is damaged): treat it like a failed
    /// write, so new events stop queueing behind a backlog nobody can read.
    ReadFailed(String),
}

pub struct Spool {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What a scan of the stored groups found.
pub(crate) struct Counted {
    pub depth: u64,
    pub bytes: u64,
    pub next_seq: u64,
    /// First seqs of the stored groups (to forget state of groups no longer stored).
    pub keys: Vec<u64>,
    /// False for a new file (the groups table is created by the first write).
    pub has_table: bool,
}

/// Reads every stored group's size. Damage found here (an error, or a panic inside the
/// store) is reported as [`SpoolError::Damaged`].
pub(crate) fn count(db: &Database, path: &Path, partial: &Partial) -> Result<Counted, SpoolError> {
    let damaged = |reason: String| SpoolError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let scan = || -> Result<Counted, redb::Error> {
        let partial = partial.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = Counted {
            depth: 0,
            bytes: 0,
            next_seq: 1,
            keys: Vec::new(),
            has_table: false,
        };
        let txn = db.begin_read()?;
        let table = match txn.open_table(GROUPS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(c),
            Err(e) => return Err(e.into()),
        };
        c.has_table = true;
        for row in table.iter()? {
            let (k, v) = row?;
            let first = k.value();
            let (len, size) = validate(v.value())
                .map_err(|why| redb::Error::Corrupted(format!("group {first}: {why}")))?;
            c.depth += partial
                .get(&first)
                .map_or(u64::from(len), |g| u64::from(g.left));
            c.bytes += size;
            c.next_seq = first + u64::from(len);
            c.keys.push(first);
        }
        Ok(c)
    };
    match store::catch_store_panic(scan) {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(damaged(error::short_reason(&e))),
        Err(panic) => Err(damaged(panic)),
    }
}

/// Checks one stored group the way a drain will read it: whole records, each with
/// metadata that decodes and a JSON body. Events and bytes, or what is wrong.
fn validate(group: &[u8]) -> Result<(u32, u64), String> {
    let mut rest = group;
    let (mut n, mut bytes) = (0u32, 0u64);
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err("a record length is cut short".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err("a record is cut short".into());
        }
        let (rec, tail) = tail.split_at(len);
        let msg = decode(rec).ok_or("a record's metadata does not decode")?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&msg.body)
            .map_err(|_| "a record's event is not JSON")?;
        n += 1;
        bytes += len as u64;
        rest = tail;
    }
    Ok((n, bytes))
}

impl Spool {
    /// Open (or create) the spool in `dir`, counting what an earlier run left in it.
    /// `dir` must exist and be writable; a file that cannot be read as a spool is
    /// refused (never replaced).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Self>, SpoolError> {
        store::check_dir(dir)?;
        let path = store::file_in(dir);
        let db = store::open(&path, store::Mode::CreateIfMissing)?;
        let partial: Partial = Mutex::new(BTreeMap::new());
        let counted = count(&db, &path, &partial)?;
        // Checked before anything is written to it: a damaged file is left as it was.
        // A new one gets its table now, so reads never meet a store without it.
        let init = || -> Result<(), redb::Error> {
            if counted.has_table {
                return Ok(());
            }
            let txn = db.begin_write()?;
            txn.open_table(GROUPS)?;
            txn.commit()?;
            Ok(())
        };
        match store::catch_store_panic(init) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SpoolError::Storage(error::short_reason(&e))),
            Err(p) => return Err(SpoolError::Damaged { path, reason: p }),
        }
        let db = Arc::new(db);
        let (health, _) = watch::channel(Health::ok());
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            db: RwLock::new(Some(db.clone())),
            depth: AtomicU64::new(counted.depth),
            bytes: AtomicU64::new(counted.bytes),
            partial,
            max_bytes,
            refused: AtomicBool::new(false),
            appended: Notify::new(),
            health,
            errors: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let writer = writer::Writer::new(shared.clone(), db, counted.next_seq);
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| SpoolError::Storage(e.to_string()))?;
        if counted.depth > 0 {
            tracing::info!(
                depth = counted.depth,
                bytes = counted.bytes,
                "spool holds events from an earlier run; they will be published"
            );
        }
        Ok(Arc::new(Self {
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
        }))
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
        if !self.is_healthy() {
            return Err(self.shared.unavailable());
        }
        let rec = encode(msg)?;
        if self.bytes() + rec.len() as u64 > self.shared.max_bytes {
            self.shared.refused.store(true, Ordering::Relaxed);
            return Err(SpoolError::Full);
        }
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Append(rec, tx))?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Marks events the broker confirmed; their group is deleted once all of its
    /// events are.
    pub fn mark_confirmed(&self, seqs: Vec<u64>) {
        if !seqs.is_empty() {
            let _ = self.send(Cmd::Confirmed(seqs, None));
        }
    }

    /// As [`Spool::mark_confirmed`], returning once the resulting deletions are
    /// committed, together with every confirmation sent before it (so a later read
    /// cannot see, and republish, what was confirmed). With no `seqs` it is only that
    /// barrier.
    pub async fn mark_confirmed_committed(&self, seqs: Vec<u64>) {
        let (tx, rx) = oneshot::channel();
        if self.send(Cmd::Confirmed(seqs, Some(tx))).is_ok() {
            let _ = rx.await;
        }
    }

    /// Up to `limit` entries after `after`, oldest first, without the confirmed ones.
    pub fn read_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Outgoing)>, SpoolError> {
        let Some(db) = self.shared.db() else {
            return Err(self.shared.unavailable());
        };
        let read = || self.read_from(&db, after, limit);
        let result = match store::catch_store_panic(read) {
            Ok(r) => r,
            Err(panic) => Err(SpoolError::Storage(panic)),
        };
        if let Err(SpoolError::Storage(reason)) = &result {
            let _ = self.send(Cmd::ReadFailed(reason.clone()));
        }
        result
    }

    fn read_from(
        &self,
        db: &Database,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Outgoing)>, SpoolError> {
        use error::storage;
        let txn = db.begin_read().map_err(storage)?;
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
                let partial = self
                    .shared
                    .partial
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                partial.get(&first).map(|g| (g.left, g.confirmed.clone()))
            };
            if done.as_ref().is_some_and(|(left, _)| *left == 0) {
                continue;
            }
            for (i, rec) in records(v.value()).enumerate() {
                let seq = first + i as u64;
                let confirmed = done.as_ref().is_some_and(|(_, bits)| bit(bits, i));
                if seq < start || confirmed {
                    continue;
                }
                // Never skipped silently: an accepted event that cannot be read is
                // damage the operator must see (the spool turns unhealthy, see
                // `Cmd::ReadFailed`).
                let msg = decode(rec).ok_or_else(|| {
                    SpoolError::Storage(format!("damaged: record {seq} does not decode"))
                })?;
                out.push((seq, msg));
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn depth(&self) -> u64 {
        self.shared.depth.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.shared.max_bytes
    }

    /// True once an append was refused for space, until entries are removed.
    pub fn is_full(&self) -> bool {
        self.shared.refused.load(Ordering::Relaxed) || self.bytes() >= self.shared.max_bytes
    }

    /// False after a failed store operation, until a probe write succeeded.
    pub fn is_healthy(&self) -> bool {
        self.shared.health.borrow().writable
    }

    pub fn health(&self) -> Health {
        self.shared.health.borrow().clone()
    }

    /// Changes with every change of [`Spool::health`].
    pub fn subscribe_health(&self) -> watch::Receiver<Health> {
        self.shared.health.subscribe()
    }

    /// Store operations that failed since start (`hookrelay_spool_errors_total`).
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Unix seconds of the oldest entry, 0 when empty or unreadable. Looked up only when
    /// asked (by `/metrics`), not after every commit.
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
        &self.shared.appended
    }

    /// Finish pending writes, persist deletions, stop the writer thread (which closes
    /// the store, releasing its lock).
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
        self.shared.set_db(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        let db = spool.shared.db().unwrap();
        let txn = db.begin_read().unwrap();
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
        std::fs::create_dir_all(&d).unwrap();
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
        spool.mark_confirmed(seqs[..3].to_vec());
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
        // with `mark_confirmed_committed` of whatever is left, possibly nothing. The next pass
        // reads from the start: it must not see (and republish) the earlier batches.
        let dir = tmpdir("barrier");
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        let seqs = append_concurrently(&spool, 2048).await;
        for chunk in seqs.chunks(64) {
            spool.mark_confirmed(chunk.to_vec());
        }
        spool.mark_confirmed_committed(Vec::new()).await;
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
            spool.shared.partial.lock().unwrap().is_empty(),
            "memory for untouched groups"
        );
        assert!(stored < 300, "300 concurrent appends took {stored} groups");
        // Confirm every third event: reads skip exactly those, from any cursor.
        let confirmed: Vec<u64> = seqs.iter().copied().step_by(3).collect();
        spool.mark_confirmed_committed(confirmed.clone()).await;
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
        let touched = spool.shared.partial.lock().unwrap().len();
        assert!(
            (1..=stored).contains(&touched),
            "{touched} of {stored} groups in memory"
        );
        spool.mark_confirmed_committed(rest).await;
        assert_eq!((spool.depth(), spool.bytes()), (0, 0));
        assert!(
            spool.shared.partial.lock().unwrap().is_empty(),
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
                .all(|(_, bytes)| *bytes <= (writer::GROUP_MAX_BYTES + (1 << 20) + 512) as u64));
        }
        let rows = spool.read_after(None, 100).unwrap();
        assert_eq!(rows.len(), 20);
        for ((seq, m), (want_seq, i)) in rows.iter().zip(&stored) {
            assert_eq!((seq, m), (want_seq, &big(*i)));
        }
        spool
            .mark_confirmed_committed(stored.iter().map(|(s, _)| *s).collect())
            .await;
        assert_eq!((spool.depth(), spool.bytes()), (0, 0));
        spool.close().await;
    }

    #[tokio::test]
    async fn a_partly_confirmed_group_comes_back_whole_after_a_restart() {
        // Confirmations of a group still on disk live in memory: after a crash or a
        // restart its confirmed events are published again (same ids), never lost.
        let dir = tmpdir("partial");
        {
            let spool = Spool::open(&dir, 1 << 26).unwrap();
            spool.close().await;
        }
        // One stored group of three events, as a group commit of three appends leaves it.
        {
            let db = Database::create(store::file_in(&dir)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(GROUPS).unwrap();
                let mut group = Vec::new();
                for i in 1..=3 {
                    record::push_record(&mut group, &encode(&msg(i)).unwrap());
                }
                t.insert(1u64, group.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        assert_eq!(seqs_after(&spool, None, 10), vec![1, 2, 3]);
        spool.mark_confirmed_committed(vec![1]).await;
        assert_eq!(spool.depth(), 2);
        assert_eq!(seqs_after(&spool, None, 10), vec![2, 3]);
        assert_eq!(
            stored_groups(&spool).len(),
            1,
            "the group stays until all are confirmed"
        );
        spool.close().await;
        drop(spool);
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        assert_eq!(spool.depth(), 3, "the whole group is back");
        let back = spool.read_after(None, 10).unwrap();
        assert_eq!(back, (1..=3).map(|i| (i, msg(i))).collect::<Vec<_>>());
        assert_eq!(
            spool.append(&msg(4)).await.unwrap(),
            4,
            "seqs go on after it"
        );
        spool.close().await;
    }

    #[tokio::test]
    async fn an_unreadable_record_at_run_time_turns_the_spool_unhealthy_instead_of_being_skipped() {
        let dir = tmpdir("rundamage");
        let spool = Spool::open(&dir, 1 << 26).unwrap();
        spool.append(&msg(1)).await.unwrap();
        {
            // A group whose record is not an event, as damage on disk would leave it.
            let db = spool.shared.db().unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(GROUPS).unwrap();
                let mut group = Vec::new();
                record::push_record(&mut group, b"not a record");
                t.insert(2u64, group.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = spool.read_after(None, 10).unwrap_err();
        assert!(err.to_string().contains("does not decode"), "{err}");
        let mut health = spool.subscribe_health();
        let reason = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let h = health.borrow_and_update().clone();
                if h.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("damaged:"))
                {
                    return h;
                }
                health.changed().await.unwrap();
            }
        })
        .await
        .expect("the reopen finds the damage and says so");
        assert!(!reason.writable && !reason.readable, "{reason:?}");
        assert!(!spool.is_healthy());
        assert!(matches!(
            spool.append(&msg(3)).await,
            Err(SpoolError::Unavailable(_))
        ));
        assert!(spool.errors() >= 2, "the failed read and the failed reopen");
        spool.close().await;
    }

    #[tokio::test]
    async fn full_spool_refuses() {
        let dir = tmpdir("full");
        let one = encode(&msg(0)).unwrap().len() as u64;
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
