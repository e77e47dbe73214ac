//! Point questions answered as chains of index lookups, without DataFusion.
//!
//! DLProv's questions about one model join a handful of tables along keys:
//! the model's row (found by `model_dir = $1`), its training task by id,
//! the task's execution by tag, the execution's hardware by id. Run as a
//! kept physical plan, each execution still pays DataFusion's per-execution
//! machinery (operators instantiated again, streams set up, every join's
//! build side collected and hashed): about 0.18 ms of server CPU for DLProv's
//! Q8, more than indexed PostgreSQL's whole round trip (0.12-0.17 ms).
//!
//! At Parse a kept plan made only of inner equi-joins, equality filters
//! against `$n` or constants, column projections, aliases, table scans and
//! lineage calls (with, on top, an `ORDER BY` of output columns, a constant
//! `LIMIT` and a projection, of columns or of expressions without
//! parameters or subqueries) is compiled into a [`LookupPlan`]: a tree that
//! says, for each join, which side is read first, so that every stored
//! table is read with the values of one of its columns known. A
//! `lineage()` or `lineage_path()` call is read whole: its arguments, bound
//! at the execution, say where the walk starts
//! ([`crate::lineage::udtf::walk_exec`]). An execution snapshots
//! the tables, reads the first side of each join through its filter's
//! values, takes the distinct join keys it found, and reads the other side
//! with those keys ([`ProvTable::rows_with_keys`]: batches whose min/max
//! rule the keys out are skipped, the column's index finds the rows where
//! it can), then checks every read row exactly against every value it was
//! read for and joins the two small sides by hashing.
//!
//! Keys and filtered columns are of the types a join's keys may narrow a
//! scan by ([`keyable`]: not floats, whose kernels and scalars disagree on
//! -0.0 and NaN, nor nested types).
//!
//! The chain gives way to the general path ([`Outcome::Unanswered`]), so
//! answers are always the general path's, when it cannot answer cheaply
//! or alone: a filter value that is NULL or not of its column's type, more
//! than [`MAX_KEYS`] join keys or [`MAX_ROWS`] rows read or joined at one
//! step (not a point question after all). With the segment cache off no
//! chain is compiled: segments would have to be read from Parquet.
//!
//! [`Outcome::Unanswered`]: crate::direct::Outcome::Unanswered

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, Scalar, UInt32Array, new_empty_array,
};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{
    SortColumn, SortOptions, and, concat, filter, lexsort_to_indices, or, take,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{JoinType, NullEquality, Result, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::physical_expr::expressions::{Column as PhysicalColumn, in_list, lit};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::physical_plan::ExecutionPlan;
use futures::FutureExt;
use futures::future::BoxFuture;
use provdb_storage::{TableId, TableSnapshot};

use crate::batches::batch_of;
use crate::direct::{Value, prov_table};
use crate::key_join::keyable;
use crate::table::ProvTable;
use crate::txn::WriteSet;

/// Most distinct keys one join hands to the table it looks up.
pub const MAX_KEYS: usize = 1024;

/// Most rows a step may read or produce.
pub const MAX_ROWS: usize = 16_384;

/// A kept query compiled into index lookups.
#[derive(Debug)]
pub(crate) struct LookupPlan {
    root: Node,
    /// `ORDER BY` on the root's columns, and the sort's own fetch.
    order: Vec<(usize, SortOptions)>,
    sort_fetch: Option<usize>,
    /// A constant `OFFSET` / `LIMIT` after the sort.
    skip: usize,
    fetch: Option<usize>,
    /// Columns computed from the root's before the sort.
    computed: Outputs,
    /// The result's columns, from those after the sort and limit.
    outputs: Outputs,
    schema: SchemaRef,
    /// Every stored table read, each once.
    tables: Vec<Arc<ProvTable>>,
}

/// The result's columns, made from the root's.
#[derive(Debug)]
enum Outputs {
    /// The root's columns.
    All,
    /// Some of them (a projection of columns above the sort).
    Columns(Vec<usize>),
    /// Expressions over them (no parameters or subqueries), and the root's
    /// schema, which the expressions read.
    Computed(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
}

/// One step of the tree; its output is a list of columns.
#[derive(Debug)]
enum Node {
    /// Table columns `columns` of the rows whose values are known.
    Scan {
        table: Arc<ProvTable>,
        columns: Vec<usize>,
    },
    /// The rows of a lineage call, read whole.
    Walk {
        provider: Arc<dyn TableProvider>,
        projection: Option<Vec<usize>>,
    },
    /// The input's rows whose column equals a value, per term.
    Filter {
        input: Box<Node>,
        terms: Vec<(usize, Value)>,
    },
    /// Some of the input's columns.
    Project {
        input: Box<Node>,
        columns: Vec<usize>,
    },
    Join(Join),
}

/// An inner equi-join: its output is the left's columns, then the
/// right's. `left_first`: the left side is read first and its keys (first
/// pair) look up the right side; otherwise the other way round.
#[derive(Debug)]
struct Join {
    left: Box<Node>,
    right: Box<Node>,
    on: Vec<(usize, usize)>,
    left_width: usize,
    left_first: bool,
}

/// Values one column of a step's output must hold one of (distinct, none
/// NULL, each of the column's type).
type Constraint = (usize, Arc<[ScalarValue]>);

/// Columns of equal length.
struct Rel {
    columns: Vec<ArrayRef>,
    rows: usize,
}

/// The snapshot and transaction an execution reads.
struct Reading<'a> {
    params: &'a [ScalarValue],
    snapshots: HashMap<TableId, TableSnapshot>,
    txn: WriteSet,
}

impl LookupPlan {
    /// The lookup form of an optimised plan, when it has one (module doc).
    pub(crate) fn compile(plan: &LogicalPlan) -> Option<LookupPlan> {
        let schema = crate::output_names::output_schema(plan);
        let mut node = plan;
        let mut outputs = Outputs::All;
        if let LogicalPlan::Projection(p) = node {
            let input = p.input.as_ref();
            let above_sort = matches!(input, LogicalPlan::Sort(_) | LogicalPlan::Limit(_));
            match column_indices(&p.expr, input) {
                Some(columns) if above_sort => {
                    outputs = Outputs::Columns(columns);
                    node = input;
                }
                Some(_) => {} // a projection inside the tree
                None => {
                    let exprs = computed_exprs(&p.expr, input)?;
                    outputs = Outputs::Computed(exprs, Arc::new(input.schema().as_arrow().clone()));
                    node = input;
                }
            }
        }
        let (mut skip, mut fetch) = (0, None);
        let mut computed = Outputs::All;
        if let LogicalPlan::Limit(limit) = node {
            let SkipType::Literal(s) = limit.get_skip_type().ok()? else {
                return None;
            };
            let FetchType::Literal(f) = limit.get_fetch_type().ok()? else {
                return None;
            };
            (skip, fetch) = (s, f);
            node = limit.input.as_ref();
        }
        let (mut order, mut sort_fetch) = (Vec::new(), None);
        if let LogicalPlan::Sort(sort) = node {
            for e in &sort.expr {
                let Expr::Column(c) = &e.expr else {
                    return None;
                };
                let options = SortOptions {
                    descending: !e.asc,
                    nulls_first: e.nulls_first,
                };
                order.push((sort.input.schema().index_of_column(c).ok()?, options));
            }
            sort_fetch = sort.fetch;
            node = sort.input.as_ref();
        }
        if let LogicalPlan::Projection(p) = node
            && column_indices(&p.expr, p.input.as_ref()).is_none()
        {
            let input = p.input.as_ref();
            let exprs = computed_exprs(&p.expr, input)?;
            computed = Outputs::Computed(exprs, Arc::new(input.schema().as_arrow().clone()));
            node = input;
        }
        let root = Node::compile(node, &[])?;
        let mut tables = Vec::new();
        root.collect_tables(&mut tables);
        Some(LookupPlan {
            root,
            computed,
            order,
            sort_fetch,
            skip,
            fetch,
            outputs,
            schema,
            tables,
        })
    }

    /// The result schema.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Run with `params` (converted to the plan's types): the result, or
    /// `None` when the general path must answer (module doc).
    pub(crate) async fn run(&self, params: &[ScalarValue]) -> Result<Option<RecordBatch>> {
        let mut snapshots = HashMap::with_capacity(self.tables.len());
        let mut txn = WriteSet::default();
        if let Some(first) = self.tables.first() {
            let (session, storage) = (&first.session, &first.storage);
            let ids: Vec<TableId> = self.tables.iter().map(|t| t.def.id).collect();
            let external = |e| datafusion::common::DataFusionError::External(Box::new(e));
            session.snapshot_tables(storage, &ids).map_err(external)?;
            for id in ids {
                snapshots.insert(id, session.snapshot(storage, id).map_err(external)?);
            }
            txn = session.txn.lock().clone();
        }
        let reading = Reading {
            params,
            snapshots,
            txn,
        };
        let Some(rel) = self.root.eval(&reading, Vec::new()).await? else {
            return Ok(None);
        };
        self.finish(rel).map(Some)
    }

    /// Compute, sort, limit and project the root's rows into the result.
    fn finish(&self, rel: Rel) -> Result<RecordBatch> {
        let mut rel = Rel {
            columns: self.computed.apply(rel.columns, rel.rows)?,
            rows: rel.rows,
        };
        if !self.order.is_empty() {
            let keys: Vec<SortColumn> = self
                .order
                .iter()
                .map(|&(i, options)| SortColumn {
                    values: Arc::clone(&rel.columns[i]),
                    options: Some(options),
                })
                .collect();
            let rows = lexsort_to_indices(&keys, self.sort_fetch)?;
            rel = rel.take(&rows)?;
        }
        let start = self.skip.min(rel.rows);
        let len = self
            .fetch
            .map_or(rel.rows - start, |f| f.min(rel.rows - start));
        let rows = rel.columns.iter().map(|c| c.slice(start, len)).collect();
        let columns = self.outputs.apply(rows, len)?;
        batch_of(&self.schema, columns, len)
    }
}

impl Outputs {
    /// These columns made from `columns` (`rows` long).
    fn apply(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<Vec<ArrayRef>> {
        Ok(match self {
            Outputs::All => columns,
            Outputs::Columns(picked) => picked.iter().map(|&i| Arc::clone(&columns[i])).collect(),
            Outputs::Computed(exprs, schema) => {
                let input = batch_of(schema, columns, rows)?;
                exprs
                    .iter()
                    .map(|e| e.evaluate(&input)?.into_array(rows))
                    .collect::<Result<_>>()?
            }
        })
    }
}

impl Node {
    /// Compile `plan`, whose output columns `constrained` will have their
    /// values known when it runs; `None` when some scan would be read
    /// without a known value, or a node is not of the accepted kinds.
    fn compile(plan: &LogicalPlan, constrained: &[usize]) -> Option<Node> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                // The providers take filters inexactly: a Filter above the
                // scan holds every one of them.
                if scan.fetch.is_some() {
                    return None;
                }
                let provider = source_as_provider(&scan.source).ok()?;
                if crate::lineage::udtf::is_walk(provider.as_ref()) {
                    let projection = scan.projection.clone();
                    return Some(Node::Walk {
                        provider,
                        projection,
                    });
                }
                if constrained.is_empty() {
                    return None;
                }
                let table = prov_table(&scan.source)?;
                if !table.storage.segment_cache_enabled() {
                    return None;
                }
                let width = table.def.schema.fields().len();
                let columns = scan
                    .projection
                    .clone()
                    .unwrap_or_else(|| (0..width).collect());
                Some(Node::Scan { table, columns })
            }
            LogicalPlan::Filter(f) => {
                let terms = split_conjunction(&f.predicate)
                    .into_iter()
                    .map(|t| equality_term(t, f.input.as_ref()))
                    .collect::<Option<Vec<_>>>()?;
                let mut known = constrained.to_vec();
                known.extend(terms.iter().map(|(c, _)| *c));
                let input = Box::new(Node::compile(f.input.as_ref(), &known)?);
                Some(Node::Filter { input, terms })
            }
            LogicalPlan::Projection(p) => {
                let columns = column_indices(&p.expr, p.input.as_ref())?;
                let known: Vec<usize> = constrained.iter().map(|&c| columns[c]).collect();
                let input = Box::new(Node::compile(p.input.as_ref(), &known)?);
                Some(Node::Project { input, columns })
            }
            LogicalPlan::SubqueryAlias(a) => Node::compile(a.input.as_ref(), constrained),
            LogicalPlan::Join(join) => Node::compile_join(join, constrained),
            _ => None,
        }
    }

    fn compile_join(join: &datafusion::logical_expr::Join, constrained: &[usize]) -> Option<Node> {
        if join.join_type != JoinType::Inner
            || join.filter.is_some()
            || join.null_equality != NullEquality::NullEqualsNothing
        {
            return None;
        }
        let (l_plan, r_plan) = (join.left.as_ref(), join.right.as_ref());
        let on = join
            .on
            .iter()
            .map(|(l, r)| {
                let l = column_index(l, l_plan)?;
                let r = column_index(r, r_plan)?;
                let t = l_plan.schema().field(l).data_type();
                (t == r_plan.schema().field(r).data_type() && keyable(t)).then_some((l, r))
            })
            .collect::<Option<Vec<_>>>()?;
        let &(l_key, r_key) = on.first()?;
        let left_width = l_plan.schema().fields().len();
        let l_known: Vec<usize> = constrained
            .iter()
            .copied()
            .filter(|&c| c < left_width)
            .collect();
        let r_known: Vec<usize> = constrained
            .iter()
            .filter_map(|&c| c.checked_sub(left_width))
            .collect();
        let with = |known: &[usize], key: usize| -> Vec<usize> {
            known.iter().copied().chain([key]).collect()
        };
        let (left, right, left_first) = match Node::compile(l_plan, &l_known) {
            Some(left) => (left, Node::compile(r_plan, &with(&r_known, r_key))?, true),
            None => {
                let right = Node::compile(r_plan, &r_known)?;
                (Node::compile(l_plan, &with(&l_known, l_key))?, right, false)
            }
        };
        Some(Node::Join(Join {
            left: Box::new(left),
            right: Box::new(right),
            on,
            left_width,
            left_first,
        }))
    }

    fn collect_tables(&self, out: &mut Vec<Arc<ProvTable>>) {
        match self {
            Node::Scan { table, .. } => {
                if !out.iter().any(|t| t.def.id == table.def.id) {
                    out.push(Arc::clone(table));
                }
            }
            Node::Walk { .. } => {}
            Node::Filter { input, .. } | Node::Project { input, .. } => input.collect_tables(out),
            Node::Join(join) => {
                join.left.collect_tables(out);
                join.right.collect_tables(out);
            }
        }
    }

    /// The node's rows whose columns hold the values `known` gives, or
    /// `None` when the general path must answer.
    fn eval<'a>(
        &'a self,
        reading: &'a Reading<'a>,
        known: Vec<Constraint>,
    ) -> BoxFuture<'a, Result<Option<Rel>>> {
        async move {
            match self {
                Node::Scan { table, columns } => scan(table, columns, reading, &known).await,
                Node::Walk {
                    provider,
                    projection,
                } => walk(provider.as_ref(), projection.as_ref(), &known),
                Node::Filter { input, terms } => {
                    let mut known = known;
                    for (column, value) in terms {
                        let v = value.eval(reading.params)?;
                        if v.is_null() {
                            return Ok(None);
                        }
                        known.push((*column, Arc::from([v])));
                    }
                    input.eval(reading, known).await
                }
                Node::Project { input, columns } => {
                    let known = known.into_iter().map(|(c, v)| (columns[c], v)).collect();
                    let Some(rel) = input.eval(reading, known).await? else {
                        return Ok(None);
                    };
                    let projected = columns.iter().map(|&i| Arc::clone(&rel.columns[i]));
                    Ok(Some(Rel {
                        columns: projected.collect(),
                        rows: rel.rows,
                    }))
                }
                Node::Join(join) => join.eval(reading, known).await,
            }
        }
        .boxed()
    }
}

