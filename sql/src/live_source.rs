//! The in-memory scan source of a table, with run-time filters.
//!
//! A scan over cached segments and buffers is DataFusion's
//! `MemorySourceConfig`, which does not take filters. [`LiveSource`] wraps
//! it and accepts the *dynamic* filters operators push down while the plan
//! runs: a hash join's filter on its probe side (the build side's key
//! range and values, known once the build side is read), a top-k's
//! threshold. Each batch is filtered before it leaves the scan, so a join
//! of one run's task with its million-row epoch table probes the run's
//! hundred rows instead of every row. Static predicates stay with the
//! `FilterExec` above (and with the key index, see `table.rs`).

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
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::{
    DynamicFilterTracking, EquivalenceProperties, LexOrdering, PhysicalExpr,
};
use datafusion::physical_plan::execution_plan::SchedulingType;
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayFormatType, Partitioning, Statistics};
use futures::StreamExt;

/// A memory source plus the dynamic filters pushed into it.
#[derive(Debug, Clone)]
pub struct LiveSource {
    inner: Arc<dyn DataSource>,
    /// Dynamic filters over the source's output columns.
    filters: Vec<Arc<dyn PhysicalExpr>>,
}

impl LiveSource {
    pub fn new(inner: MemorySourceConfig) -> Self {
        LiveSource {
            inner: Arc::new(inner),
            filters: Vec::new(),
        }
    }

    fn wrap(&self, inner: Arc<dyn DataSource>) -> Arc<dyn DataSource> {
        Arc::new(LiveSource {
            inner,
            filters: self.filters.clone(),
        })
    }
}

/// The rows of `batch` every filter keeps.
fn apply_filters(batch: RecordBatch, filters: &[Arc<dyn PhysicalExpr>]) -> Result<RecordBatch> {
    let mut batch = batch;
    for f in filters {
        if batch.num_rows() == 0 {
            break;
        }
        let keep = f.evaluate(&batch)?.into_array(batch.num_rows())?;
        batch = filter_record_batch(&batch, keep.as_boolean())?;
    }
    Ok(batch)
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
        let schema = stream.schema();
        let filters = self.filters.clone();
        let filtered = stream.map(move |b| b.and_then(|b| apply_filters(b, &filters)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, filtered)))
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
        self.inner.metrics()
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
