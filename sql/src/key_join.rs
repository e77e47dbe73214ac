//! Key-driven probe scans for the hash joins of kept plans.
//!
//! A point question joins one model's row with the rows it points at:
//! `otrainedmodel` (one row, found by `model_dir`) to `task` (fifty
//! thousand rows) by `task.id`, then to `dataflow_execution` by `tag`, and
//! so on. DataFusion's hash join reads its build side (the one row) and
//! then hashes and probes every row of the probe side: in a kept plan,
//! where the run-time filters that would narrow the probe side are not
//! made (renewing them costs more than they save on tables this size),
//! that was a quarter of the server's time on DLProv's Q8.
//!
//! A kept plan is therefore rewritten once ([`key_joins`]): for a hash join
//! that collects its build side and whose probe-side key is a column of a
//! table scan (passed through filters, sorts and projections, or a grouping
//! column of an aggregate: the eager aggregation of
//! [`crate::eager_aggregate`] counts a run's epochs before the join), a
//! [`KeyTap`] over the build side records the build side's distinct keys
//! (at most [`MAX_KEYS`]) into a [`KeySlot`], and the scan, which the hash
//! join asks for its first batch only after the build side is complete, is
//! gathered then with those keys ([`crate::table::ProvTable::gather`]): one
//! key on the primary key is read through the key index; otherwise batches
//! whose min/max rule every key out are left out, the keys on a text or
//! integer column are found in its index ([`crate::eq_index`]), and the
//! other rows are filtered. The join still matches what the scan yields, so
//! a scan that keeps more rows (too many keys, keys it cannot use) only
//! costs time.
//!
//! Only joins that never output a probe-side row without a build-side
//! match are rewritten (inner, left, left semi/anti, right semi), and only
//! when NULL keys match nothing.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::kernels::partition::partition;
use datafusion::arrow::compute::{SortOptions, concat, sort, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality, Result, ScalarValue};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal, in_list};
use datafusion::physical_expr::{PhysicalExpr, conjunction};
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::Stream;
use parking_lot::Mutex;

use crate::filter_aggregate::FilterAggregateExec;
use crate::kept_physical::DeferredScan;
use crate::zone_map::Bound;

/// Most distinct build-side keys handed to a probe scan; with more, the
/// scan reads every row.
pub const MAX_KEYS: usize = 256;

/// Build-side keys recorded as they come before they are made distinct
/// (a build side with many repeated keys is compacted on the way).
const PENDING_KEYS: usize = 4 * MAX_KEYS;

/// The distinct keys one execution's build side produced.
#[derive(Debug, Default)]
pub(crate) struct KeySlot {
    keys: Mutex<Keys>,
    /// Executions whose probe scan got keys (tests read it).
    narrowed: AtomicU64,
}

#[derive(Debug, Default)]
struct Keys {
    /// The key arrays of the build side's batches (or, once compacted,
    /// their distinct keys), while at most [`MAX_KEYS`] are distinct.
    arrays: Vec<ArrayRef>,
    /// More than [`MAX_KEYS`] distinct keys: only their range is kept.
    overflow: bool,
    /// Once overflowed, the smallest and largest key so far; `None` when
    /// a batch's keys had no range (a type without an order).
    range: Option<(ScalarValue, ScalarValue)>,
    /// The build side ended.
    complete: bool,
}

/// What a finished build side tells its probe scan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BuildKeys {
    /// Its distinct keys (at most [`MAX_KEYS`]), ascending.
    Values(Vec<ScalarValue>),
    /// Too many keys: the smallest and the largest.
    Range(ScalarValue, ScalarValue),
}

impl KeySlot {
    /// Forget the previous execution's keys.
    fn start(&self) {
        *self.keys.lock() = Keys::default();
    }

