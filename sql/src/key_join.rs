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

use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
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

/// Most distinct build-side keys handed to a probe scan; with more, the
/// scan reads every row.
pub const MAX_KEYS: usize = 256;

/// The distinct keys one execution's build side produced.
#[derive(Debug, Default)]
pub(crate) struct KeySlot {
    keys: Mutex<Keys>,
    /// Executions whose probe scan got keys (tests read it).
    narrowed: AtomicU64,
}

#[derive(Debug, Default)]
struct Keys {
    values: HashSet<ScalarValue>,
    /// More than [`MAX_KEYS`] distinct keys: only their range is kept.
    overflow: bool,
    /// Once overflowed, the smallest and largest key so far.
    range: Option<(ScalarValue, ScalarValue)>,
    /// The build side ended.
    complete: bool,
}

/// What a finished build side tells its probe scan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BuildKeys {
    /// Its distinct keys (at most [`MAX_KEYS`]).
    Values(Vec<ScalarValue>),
    /// Too many keys: the smallest and the largest.
    Range(ScalarValue, ScalarValue),
}

impl KeySlot {
    /// Forget the previous execution's keys.
    fn start(&self) {
        *self.keys.lock() = Keys::default();
    }

    fn record(&self, keys: &ArrayRef) -> Result<()> {
        let mut k = self.keys.lock();
        if !k.overflow {
            for i in 0..keys.len() {
                if keys.is_valid(i) {
                    k.values.insert(ScalarValue::try_from_array(keys, i)?);
                }
                if k.values.len() > MAX_KEYS {
                    break;
                }
            }
            if k.values.len() <= MAX_KEYS {
                return Ok(());
            }
            // Too many: keep their range from now on (this batch's rest
            // is taken in below).
            k.overflow = true;
            let values: Vec<ScalarValue> = std::mem::take(&mut k.values).into_iter().collect();
            k.range = min_max(&values).map(|(lo, hi)| (lo.clone(), hi.clone()));
        }
        if let Some((lo, hi)) = crate::zone_map::compute(keys) {
            k.range = Some(widen(k.range.take(), lo, hi));
        }
        Ok(())
    }

    fn finish(&self) {
        self.keys.lock().complete = true;
    }

    /// The keys of a build side that ended: their values, or their range
    /// when there were too many (or nothing when their type has no order).
    pub(crate) fn keys(&self) -> Option<BuildKeys> {
        let k = self.keys.lock();
        let keys = match (&*k, &k.range) {
            (
                Keys {
                    complete: false, ..
                },
                _,
            ) => None,
            (
                Keys {
                    overflow: false, ..
                },
                _,
            ) => Some(BuildKeys::Values(k.values.iter().cloned().collect())),
            (_, Some((lo, hi))) => Some(BuildKeys::Range(lo.clone(), hi.clone())),
            (_, None) => None,
        };
        if keys.is_some() {
            self.narrowed.fetch_add(1, Ordering::Relaxed);
        }
        keys
    }

    /// How many executions' probe scans got keys from this slot.
    #[cfg(test)]
    pub(crate) fn narrowed(&self) -> u64 {
        self.narrowed.load(Ordering::Relaxed)
    }
}