impl Join {
    /// A join's rows: the side read first hands its distinct keys to the
    /// other, then the two are joined.
    async fn eval(&self, reading: &Reading<'_>, known: Vec<Constraint>) -> Result<Option<Rel>> {
        let Join {
            left,
            right,
            on,
            left_width,
            left_first,
        } = self;
        let (l_known, r_known): (Vec<_>, Vec<_>) =
            known.into_iter().partition(|(c, _)| c < left_width);
        let r_known = r_known
            .into_iter()
            .map(|(c, v)| (c - left_width, v))
            .collect();
        let ((first, first_known, key), (then, mut then_known, then_key)) = if *left_first {
            ((left, l_known, on[0].0), (right, r_known, on[0].1))
        } else {
            ((right, r_known, on[0].1), (left, l_known, on[0].0))
        };
        let Some(a) = first.eval(reading, first_known).await? else {
            return Ok(None);
        };
        let Some(keys) = distinct_keys(&a.columns[key])? else {
            return Ok(None);
        };
        then_known.push((then_key, keys));
        let Some(b) = then.eval(reading, then_known).await? else {
            return Ok(None);
        };
        let (l, r) = if *left_first { (a, b) } else { (b, a) };
        hash_join(&l, &r, on)
    }
}

/// The rows of a table whose columns hold the values `known` gives: read
/// through the constraint with the fewest values, checked against all.
async fn scan(
    table: &ProvTable,
    columns: &[usize],
    reading: &Reading<'_>,
    known: &[Constraint],
) -> Result<Option<Rel>> {
    let Some((lookup, keys)) = known.iter().min_by_key(|(_, keys)| keys.len()) else {
        return Ok(None);
    };
    let types: Vec<&DataType> = columns
        .iter()
        .map(|&i| table.def.schema.field(i).data_type())
        .collect();
    if keys.is_empty() {
        return Ok(Some(Rel::concat(&[], &types)?));
    }
    if !typed_as(known, &types) {
        return Ok(None);
    }
    let Some(snap) = reading.snapshots.get(&table.def.id) else {
        return Ok(None);
    };
    let found = table
        .rows_with_keys(snap, &reading.txn, columns[*lookup], keys, columns)
        .await?;
    let Some(batches) = found else {
        return Ok(None);
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > MAX_ROWS.saturating_mul(4) {
        return Ok(None);
    }
    Rel::concat(&batches, &types)?.keep(known)
}

/// The rows of a lineage call holding the values `known` gives (the walk
/// is read whole: its arguments say where it starts).
fn walk(
    provider: &dyn TableProvider,
    projection: Option<&Vec<usize>>,
    known: &[Constraint],
) -> Result<Option<Rel>> {
    let exec = crate::lineage::udtf::walk_exec(provider, projection)?;
    let schema = exec.schema();
    let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
    if !typed_as(known, &types) {
        return Ok(None);
    }
    let Some(batches) = exec.collect_rows(MAX_ROWS.saturating_mul(4))? else {
        return Ok(None);
    };
    Rel::concat(&batches, &types)?.keep(known)
}

/// Whether every value `known` gives is of its column's type.
fn typed_as(known: &[Constraint], types: &[&DataType]) -> bool {
    known
        .iter()
        .all(|(c, values)| values.iter().all(|v| &v.data_type() == types[*c]))
}

/// Up to this many values, membership is one comparison kernel per value;
/// past it, one pass through a hash set of them.
const KERNEL_VALUES: usize = 8;

/// Rows of `array` equal to one of `values` (NULL where the row is NULL).
fn holding(array: &ArrayRef, values: &[ScalarValue]) -> Result<BooleanArray> {
    if values.len() > KERNEL_VALUES {
        let schema = Schema::new(vec![Field::new("k", array.data_type().clone(), true)]);
        let list = values.iter().map(|v| lit(v.clone())).collect();
        let member = in_list(Arc::new(PhysicalColumn::new("k", 0)), list, &false, &schema)?;
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::clone(array)])?;
        let out = member.evaluate(&batch)?.into_array(array.len())?;
        return Ok(out.as_boolean().clone());
    }
    let mut mask: Option<BooleanArray> = None;
    for v in values {
        let m = eq(array, &Scalar::new(v.to_array()?))?;
        mask = Some(match mask {
            Some(prev) => or(&prev, &m)?,
            None => m,
        });
    }
    Ok(mask.unwrap_or_else(|| BooleanArray::from(vec![false; array.len()])))
}

