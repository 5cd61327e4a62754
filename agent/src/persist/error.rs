//! The persistence layer's errors, below every part of it.

use std::path::PathBuf;

/// The persistence layer's failures.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Encoding failed.
    #[error("encoding state: {0}")]
    Encode(String),
    /// The files were closed after an error that a retry on the same files cannot outlive
    /// (a file system turned read-only or failing); only a snapshot reopens them.
    #[error("{}: closed after an I/O error; reopened by the next snapshot", dir.display())]
    Closed {
        /// The data dir.
        dir: PathBuf,
    },
}
