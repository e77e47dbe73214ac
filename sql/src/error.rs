//! Errors of the SQL layer, each carrying the PostgreSQL SQLSTATE a client sees.

use std::fmt;

/// A SQL-level error: a SQLSTATE code plus a message (and optional detail/hint).
#[derive(Debug, Clone)]
pub struct SqlError {
    /// Five-character SQLSTATE, e.g. `42P01` (undefined_table).
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// Result alias for the SQL layer.
pub type SqlResult<T> = Result<T, SqlError>;

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        SqlError {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn syntax(msg: impl Into<String>) -> Self {
        Self::new("42601", msg)
    }
    pub fn feature_not_supported(msg: impl Into<String>) -> Self {
        Self::new("0A000", msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new("XX000", msg)
    }
    pub fn invalid_param(msg: impl Into<String>) -> Self {
        Self::new("22023", msg)
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)
    }
}

impl std::error::Error for SqlError {}

/// Map an engine error (sequences, catalog formats) to a SQLSTATE.
pub fn from_engine(e: provdb_engine::EngineError) -> SqlError {
    use provdb_engine::EngineError as E;
    match e {
        E::Storage(s) => from_storage(s),
        E::NotFound(m) => SqlError::new("42P01", m),
        E::BadRequest(m) | E::Invalid(m) => SqlError::new("22023", m),
        E::Conflict(m) => SqlError::new("55000", m),
        other => SqlError::new("XX000", other.to_string()),
    }
}

/// Map a storage error to the SQLSTATE a PostgreSQL client expects.
pub fn from_storage(e: provdb_storage::StorageError) -> SqlError {
    SqlError::new(from_storage_code(&e), e.to_string())
}

fn from_storage_code(e: &provdb_storage::StorageError) -> &'static str {
    use provdb_storage::StorageError as S;
    match e {
        S::UniqueViolation { .. } => "23505",
        S::NotNullViolation { .. } => "23502",
        S::TableExists(_) => "42P07",
        S::NoSuchTable(_) => "42P01",
        S::SchemaMismatch { .. } => "42804",
        S::Closed => "57P01",
        S::Invalid(m) if m.contains("changed concurrently") => "40001",
        S::Io { .. } => "58030",
        S::Corrupt { .. } => "XX001",
        _ => "XX000",
    }
}

/// Map a DataFusion error (possibly wrapping ours) to a [`SqlError`].
pub fn from_datafusion(e: datafusion::error::DataFusionError) -> SqlError {
    use datafusion::error::DataFusionError as D;
    // Errors raised inside execution (a UDF, a sink) arrive wrapped in
    // Arrow/stream/context layers: look for ours at the root first.
    if let D::External(inner) = e.find_root() {
        if let Some(s) = inner.downcast_ref::<SqlError>() {
            return s.clone();
        }
        if let Some(s) = inner.downcast_ref::<provdb_storage::StorageError>() {
            return SqlError::new(from_storage_code(s), s.to_string());
        }
    }
    match e {
        D::External(inner) => {
            let inner = match inner.downcast::<SqlError>() {
                Ok(s) => return *s,
                Err(other) => other,
            };
            match inner.downcast::<provdb_storage::StorageError>() {
                Ok(s) => from_storage(*s),
                Err(other) => SqlError::internal(other.to_string()),
            }
        }
        D::Context(_, inner) => from_datafusion(*inner),
        D::Shared(inner) => from_datafusion(D::External(Box::new(SharedError(inner)))),
        D::SQL(e, _) => SqlError::syntax(e.to_string()),
        D::NotImplemented(m) => SqlError::feature_not_supported(m),
        D::ResourcesExhausted(m) => SqlError::new("53200", m),
        D::ArrowError(e, _) => arrow_error(&e.to_string()),
        D::Diagnostic(_, inner) => from_datafusion(*inner),
        D::Collection(mut errs) if !errs.is_empty() => from_datafusion(errs.remove(0)),
        other => classify_message(other.message().to_string()),
    }
}

#[derive(Debug)]
struct SharedError(std::sync::Arc<datafusion::error::DataFusionError>);
impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for SharedError {}

fn arrow_error(msg: &str) -> SqlError {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("non-nullable") {
        SqlError::new("23502", "null value violates not-null constraint")
            .with_detail(msg.to_string())
    } else if lower.contains("divide by zero") {
        SqlError::new("22012", "division by zero")
    } else if out_of_range(&lower) {
        SqlError::new("22003", msg.to_string())
    } else if lower.contains("cast error")
        || lower.contains("cannot cast")
        || lower.contains("parser error")
    {
        SqlError::new("22P02", msg.to_string())
    } else if lower.contains("overflow") {
        SqlError::new("22003", msg.to_string())
    } else {
        SqlError::new("XX000", msg.to_string())
    }
}

/// Classify planner/execution messages by their wording.
fn classify_message(msg: String) -> SqlError {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("has null but schema specifies non-nullable") {
        return SqlError::new("23502", "null value violates not-null constraint").with_detail(msg);
    }
    let code = if lower.contains("table")
        && (lower.contains("not found")
            || lower.contains("doesn't exist")
            || lower.contains("does not exist"))
    {
        "42P01"
    } else if lower.contains("no field named")
        || lower.contains("column") && lower.contains("not found")
    {
        "42703"
    } else if lower.contains("cannot infer common argument type")
        || lower.contains("operator") && lower.contains("not")
        || lower.contains("invalid function")
        || lower.contains("function") && lower.contains("not found")
    {
        "42883"
    } else if lower.contains("divide by zero") {
        "22012"
    } else if lower.contains("cannot be cast")
        || lower.contains("cast error")
        || lower.contains("cannot coerce")
        || lower.contains("type coercion")
        || lower.contains("no function matches")
        || lower.contains("failed to coerce")
    {
        "42804"
    } else if lower.contains("ambiguous") {
        "42702"
    } else if lower.contains("schema") && lower.contains("not found") {
        "3F000"
    } else if lower.contains("sql error")
        || lower.contains("parsererror")
        || lower.contains("expected")
    {
        "42601"
    } else {
        "XX000"
    };
    SqlError::new(code, msg)
}

/// "Can't cast value 99999999999 to type Int32": a number too large for the
/// type, which PostgreSQL reports as numeric_value_out_of_range.
fn out_of_range(lower: &str) -> bool {
    lower.contains("out of range")
        || lower
            .split("cast value ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|v| v.parse::<f64>().is_ok())
}
