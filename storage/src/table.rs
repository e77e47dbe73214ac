//! Table definitions as storage sees them: a name, an Arrow schema, an optional
//! primary key, and opaque properties owned by the layers above (defaults,
//! comments...). Storage knows nothing of SQL.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// Identifies a table for its whole life (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableId(pub u64);

/// Identifies one source of rows of a table: an in-memory buffer or, after it
/// is flushed, the Parquet segment made from it (same id, same row positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceId(pub u64);

impl std::fmt::Display for TableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}", self.0)
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// The definition of a stored table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub id: TableId,
    /// Namespace (the SQL schema), e.g. `public`.
    pub namespace: String,
    pub name: String,
    /// Column names, types and nullability. A non-nullable field is enforced
    /// (NOT NULL) on every write.
    pub schema: Arc<Schema>,
    /// Column indices of the primary key, enforced unique. Empty = none.
    #[serde(default)]
    pub primary_key: Vec<usize>,
    /// Opaque properties of the layers above (column defaults, ...).
    #[serde(default)]
    pub properties: serde_json::Value,
}

impl TableDef {
    pub fn schema_ref(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// `namespace.name`, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// Name of the primary-key constraint, as PostgreSQL would name it.
    pub fn pk_constraint_name(&self) -> String {
        format!("{}_pkey", self.name)
    }
}
