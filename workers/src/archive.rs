//! The archive worker: every event as one JSON line in `<dir>/<YYYY-MM-DD>.jsonl` (the UTC
//! day of the event's `time`), fsync'd before the ack, never the same event id twice.
//!
//! # Never twice, also across restarts
//!
//! An event's file is a function of the event itself (its `time`), and a redelivery or a
//! vendor's retry carries the same id *and* the same `time`. So "was this id archived?"
//! only ever needs the ids of one file: the one the event would be appended to. The writer
//! loads a day's ids from its file the first time that day is touched (a scan of that one
//! file, at start-up or later), and keeps the ids of the few most recently touched days in
//! memory. That is exact for any age of event, needs no index file that could disagree
//! with the data, and bounds memory to a few days' ids instead of the whole archive. The
//! cost is one scan of a day's file when an event for a day not in memory arrives.
//! The one gap: an event whose `time` does not parse is filed under the day it was
//! received, so a redelivery of it on another day would be archived again there (the
//! relay always writes a valid RFC 3339 `time`, so this is for foreign publishers only).
//!
//! # Group commit
//!
//! All files are written by one thread. It takes every line waiting (the consume loop
//! keeps up to `prefetch` deliveries in flight), appends them, fsyncs each touched file
//! once, and only then answers, so the acks of a whole batch cost one fsync.

use crate::cli::ArchiveArgs;
use crate::consume::{self, Failure, Handler, Incoming};
use crate::settings::Settings;
use crate::WorkerError;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};
use tokio::sync::{mpsc, oneshot};

/// The archive worker's queue when neither `--queue` nor `worker.queue` is set.
pub const DEFAULT_QUEUE: &str = "hookrelay.archive";
/// Days whose ids (and open file) the writer keeps; older ones are reloaded on demand.
const DAYS_IN_MEMORY: usize = 4;
/// Most lines written per fsync.
const MAX_BATCH: usize = 1024;

/// Run the archive worker until `shutdown`.
pub async fn run<S>(settings: &Settings, args: ArchiveArgs, shutdown: S) -> Result<(), WorkerError>
where
    S: Future<Output = ()> + Send,
{
    let dir = args.dir.unwrap_or_else(|| settings.archive.dir.clone());
    if dir.as_os_str().is_empty() {
        return Err(hookrelay_common::settings::SettingsError::key(
            "archive.dir",
            "is missing (give --dir DIR)",
        )
        .into());
    }
    let archive = Archive::open(&dir).map_err(|source| WorkerError::Io {
        what: format!("archive directory {}", dir.display()),
        source,
    })?;
    let queue = settings
        .worker
        .queue_name(args.queue.as_deref(), DEFAULT_QUEUE);
    let bindings = settings.worker.bindings(&args.bind);
    tracing::info!(dir = %dir.display(), queue = %queue, ?bindings, "archive worker starting");
    let cfg = settings
        .worker
        .consume_config(settings.amqp.clone(), "archive", queue, bindings);
    consume::run(cfg, Arc::new(archive), shutdown).await;
    Ok(())
}

/// What happened to one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// The id was already in that day's file: nothing written.
    Duplicate,
}

/// Handle to the writer thread. Dropping the last one stops the thread.
pub struct Archive {
    tx: mpsc::UnboundedSender<Line>,
}

struct Line {
    id: String,
    day: Date,
    bytes: Vec<u8>,
    reply: oneshot::Sender<io::Result<Outcome>>,
}

impl Archive {
    /// Create `dir` if needed and start the writer thread.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            dir: dir.to_owned(),
            days: HashMap::new(),
            recent: VecDeque::new(),
        };
        std::thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self { tx })
    }

    /// Append `body` (one event's JSON) to `day`'s file unless `id` is already there.
    /// Returns once the line is fsync'd.
    pub async fn append(&self, id: &str, day: Date, body: &[u8]) -> io::Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        let line = Line {
            id: id.to_owned(),
            day,
            bytes: one_line(body),
            reply,
        };
        let gone = || io::Error::other("the archive writer has stopped");
        self.tx.send(line).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Handler for Archive {
    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let day = event_day(&msg.event.time, OffsetDateTime::now_utc());
        match self.append(&msg.event.id, day, &msg.body).await {
            Ok(Outcome::Written) => {
                tracing::debug!(event_id = %msg.event.id, %day, "archived");
                Ok(())
            }
            Ok(Outcome::Duplicate) => {
                tracing::info!(event_id = %msg.event.id, %day, "already archived, skipped");
                Ok(())
            }
            Err(e) => Err(Failure::Retry(format!("archive write failed: {e}"))),
        }
    }
}

/// The UTC day of an RFC 3339 `time`, or of `received` when it does not parse.
pub fn event_day(time: &str, received: OffsetDateTime) -> Date {
    OffsetDateTime::parse(time, &Rfc3339)
        .unwrap_or(received)
        .to_offset(UtcOffset::UTC)
        .date()
}

/// `<dir>/<YYYY-MM-DD>.jsonl`.
pub fn day_file(dir: &Path, day: Date) -> PathBuf {
    let name = day
        .format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_else(|_| day.to_string());
    dir.join(format!("{name}.jsonl"))
}

/// The body as exactly one line. A raw CR or LF in valid JSON can only be whitespace
/// (inside strings they must be escaped), so blanking them keeps the JSON and its meaning.
fn one_line(body: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(body.len() + 1);
    line.extend(body.iter().map(|&b| match b {
        b'\n' | b'\r' => b' ',
        b => b,
    }));
    line.push(b'\n');
    line
}

