//! [`FilterAggregateExec`]: the plan node and its stream.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{filter_record_batch, prep_null_mask_filter};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::cast::as_boolean_array;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{EmissionType, apply_expression_roots};
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, FilterDescription, FilterPushdownPhase,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;

use super::groups::Groups;
use super::remap_columns;

use crate::batches::batch_of;

/// Groups held before a partial aggregation emits them early (its final
/// stage merges groups emitted more than once), bounding its memory when
/// the grouping columns have many values.
const PARTIAL_GROUPS: usize = 32 * 1024;

/// Whether the node emits partial states (a final aggregation above merges
/// them) or final values (it sees every row of its groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    Partial,
    Final,
}

/// A filter and the aggregation above it in one node: the predicate selects
/// rows of each input batch, their groups are found from the unfiltered
/// grouping columns, and only the aggregate functions' argument columns are
/// filtered for the accumulators.
#[derive(Debug)]
pub struct FilterAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    /// Over the input's columns, as everything below.
    predicate: Arc<dyn PhysicalExpr>,
    /// Grouping columns with their output names.
    group: Vec<(Column, String)>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    arguments: Arguments,
    output: Output,
    /// The replaced aggregation's output schema.
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// The aggregate functions' arguments, evaluated over a batch of only the
/// input columns they read (the columns filtered for them).
#[derive(Debug, Clone)]
struct Arguments {
    /// Each aggregate's arguments over the input, as planned.
    planned: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// The input columns they read, in the batch's order.
    columns: Vec<usize>,
    schema: SchemaRef,
    /// Each aggregate's arguments over that batch.
    exprs: Vec<Vec<Arc<dyn PhysicalExpr>>>,
}

