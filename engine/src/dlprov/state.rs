//! What the ingest keeps in memory: each dataflow's record (its spec and the
//! catalog ids assigned to it, persisted in the metadata map) and caches of
//! the catalog rows that messages upsert (executions, tasks, scientists,
//! hardware, performances), rebuilt from the tables when they are stale.

use std::collections::{BTreeMap, HashMap};

use provdb_storage::{Storage, TableDef, TableId};
use serde::{Deserialize, Serialize};

use super::message::Hardware;
use super::schema::Catalog;
use super::spec::DataflowSpec;
use crate::error::{EngineError, Result};
use crate::rows::{Row, Value, batch_row};

/// Metadata key prefix of dataflow records.
pub const DATAFLOW_PREFIX: &str = "dlprov/dataflow/";

/// A row of `public.data_dependency` the ingest wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependencyRow {
    pub id: i64,
    pub previous: Option<String>,
    pub next: Option<String>,
    pub set: String,
}

/// A dataflow as registered: its merged spec and the ids of its catalog rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataflowRecord {
    pub spec: DataflowSpec,
    pub id: i64,
    pub version: i64,
    pub transformations: BTreeMap<String, i64>,
    pub sets: BTreeMap<String, i64>,
    /// `set/attribute` -> attribute id.
    pub attributes: BTreeMap<String, i64>,
    pub dependencies: Vec<DependencyRow>,
}

impl DataflowRecord {
    pub fn key(tag: &str) -> String {
        format!("{DATAFLOW_PREFIX}{tag}")
    }

    pub fn load_all(storage: &Storage) -> Result<HashMap<String, DataflowRecord>> {
        storage
            .meta_scan(DATAFLOW_PREFIX)
            .into_iter()
            .map(|(k, v)| {
                let rec: DataflowRecord = serde_json::from_value(v).map_err(|e| {
                    EngineError::internal(format!("bad dataflow record under {k}: {e}"))
                })?;
                Ok((rec.spec.tag.clone(), rec))
            })
            .collect()
    }
}

/// A cached catalog row; `stored` = this version is in storage (not only in
/// the round being built).
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub row: Row,
    pub stored: bool,
}

/// (execution tag, transformation id, identifier).
pub type TaskKey = (String, i64, i64);

/// (task id, subtask id, method, start time).
pub type PerfKey = (i64, Option<i64>, Option<String>, Option<String>);

/// Column positions in the catalog rows the caches hold.
pub mod col {
    pub const EXEC_ID: usize = 0;
    pub const EXEC_SCIENTIST: usize = 4;
    pub const EXEC_HARDWARE: usize = 5;
    pub const TASK_ID: usize = 0;
    pub const TASK_IDENTIFIER: usize = 2;
    pub const TASK_EXEC: usize = 4;
    pub const TASK_DT: usize = 5;
    pub const TASK_STATUS: usize = 6;
    pub const TASK_WORKSPACE: usize = 7;
    pub const TASK_RESOURCE: usize = 8;
    pub const TASK_OUTPUT: usize = 9;
    pub const TASK_ERROR: usize = 10;
    pub const PERF_ID: usize = 0;
    pub const PERF_TASK: usize = 1;
    pub const PERF_SUBTASK: usize = 2;
    pub const PERF_METHOD: usize = 3;
    pub const PERF_START: usize = 5;
    pub const PERF_END: usize = 6;
    pub const PERF_INVOCATION: usize = 7;
}

/// The upsert caches.
#[derive(Debug, Default)]
pub struct Caches {
    pub execs: HashMap<String, Cached>,
    pub tasks: HashMap<TaskKey, Cached>,
    pub scientists: HashMap<String, i64>,
    pub hardware: HashMap<Hardware, i64>,
    pub perfs: HashMap<PerfKey, Cached>,
    /// (set table, consumer task, parent task) -> generation linked at.
    pub linked: HashMap<(TableId, i64, i64), u64>,
    /// (set table, producing task) -> generation (bumped per insert).
    pub produced: HashMap<(TableId, i64), u64>,
    /// `data_lsn` of each table when the caches last matched it.
    pub seen_lsn: HashMap<TableId, u64>,
    pub loaded: bool,
}

