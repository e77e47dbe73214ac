//! [`RunAggregateExec`]: the plan node and its stream.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{EmissionType, apply_expression_roots};
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, FilterDescription, FilterPushdownPhase,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;

use super::runs::{Reduce, per_row, reduce_runs, run_starts, take_starts};
use crate::batches::batch_of;
use crate::filter_aggregate::run_bounds;

/// One output column per run: `reduce` over an input column (`None`: a
/// count of the run's rows).
#[derive(Debug, Clone)]
pub(crate) struct Reduction {
    pub reduce: Reduce,
    pub column: Option<Column>,
}

/// Reduces each run of input rows with equal grouping values to one row:
/// the grouping values, then one value per reduction. Rows of other
/// runs with the same values stay separate rows (the aggregation above
/// merges them). A batch with fewer than two rows per run on average is
/// passed on row by row, as that is cheaper than reducing it.
#[derive(Debug)]
pub struct RunAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    reducer: Arc<Reducer>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What the node does to each batch, shared with its streams.
#[derive(Debug)]
struct Reducer {
    /// Grouping columns over the input; the output's first columns.
    group: Vec<Column>,
    reductions: Vec<Reduction>,
    schema: SchemaRef,
}

impl RunAggregateExec {
    pub(crate) fn try_new(
        input: Arc<dyn ExecutionPlan>,
        group: Vec<Column>,
        reductions: Vec<Reduction>,
    ) -> Result<Self> {
        let schema = output_schema(&input.schema(), &group, &reductions)?;
        let reducer = Arc::new(Reducer {
            group,
            reductions,
            schema,
        });
        Ok(Self::with_reducer(input, reducer))
    }

    fn with_reducer(input: Arc<dyn ExecutionPlan>, reducer: Arc<Reducer>) -> Self {
        let props = Arc::new(properties(&input, &reducer.schema));
        Self {
            input,
            reducer,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The grouping columns, by output position; a run-time filter on them
    /// can be pushed to the input (it removes whole runs), and they keep
    /// their input names, by which DataFusion remaps such filters.
    fn pushable_group_columns(&self) -> HashSet<usize> {
        (0..self.reducer.group.len()).collect()
    }
}

impl Reducer {
    /// The batch of one reduced row per run of `batch`.
    fn reduce(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let keys: Vec<ArrayRef> = self
            .group
            .iter()
            .map(|c| Arc::clone(batch.column(c.index())))
            .collect();
        let values: Vec<(Reduce, Option<&ArrayRef>)> = self
            .reductions
            .iter()
            .map(|r| (r.reduce, r.column.as_ref().map(|c| batch.column(c.index()))))
            .collect();
        let bounds = run_bounds(&keys, n)?;
        let runs = bounds.len() - 1;
        if runs * 2 > n {
            let mut columns = keys;
            columns.extend(values.iter().map(|&(r, v)| per_row(r, v, n)));
            return batch_of(&self.schema, columns, n);
        }
        let mut columns = take_starts(&keys, &run_starts(&bounds)?)?;
        for (r, v) in values {
            columns.push(reduce_runs(r, v, &bounds)?);
        }
        batch_of(&self.schema, columns, runs)
    }
}

/// The grouping columns' input fields, then each reduction's.
fn output_schema(
    input: &SchemaRef,
    group: &[Column],
    reductions: &[Reduction],
) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = group
        .iter()
        .map(|c| input.field(c.index()).clone())
        .collect();
    for (i, r) in reductions.iter().enumerate() {
        let name = format!("__provdb_run_{i}");
        fields.push(match (r.reduce, &r.column) {
            (Reduce::Count, _) | (_, None) => Field::new(name, DataType::Int64, false),
            (_, Some(c)) => Field::new(name, input.field(c.index()).data_type().clone(), true),
        });
    }
    if fields.len() != group.len() + reductions.len() {
        return internal_err!("run aggregation schema lost a field");
    }
    Ok(Arc::new(Schema::new(Fields::from(fields))))
}

fn properties(input: &Arc<dyn ExecutionPlan>, schema: &SchemaRef) -> PlanProperties {
    PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(schema)),
        Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
        EmissionType::Incremental,
        input.boundedness(),
    )
}

impl DisplayAs for RunAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let groups: Vec<String> = self.reducer.group.iter().map(ToString::to_string).collect();
        let runs: Vec<String> = self
            .reducer
            .reductions
            .iter()
            .map(|r| match &r.column {
                Some(c) => format!("{}({c})", r.reduce.name()),
                None => format!("{}(*)", r.reduce.name()),
            })
            .collect();
        write!(
            f,
            "RunAggregateExec: gby=[{}], runs=[{}]",
            groups.join(", "),
            runs.join(", ")
        )
    }
}

impl ExecutionPlan for RunAggregateExec {
    fn name(&self) -> &str {
        "RunAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let reducer = &self.reducer;
        let columns = reducer
            .group
            .iter()
            .chain(reducer.reductions.iter().filter_map(|r| r.column.as_ref()))
            .map(|c| Arc::new(c.clone()) as Arc<dyn PhysicalExpr>);
        apply_expression_roots(columns, f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::with_reducer(
                input,
                Arc::clone(&self.reducer),
            ))),
            Err(children) => {
                internal_err!("RunAggregateExec has one input, given {}", children.len())
            }
        }
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        let child = ChildFilterDescription::from_child_with_allowed_indices(
            &parent_filters,
            self.pushable_group_columns(),
            &self.input,
        )?;
        Ok(FilterDescription::new().with_child(child))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let reducer = Arc::clone(&self.reducer);
        let stream = input.map(move |batch| {
            let timer = baseline.elapsed_compute().timer();
            let reduced = batch.and_then(|b| reducer.reduce(&b));
            timer.done();
            reduced.map(|b| b.record_output(&baseline))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.reducer.schema),
            stream,
        )))
    }
}
