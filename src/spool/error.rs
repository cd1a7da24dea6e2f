//! What can go wrong with the spool, in words an operator can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `spool.max_bytes` reached: a bound the operator set, not a fault.
    #[error("the spool is full (spool.max_bytes)")]
    Full,
    #[error("the spool is closed")]
    Closed,
    /// The store failed and is not taking writes until a probe shows it can again.
    #[error("the spool is unavailable: {0}")]
    Unavailable(String),
    /// A store operation failed (the short reason, see [`short_reason`]).
    #[error("spool storage error: {0}")]
    Storage(String),
    /// A record could not be encoded: a bug, never stored half-written.
    #[error("cannot encode a spool record: {0}")]
    Encode(#[from] serde_json::Error),
    /// Another process (a running relay, or a `hookrelay spool` command) holds the file.
    #[error("{} is in use by another process (a running relay holds its spool open)", .0.display())]
    Locked(PathBuf),
    /// The file cannot be read as a spool: cut short, overwritten, not a spool at all, or
    /// unreadable.
    #[error("the spool file {} cannot be used: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    /// `spool.dir` itself is missing or unusable.
    #[error("configuration key `spool.dir`: {} {reason}", path.display())]
    Dir { path: PathBuf, reason: String },
}

/// A short, stable reason for an I/O error: what `/readyz` and the log say.
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::StorageFull => "disk full (no space left on device)".into(),
        ErrorKind::ReadOnlyFilesystem => "read-only file system".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::NotFound => "not found".into(),
        _ if e.raw_os_error() == Some(5) => "I/O error (EIO)".into(),
        _ => e.to_string(),
    }
}

/// The short reason of any store error.
pub fn short_reason(e: &redb::Error) -> String {
    match e {
        redb::Error::Io(io) => io_reason(io),
        redb::Error::PreviousIo => "an earlier I/O error left the store closed".into(),
        redb::Error::Corrupted(m) => format!("damaged: {m}"),
        other => other.to_string(),
    }
}

/// Every redb error type converts into `redb::Error`; map through it.
pub(crate) fn storage<E: Into<redb::Error>>(e: E) -> SpoolError {
    SpoolError::Storage(short_reason(&e.into()))
}
