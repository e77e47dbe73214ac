//! Prepared statements simple enough to run without DataFusion.
//!
//! For a one-row INSERT or a lookup by primary key, DataFusion's physical
//! planning and the operators it builds cost more than the work itself
//! (a prepared one-row INSERT spent about half its server CPU there). At
//! Parse, a kept plan ([`crate::prepared::KeptPlan`]) of one of three
//! shapes is compiled into a [`Direct`] statement:
//! - `INSERT INTO t [(columns)] VALUES (one row)` whose values are `$n`
//!   parameters or constants: the row is built from the bound values,
//!   checked like the INSERT sink checks rows ([`crate::table::conform`])
//!   and staged in the statement's write set;
//! - `SELECT columns FROM t WHERE key = $n` on a table whose primary key
//!   is that one column: the key index finds the row and the row is read
//!   under the same lock ([`ProvTable::lookup_key_now`]; no snapshot of
//!   the table is taken, the statement reads nothing else);
//! - other queries made of inner equi-joins, equality filters, column
//!   projections, table scans and lineage calls, such that every table can
//!   be read with the values of one of its columns known: a chain of index
//!   lookups ([`crate::lookup_plan`], which says when it gives way).
//!
//! A direct statement gives way to the general path, so answers are always
//! the general path's, when it cannot take a call alone: a bound value
//! that does not convert exactly to the type the plan expects, uncommitted
//! inserts into the looked-up table in the open transaction, a NULL key.
//! (A statement whose tables changed since Parse is planned again before
//! it gets here: [`crate::prepared::Prepared::tables_unchanged`].)

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, LogicalPlan, TableScan, TableSource, WriteOp};
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::lookup_plan::LookupPlan;
use crate::prepared::KeptPlan;
use crate::table::{KeyLookup, ProvTable, conform_columns, key_operand};

/// A prepared statement that runs without DataFusion planning.
#[derive(Debug, Clone)]
pub(crate) enum Direct {
    /// One value per table column, in table order. The stored table is the
    /// one the session resolved at Parse.
    Insert {
        table: Arc<ProvTable>,
        values: Vec<Value>,
    },
    /// The key's value, and the table columns the result holds.
    Lookup {
        table: Arc<ProvTable>,
        key: Value,
        columns: Arc<[usize]>,
        schema: SchemaRef,
    },
    /// A query answered by index lookups ([`crate::lookup_plan`]).
    Chain(Arc<LookupPlan>),
}

/// Where a value of the statement comes from.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// `$n` (index n-1).
    Param(usize),
    Const(ScalarValue),
    Cast(Box<Value>, DataType),
}

/// A direct statement with its values bound, ready to run.
pub(crate) enum Bound {
    Insert {
        table: Arc<ProvTable>,
        values: Vec<ScalarValue>,
    },
    Lookup {
        table: Arc<ProvTable>,
        key: ScalarValue,
        columns: Arc<[usize]>,
        schema: SchemaRef,
    },
    Chain {
        plan: Arc<LookupPlan>,
        params: Vec<ScalarValue>,
    },
}

/// What running a bound direct statement gave.
pub(crate) enum Outcome {
    /// Rows staged by an INSERT.
    Inserted(u64),
    /// The rows of a lookup, in the statement's result schema.
    Rows(SchemaRef, SendableRecordBatchStream),
    /// The key index cannot answer alone (a NULL key, uncommitted inserts
    /// into the table): run the general plan.
    Unanswered,
}

impl Value {
    /// The value of a plan expression made of parameters, literals and casts.
    pub(crate) fn of(e: &Expr) -> Option<Value> {
        match e {
            Expr::Alias(a) => Value::of(&a.expr),
            Expr::Literal(v, None) => Some(Value::Const(v.clone())),
            Expr::Placeholder(p) => Some(Value::Param(crate::prepared::param_index(&p.id)?)),
            Expr::Cast(c) => Some(Value::Cast(
                Box::new(Value::of(&c.expr)?),
                c.field.data_type().clone(),
            )),
            _ => None,
        }
    }