/// The distinct non-NULL values of `array`; `None` past [`MAX_KEYS`].
fn distinct_keys(array: &ArrayRef) -> Result<Option<Arc<[ScalarValue]>>> {
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    for i in 0..array.len() {
        if array.is_null(i) {
            continue;
        }
        let v = ScalarValue::try_from_array(array, i)?;
        if seen.insert(v.clone()) {
            keys.push(v);
            if keys.len() > MAX_KEYS {
                return Ok(None);
            }
        }
    }
    Ok(Some(keys.into()))
}

/// The inner equi-join of two small relations on the column pairs `on`
/// (NULL keys match nothing): the left's columns, then the right's.
fn hash_join(left: &Rel, right: &Rel, on: &[(usize, usize)]) -> Result<Option<Rel>> {
    let key = |rel: &Rel, columns: &mut dyn Iterator<Item = usize>, row: usize| {
        columns
            .map(|c| {
                let array = &rel.columns[c];
                if array.is_null(row) {
                    Ok(None)
                } else {
                    ScalarValue::try_from_array(array, row).map(Some)
                }
            })
            .collect::<Result<Option<Vec<ScalarValue>>>>()
    };
    let mut built: HashMap<Vec<ScalarValue>, Vec<u32>> = HashMap::new();
    for row in 0..right.rows {
        if let Some(k) = key(right, &mut on.iter().map(|p| p.1), row)? {
            built.entry(k).or_default().push(row as u32);
        }
    }
    let (mut l_rows, mut r_rows) = (Vec::new(), Vec::new());
    for row in 0..left.rows {
        let Some(k) = key(left, &mut on.iter().map(|p| p.0), row)? else {
            continue;
        };
        for &r in built.get(&k).into_iter().flatten() {
            l_rows.push(row as u32);
            r_rows.push(r);
            if l_rows.len() > MAX_ROWS {
                return Ok(None);
            }
        }
    }
    let (l_rows, r_rows) = (UInt32Array::from(l_rows), UInt32Array::from(r_rows));
    let mut columns = left.take(&l_rows)?.columns;
    columns.extend(right.take(&r_rows)?.columns);
    Ok(Some(Rel {
        columns,
        rows: l_rows.len(),
    }))
}