impl Arguments {
    /// `exprs` (over the input) rewritten over the input columns they read.
    fn new(exprs: &[Vec<Arc<dyn PhysicalExpr>>], input: &SchemaRef) -> Result<Self> {
        let mut columns: Vec<usize> = Vec::new();
        for e in exprs.iter().flatten() {
            e.apply(|node| {
                if let Some(c) = node.downcast_ref::<Column>()
                    && !columns.contains(&c.index())
                {
                    columns.push(c.index());
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        let schema = Arc::new(input.project(&columns)?);
        let to_batch = |c: &Column| match columns.iter().position(|&i| i == c.index()) {
            Some(p) => Ok(Column::new(c.name(), p)),
            None => internal_err!("argument column {c} not collected"),
        };
        let over_batch = exprs
            .iter()
            .map(|list| list.iter().map(|e| remap_columns(e, &to_batch)).collect())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            planned: exprs.to_vec(),
            columns,
            schema,
            exprs: over_batch,
        })
    }

    /// The argument columns of `input`.
    fn batch(&self, input: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .columns
            .iter()
            .map(|&i| Arc::clone(input.column(i)))
            .collect();
        batch_of(&self.schema, columns, input.num_rows())
    }
}

impl FilterAggregateExec {
    /// `group` and each aggregate's `arguments` are over the input's
    /// columns; `schema` is the replaced aggregation's.
    pub(super) fn try_new(
        input: Arc<dyn ExecutionPlan>,
        predicate: Arc<dyn PhysicalExpr>,
        group: Vec<(Column, String)>,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        arguments: &[Vec<Arc<dyn PhysicalExpr>>],
        output: Output,
        schema: SchemaRef,
    ) -> Result<Self> {
        let arguments = Arguments::new(arguments, &input.schema())?;
        let props = Arc::new(properties(&input, &schema));
        Ok(Self {
            input,
            predicate,
            group,
            aggregates,
            arguments,
            output,
            schema,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The input column that output column `column` (a grouping column)
    /// comes from, for rewrites that narrow the input by key.
    pub(crate) fn input_group_column(&self, column: usize) -> Option<usize> {
        self.group.get(column).map(|(c, _)| c.index())
    }

    fn with_input(&self, input: Arc<dyn ExecutionPlan>) -> Self {
        let props = Arc::new(properties(&input, &self.schema));
        Self {
            input,
            predicate: Arc::clone(&self.predicate),
            group: self.group.clone(),
            aggregates: self.aggregates.clone(),
            arguments: self.arguments.clone(),
            output: self.output,
            schema: Arc::clone(&self.schema),
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The grouping columns whose name in the output is the name of the one
    /// input column they come from: a run-time filter on those can be
    /// pushed to the input, as through any aggregation (it removes whole
    /// groups), and DataFusion remaps such filters by name.
    fn pushable_group_columns(&self) -> HashSet<usize> {
        let input = self.input.schema();
        (0..self.group.len())
            .filter(|&i| {
                let name = self.schema.field(i).name();
                self.input_group_column(i)
                    .is_some_and(|c| input.index_of(name).is_ok_and(|found| found == c))
            })
            .collect()
    }
}

fn properties(input: &Arc<dyn ExecutionPlan>, schema: &SchemaRef) -> PlanProperties {
    PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(schema)),
        Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
        EmissionType::Final,
        input.boundedness(),
    )
}

impl DisplayAs for FilterAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mode = match self.output {
            Output::Partial => "Partial",
            Output::Final => "Single",
        };
        let groups: Vec<String> = self
            .group
            .iter()
            .map(|(c, name)| format!("{c} as {name}"))
            .collect();
        let aggregates: Vec<&str> = self.aggregates.iter().map(|a| a.name()).collect();
        write!(
            f,
            "FilterAggregateExec: mode={mode}, gby=[{}], aggr=[{}], predicate={}",
            groups.join(", "),
            aggregates.join(", "),
            self.predicate
        )
    }
}

impl ExecutionPlan for FilterAggregateExec {
    fn name(&self) -> &str {
        "FilterAggregateExec"
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
        let groups = self
            .group
            .iter()
            .map(|(c, _)| Arc::new(c.clone()) as Arc<dyn PhysicalExpr>);
        let arguments = self.arguments.planned.iter().flatten().cloned();
        apply_expression_roots(
            std::iter::once(Arc::clone(&self.predicate))
                .chain(groups)
                .chain(arguments),
            f,
        )
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(self.with_input(input))),
            Err(children) => internal_err!(
                "FilterAggregateExec has one input, given {}",
                children.len()
            ),
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
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        let state = Fused {
            input,
            predicate: Arc::clone(&self.predicate),
            group: self.group.iter().map(|(c, _)| c.index()).collect(),
            arguments: self.arguments.clone(),
            output: self.output,
            schema: Arc::clone(&self.schema),
            groups: Groups::default(),
            accumulators,
            ids: Vec::new(),
            done: false,
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            match state.next_output().await {
                Ok(Some(batch)) => Some((Ok(batch), state)),
                Ok(None) => None,
                Err(e) => {
                    state.done = true;
                    Some((Err(e), state))
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// The rows of a batch a predicate selects.
enum Selection {
    None,
    All,
    /// Some rows (no NULLs), and how many.
    Rows(BooleanArray, usize),
}

/// One partition's aggregation in progress.
struct Fused {
    input: SendableRecordBatchStream,
    predicate: Arc<dyn PhysicalExpr>,
    group: Vec<usize>,
    arguments: Arguments,
    output: Output,
    schema: SchemaRef,
    groups: Groups,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// The group of each selected row of the current batch.
    ids: Vec<usize>,
    done: bool,
    baseline: BaselineMetrics,
}

impl Fused {
    /// Reads input until there is something to emit: every group at the
    /// end, or a partial aggregation's groups once there are many.
    async fn next_output(&mut self) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        let elapsed = self.baseline.elapsed_compute().clone();
        while let Some(batch) = self.input.next().await {
            let batch = batch?;
            let _timer = elapsed.timer();
            self.update(&batch)?;
            if self.output == Output::Partial && self.groups.len() >= PARTIAL_GROUPS {
                return self.emit().map(Some);
            }
        }
        self.done = true;
        if self.groups.len() == 0 {
            return Ok(None);
        }
        let _timer = elapsed.timer();
        self.emit().map(Some)
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let (rows, selected) = match self.selection(batch)? {
            Selection::None => return Ok(()),
            Selection::All => (None, batch.num_rows()),
            Selection::Rows(rows, count) => (Some(rows), count),
        };
        let keys: Vec<ArrayRef> = self
            .group
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        self.groups
            .intern(&keys, rows.as_ref().map(|r| r.values()), &mut self.ids)?;
        let arguments = self.arguments.batch(batch)?;
        let arguments = match &rows {
            Some(rows) => filter_record_batch(&arguments, rows)?,
            None => arguments,
        };
        for (accumulator, exprs) in self.accumulators.iter_mut().zip(&self.arguments.exprs) {
            let values = exprs
                .iter()
                .map(|e| e.evaluate(&arguments)?.into_array(selected))
                .collect::<Result<Vec<_>>>()?;
            accumulator.update_batch(&values, &self.ids, None, self.groups.len())?;
        }
        Ok(())
    }

    /// The rows of `batch` the predicate selects (NULL is not selected).
    fn selection(&self, batch: &RecordBatch) -> Result<Selection> {
        let result = self
            .predicate
            .evaluate(batch)?
            .into_array(batch.num_rows())?;
        let mask = as_boolean_array(&result)?;
        let rows = if mask.null_count() > 0 {
            prep_null_mask_filter(mask)
        } else {
            mask.clone()
        };
        Ok(match rows.true_count() {
            0 => Selection::None,
            n if n == rows.len() => Selection::All,
            n => Selection::Rows(rows, n),
        })
    }

    fn emit(&mut self) -> Result<RecordBatch> {
        let mut columns = self.groups.emit()?;
        for accumulator in &mut self.accumulators {
            match self.output {
                Output::Partial => columns.extend(accumulator.state(EmitTo::All)?),
                Output::Final => columns.push(accumulator.evaluate(EmitTo::All)?),
            }
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        self.baseline.record_output(batch.num_rows());
        Ok(batch)
    }
}
