//! `hookrelay spool status | verify | export | drain | quarantine`: the operator's view
//! of a spool directory, usable while no relay holds it (and, for `export`, on a
//! damaged or quarantined file).

// redb's error type is large; the closures returning it run once per command.
#![allow(clippy::result_large_err)]

use crate::broker::{Broker, Outgoing};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::spool::record::{decode, measure, records, scan_raw};
use crate::spool::store::{self, Mode};
use crate::spool::{self, Spool, SpoolError, GROUPS};
use redb::{Database, ReadableTable};
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;

/// What one spool file yielded.
struct Read {
    events: Vec<Outgoing>,
    /// Problems found, for stderr (empty: everything read).
    problems: Vec<String>,
    /// Records known to be unreadable (when the damage lets them be counted).
    unreadable: u64,
}

/// Every event of an open store in spool order, stopping at damage.
fn read_store(db: &Database) -> Read {
    let mut out = Read {
        events: Vec::new(),
        problems: Vec::new(),
        unreadable: 0,
    };
    let scan = || -> Result<(), redb::Error> {
        let txn = db.begin_read()?;
        let table = match txn.open_table(GROUPS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for row in table.iter()? {
            let (k, v) = row?;
            let (len, _) = measure(v.value());
            let mut n = 0u32;
            for (i, rec) in records(v.value()).enumerate() {
                n += 1;
                match decode(rec) {
                    Some(m) => out.events.push(m),
                    None => {
                        out.unreadable += 1;
                        out.problems
                            .push(format!("record {} does not decode", k.value() + i as u64));
                    }
                }
            }
            if n < len {
                out.unreadable += u64::from(len - n);
            }
        }
        Ok(())
    };
    match store::catch_store_panic(scan) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => out.problems.push(format!(
            "reading stopped: {}",
            spool::error::short_reason(&e)
        )),
        Err(p) => out.problems.push(format!("reading stopped: {p}")),
    }
    out
}

/// Everything readable in `path`: through the store when it opens, then (if anything
/// went wrong) a raw scan of the file's bytes for records the store could not reach.
fn read_file(path: &Path) -> Result<Read, SpoolError> {
    let mut read = match store::open(path, Mode::Existing) {
        Ok(db) => read_store(&db),
        Err(SpoolError::Damaged { reason, .. }) => Read {
            events: Vec::new(),
            problems: vec![reason],
            unreadable: 0,
        },
        Err(e) => return Err(e),
    };
    if !read.problems.is_empty() {
        match std::fs::read(path) {
            Ok(bytes) => {
                let seen: HashSet<String> = read.events.iter().map(|m| m.id.clone()).collect();
                let mut more: Vec<(usize, Outgoing)> = scan_raw(&bytes)
                    .into_iter()
                    .filter(|(_, m)| !seen.contains(&m.id))
                    .collect();
                // Raw copies are in file order, not spool order: by event time instead.
                more.sort_by_key(|(at, m)| (m.timestamp, *at));
                let mut ids = seen;
                let salvaged: Vec<Outgoing> = more
                    .into_iter()
                    .map(|(_, m)| m)
                    .filter(|m| ids.insert(m.id.clone()))
                    .collect();
                if !salvaged.is_empty() {
                    read.problems.push(format!(
                        "{} more event(s) salvaged from the raw bytes: ordered by event time; events already published may be among them (same ids)",
                        salvaged.len()
                    ));
                }
                read.events.extend(salvaged);
            }
            Err(e) => read.problems.push(format!(
                "cannot read the raw bytes: {}",
                spool::error::io_reason(&e)
            )),
        }
    }
    Ok(read)
}

