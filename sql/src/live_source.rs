//! The in-memory scan source of a table, with run-time filters.
//!
//! A scan over cached segments and buffers is DataFusion's
//! `MemorySourceConfig`, which does not take filters. [`LiveSource`] wraps
//! it and accepts the *dynamic* filters operators push down while the plan
//! runs: a hash join's filter on its probe side (the build side's key
//! range and values, known once the build side is read), a top-k's
//! threshold. Each batch is filtered before it leaves the scan, so a join
//! of one run's task with its million-row epoch table probes the run's
//! hundred rows instead of every row. Before a batch is filtered row by
//! row, its minimum and maximum on the filtered columns are checked against
//! the bounds the filter implies ([`crate::zone_map`], read again when the
//! dynamic filter changes): a batch outside the build side's key range is
//! dropped whole; a dynamic filter that keeps nearly every row of the
//! first 32k it sees is not evaluated further (the join still matches).
//! Tables filled by training runs are clustered by task id, so one
//! run's epochs sit in a few of the million-row table's batches.
//!
//! Static predicates stay with the `FilterExec` above (and with the key
//! index and the batch pruning of the scan, see `table.rs`).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSource;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::{
    DynamicFilterTracking, EquivalenceProperties, LexOrdering, PhysicalExpr,
};
use datafusion::physical_expr_common::physical_expr::snapshot_generation;
use datafusion::physical_plan::execution_plan::SchedulingType;
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayFormatType, Partitioning, Statistics};
use futures::StreamExt;

use crate::zone_map;

/// A memory source plus the dynamic filters pushed into it.
#[derive(Debug, Clone)]
pub struct LiveSource {
    inner: Arc<dyn DataSource>,
    /// Dynamic filters over the source's output columns.
    filters: Vec<Arc<dyn PhysicalExpr>>,
    /// `batches_pruned`: batches dropped by their min/max, per partition.
    metrics: ExecutionPlanMetricsSet,
}

