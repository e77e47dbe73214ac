//! Applying task messages to a [`Round`]: DfAnalyzer's semantics (execution
//! created with its scientist and hardware, task upsert RUNNING → FINISHED,
//! performance rows, one row per element list, consumer task ids set on the
//! producer's rows), with values typed and checked before anything is
//! staged.

use std::collections::HashMap;

use arrow::array::{Int32Array, RecordBatch};
use arrow::compute::kernels::cmp::eq;
use provdb_storage::{Storage, TableDef};

use super::message::{Hardware, Performance, TaskMessage};
use super::round::{Round, Undo};
use super::schema::{Catalog, set_sequence_key, set_table_name};
use super::spec::{AttrType, SetSpec, task_column};
use super::state::{Cached, Caches, DataflowRecord, col};
use crate::catalog::{DEFAULT_SCHEMA, sequence_key};
use crate::error::{EngineError, Result};
use crate::rows::{Row, Value};
use crate::sequence::Sequences;

/// What a message application needs besides the round.
pub struct Ctx<'a> {
    pub storage: &'a Storage,
    pub sequences: &'a Sequences,
    pub catalog: &'a Catalog,
    pub dataflows: &'a HashMap<String, DataflowRecord>,
}

/// Rows for one set, checked and typed, waiting for their ids.
struct SetRows<'a> {
    set: &'a SetSpec,
    table: TableDef,
    rows: Vec<Vec<Value>>,
}