fn rfc3339(unix: u64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// `status`: one JSON object on stdout. Exit 0 healthy, 1 otherwise.
pub fn status(dir: &Path) -> i32 {
    let path = store::file_in(dir);
    let quarantined: Vec<String> = store::quarantined_in(dir)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut obj = json!({
        "dir": dir.display().to_string(),
        "depth": null, "bytes": null, "oldest": null,
        "healthy": false, "error": null,
        "quarantined": quarantined,
    });
    let result = if !dir.is_dir() {
        Err("the directory does not exist".to_owned())
    } else if !path.exists() {
        // No spool written yet: empty and fine.
        obj["depth"] = json!(0);
        obj["bytes"] = json!(0);
        Ok(())
    } else {
        match store::open(&path, Mode::Existing) {
            Err(e) => Err(e.to_string()),
            Ok(db) => {
                let partial = std::sync::Mutex::new(Default::default());
                match spool::count(&db, &path, &partial) {
                    Err(e) => Err(e.to_string()),
                    Ok(c) => {
                        obj["depth"] = json!(c.depth);
                        obj["bytes"] = json!(c.bytes);
                        let oldest = oldest(&db);
                        obj["oldest"] = json!(oldest.and_then(rfc3339));
                        Ok(())
                    }
                }
            }
        }
    };
    let code = match result {
        Ok(()) => {
            obj["healthy"] = json!(true);
            0
        }
        Err(e) => {
            obj["error"] = json!(e);
            1
        }
    };
    println!("{obj}");
    code
}

fn oldest(db: &Database) -> Option<u64> {
    let first = || -> Option<u64> {
        let txn = db.begin_read().ok()?;
        let table = txn.open_table(GROUPS).ok()?;
        let (_, v) = table.first().ok()??;
        let rec = records(v.value()).next()?;
        decode(rec).map(|m| m.timestamp)
    };
    store::catch_store_panic(first).ok().flatten()
}

/// `verify`: the store's own integrity check, then every stored event decoded.
pub fn verify(dir: &Path) -> i32 {
    let path = store::file_in(dir);
    if !path.exists() {
        println!("{}: no spool file, nothing to verify", dir.display());
        return 0;
    }
    let mut db = match store::open(&path, Mode::Existing) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let mut problems = Vec::new();
    match store::catch_store_panic(|| db.check_integrity()) {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => problems.push("the store's integrity check repaired the file".into()),
        Ok(Err(e)) => problems.push(format!(
            "integrity check: {}",
            spool::error::short_reason(&e.into())
        )),
        Err(p) => problems.push(format!("integrity check: {p}")),
    }
    let read = read_store(&db);
    problems.extend(read.problems);
    for p in &problems {
        eprintln!("{}: {p}", path.display());
    }
    println!(
        "{}: {} event(s) readable, {} unreadable",
        path.display(),
        read.events.len(),
        read.unreadable
    );
    i32::from(!problems.is_empty())
}

/// `export`: the quarantined files (oldest first) and then the live one, every readable
/// event as the CloudEvent JSON, one per line.
pub fn export(dir: &Path) -> i32 {
    let mut files = store::quarantined_in(dir);
    let live = store::file_in(dir);
    if live.exists() {
        files.push(live);
    }
    if files.is_empty() {
        eprintln!("{}: no spool files", dir.display());
        return i32::from(!dir.is_dir());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for path in files {
        let read = match read_file(&path) {
            Ok(r) => r,
            Err(SpoolError::Locked(_)) => {
                eprintln!(
                    "{}: skipped, a running relay holds it (it publishes these events itself)",
                    path.display()
                );
                continue;
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
                continue;
            }
        };
        for m in &read.events {
            // The CloudEvent is compact JSON; a newline inside would break the format.
            let line = if m.body.contains(&b'\n') {
                serde_json::from_slice::<serde_json::Value>(&m.body)
                    .map(|v| v.to_string().into_bytes())
                    .unwrap_or_else(|_| m.body.clone())
            } else {
                m.body.clone()
            };
            if out
                .write_all(&line)
                .and_then(|()| out.write_all(b"\n"))
                .is_err()
            {
                return 1;
            }
        }
        for p in &read.problems {
            eprintln!("{}: {p}", path.display());
        }
        if !read.problems.is_empty() {
            failed = true;
            let counted = if read.unreadable > 0 {
                read.unreadable.to_string()
            } else {
                "an unknown number of".into()
            };
            eprintln!(
                "{}: {} event(s) exported, {counted} event(s) unreadable",
                path.display(),
                read.events.len()
            );
        }
    }
    let _ = out.flush();
    i32::from(failed)
}

/// `quarantine`: rename the live file so a relay can start on a fresh spool.
pub fn quarantine(dir: &Path) -> i32 {
    let path = store::file_in(dir);
    if !path.exists() {
        println!("{}: no spool file, nothing to quarantine", dir.display());
        return 0;
    }
    // Never rename a file a running relay writes to.
    match store::open(&path, Mode::Existing) {
        Err(e @ SpoolError::Locked(_)) => {
            eprintln!("{e}: refusing to quarantine it; stop the relay first");
            return 1;
        }
        Ok(db) => drop(db),
        Err(_) => {}
    }
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "unknown".into());
    let name = format!("{}{}{stamp}", store::FILE_NAME, store::QUARANTINE_MARK);
    let target: PathBuf = dir.join(name);
    if target.exists() {
        eprintln!("{} exists already; try again in a second", target.display());
        return 1;
    }
    match std::fs::rename(&path, &target) {
        Ok(()) => {
            println!(
                "{} -> {}; `hookrelay spool export --dir {}` still reads it",
                path.display(),
                target.display(),
                dir.display()
            );
            0
        }
        Err(e) => {
            eprintln!("cannot rename {}: {e}", path.display());
            1
        }
    }
}

/// `drain`: publish the directory's events to the configured broker with confirms,
/// delete what was confirmed, exit when empty. Refuses while a relay holds the spool.
pub async fn drain(settings: &Settings, dir: &Path) -> i32 {
    let path = store::file_in(dir);
    if !path.exists() {
        println!("{}: no spool file, nothing to drain", dir.display());
        return 0;
    }
    let spool = match Spool::open(dir, u64::MAX) {
        Ok(s) => s,
        Err(e @ SpoolError::Locked(_)) => {
            eprintln!("{e}: refusing to drain it; that relay publishes it itself");
            return 1;
        }
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let total = spool.depth();
    let metrics = std::sync::Arc::new(Metrics::new());
    let broker = Broker::new(
        settings.amqp.clone(),
        settings.history.clone(),
        "hookrelay spool drain".into(),
        metrics.clone(),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let supervisor = tokio::spawn(broker.clone().run(stop_rx.clone()));
    let mut shutdown = stop_rx;
    let mut link = broker.subscribe();
    let mut said_waiting = false;
    let code = loop {
        if spool.depth() == 0 {
            break 0;
        }
        if !broker.is_connected() {
            if !said_waiting {
                eprintln!(
                    "waiting for the broker ({} event(s) to drain)",
                    spool.depth()
                );
                said_waiting = true;
            }
            tokio::select! {
                _ = link.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tokio::signal::ctrl_c() => break 1,
            }
            continue;
        }
        let pass = spool::drain_once(
            &spool,
            &broker,
            &metrics,
            settings.spool.drain_inflight,
            &mut shutdown,
        );
        tokio::select! {
            r = pass => if let Err(e) = r {
                eprintln!("drain paused: {e}");
                if matches!(e, spool::DrainError::Spool(_)) && !spool.health().readable {
                    break 1;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            },
            _ = tokio::signal::ctrl_c() => break 1,
        }
    };
    let left = spool.depth();
    spool.close().await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), supervisor).await;
    if code == 0 {
        println!(
            "{}: drained {} event(s) to exchange {}",
            dir.display(),
            total,
            settings.amqp.exchange
        );
    } else {
        eprintln!(
            "{}: stopped with {left} event(s) still spooled",
            dir.display()
        );
    }
    code
}
