//! A round: the changes of every task message processed between two
//! commits, staged in memory, turned into one atomic commit.
//!
//! Messages are applied one job (HTTP request) at a time. Each change to the
//! caches or the staged rows records how to undo it, so a job that fails
//! half-way is rolled back without disturbing the jobs before it in the
//! round. Rows already in storage that a round changes are locked (the
//! table write lock) from the moment they are read until the commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use provdb_storage::{SourceId, Storage, TableDef, TableId, WalOp};
use roaring::RoaringBitmap;
use tokio::sync::OwnedMutexGuard;

use super::message::Hardware;
use super::state::{Cached, Caches, PerfKey, TaskKey};
use crate::error::{EngineError, Result};
use crate::rows::{Row, Value, rows_to_batch};

/// How long a round waits for a table another transaction has locked.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// One undoable change.
#[derive(Debug)]
pub enum Undo {
    Task(TaskKey, Option<Cached>),
    Exec(String, Option<Cached>),
    Perf(PerfKey, Option<Cached>),
    Scientist(String),
    Hardware(Hardware),
    NewRow(TableId),
    Patch(TableId, usize, usize, Value),
    StoredEdit((TableId, SourceId, u32), Option<Row>),
    Linked((TableId, i64, i64), Option<u64>),
    Produced((TableId, i64), Option<u64>),
}

/// The staged changes of a round.
#[derive(Default)]
pub struct Round {
    /// Ops that go first (sequence reservations).
    pub pre_ops: Vec<WalOp>,
    /// Rows to insert, per table.
    pub new_rows: BTreeMap<TableId, Vec<Row>>,
    /// Stored rows replaced by a new version (link updates).
    pub stored_edits: BTreeMap<(TableId, SourceId, u32), Row>,
    pub dirty_tasks: HashSet<TaskKey>,
    pub dirty_execs: HashSet<String>,
    pub dirty_perfs: HashSet<PerfKey>,
    /// Sequences whose reservation is in `pre_ops`.
    pub sequences: HashSet<String>,
    pub undo: Vec<Undo>,
    locks: HashMap<TableId, OwnedMutexGuard<()>>,
}

impl Round {
    pub fn is_empty(&self) -> bool {
        self.new_rows.values().all(Vec::is_empty)
            && self.stored_edits.is_empty()
            && self.dirty_tasks.is_empty()
            && self.dirty_execs.is_empty()
            && self.dirty_perfs.is_empty()
            && self.pre_ops.is_empty()
    }

    /// Hold `table`'s write lock until the round ends.
    pub async fn lock(&mut self, storage: &Storage, table: &TableDef) -> Result<()> {
        if self.locks.contains_key(&table.id) {
            return Ok(());
        }
        let lock = storage.write_lock(table.id);
        let guard = tokio::time::timeout(LOCK_TIMEOUT, lock.lock_owned())
            .await
            .map_err(|_| {
                EngineError::Conflict(format!(
                    "table {} is locked by another transaction (waited {}s)",
                    table.qualified_name(),
                    LOCK_TIMEOUT.as_secs()
                ))
            })?;
        self.locks.insert(table.id, guard);
        Ok(())
    }

    pub fn push_row(&mut self, table: TableId, row: Row) {
        self.new_rows.entry(table).or_default().push(row);
        self.undo.push(Undo::NewRow(table));
    }

    /// Undo every change recorded after `mark`.
    pub fn rollback_to(&mut self, mark: usize, caches: &mut Caches) {
        while self.undo.len() > mark {
            let Some(u) = self.undo.pop() else { break };
            match u {
                Undo::Task(k, prev) => restore(&mut caches.tasks, k, prev),
                Undo::Exec(k, prev) => restore(&mut caches.execs, k, prev),
                Undo::Perf(k, prev) => restore(&mut caches.perfs, k, prev),
                Undo::Scientist(k) => {
                    caches.scientists.remove(&k);
                }
                Undo::Hardware(k) => {
                    caches.hardware.remove(&k);
                }
                Undo::NewRow(t) => {
                    if let Some(v) = self.new_rows.get_mut(&t) {
                        v.pop();
                    }
                }
                Undo::Patch(t, i, c, old) => {
                    if let Some(row) = self.new_rows.get_mut(&t).and_then(|v| v.get_mut(i)) {
                        row[c] = old;
                    }
                }
                Undo::StoredEdit(k, prev) => restore_b(&mut self.stored_edits, k, prev),
                Undo::Linked(k, prev) => restore(&mut caches.linked, k, prev),
                Undo::Produced(k, prev) => restore(&mut caches.produced, k, prev),
            }
        }
    }