impl Ctx<'_> {
    fn next(&self, round: &mut Round, schema: &str, seq: &str) -> Result<i64> {
        self.next_key(round, &sequence_key(schema, seq))
    }

    /// The next value of the sequence under `key`; its reservation, if one
    /// is needed, goes into the round's commit.
    fn next_key(&self, round: &mut Round, key: &str) -> Result<i64> {
        if !round.sequences.contains(key) {
            round.sequences.insert(key.to_string());
        }
        self.sequences
            .next_in(self.storage, key, &mut round.pre_ops)
    }

    /// The `ds_<set>` table of a registered set.
    fn set_table(&self, rec: &DataflowRecord, set: &SetSpec) -> Result<TableDef> {
        let name = set_table_name(&set.tag);
        self.storage
            .table_by_name(&rec.spec.tag, &name)
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "table {}.{name} does not exist (was it dropped?)",
                    rec.spec.tag
                ))
            })
    }

    /// Apply one message. On error the caller rolls the round back to its
    /// mark; nothing here is partial once validation has passed.
    pub async fn apply(
        &self,
        round: &mut Round,
        caches: &mut Caches,
        m: &TaskMessage,
    ) -> Result<()> {
        let rec = self.dataflows.get(&m.dataflow).ok_or_else(|| {
            EngineError::NotFound(format!(
                "unknown dataflow \"{}\": POST its specification to /pde/dataflow/json first",
                m.dataflow
            ))
        })?;
        let dt = rec.spec.transformation(&m.transformation).ok_or_else(|| {
            EngineError::NotFound(format!(
                "dataflow \"{}\" has no transformation \"{}\"",
                m.dataflow, m.transformation
            ))
        })?;
        let dt_id = *rec.transformations.get(&dt.tag).ok_or_else(|| {
            EngineError::internal(format!("transformation {} has no catalog id", dt.tag))
        })?;
        // 1. Validate everything that can be wrong with the message.
        let staged = self.check_sets(rec, &dt.tag, m)?;
        let parents = self.resolve_parents(rec, caches, m)?;
        if let Some(e) = caches.execs.get(&m.exec)
            && e.row[3].as_int() != Some(rec.id)
        {
            return Err(EngineError::Conflict(format!(
                "execution \"{}\" belongs to another dataflow",
                m.exec
            )));
        }
        // 2. Stage the changes.
        self.upsert_execution(round, caches, rec, m)?;
        let task_id = self.upsert_task(round, caches, rec, dt_id, m)?;
        for p in &m.performances {
            self.upsert_performance(round, caches, task_id, m.subid, p)?;
        }
        for s in staged {
            self.insert_rows(round, caches, rec, &dt.tag, task_id, s)?;
        }
        for u in dt.uses.iter() {
            let Some(dep) = &u.dependency else { continue };
            let Some(set) = rec.spec.set(&u.set) else {
                continue;
            };
            for (tag, parent) in &parents {
                if tag == dep {
                    self.link(round, caches, rec, set, &dt.tag, dep, task_id, *parent)
                        .await?;
                }
            }
        }
        Ok(())
    }

    fn check_sets<'r>(
        &self,
        rec: &'r DataflowRecord,
        dt: &str,
        m: &TaskMessage,
    ) -> Result<Vec<SetRows<'r>>> {
        let uses = &rec
            .spec
            .transformation(dt)
            .ok_or_else(|| EngineError::internal("transformation vanished"))?
            .uses;
        let mut out = Vec::new();
        for (i, s) in m.sets.iter().enumerate() {
            let at = format!("sets[{i}] (\"{}\")", s.set);
            if !uses
                .iter()
                .any(|u| u.set == s.set && u.dependency.is_none())
            {
                return Err(
                    match uses.iter().find_map(|u| {
                        (u.set == s.set)
                            .then_some(u.dependency.as_deref())
                            .flatten()
                    }) {
                        Some(dep) => EngineError::Invalid(format!(
                            "{at}: \"{}\" is an input of \"{dt}\" produced by \"{dep}\"; its rows are sent by \"{dep}\"'s tasks",
                            s.set
                        )),
                        None => EngineError::NotFound(format!(
                            "{at}: transformation \"{dt}\" of dataflow \"{}\" has no set \"{}\"",
                            rec.spec.tag, s.set
                        )),
                    },
                );
            }
            let set = rec
                .spec
                .set(&s.set)
                .ok_or_else(|| EngineError::internal("set vanished"))?;
            let table = self.set_table(rec, set).map_err(|e| e.context(&at))?;
            let mut rows = Vec::with_capacity(s.rows.len());
            for (j, values) in s.rows.iter().enumerate() {
                if values.len() != set.attributes.len() {
                    return Err(EngineError::Invalid(format!(
                        "{at}.elements[{j}]: {} value(s) for {} attribute(s) ({})",
                        values.len(),
                        set.attributes.len(),
                        set.attributes
                            .iter()
                            .map(|a| a.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                let typed = set
                    .attributes
                    .iter()
                    .zip(values)
                    .map(|(a, v)| typed_value(a.ty, v.as_deref(), &a.name))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| e.context(&format!("{at}.elements[{j}]")))?;
                rows.push(typed);
            }
            out.push(SetRows { set, table, rows });
        }
        Ok(out)
    }

    /// Task ids of the parents named by the message's dependency.
    fn resolve_parents(
        &self,
        rec: &DataflowRecord,
        caches: &Caches,
        m: &TaskMessage,
    ) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for (tag, ident) in &m.parents {
            let dt = rec.transformations.get(tag).ok_or_else(|| {
                EngineError::NotFound(format!(
                    "dependency: dataflow \"{}\" has no transformation \"{tag}\"",
                    rec.spec.tag
                ))
            })?;
            let task = caches
                .tasks
                .get(&(m.exec.clone(), *dt, *ident))
                .ok_or_else(|| {
                    EngineError::NotFound(format!(
                        "dependency: execution \"{}\" has no task {ident} of transformation \"{tag}\"",
                        m.exec
                    ))
                })?;
            let id = task.row[col::TASK_ID]
                .as_int()
                .ok_or_else(|| EngineError::internal("task without id"))?;
            out.push((tag.clone(), id));
        }
        Ok(out)
    }

    fn upsert_execution(
        &self,
        round: &mut Round,
        caches: &mut Caches,
        rec: &DataflowRecord,
        m: &TaskMessage,
    ) -> Result<()> {
        let prev = caches.execs.get(&m.exec).cloned();
        let mut row = match &prev {
            Some(c) => c.row.clone(),
            None => vec![
                Value::Int(self.next(round, DEFAULT_SCHEMA, "exec_id_seq")?),
                Value::Null,
                Value::text(&m.exec),
                Value::Int(rec.id),
                Value::Null,
                Value::Null,
            ],
        };
        if row[col::EXEC_SCIENTIST].is_null()
            && let Some(email) = &m.email
        {
            row[col::EXEC_SCIENTIST] = Value::Int(self.scientist(round, caches, email)?);
        }
        if row[col::EXEC_HARDWARE].is_null()
            && let Some(hw) = &m.hardware
        {
            row[col::EXEC_HARDWARE] = Value::Int(self.hardware(round, caches, hw)?);
        }
        if prev.as_ref().map(|c| &c.row) != Some(&row) {
            let stored = prev.as_ref().is_some_and(|c| c.stored);
            caches.execs.insert(m.exec.clone(), Cached { row, stored });
            round.undo.push(Undo::Exec(m.exec.clone(), prev));
            round.dirty_execs.insert(m.exec.clone());
        }
        Ok(())
    }

    fn scientist(&self, round: &mut Round, caches: &mut Caches, email: &str) -> Result<i64> {
        if let Some(id) = caches.scientists.get(email) {
            return Ok(*id);
        }
        let id = self.next(round, DEFAULT_SCHEMA, "user_id_seq")?;
        round.push_row(
            self.catalog.data_scientist.id,
            vec![Value::Int(id), Value::Null, Value::text(email)],
        );
        caches.scientists.insert(email.to_string(), id);
        round.undo.push(Undo::Scientist(email.to_string()));
        Ok(id)
    }

    fn hardware(&self, round: &mut Round, caches: &mut Caches, hw: &Hardware) -> Result<i64> {
        if let Some(id) = caches.hardware.get(hw) {
            return Ok(*id);
        }
        let id = self.next(round, DEFAULT_SCHEMA, "hardware_id_seq")?;
        round.push_row(
            self.catalog.hardware_info.id,
            vec![
                Value::Int(id),
                Value::Null,
                Value::text(&hw.hostname),
                Value::opt_text(hw.os.as_deref()),
                Value::opt_text(hw.platform.as_deref()),
                Value::opt_text(hw.architecture.as_deref()),
                Value::opt_text(hw.processor.as_deref()),
                Value::opt_text(hw.gpus.as_deref()),
                hw.in_container.map_or(Value::Null, Value::Bool),
            ],
        );
        caches.hardware.insert(hw.clone(), id);
        round.undo.push(Undo::Hardware(hw.clone()));
        Ok(id)
    }

    fn upsert_task(
        &self,
        round: &mut Round,
        caches: &mut Caches,
        rec: &DataflowRecord,
        dt_id: i64,
        m: &TaskMessage,
    ) -> Result<i64> {
        let key = (m.exec.clone(), dt_id, m.identifier);
        let prev = caches.tasks.get(&key).cloned();
        let row = match &prev {
            Some(c) => {
                let mut row = c.row.clone();
                row[col::TASK_STATUS] = Value::text(&m.status);
                let mut set = |i: usize, v: &Option<String>| {
                    if let Some(v) = v {
                        row[i] = Value::text(v);
                    }
                };
                set(col::TASK_WORKSPACE, &m.workspace);
                set(col::TASK_RESOURCE, &m.resource);
                set(col::TASK_OUTPUT, &m.output);
                set(col::TASK_ERROR, &m.error);
                row
            }
            None => vec![
                Value::Int(self.next(round, DEFAULT_SCHEMA, "task_id_seq")?),
                Value::Null,
                Value::Int(m.identifier),
                Value::Int(rec.version),
                Value::text(&m.exec),
                Value::Int(dt_id),
                Value::text(&m.status),
                Value::opt_text(m.workspace.as_deref()),
                Value::opt_text(m.resource.as_deref()),
                Value::opt_text(m.output.as_deref()),
                Value::opt_text(m.error.as_deref()),
            ],
        };
        let id = row[col::TASK_ID]
            .as_int()
            .ok_or_else(|| EngineError::internal("task without id"))?;
        if prev.as_ref().map(|c| &c.row) != Some(&row) {
            let stored = prev.as_ref().is_some_and(|c| c.stored);
            caches.tasks.insert(key.clone(), Cached { row, stored });
            round.undo.push(Undo::Task(key.clone(), prev));
            round.dirty_tasks.insert(key);
        }
        Ok(id)
    }

    fn upsert_performance(
        &self,
        round: &mut Round,
        caches: &mut Caches,
        task_id: i64,
        subid: Option<i64>,
        p: &Performance,
    ) -> Result<()> {
        let key = (task_id, subid, p.method.clone(), p.start.clone());
        let prev = caches.perfs.get(&key).cloned();
        let row = match &prev {
            Some(c) if c.row[col::PERF_END].is_null() && p.end.is_some() => {
                let mut row = c.row.clone();
                row[col::PERF_END] = Value::opt_text(p.end.as_deref());
                row[col::PERF_INVOCATION] = Value::opt_text(p.invocation.as_deref());
                row
            }
            Some(_) => return Ok(()),
            None => vec![
                Value::Int(self.next(round, DEFAULT_SCHEMA, "performance_id_seq")?),
                Value::Int(task_id),
                Value::opt_int(subid),
                Value::opt_text(p.method.as_deref()),
                Value::opt_text(p.description.as_deref()),
                Value::opt_text(p.start.as_deref()),
                Value::opt_text(p.end.as_deref()),
                Value::opt_text(p.invocation.as_deref()),
            ],
        };
        let stored = prev.as_ref().is_some_and(|c| c.stored);
        debug_assert!(row[col::PERF_ID].as_int().is_some());
        caches.perfs.insert(key.clone(), Cached { row, stored });
        round.undo.push(Undo::Perf(key.clone(), prev));
        round.dirty_perfs.insert(key);
        Ok(())
    }

    fn insert_rows(
        &self,
        round: &mut Round,
        caches: &mut Caches,
        rec: &DataflowRecord,
        dt: &str,
        task_id: i64,
        s: SetRows<'_>,
    ) -> Result<()> {
        let schema = &s.table.schema;
        let task_col = schema.index_of(&task_column(dt))?;
        let attr_cols = s
            .set
            .attributes
            .iter()
            .map(|a| schema.index_of(&a.name))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let seq = set_sequence_key(&rec.spec.tag, &s.set.tag);
        for values in s.rows {
            let mut row = vec![Value::Null; schema.fields().len()];
            row[0] = Value::Int(self.next_key(round, &seq)?);
            row[task_col] = Value::Int(task_id);
            for (c, v) in attr_cols.iter().zip(values) {
                row[*c] = v;
            }
            round.push_row(s.table.id, row);
        }
        let key = (s.table.id, task_id);
        let prev = caches.produced.get(&key).copied();
        caches.produced.insert(key, prev.unwrap_or(0) + 1);
        round.undo.push(Undo::Produced(key, prev));
        Ok(())
    }

    /// `UPDATE ds_<set> SET <dt>_task_id = me WHERE <dep>_task_id = parent
    /// AND <dt>_task_id IS NULL`, over the round's staged rows and the
    /// stored ones.
    #[allow(clippy::too_many_arguments)]
    async fn link(
        &self,
        round: &mut Round,
        caches: &mut Caches,
        rec: &DataflowRecord,
        set: &SetSpec,
        dt: &str,
        dep: &str,
        me: i64,
        parent: i64,
    ) -> Result<()> {
        let table = self.set_table(rec, set)?;
        caches.check_set_table(self.storage, table.id);
        let generation = caches
            .produced
            .get(&(table.id, parent))
            .copied()
            .unwrap_or(0);
        let key = (table.id, me, parent);
        if caches.linked.get(&key) == Some(&generation) {
            return Ok(());
        }
        let consumer = table.schema.index_of(&task_column(dt))?;
        let producer = table.schema.index_of(&task_column(dep))?;
        let matches = |row: &Row| row[producer] == Value::Int(parent) && row[consumer].is_null();
        if let Some(rows) = round.new_rows.get_mut(&table.id) {
            for (i, row) in rows.iter_mut().enumerate() {
                if matches(row) {
                    let old = std::mem::replace(&mut row[consumer], Value::Int(me));
                    round.undo.push(Undo::Patch(table.id, i, consumer, old));
                }
            }
        }
        round.lock(self.storage, &table).await?;
        let snap = self.storage.snapshot(table.id)?;
        // Only the parent's rows are materialised: the producer column is
        // compared batch by batch (link never changes it, so stored values
        // are current); the consumer column is checked on the row as this
        // round may have edited it.
        let parent_id = Int32Array::new_scalar(
            i32::try_from(parent)
                .map_err(|_| EngineError::Invalid(format!("task id {parent} is out of range")))?,
        );
        let mask = |b: &RecordBatch| eq(b.column(producer), &parent_id);
        for src in self.storage.read_live_where(&snap, &mask).await? {
            for (i, pos) in src.positions.iter().enumerate() {
                let k = (table.id, src.source, *pos);
                let current = match round.stored_edits.get(&k) {
                    Some(r) => r.clone(),
                    None => crate::rows::batch_row(&src.batch, i)?,
                };
                if matches(&current) {
                    let mut new = current;
                    new[consumer] = Value::Int(me);
                    let prev = round.stored_edits.insert(k, new);
                    round.undo.push(Undo::StoredEdit(k, prev));
                }
            }
        }
        let prev = caches.linked.insert(key, generation);
        round.undo.push(Undo::Linked(key, prev));
        Ok(())
    }
}

/// A value sent for an attribute, as the column's type.
fn typed_value(ty: AttrType, v: Option<&str>, name: &str) -> Result<Value> {
    let Some(v) = v else { return Ok(Value::Null) };
    match ty {
        AttrType::Numeric => {
            let t = v.trim();
            if t.is_empty() || t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("null") {
                return Ok(Value::Null);
            }
            t.parse::<f64>().map(Value::Float).map_err(|_| {
                EngineError::Invalid(format!(
                    "attribute \"{name}\" is NUMERIC but \"{v}\" is not a number"
                ))
            })
        }
        AttrType::Text | AttrType::File | AttrType::LongText => Ok(Value::text(v)),
    }
}