struct Writer {
    dir: PathBuf,
    days: HashMap<Date, DayFile>,
    /// Most recently used last.
    recent: VecDeque<Date>,
}

struct DayFile {
    file: File,
    ids: HashSet<String>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Line>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(line) => batch.push(line),
                    Err(_) => break,
                }
            }
            let mut by_day: BTreeMap<Date, Vec<Line>> = BTreeMap::new();
            for line in batch {
                by_day.entry(line.day).or_default().push(line);
            }
            for (day, lines) in by_day {
                self.write_day(day, lines);
            }
        }
    }

    fn write_day(&mut self, day: Date, lines: Vec<Line>) {
        let result = self.day(day).and_then(|df| {
            let mut buf = Vec::new();
            let mut outcomes = Vec::with_capacity(lines.len());
            for line in &lines {
                // Inserting now also catches the same id twice within this batch.
                if df.ids.insert(line.id.clone()) {
                    buf.extend_from_slice(&line.bytes);
                    outcomes.push(Outcome::Written);
                } else {
                    outcomes.push(Outcome::Duplicate);
                }
            }
            if !buf.is_empty() {
                df.file.write_all(&buf)?;
                // Data only: the length is data for this purpose, metadata such as mtime is not.
                df.file.sync_data()?;
            }
            Ok(outcomes)
        });
        match result {
            Ok(outcomes) => {
                for (line, outcome) in lines.into_iter().zip(outcomes) {
                    let _ = line.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, %day, "archive write failed");
                // The ids inserted above were not made durable, and a failed write may have
                // left half a line: forget the day, so its next use rereads (and repairs)
                // the file.
                self.days.remove(&day);
                self.recent.retain(|d| *d != day);
                for line in lines {
                    let _ = line
                        .reply
                        .send(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }

    /// The day's open file and ids, loading them on first use.
    fn day(&mut self, day: Date) -> io::Result<&mut DayFile> {
        if self.days.contains_key(&day) {
            self.recent.retain(|d| *d != day);
        } else {
            let df = load_day(&self.dir, day)?;
            self.days.insert(day, df);
            while self.recent.len() >= DAYS_IN_MEMORY {
                if let Some(old) = self.recent.pop_front() {
                    self.days.remove(&old);
                }
            }
        }
        self.recent.push_back(day);
        Ok(self.days.get_mut(&day).expect("just inserted"))
    }
}

/// Open (creating) a day's file, cut a torn last line, and collect the ids in it.
fn load_day(dir: &Path, day: Date) -> io::Result<DayFile> {
    let path = day_file(dir, day);
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    if !existed {
        // The new directory entry must be durable too, or a crash could lose the whole file
        // after its lines were acked.
        File::open(dir)?.sync_all()?;
    }
    let mut ids = HashSet::new();
    let mut reader = BufReader::new(&file);
    let mut buf = Vec::new();
    let mut good_len: u64 = 0;
    let mut unreadable = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') {
            // A line without its newline was cut by a crash mid-write; it was never fsync'd
            // as a whole, so never acked: its message will come again. Drop the fragment so
            // the next line does not get glued to it.
            break;
        }
        good_len += n as u64;
        match serde_json::from_slice::<IdOnly>(&buf) {
            Ok(l) => {
                ids.insert(l.id);
            }
            Err(_) => unreadable += 1,
        }
    }
    drop(reader);
    let len = file.metadata()?.len();
    if len > good_len {
        tracing::warn!(file = %path.display(), cut_bytes = len - good_len, "cutting a torn last line");
        file.set_len(good_len)?;
        file.sync_data()?;
    }
    if unreadable > 0 {
        tracing::warn!(file = %path.display(), lines = unreadable, "lines without an event id");
    }
    tracing::debug!(file = %path.display(), ids = ids.len(), "loaded archived ids");
    Ok(DayFile { file, ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "hookrelay-archive-{name}-{}-{}",
            std::process::id(),
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn day_is_utc_of_event_time_or_receipt() {
        let received = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(
            event_day("2026-10-14T23:30:00-02:00", received).to_string(),
            "2026-10-15"
        );
        assert_eq!(event_day("yesterday", received).to_string(), "2023-11-14");
        assert_eq!(
            day_file(Path::new("/a"), received.date()),
            PathBuf::from("/a/2023-11-14.jsonl")
        );
    }

    #[test]
    fn one_line_blanks_raw_newlines_only() {
        assert_eq!(
            one_line(b"{\n\"a\": \"x\\ny\"\r\n}"),
            b"{ \"a\": \"x\\ny\"  }\n"
        );
    }

    #[tokio::test]
    async fn dedups_within_and_across_restarts_and_repairs_a_torn_line() {
        let dir = temp_dir("dedup");
        let day = event_day("2026-01-02T03:04:05Z", OffsetDateTime::now_utc());
        {
            let a = Archive::open(&dir).unwrap();
            assert_eq!(
                a.append("e1", day, br#"{"id":"e1"}"#).await.unwrap(),
                Outcome::Written
            );
            assert_eq!(
                a.append("e1", day, br#"{"id":"e1"}"#).await.unwrap(),
                Outcome::Duplicate
            );
        }
        // A crash mid-write leaves a fragment without its newline.
        let path = day_file(&dir, day);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"id":"e2","par"#)
            .unwrap();
        let a = Archive::open(&dir).unwrap();
        assert_eq!(
            a.append("e1", day, br#"{"id":"e1"}"#).await.unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(
            a.append("e2", day, br#"{"id":"e2"}"#).await.unwrap(),
            Outcome::Written
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"id\":\"e1\"}\n{\"id\":\"e2\"}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
