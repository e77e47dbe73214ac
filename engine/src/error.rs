//! Engine errors. Each variant is a class of failure a front end maps to its
//! own vocabulary (an HTTP status, a SQLSTATE); the message names the object
//! or the place in the input that is wrong.

use provdb_storage::StorageError;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed: bad JSON, a missing or mistyped field.
    #[error("{0}")]
    BadRequest(String),

    /// The request names something that does not exist (a dataflow, a
    /// transformation, a set, a sequence).
    #[error("{0}")]
    NotFound(String),

    /// The request is well formed but its values are wrong (a non-numeric
    /// NUMERIC, a wrong number of values).
    #[error("{0}")]
    Invalid(String),

    /// The request contradicts what is stored (e.g. an attribute re-declared
    /// with another type).
    #[error("{0}")]
    Conflict(String),

    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn internal(msg: impl Into<String>) -> Self {
        EngineError::Internal(msg.into())
    }

    /// Prefix the message with where it happened (e.g. `message 3: `).
    pub fn context(self, at: &str) -> Self {
        match self {
            EngineError::BadRequest(m) => EngineError::BadRequest(format!("{at}: {m}")),
            EngineError::NotFound(m) => EngineError::NotFound(format!("{at}: {m}")),
            EngineError::Invalid(m) => EngineError::Invalid(format!("{at}: {m}")),
            EngineError::Conflict(m) => EngineError::Conflict(format!("{at}: {m}")),
            other => other,
        }
    }
}