/// `range` widened to take in `lo..=hi`.
fn widen(
    range: Option<(ScalarValue, ScalarValue)>,
    lo: ScalarValue,
    hi: ScalarValue,
) -> (ScalarValue, ScalarValue) {
    let Some((l, h)) = range else {
        return (lo, hi);
    };
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
/// schema) equal to one of `values`, or within a range.
pub(crate) struct KeyFilter {
    pub column: usize,
    /// The keys (empty for a range).
    pub values: Vec<ScalarValue>,
    /// `column IN values` with `column >= min AND column <= max` for batch
    /// pruning, `column = value` for one key, or the range alone.
    pub predicate: Arc<dyn PhysicalExpr>,
    /// The test for the rows of kept batches (membership, or the range).
    pub rows: Arc<dyn PhysicalExpr>,
}

impl KeyFilter {
    /// The filter for `keys` on `column` of `schema`, `None` when a value
    /// does not convert to the column's type.
    pub(crate) fn new(schema: &Schema, column: usize, keys: BuildKeys) -> Result<Option<Self>> {
        let field = schema.field(column);
        let (values, range) = match keys {
            BuildKeys::Values(values) => (values, None),
            BuildKeys::Range(lo, hi) => (vec![lo, hi], Some(())),
        };
        let Ok(values) = values
            .into_iter()
            .map(|v| v.cast_to(field.data_type()))
            .collect::<Result<Vec<_>>>()
        else {
            return Ok(None);
        };
        let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), column));
        let lit = |v: &ScalarValue| -> Arc<dyn PhysicalExpr> { Arc::new(Literal::new(v.clone())) };
        let compare = |op: Operator, v: &ScalarValue| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(Arc::clone(&col), op, lit(v)))
        };
        let between = |lo: &ScalarValue, hi: &ScalarValue| {
            conjunction([compare(Operator::GtEq, lo), compare(Operator::LtEq, hi)])
        };
        if let (Some(()), [lo, hi]) = (range, values.as_slice()) {
            let range = between(lo, hi);
            return Ok(Some(KeyFilter {
                column,
                values: Vec::new(),
                predicate: Arc::clone(&range),
                rows: range,
            }));
        }
        let (predicate, rows) = match values.as_slice() {
            [one] => {
                let eq = compare(Operator::Eq, one);
                (Arc::clone(&eq), eq)
            }
            many => {
                let rows = in_list(
                    Arc::clone(&col),
                    many.iter().map(lit).collect(),
                    &false,
                    schema,
                )?;
                let range = min_max(many).map(|(lo, hi)| between(lo, hi));
                let predicate = conjunction(range.into_iter().chain([Arc::clone(&rows)]));
                (predicate, rows)
            }
        };
        Ok(Some(KeyFilter {
            column,
            values,
            predicate,
            rows,
        }))
    }
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
    use datafusion::arrow::datatypes::Field;

    use super::*;

    #[test]
    fn a_slot_keeps_distinct_keys_of_a_finished_build_side_only() {
        let slot = KeySlot::default();
        slot.start();
        let keys: ArrayRef = Arc::new(Int64Array::from(vec![Some(3), None, Some(3), Some(7)]));
        slot.record(&keys).expect("record");
        assert!(slot.keys().is_none(), "not finished");
        slot.finish();
        let Some(BuildKeys::Values(mut found)) = slot.keys() else {
            panic!("the keys")
        };
        found.sort_by(|a, b| a.partial_cmp(b).expect("ints"));
        assert_eq!(
            found,
            vec![ScalarValue::Int64(Some(3)), ScalarValue::Int64(Some(7))]
        );

        slot.start();
        let many: ArrayRef = Arc::new(Int64Array::from_iter_values(5..(MAX_KEYS as i64 + 6)));
        slot.record(&many).expect("record");
        slot.record(&keys).expect("record");
        slot.finish();
        assert_eq!(
            slot.keys(),
            Some(BuildKeys::Range(
                ScalarValue::Int64(Some(3)),
                ScalarValue::Int64(Some(MAX_KEYS as i64 + 5))
            )),
            "too many keys: their range"
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
        let filter = KeyFilter::new(&schema, 1, BuildKeys::Values(values))
            .expect("filter")
            .expect("castable");
        let keep = filter
            .rows
            .evaluate(&batch)
            .and_then(|v| v.into_array(4))
            .expect("evaluate");
        let keep: Vec<Option<bool>> = datafusion::arrow::array::AsArray::as_boolean(&keep)
            .iter()
            .collect();
        assert_eq!(keep, vec![Some(true), Some(false), None, Some(true)]);
        let bounds = crate::zone_map::bounds(&filter.predicate);
        assert_eq!(bounds.len(), 2, "min and max bound the batches");
    }
}
