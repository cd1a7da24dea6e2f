//! The spool's one writer thread: group commit of appends and deletions, and the fault
//! handling around it (refuse, close the store, reopen with backoff, probe, resume).

use super::error::{storage, SpoolError};
use super::groups::{GroupState, NewGroup};
use super::record::{measure, push_record};
use super::{count, store, Cmd, Health, Reply, Shared, GROUPS};
use redb::{Database, Durability, TableDefinition};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Most commands one commit takes: bounds the latency of the first in a burst, and the
/// number of events in one group.
const MAX_BATCH: usize = 4096;
/// A commit's records go into groups of about this size at most (one for ordinary
/// events): bounds the copy a group costs and a value's size in redb.
pub(super) const GROUP_MAX_BYTES: usize = 4 << 20;
/// Where the write probe stores its test value (empty otherwise).
const PROBE: TableDefinition<u64, &[u8]> = TableDefinition::new("probe");
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The write probe stores at least this much (and more if bigger appends were refused).
const PROBE_MIN: usize = 16 << 10;

/// The state after a failed store operation, until a probe write succeeds.
struct Fault {
    since: Instant,
    reason: String,
    backoff: Duration,
    next_try: Instant,
    /// What the probe must be able to store: the biggest append refused meanwhile.
    probe_bytes: usize,
    /// Bytes deletions gave back inside the store since the fault (or the last failed
    /// probe): space the store can reuse even while the file system stays full.
    freed: u64,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    db: Option<Arc<Database>>,
    next_seq: u64,
    /// Fully confirmed groups whose deletion is not committed yet: first seq, bytes.
    drops: Vec<(u64, u64)>,
    fault: Option<Fault>,
}