    pub(crate) fn eval(&self, params: &[ScalarValue]) -> Result<ScalarValue> {
        match self {
            Value::Param(i) => params.get(*i).cloned().ok_or_else(|| {
                DataFusionError::Plan(format!("no value bound for parameter ${}", i + 1))
            }),
            Value::Const(v) => Ok(v.clone()),
            Value::Cast(v, t) => v.eval(params)?.cast_to(t),
        }
    }
}

impl Direct {
    /// The direct form of a kept plan, when it has one of the shapes.
    pub(crate) fn compile(kept: &KeptPlan) -> Option<Direct> {
        match kept.plan() {
            LogicalPlan::Dml(dml) => {
                if !matches!(dml.op, WriteOp::Insert(InsertOp::Append)) {
                    return None;
                }
                let table = prov_table(&dml.target)?;
                let width = table.def.schema.fields().len();
                let values = insert_values(&dml.input, width)?;
                Some(Direct::Insert { table, values })
            }
            plan => {
                lookup(plan).or_else(|| Some(Direct::Chain(Arc::new(LookupPlan::compile(plan)?))))
            }
        }
    }

    /// The statement with `params` (already converted to the kept plan's
    /// types) bound, or `None` when the general path must run it.
    /// `has_pending_inserts` says whether the open transaction holds
    /// uncommitted inserts into a table (a lookup cannot see those).
    pub(crate) fn bind(
        &self,
        params: &[ScalarValue],
        has_pending_inserts: impl Fn(provdb_storage::TableId) -> bool,
    ) -> Result<Option<Bound>> {
        Ok(Some(match self {
            Direct::Insert { table, values } => Bound::Insert {
                table: Arc::clone(table),
                values: values
                    .iter()
                    .map(|v| v.eval(params))
                    .collect::<Result<_>>()?,
            },
            Direct::Lookup {
                table,
                key,
                columns,
                schema,
            } => {
                if has_pending_inserts(table.def.id) {
                    return Ok(None);
                }
                Bound::Lookup {
                    table: Arc::clone(table),
                    key: key.eval(params)?,
                    columns: Arc::clone(columns),
                    schema: Arc::clone(schema),
                }
            }
            Direct::Chain(plan) => Bound::Chain {
                plan: Arc::clone(plan),
                params: params.to_vec(),
            },
        }))
    }
}

impl Bound {
    /// Run the statement: stage the INSERT's row in the statement's write
    /// set, or find the looked-up rows.
    pub(crate) async fn run(self, task: impl Fn() -> Arc<TaskContext>) -> Result<Outcome> {
        match self {
            Bound::Insert { table, values } => {
                let columns = values
                    .iter()
                    .map(|v| v.to_array())
                    .collect::<Result<Vec<ArrayRef>>>()?;
                let row = conform_columns(&table.def, &columns)?;
                table.session.stmt.lock().insert(table.def.id, row);
                Ok(Outcome::Inserted(1))
            }
            Bound::Lookup {
                table,
                key,
                columns,
                schema,
            } => match lookup_rows(&table, &key, &columns, &schema, task)? {
                Some(stream) => Ok(Outcome::Rows(schema, stream)),
                None => Ok(Outcome::Unanswered),
            },
            Bound::Chain { plan, params } => {
                let Some(batch) = plan.run(&params).await? else {
                    return Ok(Outcome::Unanswered);
                };
                let schema = Arc::clone(plan.schema());
                // no batch for no rows, as the general path
                let rows = futures::stream::iter((batch.num_rows() > 0).then_some(Ok(batch)));
                let stream = RecordBatchStreamAdapter::new(Arc::clone(&schema), rows);
                Ok(Outcome::Rows(schema, Box::pin(stream)))
            }
        }
    }
}

