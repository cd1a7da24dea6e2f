//! Opening the store safely: `spool.dir` checks, the spool's file names, a redb open that
//! turns the store's panics on a damaged file into errors, and the write probe used to
//! tell when a failed disk can take events again.

use super::error::{io_reason, short_reason, SpoolError};
use redb::Database;
use std::cell::Cell;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The live spool's file inside `spool.dir`.
pub const FILE_NAME: &str = "spool.redb";
/// What `hookrelay spool quarantine` appends to a file's name (then a UTC timestamp).
pub const QUARANTINE_MARK: &str = ".damaged-";

/// A small page cache: the spool is written once and read once, so a big cache (redb's
/// default allows 1 GiB) would only inflate RSS under load.
const CACHE_BYTES: usize = 16 << 20;

pub fn file_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The quarantined spool files in `dir`, oldest first (their names sort by time).
pub fn quarantined_in(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{FILE_NAME}{QUARANTINE_MARK}");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into an error message. The panic hook stays silent for
/// panics caught here (a damaged file is reported as one error line, not a backtrace);
/// every other panic is printed as before.
pub fn catch_store_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    out.map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        format!("the store panicked reading it: {msg}")
    })
}

/// `spool.dir` must exist and be writable: a missing directory is more often a typo or
/// an unmounted volume (whose spool would then be stranded) than a first start.
pub fn check_dir(dir: &Path) -> Result<(), SpoolError> {
    let bad = |reason: String| SpoolError::Dir {
        path: dir.to_owned(),
        reason,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad("is not a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(format!(
                "does not exist; create it (mkdir -p {}) or point spool.dir at the spool's volume",
                dir.display()
            )))
        }
        Err(e) => return Err(bad(io_reason(&e))),
    }
    probe_file(dir, 0).map_err(|e| {
        bad(format!(
            "is not writable: {}; give the relay's user write access to it, or point spool.dir elsewhere",
            io_reason(&e)
        ))
    })
}

/// Writes (and fsyncs, then removes) a file of `size` bytes in `dir`: does the file
/// system take that much again? Cheap, and unlike a failed store write it does not
/// close the store.
pub fn probe_file(dir: &Path, size: usize) -> std::io::Result<()> {
    let path = dir.join(format!(".hookrelay-probe-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; size.min(1 << 20)];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            f.write_all(&chunk[..n])?;
            left -= n;
        }
        f.sync_data()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// How to open: the relay creates the file on a first start; the operator commands
/// never create one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    CreateIfMissing,
    Existing,
}

/// Opens the store at `path`. Damage (including a panic inside the store) is
/// [`SpoolError::Damaged`], another process holding it [`SpoolError::Locked`].
pub fn open(path: &Path, mode: Mode) -> Result<Database, SpoolError> {
    let damaged = |reason: String| SpoolError::Damaged {
        path: path.to_owned(),
        reason,
    };
    // An unreadable file reads as "permission denied", not as whatever the store
    // makes of it.
    match std::fs::File::open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && mode == Mode::CreateIfMissing => {}
        Err(e) => return Err(damaged(format!("cannot be read: {}", io_reason(&e)))),
    }
    let opened = catch_store_panic(|| {
        let mut b = Database::builder();
        b.set_cache_size(CACHE_BYTES);
        match mode {
            Mode::CreateIfMissing => b.create(path),
            Mode::Existing => b.open(path),
        }
    })
    .map_err(damaged)?;
    match opened {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(SpoolError::Locked(path.to_owned())),
        Err(e) => {
            let e = redb::Error::from(e);
            let reason = match &e {
                redb::Error::Corrupted(m) if m.contains("magic") => {
                    "not a spool file (no redb header)".to_owned()
                }
                redb::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                    "cut short (unexpected end of file)".to_owned()
                }
                _ => short_reason(&e),
            };
            Err(damaged(reason))
        }
    }
}

/// The next commands for an operator, for a spool that cannot be opened.
pub fn next_steps(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "nothing was deleted; run `hookrelay spool export --dir {d} > salvaged.jsonl` to keep what is readable, then `hookrelay spool quarantine --dir {d}` and start again"
    )
}
