//! Storage errors. Every variant says what went wrong and where, so callers can
//! map them to client-facing errors (the SQL layer turns them into SQLSTATEs).

use std::path::PathBuf;

/// Result alias for the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),

    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("Parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },

    #[error("table {0} does not exist")]
    NoSuchTable(String),

    #[error("table \"{0}\" already exists")]
    TableExists(String),

    #[error(
        "duplicate key value violates unique constraint \"{constraint}\": key ({columns})=({key}) already exists"
    )]
    UniqueViolation {
        constraint: String,
        columns: String,
        key: String,
    },

    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNullViolation { table: String, column: String },

    #[error("row batch for table \"{table}\" does not match its schema: {detail}")]
    SchemaMismatch { table: String, detail: String },

    #[error("invalid object-store URL {url:?}: {detail}")]
    InvalidUrl { url: String, detail: String },

    #[error("the storage engine is shut down")]
    Closed,

    #[error("{0}")]
    Invalid(String),
}

impl StorageError {
    /// Wrap an `io::Error` with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        StorageError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Extension to attach a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| StorageError::io(path, e))
    }
}