impl Caches {
    /// Rebuild from the catalog tables.
    pub async fn load(storage: &Storage, cat: &Catalog) -> Result<Caches> {
        let mut c = Caches::default();
        for row in rows_of(storage, &cat.dataflow_execution).await? {
            if let Some(tag) = row[2].as_text() {
                c.execs
                    .insert(tag.to_string(), Cached { row, stored: true });
            }
        }
        for row in rows_of(storage, &cat.task).await? {
            let key = (
                row[col::TASK_EXEC]
                    .as_text()
                    .unwrap_or_default()
                    .to_string(),
                row[col::TASK_DT].as_int().unwrap_or_default(),
                row[col::TASK_IDENTIFIER].as_int().unwrap_or_default(),
            );
            c.tasks.insert(key, Cached { row, stored: true });
        }
        for row in rows_of(storage, &cat.data_scientist).await? {
            if let (Some(id), Some(email)) = (row[0].as_int(), row[2].as_text()) {
                c.scientists.insert(email.to_string(), id);
            }
        }
        for row in rows_of(storage, &cat.hardware_info).await? {
            if let Some(id) = row[0].as_int() {
                c.hardware.insert(hardware_of(&row), id);
            }
        }
        for row in rows_of(storage, &cat.performance).await? {
            c.perfs.insert(perf_key(&row), Cached { row, stored: true });
        }
        for t in cat_tables(cat) {
            c.seen_lsn
                .insert(t, storage.table_data_lsn(t).unwrap_or_default());
        }
        c.loaded = true;
        Ok(c)
    }

    /// Whether a catalog table changed behind the caches' back (a SQL write).
    pub fn stale(&self, storage: &Storage, cat: &Catalog) -> bool {
        !self.loaded
            || cat_tables(cat).into_iter().any(|t| {
                storage.table_data_lsn(t) != Some(self.seen_lsn.get(&t).copied().unwrap_or(0))
            })
    }

    /// Forget links of set tables written by someone else since we looked.
    pub fn check_set_table(&mut self, storage: &Storage, table: TableId) {
        let now = storage.table_data_lsn(table).unwrap_or_default();
        if self.seen_lsn.get(&table).copied() != Some(now) {
            self.linked.retain(|k, _| k.0 != table);
            self.seen_lsn.insert(table, now);
        }
    }
}

pub fn cat_tables(cat: &Catalog) -> Vec<TableId> {
    vec![
        cat.dataflow_execution.id,
        cat.task.id,
        cat.data_scientist.id,
        cat.hardware_info.id,
        cat.performance.id,
    ]
}

pub fn perf_key(row: &Row) -> PerfKey {
    (
        row[col::PERF_TASK].as_int().unwrap_or_default(),
        row[col::PERF_SUBTASK].as_int(),
        row[col::PERF_METHOD].as_text().map(str::to_string),
        row[col::PERF_START].as_text().map(str::to_string),
    )
}

pub fn hardware_of(row: &Row) -> Hardware {
    let t = |i: usize| row[i].as_text().map(str::to_string);
    Hardware {
        hostname: t(2).unwrap_or_default(),
        os: t(3),
        platform: t(4),
        architecture: t(5),
        processor: t(6),
        gpus: t(7),
        in_container: match row[8] {
            Value::Bool(b) => Some(b),
            _ => None,
        },
    }
}

async fn rows_of(storage: &Storage, def: &TableDef) -> Result<Vec<Row>> {
    let snap = storage.snapshot(def.id)?;
    let mut out = Vec::new();
    for src in storage.read_live(&snap).await? {
        for i in 0..src.batch.num_rows() {
            out.push(batch_row(&src.batch, i)?);
        }
    }
    Ok(out)
}
