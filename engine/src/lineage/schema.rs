//! The stored part of schema `prov`: tables holding the entities,
//! activities, agents and relations users insert (and PROV imports write).
//! The SQL layer shows each of them merged with the nodes and edges derived
//! from DLProv rows.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use provdb_storage::{Storage, TableDef, WalOp};

use crate::catalog::schema_key;
use crate::error::{EngineError, Result};

pub const PROV_SCHEMA: &str = "prov";
pub const RELATION_TABLE: &str = "relation";

pub fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

pub fn time(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    )
}

/// (name, columns, primary-key column indices) of each stored prov table.
fn tables() -> Vec<(&'static str, Vec<Field>, Vec<usize>)> {
    let node = |extra: Vec<Field>| {
        let mut cols = vec![text("id", false), text("type", true), text("label", true)];
        cols.extend(extra);
        cols.push(text("attributes", true));
        cols
    };
    vec![
        ("entity", node(vec![]), vec![0]),
        (
            "activity",
            node(vec![time("start_time"), time("end_time")]),
            vec![0],
        ),
        ("agent", node(vec![]), vec![0]),
        (
            RELATION_TABLE,
            vec![
                text("kind", false),
                text("subject", false),
                text("object", false),
                text("attributes", true),
            ],
            vec![0, 1, 2],
        ),
    ]
}

/// Create schema `prov` and its tables if missing.
pub async fn ensure_tables(storage: &Storage) -> Result<()> {
    ensure_schema(storage, PROV_SCHEMA, tables()).await
}

/// Create `schema` and those of `tables` (name, columns, primary-key
/// column indices) that are missing, in one commit.
pub async fn ensure_schema(
    storage: &Storage,
    schema: &str,
    tables: Vec<(&'static str, Vec<Field>, Vec<usize>)>,
) -> Result<()> {
    let mut ops = Vec::new();
    if storage.meta_get(&schema_key(schema)).is_none() {
        ops.push(WalOp::PutMeta {
            key: schema_key(schema),
            value: serde_json::json!({}),
        });
    }
    for (name, fields, pk) in tables {
        if storage.table_by_name(schema, name).is_some() {
            continue;
        }
        let (id, source) = storage.allocate_table_ids();
        ops.push(WalOp::CreateTable {
            def: TableDef {
                id,
                namespace: schema.into(),
                name: name.into(),
                schema: Arc::new(Schema::new(fields)),
                primary_key: pk,
                properties: serde_json::Value::Null,
            },
            source,
        });
    }
    if ops.is_empty() {
        return Ok(());
    }
    storage
        .commit(ops)
        .await
        .map_err(|e| EngineError::from(e).context(&format!("creating schema {schema}")))?;
    Ok(())
}