/// The rows of a key lookup, as a stream in the statement's result schema
/// (`None` when the key index cannot answer alone).
fn lookup_rows(
    table: &ProvTable,
    key: &ScalarValue,
    columns: &[usize],
    schema: &SchemaRef,
    task: impl Fn() -> Arc<TaskContext>,
) -> Result<Option<SendableRecordBatchStream>> {
    // built once, and only for a row read from a Parquet file
    let task_ctx = std::cell::OnceCell::new();
    let task = || Arc::clone(task_ctx.get_or_init(&task));
    let found = {
        let txn = table.session.txn.lock();
        table.lookup_key_now(&txn, key, columns, || task().runtime_env())?
    };
    let out = Arc::clone(schema);
    let in_schema = move |b: RecordBatch| -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            Arc::clone(&out),
            b.columns().to_vec(),
        )?)
    };
    let stream = match found {
        KeyLookup::Rows(rows) => {
            let rows = rows
                .iter()
                .map(|b| in_schema(b.project(columns)?))
                .collect::<Vec<_>>();
            futures::stream::iter(rows).boxed()
        }
        KeyLookup::Parquet(plan, file) => {
            // the closure holds the segment file until the row is read
            execute_stream(plan, task())?
                .map(move |b| {
                    let _held = &file;
                    in_schema(b?)
                })
                .boxed()
        }
        KeyLookup::Unanswered => return Ok(None),
    };
    Ok(Some(Box::pin(RecordBatchStreamAdapter::new(
        Arc::clone(schema),
        stream,
    ))))
}

/// The stored table behind a plan's table source, if it is one.
pub(crate) fn prov_table(source: &Arc<dyn TableSource>) -> Option<Arc<ProvTable>> {
    let provider: Arc<dyn Any + Send + Sync> = source_as_provider(source).ok()?;
    provider.downcast::<ProvTable>().ok()
}

/// One value per table column for `INSERT ... VALUES (one row)`: the
/// input is `VALUES`, or a projection of constants and `VALUES` columns.
fn insert_values(input: &LogicalPlan, width: usize) -> Option<Vec<Value>> {
    let row = |values: &datafusion::logical_expr::Values| -> Option<Vec<Value>> {
        match values.values.as_slice() {
            [row] => row.iter().map(Value::of).collect(),
            _ => None,
        }
    };
    let out = match input {
        LogicalPlan::Values(v) => row(v)?,
        LogicalPlan::Projection(p) => {
            let LogicalPlan::Values(v) = p.input.as_ref() else {
                return None;
            };
            let [source_row] = v.values.as_slice() else {
                return None;
            };
            p.expr
                .iter()
                .map(|e| match e.clone().unalias() {
                    Expr::Column(c) => {
                        let i = v.schema.index_of_column(&c).ok()?;
                        Value::of(source_row.get(i)?)
                    }
                    other => Value::of(&other),
                })
                .collect::<Option<Vec<_>>>()?
        }
        _ => return None,
    };
    (out.len() == width).then_some(out)
}

/// `[Projection of columns] -> Filter(key = $n) -> TableScan` on a stored
/// table with a one-column key: the table, and the key value (holding a
/// parameter) and result columns.
fn lookup(plan: &LogicalPlan) -> Option<Direct> {
    let (outputs, filter) = match plan {
        LogicalPlan::Projection(p) => (Some(&p.expr), p.input.as_ref()),
        other => (None, other),
    };
    let LogicalPlan::Filter(filter_node) = filter else {
        return None;
    };
    let LogicalPlan::TableScan(scan) = filter_node.input.as_ref() else {
        return None;
    };
    if scan.fetch.is_some() {
        return None;
    }
    let table = prov_table(&scan.source)?;
    let def = &table.def;
    let key = Value::of(key_operand(
        &filter_node.predicate,
        table.single_key_field()?.name(),
    )?)?;
    if matches!(key, Value::Const(_)) {
        return None; // a planned scan takes constant keys through the index too
    }
    let scanned = scanned_columns(scan, def.schema.fields().len());
    let columns: Vec<usize> = match outputs {
        None => scanned,
        Some(exprs) => exprs
            .iter()
            .map(|e| match e.clone().unalias() {
                Expr::Column(c) => scanned
                    .get(scan.projected_schema.index_of_column(&c).ok()?)
                    .copied(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
    };
    let schema = crate::output_names::output_schema(plan);
    Some(Direct::Lookup {
        table,
        key,
        columns: columns.into(),
        schema,
    })
}

/// The table columns a scan reads, in its output order.
fn scanned_columns(scan: &TableScan, width: usize) -> Vec<usize> {
    scan.projection
        .clone()
        .unwrap_or_else(|| (0..width).collect())
}