    /// Take in the keys of one build-side batch. The arrays are kept as
    /// they are (a build side of a hundred rows costs a clone of each
    /// array); past [`PENDING_KEYS`] rows they are made distinct, and past
    /// [`MAX_KEYS`] distinct keys only their range is kept.
    fn record(&self, keys: &ArrayRef) -> Result<()> {
        let mut k = self.keys.lock();
        if k.overflow {
            let range = k.range.take();
            k.range = match (range, crate::zone_map::compute(keys)) {
                (Some(range), Some((lo, hi))) => Some(widen(range, lo, hi)),
                // NULLs only: nothing to take in
                (range, None) if keys.null_count() == keys.len() => range,
                _ => None,
            };
            return Ok(());
        }
        k.arrays.push(Arc::clone(keys));
        if k.arrays.iter().map(|a| a.len()).sum::<usize>() <= PENDING_KEYS {
            return Ok(());
        }
        let distinct = distinct(&k.arrays);
        match distinct {
            Some(d) if d.len() <= MAX_KEYS => k.arrays = vec![d],
            // Too many: their range from now on.
            d => {
                k.overflow = true;
                k.arrays.clear();
                k.range = d.and_then(|d| crate::zone_map::compute(&d));
            }
        }
        Ok(())
    }

    fn finish(&self) {
        self.keys.lock().complete = true;
    }

    /// The keys of a build side that ended: their values, or their range
    /// when there were too many (or nothing when their type has no order).
    pub(crate) fn keys(&self) -> Result<Option<BuildKeys>> {
        let k = self.keys.lock();
        if !k.complete {
            return Ok(None);
        }
        let keys = if k.overflow {
            k.range.clone().map(|(lo, hi)| BuildKeys::Range(lo, hi))
        } else {
            match distinct(&k.arrays) {
                Some(d) if d.len() <= MAX_KEYS => {
                    let values = (0..d.len())
                        .map(|i| ScalarValue::try_from_array(&d, i))
                        .collect::<Result<Vec<_>>>()?;
                    Some(BuildKeys::Values(values))
                }
                Some(d) => crate::zone_map::compute(&d).map(|(lo, hi)| BuildKeys::Range(lo, hi)),
                None => None,
            }
        };
        if keys.is_some() {
            self.narrowed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(keys)
    }

    /// How many executions' probe scans got keys from this slot.
    #[cfg(test)]
    pub(crate) fn narrowed(&self) -> u64 {
        self.narrowed.load(Ordering::Relaxed)
    }
}

/// The distinct non-NULL values of `arrays` (of one type), ascending;
/// `None` for a type Arrow does not sort.
fn distinct(arrays: &[ArrayRef]) -> Option<ArrayRef> {
    let all = match arrays {
        [one] => Arc::clone(one),
        many => {
            let refs: Vec<&dyn Array> = many.iter().map(|a| a.as_ref()).collect();
            concat(&refs).ok()?
        }
    };
    let last_nulls = SortOptions {
        descending: false,
        nulls_first: false,
    };
    let sorted = sort(&all, Some(last_nulls)).ok()?;
    let sorted = sorted.slice(0, sorted.len() - sorted.null_count());
    let runs = partition(std::slice::from_ref(&sorted)).ok()?;
    let firsts: UInt32Array = runs.ranges().iter().map(|r| r.start as u32).collect();
    take(&sorted, &firsts, None).ok()
}

/// `range` widened to take in `lo..=hi`.
fn widen(
    (l, h): (ScalarValue, ScalarValue),
    lo: ScalarValue,
    hi: ScalarValue,
) -> (ScalarValue, ScalarValue) {
    let lo = if lo.partial_cmp(&l).is_some_and(|o| o.is_lt()) {
        lo
    } else {
        l
    };
    let hi = if hi.partial_cmp(&h).is_some_and(|o| o.is_gt()) {
        hi
    } else {
        h
    };
    (lo, hi)
}

/// The keys a probe scan may keep: rows of `column` (of the table's
/// schema) equal to one of `values`, or within a range. The min/max bounds
/// come first; the expressions testing rows are made only when a scan
/// needs them (a batch the column's index does not answer, a Parquet
/// segment): building an IN list of a hundred keys cost as much as the
/// lookups it would have replaced.
pub(crate) struct KeyFilter {
    pub column: usize,
    /// The keys, of the column's type (empty for a range).
    pub values: Vec<ScalarValue>,
    /// For too many keys: the smallest and the largest.
    range: Option<(ScalarValue, ScalarValue)>,
    schema: SchemaRef,
    /// Once made, the predicate for pruning and the test for rows.
    exprs: OnceLock<KeyExprs>,
}

/// A key filter's predicate for pruning and its test for rows.
type KeyExprs = (Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>);

impl KeyFilter {
    /// The filter for `keys` on `column` of `schema`, `None` when a value
    /// does not convert to the column's type.
    pub(crate) fn new(schema: SchemaRef, column: usize, keys: BuildKeys) -> Result<Option<Self>> {
        let data_type = schema.field(column).data_type().clone();
        let cast = |v: ScalarValue| v.cast_to(&data_type);
        let (values, range) = match keys {
            BuildKeys::Values(values) => {
                match values.into_iter().map(cast).collect::<Result<Vec<_>>>() {
                    Ok(values) => (values, None),
                    Err(_) => return Ok(None),
                }
            }
            BuildKeys::Range(lo, hi) => match (cast(lo), cast(hi)) {
                (Ok(lo), Ok(hi)) => (Vec::new(), Some((lo, hi))),
                _ => return Ok(None),
            },
        };
        Ok(Some(KeyFilter {
            column,
            values,
            range,
            schema,
            exprs: OnceLock::new(),
        }))
    }