impl Rel {
    /// The rows of `batches`, whose columns are of `types`.
    fn concat(batches: &[RecordBatch], types: &[&DataType]) -> Result<Rel> {
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let columns = match batches {
            [] => types.iter().map(|t| new_empty_array(t)).collect(),
            [one] => one.columns().to_vec(),
            many => (0..types.len())
                .map(|i| {
                    let parts: Vec<&dyn Array> =
                        many.iter().map(|b| b.column(i).as_ref()).collect();
                    concat(&parts)
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        Ok(Rel { columns, rows })
    }

    /// The rows whose columns hold the values `known` gives; `None` past
    /// [`MAX_ROWS`].
    fn keep(self, known: &[Constraint]) -> Result<Option<Rel>> {
        let mut mask: Option<BooleanArray> = None;
        for (c, values) in known {
            let m = holding(&self.columns[*c], values)?;
            mask = Some(match mask {
                Some(prev) => and(&prev, &m)?,
                None => m,
            });
        }
        let rel = match mask {
            Some(m) => self.filter(&m)?,
            None => self,
        };
        Ok((rel.rows <= MAX_ROWS).then_some(rel))
    }

    fn take(&self, rows: &UInt32Array) -> Result<Rel> {
        let columns = self
            .columns
            .iter()
            .map(|c| take(c.as_ref(), rows, None))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Rel {
            columns,
            rows: rows.len(),
        })
    }

    fn filter(&self, mask: &BooleanArray) -> Result<Rel> {
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|c| filter(c.as_ref(), mask))
            .collect::<std::result::Result<_, _>>()?;
        let rows = mask.true_count();
        Ok(Rel { columns, rows })
    }
}

/// `column = value` (either side) with `column` a column of `input` and
/// `value` a parameter, a constant or a cast of one.
fn equality_term(term: &Expr, input: &LogicalPlan) -> Option<(usize, Value)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = term else {
        return None;
    };
    if *op != Operator::Eq {
        return None;
    }
    let (column, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), v) | (v, Expr::Column(c)) => (c, v),
        _ => return None,
    };
    let index = input.schema().index_of_column(column).ok()?;
    if !keyable(input.schema().field(index).data_type()) {
        return None;
    }
    Some((index, Value::of(value)?))
}