impl Writer {
    pub(super) fn new(shared: Arc<Shared>, db: Arc<Database>, next_seq: u64) -> Self {
        Self {
            shared,
            db: Some(db),
            next_seq,
            drops: Vec::new(),
            fault: None,
        }
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        loop {
            let first = match &self.fault {
                None => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                },
                Some(f) => {
                    let wait = f.next_try.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(c) => c,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.recover();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
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
            if self
                .fault
                .as_ref()
                .is_some_and(|f| Instant::now() >= f.next_try)
            {
                self.recover();
            }
        }
        self.shared.set_db(None);
        self.db = None;
    }

    /// Marks confirmed events in memory; groups with none left join `drops`.
    fn confirm(&mut self, seqs: &[u64]) {
        let mut partial = self
            .shared
            .partial
            .lock()
            .unwrap_or_else(|e| e.into_inner());
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
                        tracing::debug!(error = %e, seq, "spool lookup failed");
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
        self.shared.depth.fetch_sub(confirmed, Ordering::Relaxed);
    }

    /// The stored group holding `seq`: first seq, events, bytes. `table` is opened on
    /// first use and kept for the rest of the batch.
    fn stored_group(
        &self,
        table: &mut Option<redb::ReadOnlyTable<u64, &'static [u8]>>,
        seq: u64,
    ) -> Result<Option<(u64, u32, u64)>, SpoolError> {
        if table.is_none() {
            let db = self.db.as_ref().ok_or(SpoolError::Closed)?;
            let txn = db.begin_read().map_err(storage)?;
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
        let mut confirmed_acks = Vec::new();
        let mut read_failed = None;
        for cmd in batch {
            match cmd {
                Cmd::Append(rec, reply) => appends.push((rec, reply)),
                Cmd::Confirmed(seqs, ack) => {
                    self.confirm(&seqs);
                    confirmed_acks.extend(ack);
                }
                Cmd::Close(reply) => closes.push(reply),
                Cmd::ReadFailed(reason) => read_failed = Some(reason),
            }
        }
        if let Some(reason) = read_failed {
            // Only while the store is open: once closed, the failure is known already.
            if self.db.is_some() {
                self.fail(format!("read failed: {reason}"));
            }
        }
        if let Some(fault) = &mut self.fault {
            // Not writable: refuse appends without touching the store (a failed write
            // would close it again, and the drainer may be reading it), but still commit
            // deletions if it is open: they give space back.
            if let Some(biggest) = appends.iter().map(|(r, _)| r.len()).max() {
                fault.probe_bytes = fault.probe_bytes.max(biggest * 2 + PROBE_MIN);
            }
            for (_, reply) in appends {
                let _ = reply.send(Err(self.shared.unavailable()));
            }
            if self.db.is_some() && !self.drops.is_empty() {
                let freed: u64 = self.drops.iter().map(|(_, b)| b).sum();
                match self.write(&[], !closes.is_empty()) {
                    Ok(()) => {
                        // Only this thread changes `bytes` (appends are refused here).
                        let b = self.shared.bytes.load(Ordering::Relaxed);
                        self.shared
                            .bytes
                            .store(b.saturating_sub(freed), Ordering::Relaxed);
                        if let Some(f) = &mut self.fault {
                            f.freed += freed;
                        }
                    }
                    Err(e) => self.fail(e),
                }
            }
        } else {
            self.commit_healthy(appends, !closes.is_empty());
        }
        for ack in confirmed_acks {
            let _ = ack.send(());
        }
        let closing = !closes.is_empty();
        for c in closes {
            let _ = c.send(());
        }
        closing
    }

    fn commit_healthy(&mut self, appends: Vec<(Vec<u8>, Reply)>, closing: bool) {
        let max_bytes = self.shared.max_bytes;
        // The batch's records as groups of at most GROUP_MAX_BYTES each (usually one).
        let mut groups: Vec<NewGroup> = Vec::new();
        let mut results = Vec::with_capacity(appends.len());
        let mut next = self.next_seq;
        let freed: u64 = self.drops.iter().map(|(_, b)| b).sum();
        let mut bytes_now = self
            .shared
            .bytes
            .load(Ordering::Relaxed)
            .saturating_sub(freed);
        let mut left: usize = appends.iter().map(|(r, _)| r.len() + 4).sum();
        for (rec, _) in &appends {
            left -= rec.len() + 4;
            if bytes_now + rec.len() as u64 > max_bytes {
                self.shared.refused.store(true, Ordering::Relaxed);
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
        let biggest = appends.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
        match self.write(&groups, closing) {
            Ok(()) => {
                self.next_seq = next;
                self.shared.depth.fetch_add(added, Ordering::Relaxed);
                self.shared.bytes.store(bytes_now, Ordering::Relaxed);
                for ((_, reply), r) in appends.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
                if added > 0 {
                    self.shared.appended.notify_one();
                }
            }
            Err(e) => {
                // Deletions are tried again with a later commit; appends are refused (503).
                for (_, reply) in appends {
                    let _ = reply.send(Err(SpoolError::Unavailable(e.to_string())));
                }
                self.fail(e);
                if let Some(f) = &mut self.fault {
                    f.probe_bytes = f.probe_bytes.max(biggest * 2 + PROBE_MIN);
                }
            }
        }
    }

    /// Commits the pending deletions and `groups`; on success forgets the deleted groups.
    fn write(&mut self, groups: &[NewGroup], closing: bool) -> Result<(), String> {
        let Some(db) = self.db.clone() else {
            return Err("the store is closed".into());
        };
        let drops = self.drops.len();
        let txn = || -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            // Appends must be on disk before their 200; deletions may ride on the next
            // durable commit (a crash then only republishes, under the same message_id).
            // (Durability::None for deletion-only commits was measured: no faster, and
            // 10 MiB more peak RSS, as redb keeps their pages until a durable commit.)
            txn.set_durability(if groups.is_empty() && !closing {
                Durability::Eventual
            } else {
                Durability::Immediate
            });
            {
                let mut table = txn.open_table(GROUPS)?;
                for (key, _) in &self.drops[..drops] {
                    table.remove(*key)?;
                }
                for g in groups {
                    table.insert(g.first, g.value.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        match store::catch_store_panic(txn) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(super::error::short_reason(&e)),
            Err(p) => return Err(p),
        }
        if drops > 0 {
            let mut partial = self
                .shared
                .partial
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (key, _) in self.drops.drain(..drops) {
                partial.remove(&key);
            }
            drop(partial);
            self.shared.refused.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A store operation failed: close the store (redb refuses everything after an I/O
    /// error until reopened) and schedule a reopen. Logged once per change of state.
    fn fail(&mut self, reason: String) {
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        self.db = None;
        self.shared.set_db(None);
        let now = Instant::now();
        match &mut self.fault {
            None => {
                tracing::error!(
                    error = %reason,
                    depth = self.shared.depth.load(Ordering::Relaxed),
                    "spool write failed: refusing events the broker cannot take, reopening the spool in the background"
                );
                self.fault = Some(Fault {
                    since: now,
                    reason: reason.clone(),
                    backoff: BACKOFF_MIN,
                    next_try: now + BACKOFF_MIN,
                    probe_bytes: PROBE_MIN,
                    freed: 0,
                });
            }
            Some(f) => {
                f.reason = reason.clone();
                f.freed = 0;
                f.next_try = now + f.backoff;
                f.backoff = (f.backoff * 2).min(BACKOFF_MAX);
            }
        }
        self.publish_health(false, false, Some(reason));
    }

    fn publish_health(&self, writable: bool, readable: bool, error: Option<String>) {
        self.shared.health.send_if_modified(|h| {
            let new = Health {
                writable,
                readable,
                error,
            };
            let changed = *h != new;
            *h = new;
            changed
        });
    }

    /// After a fault: reopen the store if it is closed (so what it holds can be read
    /// and published), then probe whether it can take an event again.
    fn recover(&mut self) {
        let Some(reason) = self.fault.as_ref().map(|f| f.reason.clone()) else {
            return;
        };
        if self.db.is_none() {
            let path = store::file_in(&self.shared.dir);
            let reopened = store::open(&path, store::Mode::Existing)
                .and_then(|db| count(&db, &path, &self.shared.partial).map(|c| (db, c)));
            match reopened {
                Ok((db, counted)) => {
                    self.adopt(&counted);
                    let db = Arc::new(db);
                    self.db = Some(db.clone());
                    self.shared.set_db(Some(db));
                    tracing::debug!(depth = counted.depth, "spool reopened");
                    self.publish_health(false, true, Some(reason.clone()));
                    // The drainer may publish what it holds now.
                    self.shared.appended.notify_one();
                }
                Err(e) => {
                    self.shared.errors.fetch_add(1, Ordering::Relaxed);
                    if let SpoolError::Damaged { reason, .. } = &e {
                        // Damage does not go away by itself: say so once, and report it.
                        let why = format!("damaged: {reason}");
                        if self.fault.as_ref().is_some_and(|f| f.reason != why) {
                            tracing::error!(
                                error = %e,
                                "the spool cannot be reopened: stop the relay, then `hookrelay spool export` and `hookrelay spool quarantine`"
                            );
                            if let Some(f) = &mut self.fault {
                                f.reason = why.clone();
                            }
                            self.publish_health(false, false, Some(why));
                        }
                    } else {
                        tracing::debug!(error = %e, "spool reopen failed; retrying");
                    }
                    self.backoff();
                    return;
                }
            }
        }
        let Some(fault) = &self.fault else {
            return;
        };
        let size = fault.probe_bytes;
        // A file probe first: it cannot close the store, and it says whether the file
        // system has room again. Space deletions gave back inside the store counts too.
        let room = store::probe_file(&self.shared.dir, size).is_ok() || fault.freed >= size as u64;
        if !room {
            self.backoff();
            return;
        }
        match self.probe(size) {
            Ok(()) => {
                let down = self.fault.take().map(|f| f.since.elapsed());
                tracing::info!(
                    down_secs = down.map_or(0.0, |d| d.as_secs_f64()),
                    depth = self.shared.depth.load(Ordering::Relaxed),
                    "spool writable again"
                );
                self.publish_health(true, true, None);
                self.shared.appended.notify_one();
            }
            Err(e) => self.fail(e),
        }
    }

    fn backoff(&mut self) {
        if let Some(f) = &mut self.fault {
            f.next_try = Instant::now() + f.backoff;
            f.backoff = (f.backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Stores and deletes `size` bytes in two durable commits.
    fn probe(&self, size: usize) -> Result<(), String> {
        let Some(db) = self.db.clone() else {
            return Err("the store is closed".into());
        };
        let value = vec![0u8; size];
        let run = || -> Result<(), redb::Error> {
            for insert in [true, false] {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate);
                {
                    let mut t = txn.open_table(PROBE)?;
                    if insert {
                        t.insert(0, value.as_slice())?;
                    } else {
                        t.remove(0)?;
                    }
                }
                txn.commit()?;
            }
            Ok(())
        };
        match store::catch_store_panic(run) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(super::error::short_reason(&e)),
            Err(p) => Err(p),
        }
    }

    /// Takes over what a reopened store holds: its counts, and only the in-memory state
    /// of groups it still stores (a commit reported as failed may have landed).
    fn adopt(&mut self, counted: &super::Counted) {
        let stored: std::collections::HashSet<u64> = counted.keys.iter().copied().collect();
        self.shared
            .partial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| stored.contains(k));
        self.drops.retain(|(k, _)| stored.contains(k));
        self.next_seq = self.next_seq.max(counted.next_seq);
        self.shared.depth.store(counted.depth, Ordering::Relaxed);
        self.shared.bytes.store(counted.bytes, Ordering::Relaxed);
    }
}