    /// The min/max bounds batches must overlap: equal to the one key, or
    /// between the smallest and the largest key.
    pub(crate) fn bounds(&self) -> Vec<Bound> {
        match &self.range {
            Some((lo, hi)) => range_bounds(self.column, lo, hi),
            None => key_bounds(self.column, &self.values),
        }
    }

    /// `column IN values` with `column >= min AND column <= max` for
    /// pruning, `column = value` for one key, or the range alone.
    pub(crate) fn predicate(&self) -> Result<&Arc<dyn PhysicalExpr>> {
        Ok(&self.exprs()?.0)
    }

    /// The test for the rows of kept batches (membership, or the range).
    pub(crate) fn rows(&self) -> Result<&Arc<dyn PhysicalExpr>> {
        Ok(&self.exprs()?.1)
    }

    fn exprs(&self) -> Result<&KeyExprs> {
        if let Some(made) = self.exprs.get() {
            return Ok(made);
        }
        let made = self.make_exprs()?;
        Ok(self.exprs.get_or_init(|| made))
    }

    fn make_exprs(&self) -> Result<KeyExprs> {
        let field = self.schema.field(self.column);
        let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), self.column));
        let lit = |v: &ScalarValue| -> Arc<dyn PhysicalExpr> { Arc::new(Literal::new(v.clone())) };
        let compare = |op: Operator, v: &ScalarValue| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(Arc::clone(&col), op, lit(v)))
        };
        let between = |lo: &ScalarValue, hi: &ScalarValue| {
            conjunction([compare(Operator::GtEq, lo), compare(Operator::LtEq, hi)])
        };
        if let Some((lo, hi)) = &self.range {
            let range = between(lo, hi);
            return Ok((Arc::clone(&range), range));
        }
        Ok(match self.values.as_slice() {
            [one] => {
                let eq = compare(Operator::Eq, one);
                (Arc::clone(&eq), eq)
            }
            many => {
                let rows = in_list(
                    Arc::clone(&col),
                    many.iter().map(lit).collect(),
                    &false,
                    &self.schema,
                )?;
                let range = min_max(many).map(|(lo, hi)| between(lo, hi));
                let predicate = conjunction(range.into_iter().chain([Arc::clone(&rows)]));
                (predicate, rows)
            }
        })
    }
}

/// The zone-map bounds of `column IN (keys)`: equal to the one key, or
/// between the smallest and the largest.
pub(crate) fn key_bounds(column: usize, keys: &[ScalarValue]) -> Vec<Bound> {
    match min_max(keys) {
        None => Vec::new(),
        Some((lo, hi)) if lo == hi => Bound::new(column, Operator::Eq, lo.clone())
            .into_iter()
            .collect(),
        Some((lo, hi)) => range_bounds(column, lo, hi),
    }
}