/// The physical form of a projection's expressions over `input`, when
/// none holds a parameter or a subquery.
fn computed_exprs(exprs: &[Expr], input: &LogicalPlan) -> Option<Vec<Arc<dyn PhysicalExpr>>> {
    let props = ExecutionProps::new();
    exprs
        .iter()
        .map(|e| {
            let unsupported = e
                .exists(|x| {
                    Ok(matches!(
                        x,
                        Expr::Placeholder(_)
                            | Expr::ScalarSubquery(_)
                            | Expr::Exists(_)
                            | Expr::InSubquery(_)
                            | Expr::OuterReferenceColumn(..)
                            | Expr::AggregateFunction(_)
                            | Expr::WindowFunction(_)
                    ))
                })
                .unwrap_or(true);
            if unsupported {
                return None;
            }
            create_physical_expr(
                e,
                input.schema(),
                &props,
                &PhysicalPlanningContext::default(),
            )
            .ok()
        })
        .collect()
}

/// The input column each expression of a projection of columns reads.
fn column_indices(exprs: &[Expr], input: &LogicalPlan) -> Option<Vec<usize>> {
    exprs.iter().map(|e| column_index(e, input)).collect()
}

fn column_index(e: &Expr, input: &LogicalPlan) -> Option<usize> {
    match e {
        Expr::Alias(a) => column_index(&a.expr, input),
        Expr::Column(c) => input.schema().index_of_column(c).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, StringArray};

    use super::*;

    /// Whether each row of `array` is one of `values`, checked row by row.
    fn expected(array: &ArrayRef, values: &[ScalarValue]) -> Vec<bool> {
        (0..array.len())
            .map(|i| {
                let v = ScalarValue::try_from_array(array, i).expect("scalar");
                !v.is_null() && values.contains(&v)
            })
            .collect()
    }

    #[test]
    fn membership_by_kernels_and_by_hash_set_agree() {
        let ints: ArrayRef = Arc::new(Int32Array::from_iter(
            (0..200).map(|i| (i % 10 != 0).then_some(i % 37)),
        ));
        let texts: ArrayRef = Arc::new(StringArray::from_iter(
            (0..200).map(|i| (i % 7 != 0).then(|| format!("run-{}", i % 23))),
        ));
        for n in [0, 1, 3, KERNEL_VALUES, KERNEL_VALUES + 1, 40] {
            let int_values: Vec<ScalarValue> = (0..n as i32)
                .map(|v| ScalarValue::Int32(Some(v * 2)))
                .collect();
            let text_values: Vec<ScalarValue> = (0..n)
                .map(|v| ScalarValue::Utf8(Some(format!("run-{}", v * 3))))
                .collect();
            for (array, values) in [(&ints, &int_values), (&texts, &text_values)] {
                let got = holding(array, values).expect("holding");
                let got: Vec<bool> = (0..got.len())
                    .map(|i| got.is_valid(i) && got.value(i))
                    .collect();
                assert_eq!(got, expected(array, values), "{n} values");
            }
        }
    }
}