    /// The commit: sequence reservations, deletes of replaced stored rows,
    /// then inserts. `catalog` maps the tables of dirty cache entries.
    pub async fn into_ops(
        mut self,
        storage: &Storage,
        caches: &Caches,
        tables: &RoundTables<'_>,
    ) -> Result<(
        Vec<WalOp>,
        Vec<TableId>,
        HashMap<TableId, OwnedMutexGuard<()>>,
    )> {
        let mut deletes: BTreeMap<(TableId, SourceId), (RoaringBitmap, Vec<Row>)> = BTreeMap::new();
        // Catalog rows updated in place: delete the stored version.
        let mut replaced: Vec<(&TableDef, Row, bool)> = Vec::new();
        for k in &self.dirty_execs {
            if let Some(c) = caches.execs.get(k) {
                replaced.push((tables.execution, c.row.clone(), c.stored));
            }
        }
        for k in &self.dirty_tasks {
            if let Some(c) = caches.tasks.get(k) {
                replaced.push((tables.task, c.row.clone(), c.stored));
            }
        }
        for k in &self.dirty_perfs {
            if let Some(c) = caches.perfs.get(k) {
                replaced.push((tables.performance, c.row.clone(), c.stored));
            }
        }
        for (def, row, stored) in replaced {
            if stored {
                self.lock(storage, def).await?;
                let key = key_batch(def, std::slice::from_ref(&row))?;
                if let Some(addr) = storage.lookup_pk(def.id, &key)? {
                    let e = deletes.entry((def.id, addr.source)).or_default();
                    e.0.insert(addr.pos);
                    e.1.push(row.clone());
                }
            }
            self.new_rows.entry(def.id).or_default().push(row);
        }
        for ((table, source, pos), row) in std::mem::take(&mut self.stored_edits) {
            let e = deletes.entry((table, source)).or_default();
            e.0.insert(pos);
            e.1.push(row.clone());
            self.new_rows.entry(table).or_default().push(row);
        }
        let mut ops = std::mem::take(&mut self.pre_ops);
        let mut touched = Vec::new();
        for ((table, source), (positions, rows)) in deletes {
            let def = tables.def(storage, table)?;
            ops.push(WalOp::Delete {
                table,
                source,
                positions,
                keys: Some(key_batch(&def, &rows)?),
            });
            touched.push(table);
        }
        for (table, rows) in &self.new_rows {
            if rows.is_empty() {
                continue;
            }
            let def = tables.def(storage, *table)?;
            ops.push(WalOp::Insert {
                table: *table,
                batch: rows_to_batch(&def.schema, rows)?,
            });
            touched.push(*table);
        }
        touched.sort();
        touched.dedup();
        Ok((ops, touched, std::mem::take(&mut self.locks)))
    }
}

/// Where dirty cache entries go.
pub struct RoundTables<'a> {
    pub execution: &'a TableDef,
    pub task: &'a TableDef,
    pub performance: &'a TableDef,
}

impl RoundTables<'_> {
    fn def(&self, storage: &Storage, id: TableId) -> Result<TableDef> {
        storage
            .table(id)
            .ok_or_else(|| EngineError::NotFound(format!("table {id} was dropped during ingest")))
    }
}

/// The primary-key columns of `rows`, as storage's delete op wants them.
fn key_batch(def: &TableDef, rows: &[Row]) -> Result<arrow::array::RecordBatch> {
    let schema = Arc::new(def.schema.project(&def.primary_key)?);
    let keys: Vec<Row> = rows
        .iter()
        .map(|r| def.primary_key.iter().map(|&i| r[i].clone()).collect())
        .collect();
    rows_to_batch(&schema, &keys)
}

fn restore<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, prev: Option<V>) {
    match prev {
        Some(v) => {
            map.insert(k, v);
        }
        None => {
            map.remove(&k);
        }
    }
}

fn restore_b<K: Ord, V>(map: &mut BTreeMap<K, V>, k: K, prev: Option<V>) {
    match prev {
        Some(v) => {
            map.insert(k, v);
        }
        None => {
            map.remove(&k);
        }
    }
}