/// The zone-map bounds of `column BETWEEN lo AND hi`.
fn range_bounds(column: usize, lo: &ScalarValue, hi: &ScalarValue) -> Vec<Bound> {
    [(Operator::GtEq, lo), (Operator::LtEq, hi)]
        .into_iter()
        .filter_map(|(op, v)| Bound::new(column, op, v.clone()))
        .collect()
}

/// The smallest and largest of `values`; `None` when there are none or two
/// do not compare.
pub(crate) fn min_max(values: &[ScalarValue]) -> Option<(&ScalarValue, &ScalarValue)> {
    let mut it = values.iter();
    let first = it.next()?;
    it.try_fold((first, first), |(lo, hi), v| {
        let lo = if v.partial_cmp(lo)?.is_lt() { v } else { lo };
        let hi = if v.partial_cmp(hi)?.is_gt() { v } else { hi };
        Some((lo, hi))
    })
}

/// Whether keys of this type may narrow a scan: floating-point keys are
/// left alone (the join's and a filter's equality differ on -0.0 and NaN).
pub(crate) fn keyable(t: &DataType) -> bool {
    !t.is_floating() && !t.is_nested()
}

/// A kept plan with keyed joins, and their key slots.
pub(crate) struct KeyedPlan {
    pub plan: Arc<dyn ExecutionPlan>,
    pub slots: Vec<Arc<KeySlot>>,
}

/// `plan` (a kept plan, reset) with its qualifying hash joins' build sides
/// tapped and probe-side scans keyed (see the module doc).
pub(crate) fn key_joins(plan: Arc<dyn ExecutionPlan>) -> Result<KeyedPlan> {
    let mut slots = Vec::new();
    let plan = plan
        .transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            match key_join(join)? {
                Some((rewritten, slot)) => {
                    slots.push(slot);
                    Ok(Transformed::new(
                        rewritten,
                        true,
                        TreeNodeRecursion::Continue,
                    ))
                }
                None => Ok(Transformed::no(node)),
            }
        })?
        .data;
    Ok(KeyedPlan { plan, slots })
}

type Keyed = (Arc<dyn ExecutionPlan>, Arc<KeySlot>);

fn key_join(join: &HashJoinExec) -> Result<Option<Keyed>> {
    let safe = matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::RightSemi
    );
    if !safe
        || *join.partition_mode() != PartitionMode::CollectLeft
        || join.null_equality() != NullEquality::NullEqualsNothing
        || join.null_aware
        || join.left().output_partitioning().partition_count() != 1
    {
        return Ok(None);
    }
    for (left_key, right_key) in join.on() {
        let Some(column) = right_key.downcast_ref::<Column>() else {
            continue;
        };
        let slot = Arc::new(KeySlot::default());
        if let Some(right) = keyed_probe(join.right(), column.index(), &slot)? {
            let left: Arc<dyn ExecutionPlan> = Arc::new(KeyTap::new(
                Arc::clone(join.left()),
                Arc::clone(left_key),
                Arc::clone(&slot),
            ));
            let join = join
                .builder()
                .recompute_properties()
                .with_new_children(vec![left, right])?;
            return Ok(Some((join.build_exec()?, slot)));
        }
    }
    Ok(None)
}

fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// `plan` (a probe side) with the scan that output `column` comes from
/// keyed to `slot`, when only nodes that pass rows through unchanged (a
/// filter, a sort, a projection of columns, a repartition, a cooperative
/// yield point) or group by that column (alone or fused with a filter) lie
/// between, none with a limit.
fn keyed_probe(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
    slot: &Arc<KeySlot>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(scan) = plan.downcast_ref::<DeferredScan>() {
        return Ok(scan.keyed(column, slot).map(|s| Arc::new(s) as _));
    }
    // Rows cut by a limit: narrowing the input first would let others in.
    if plan.fetch().is_some() {
        return Ok(None);
    }
    let below = if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        match filter.projection() {
            Some(p) => p.get(column).copied(),
            None => Some(column),
        }
    } else if plan.downcast_ref::<SortExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some()
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
    {
        Some(column)
    } else if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        // Rows left out by a grouping column leave out whole groups: the
        // other groups aggregate the same rows.
        let groups = aggregate.group_expr();
        (groups.is_single() && aggregate.limit_options().is_none())
            .then(|| groups.expr().get(column))
            .flatten()
            .and_then(|(e, _)| e.downcast_ref::<Column>())
            .map(Column::index)
    } else if let Some(fused) = plan.downcast_ref::<FilterAggregateExec>() {
        fused.input_group_column(column)
    } else if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        projection
            .expr()
            .get(column)
            .and_then(|p| p.expr.downcast_ref::<Column>())
            .map(Column::index)
    } else {
        None
    };
    let children = plan.children();
    let (Some(below), [child]) = (below, children.as_slice()) else {
        return Ok(None);
    };
    match keyed_probe(child, below, slot)? {
        Some(child) => Ok(Some(
            Arc::clone(plan).replace_children(vec![child], recompute())?,
        )),
        None => Ok(None),
    }
}

/// A build side, passed through, whose join keys are recorded.
#[derive(Debug)]
pub(crate) struct KeyTap {
    input: Arc<dyn ExecutionPlan>,
    key: Arc<dyn PhysicalExpr>,
    slot: Arc<KeySlot>,
}

impl KeyTap {
    fn new(input: Arc<dyn ExecutionPlan>, key: Arc<dyn PhysicalExpr>, slot: Arc<KeySlot>) -> Self {
        KeyTap { input, key, slot }
    }
}

impl DisplayAs for KeyTap {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "KeyTap: key={}", self.key)
    }
}

impl ExecutionPlan for KeyTap {
    fn name(&self) -> &str {
        "KeyTap"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.key)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(KeyTap::new(
            children.swap_remove(0),
            Arc::clone(&self.key),
            Arc::clone(&self.slot),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // Executions of a kept plan never overlap: the slot is this one's.
        self.slot.start();
        Ok(Box::pin(TapStream {
            input: self.input.execute(partition, ctx)?,
            key: Arc::clone(&self.key),
            slot: Arc::clone(&self.slot),
        }))
    }
}

struct TapStream {
    input: SendableRecordBatchStream,
    key: Arc<dyn PhysicalExpr>,
    slot: Arc<KeySlot>,
}

impl Stream for TapStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.input.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => {
                let keys = self
                    .key
                    .evaluate(batch)
                    .and_then(|k| k.into_array(batch.num_rows()));
                if let Err(e) = keys.and_then(|k| self.slot.record(&k)) {
                    return Poll::Ready(Some(Err(e)));
                }
            }
            Poll::Ready(None) => self.slot.finish(),
            _ => {}
        }
        polled
    }
}

