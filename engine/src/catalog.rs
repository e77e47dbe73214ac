//! The durable catalog formats shared by every front end: where schemas,
//! views and sequences live in the storage metadata map, and how column
//! defaults are recorded in a table's properties.
//!
//! The SQL layer reads and writes these when it runs DDL; the DLProv ingest
//! writes them when a dataflow specification creates its schema. Both must
//! agree, so the formats live here, below both.

use serde::{Deserialize, Serialize};

/// Metadata key prefixes.
pub const SCHEMA_PREFIX: &str = "schema/";
pub const VIEW_PREFIX: &str = "view/";
pub const SEQUENCE_PREFIX: &str = "seq/";

/// The schema every database has.
pub const DEFAULT_SCHEMA: &str = "public";

/// A stored view: a query and the schema its unqualified names resolve in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewDef {
    pub sql: String,
    pub schema: String,
}

pub fn view_key(schema: &str, name: &str) -> String {
    format!("{VIEW_PREFIX}{schema}/{name}")
}

pub fn schema_key(schema: &str) -> String {
    format!("{SCHEMA_PREFIX}{schema}")
}

pub fn sequence_key(schema: &str, name: &str) -> String {
    format!("{SEQUENCE_PREFIX}{schema}/{name}")
}

/// `"name"` with embedded quotes doubled: a SQL identifier that keeps its
/// exact spelling.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The default expression (SQL text) that draws a column from a sequence.
pub fn nextval_default(schema: &str, sequence: &str) -> String {
    let name = format!("{}.{}", quote_ident(schema), quote_ident(sequence));
    format!("nextval({})", quote_literal(&name))
}

/// Table properties: the SQL default expression of each column that has one.
pub fn defaults_property(defaults: &[(String, String)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = defaults
        .iter()
        .map(|(c, d)| (c.clone(), serde_json::Value::String(d.clone())))
        .collect();
    serde_json::json!({ "defaults": map })
}
