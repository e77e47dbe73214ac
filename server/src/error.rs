//! [`ServerError`]: why the server could not start or stopped abnormally.

use provdb_sql::SqlError;

/// An error that stops the server or a command (never a per-client error:
/// those go to the client as an ErrorResponse).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listener or another OS-level failure.
    #[error("I/O error: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The database could not be opened or closed.
    #[error("database: {0}")]
    Database(#[from] SqlError),
    /// Invalid configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// A command-line tool request failed (export, import).
    #[error("{0}")]
    Command(String),
}

impl ServerError {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ServerError::Io {
            context: context.into(),
            source,
        }
    }
}