impl RecordBatchStream for TapStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn int64s(values: impl IntoIterator<Item = i64>) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(values))
    }

    #[test]
    fn a_slot_keeps_distinct_keys_of_a_finished_build_side_only() {
        let slot = KeySlot::default();
        slot.start();
        let keys: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None, Some(3), Some(7)]));
        slot.record(&keys).expect("record");
        assert!(slot.keys().expect("keys").is_none(), "not finished");
        slot.finish();
        let i = |v: i64| ScalarValue::Int64(Some(v));
        assert_eq!(
            slot.keys().expect("keys"),
            Some(BuildKeys::Values(vec![i(3), i(7)])),
            "distinct, ascending, no NULL"
        );

        slot.start();
        slot.record(&int64s(5..(MAX_KEYS as i64 + 6)))
            .expect("record");
        slot.record(&keys).expect("record");
        slot.finish();
        assert_eq!(
            slot.keys().expect("keys"),
            Some(BuildKeys::Range(i(3), i(MAX_KEYS as i64 + 5))),
            "too many keys: their range"
        );
    }

    #[test]
    fn a_long_build_side_keeps_its_few_keys_or_the_range_of_its_many() {
        let i = |v: i64| ScalarValue::Int64(Some(v));
        let slot = KeySlot::default();
        // many rows, few keys: compacted as they come, all kept
        slot.start();
        for _ in 0..10 {
            slot.record(&int64s((0..PENDING_KEYS as i64).map(|v| v % 10 * 2)))
                .expect("record");
        }
        slot.finish();
        assert_eq!(
            slot.keys().expect("keys"),
            Some(BuildKeys::Values((0..10).map(|v| i(v * 2)).collect()))
        );
        // past the pending rows with too many keys: the range, widened by
        // later batches, untouched by a batch of NULLs
        slot.start();
        slot.record(&int64s(100..(100 + PENDING_KEYS as i64 + 1)))
            .expect("record");
        slot.record(&int64s([40, 60])).expect("record");
        let nulls: ArrayRef = Arc::new(Int64Array::from(vec![None, None]));
        slot.record(&nulls).expect("record");
        slot.record(&int64s([5000])).expect("record");
        slot.finish();
        assert_eq!(
            slot.keys().expect("keys"),
            Some(BuildKeys::Range(i(40), i(5000)))
        );
    }

    #[test]
    fn a_key_filter_keeps_the_rows_with_a_key() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("k", DataType::Int32, true),
        ]);
        let k: ArrayRef = Arc::new(datafusion::arrow::array::Int32Array::from(vec![
            Some(1),
            Some(5),
            None,
            Some(9),
        ]));
        let a: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
            "w", "x", "y", "z",
        ]));
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![a, k]).expect("batch");
        let values = vec![ScalarValue::Int64(Some(9)), ScalarValue::Int64(Some(1))];
        let filter = KeyFilter::new(Arc::new(schema.clone()), 1, BuildKeys::Values(values))
            .expect("filter")
            .expect("castable");
        assert_eq!(filter.bounds().len(), 2, "min and max bound the batches");
        let keep = filter
            .rows()
            .expect("rows")
            .evaluate(&batch)
            .and_then(|v| v.into_array(4))
            .expect("evaluate");
        let keep: Vec<Option<bool>> = datafusion::arrow::array::AsArray::as_boolean(&keep)
            .iter()
            .collect();
        assert_eq!(keep, vec![Some(true), Some(false), None, Some(true)]);
        let bounds = crate::zone_map::bounds(filter.predicate().expect("predicate"));
        assert_eq!(bounds.len(), 2, "the predicate bounds them too");
        let text = KeyFilter::new(
            Arc::new(schema),
            1,
            BuildKeys::Values(vec![ScalarValue::Utf8(Some("nine".into()))]),
        )
        .expect("filter");
        assert!(text.is_none(), "a key that is no integer narrows nothing");
    }

    #[test]
    fn keys_bound_a_scan_by_their_range() {
        let int = |v| ScalarValue::Int32(Some(v));
        let parts = |bounds: Vec<Bound>| -> Vec<(usize, Operator, ScalarValue)> {
            bounds
                .iter()
                .map(|b| {
                    let (column, op, value) = b.parts();
                    (column, op, value.clone())
                })
                .collect()
        };
        assert_eq!(parts(key_bounds(2, &[int(5)])), [(2, Operator::Eq, int(5))]);
        assert_eq!(
            parts(key_bounds(1, &[int(9), int(3), int(5)])),
            [(1, Operator::GtEq, int(3)), (1, Operator::LtEq, int(9))]
        );
        assert!(key_bounds(0, &[]).is_empty());
        let floats = [
            ScalarValue::Float64(Some(1.0)),
            ScalarValue::Float64(Some(2.0)),
        ];
        assert!(key_bounds(0, &floats).is_empty(), "floats bound nothing");
        let mixed = [int(1), ScalarValue::Utf8(Some("a".into()))];
        assert!(key_bounds(0, &mixed).is_empty(), "not comparable");
    }
}