impl LiveSource {
    pub fn new(inner: MemorySourceConfig) -> Self {
        LiveSource {
            inner: Arc::new(inner),
            filters: Vec::new(),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    fn wrap(&self, inner: Arc<dyn DataSource>) -> Arc<dyn DataSource> {
        Arc::new(LiveSource {
            inner,
            filters: self.filters.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

/// One dynamic filter of a running scan, with the column bounds read from
/// its current state.
pub(crate) struct BatchFilter {
    filter: Arc<dyn PhysicalExpr>,
    pruned: Count,
    /// `snapshot_generation` of `filter` when `bounds` were read.
    generation: Option<u64>,
    bounds: Vec<zone_map::Bound>,
    /// Rows the filter was evaluated on and kept, since `generation`.
    rows_in: usize,
    rows_kept: usize,
    /// Whether row-by-row evaluation may be dropped when it keeps almost
    /// everything: true for a bare dynamic filter (a hash join's or a
    /// top-k's), which the operator that made it does not rely on.
    optional: bool,
}

/// After this many rows, a dynamic filter that kept more than
/// [`USELESS_KEPT`] of them is no longer evaluated row by row (the batches
/// are still checked against its bounds).
const USELESS_AFTER_ROWS: usize = 32 * 1024;
const USELESS_KEPT: f64 = 0.9;

impl BatchFilter {
    pub(crate) fn new(filter: Arc<dyn PhysicalExpr>, pruned: Count) -> Self {
        let optional = filter.downcast_ref::<DynamicFilterPhysicalExpr>().is_some();
        BatchFilter {
            filter,
            pruned,
            generation: None,
            bounds: Vec::new(),
            rows_in: 0,
            rows_kept: 0,
            optional,
        }
    }

    /// False when the batch's min/max prove no row passes the filter.
    fn may_match(&mut self, batch: &RecordBatch) -> bool {
        let generation = snapshot_generation(&self.filter);
        if self.generation != Some(generation) {
            self.generation = Some(generation);
            self.bounds = zone_map::bounds(&self.filter);
            self.rows_in = 0;
            self.rows_kept = 0;
        }
        zone_map::may_match(batch, &self.bounds)
    }

    /// The rows of `batch` the filter keeps; `None` when it keeps none.
    fn apply(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        if !self.may_match(&batch) {
            self.pruned.add(1);
            return Ok(None);
        }
        if self.useless() {
            return Ok(Some(batch));
        }
        let keep = self.filter.evaluate(&batch)?.into_array(batch.num_rows())?;
        let keep = keep.as_boolean();
        let count = keep.true_count();
        self.rows_in += batch.num_rows();
        self.rows_kept += count;
        if count == 0 {
            return Ok(None);
        }
        // A batch kept whole is passed on as it is: its arrays stay the
        // cached ones (Arrow's filter would hand back new slices of them),
        // so what is memoized per array above the scan (casts of text
        // columns, min/max) is found again at the next run.
        if count == batch.num_rows() {
            return Ok(Some(batch));
        }
        Ok(Some(filter_record_batch(&batch, keep)?))
    }

    /// Whether evaluating the filter has cost more than it saved so far
    /// (a join whose build side holds nearly every key of the probe side).
    fn useless(&self) -> bool {
        self.optional
            && self.rows_in >= USELESS_AFTER_ROWS
            && self.rows_kept as f64 > self.rows_in as f64 * USELESS_KEPT
    }
}

/// `stream` with each batch passed through `filters`.
pub(crate) fn filter_stream(
    stream: SendableRecordBatchStream,
    mut filters: Vec<BatchFilter>,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    // Batches left empty are not passed on: slicing every column of a
    // dropped batch to an empty one cost more than the zone-map check.
    let filtered = stream.filter_map(move |b| {
        let kept = b.and_then(|b| apply_filters(b, &mut filters)).transpose();
        futures::future::ready(kept)
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, filtered))
}

/// The rows of `batch` every filter keeps, `None` if none.
fn apply_filters(batch: RecordBatch, filters: &mut [BatchFilter]) -> Result<Option<RecordBatch>> {
    let mut batch = batch;
    for f in filters {
        match f.apply(batch)? {
            Some(kept) => batch = kept,
            None => return Ok(None),
        }
    }
    Ok(Some(batch))
}

impl DataSource for LiveSource {
    fn open(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = self.inner.open(partition, context)?;
        if self.filters.is_empty() {
            return Ok(stream);
        }
        let pruned = MetricBuilder::new(&self.metrics).counter("batches_pruned", partition);
        let filters: Vec<BatchFilter> = self
            .filters
            .iter()
            .map(|f| BatchFilter::new(Arc::clone(f), pruned.clone()))
            .collect();
        Ok(filter_stream(stream, filters))
    }

    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_as(t, f)?;
        if !self.filters.is_empty() {
            let shown: Vec<String> = self.filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", runtime_filters=[{}]", shown.join(", "))?;
        }
        Ok(())
    }

    fn repartitioned(
        &self,
        target_partitions: usize,
        repartition_file_min_size: usize,
        output_ordering: Option<LexOrdering>,
    ) -> Result<Option<Arc<dyn DataSource>>> {
        Ok(self
            .inner
            .repartitioned(
                target_partitions,
                repartition_file_min_size,
                output_ordering,
            )?
            .map(|inner| self.wrap(inner)))
    }

    fn output_partitioning(&self) -> Partitioning {
        self.inner.output_partitioning()
    }

    fn eq_properties(&self) -> EquivalenceProperties {
        self.inner.eq_properties()
    }

    fn scheduling_type(&self) -> SchedulingType {
        self.inner.scheduling_type()
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        self.inner.partition_statistics(partition)
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn DataSource>> {
        // A limit applied before the filters would cut rows the filters keep.
        if !self.filters.is_empty() {
            return None;
        }
        self.inner.with_fetch(limit).map(|inner| self.wrap(inner))
    }

    fn fetch(&self) -> Option<usize> {
        self.inner.fetch()
    }

    fn metrics(&self) -> ExecutionPlanMetricsSet {
        self.metrics.clone()
    }

    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn DataSource>>> {
        // The filters are bound to the current output columns.
        if !self.filters.is_empty() {
            return Ok(None);
        }
        Ok(self
            .inner
            .try_swapping_with_projection(projection)?
            .map(|inner| self.wrap(inner)))
    }

    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn DataSource>>> {
        let dynamic: Vec<bool> = filters
            .iter()
            .map(|f| DynamicFilterTracking::classify(f).contains_dynamic_filter())
            .collect();
        let taken = || {
            dynamic
                .iter()
                .map(|d| if *d { PushedDown::Yes } else { PushedDown::No })
                .collect::<Vec<_>>()
        };
        if !dynamic.contains(&true) {
            return Ok(FilterPushdownPropagation::with_parent_pushdown_result(
                taken(),
            ));
        }
        let mut next = self.clone();
        next.filters.extend(
            filters
                .into_iter()
                .zip(&dynamic)
                .filter(|(_, d)| **d)
                .map(|(f, _)| f),
        );
        let node: Arc<dyn DataSource> = Arc::new(next);
        Ok(FilterPushdownPropagation::with_parent_pushdown_result(taken()).with_updated_node(node))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if self.inner.apply_expressions(f)? == TreeNodeRecursion::Stop {
            return Ok(TreeNodeRecursion::Stop);
        }
        for e in &self.filters {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    fn batches() -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        (0..40)
            .map(|b| {
                let k = Int64Array::from_iter_values(b * 1000..(b + 1) * 1000);
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(k)]).unwrap()
            })
            .collect()
    }

    /// `k % 100 <> 7`: keeps 99% of the rows and implies no bounds.
    fn keeps_almost_all(schema: &Schema) -> Arc<dyn PhysicalExpr> {
        let k = col("k", schema).unwrap();
        let m = binary(k, Operator::Modulo, lit(100i64), schema).unwrap();
        binary(m, Operator::NotEq, lit(7i64), schema).unwrap()
    }

    fn run(filter: Arc<dyn PhysicalExpr>) -> (usize, usize) {
        let mut f = BatchFilter::new(filter, Count::new());
        let kept: usize = batches()
            .into_iter()
            .map(|b| f.apply(b).unwrap().map_or(0, |k| k.num_rows()))
            .sum();
        (kept, f.rows_in)
    }

    #[test]
    fn a_batch_kept_whole_keeps_its_arrays() {
        let batch = batches().remove(3); // k in 3000..4000
        let schema = batch.schema();
        let k = || col("k", &schema).unwrap();
        let all = binary(k(), Operator::GtEq, lit(3000i64), &schema).unwrap();
        let mut f = BatchFilter::new(all, Count::new());
        let kept = f.apply(batch.clone()).unwrap().unwrap();
        assert!(Arc::ptr_eq(kept.column(0), batch.column(0)));
        let some = binary(k(), Operator::Lt, lit(3500i64), &schema).unwrap();
        let mut f = BatchFilter::new(some, Count::new());
        let kept = f.apply(batch.clone()).unwrap().unwrap();
        assert_eq!(kept.num_rows(), 500);
        assert!(!Arc::ptr_eq(kept.column(0), batch.column(0)));
    }

    #[test]
    fn a_dynamic_filter_that_keeps_everything_stops_being_evaluated() {
        let batch = batches().remove(0);
        let schema = batch.schema();
        let dynamic: Arc<dyn PhysicalExpr> = Arc::new(DynamicFilterPhysicalExpr::new(
            vec![col("k", &schema).unwrap()],
            keeps_almost_all(&schema),
        ));
        let (kept, evaluated) = run(dynamic);
        assert_eq!(evaluated, 33_000, "evaluated until 32k rows were seen");
        assert_eq!(kept, 33_000 - 330 + 7_000);
        // A filter that is not a bare dynamic filter is always applied.
        let (kept, evaluated) = run(keeps_almost_all(&schema));
        assert_eq!(evaluated, 40_000);
        assert_eq!(kept, 40_000 - 400);
    }
}
