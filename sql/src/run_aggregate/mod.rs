//! Run aggregation: reduce each run of rows with equal grouping values to
//! one row before a hash aggregation hashes them.
//!
//! Provenance rows of one training run arrive together, and the epoch
//! tables keep that order: `otrain` holds a task's hundred epochs side by
//! side. DataFusion's aggregation still finds the group of every row (a
//! hash and a probe) and updates each accumulator row by row; over a
//! million epochs that is most of "best validation accuracy per
//! configuration" (eager aggregation, [`crate::eager_aggregate`], groups
//! the epochs by task below the join). Reduced first, the aggregation sees
//! one row per run and batch: about a hundredth of the rows.
//!
//! The physical rule ([`RunAggregation`]) puts a [`RunAggregateExec`] under
//! the partial stage of a parallel aggregation when every aggregate can be
//! computed from per-run results: `min`, `max` and `sum` are the same
//! function over the runs' minima, maxima or sums, and `count(x)` becomes
//! `provdb_run_count` over the runs' counts (`count`'s own partial state,
//! so the final stage above is unchanged). Each argument must be a primitive type
//! the node reduces in place of DataFusion (for `sum`, the 64-bit types it
//! sums in, so the runs' sums wrap as its sum does); an argument that is
//! not a column is computed by a projection under the node. The answers
//! are the same up to the order in which floating-point sums are added, as
//! with any change of partitioning.
//!
//! Only partial stages: DataFusion plans those for statements over many
//! rows ([`crate::parallelism`]). A single-stage aggregation is what a
//! statement over fewer rows gets, and the prepared ones keep their plans
//! (`kept_physical`), which are rebuilt node by node at every execution:
//! there one more node cost DLProv's "progress of the running
//! executions" (4,600 epoch rows) 13% of its time and saved nothing.
//!
//! Runs are found by the comparison loops the filtered aggregation keys its
//! runs with (`filter_aggregate::run_bounds`), so grouping columns
//! must be of the types those compare by their bytes (not floats).
//!
//! Also required: plain grouping columns (no grouping sets), no DISTINCT,
//! ORDER BY or FILTER in the aggregates, no limit or run-time filter of the
//! aggregation's own, and an input not known to be sorted (a sorted one is
//! aggregated in streaming order). Aggregations over a filter are fused by
//! [`crate::filter_aggregate`] first, which keys runs itself.
//!
//! Where rows do not come in runs the node costs one comparison per row and
//! grouping column: a batch with fewer than two rows per run is passed on
//! as it is (with a count of 1 or 0 per row). Extremes of doubles are
//! found in IEEE 754 total order, as provdb's `min` and `max` find them
//! ([`crate::min_max`]).

mod exec;
mod run_count;
mod runs;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::logical_expr::AggregateUDF;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{ExecutionPlan, InputOrderMode, PhysicalExpr};

pub use exec::RunAggregateExec;

use crate::filter_aggregate::keyed_by_bytes;

use exec::Reduction;
use run_count::RunCount;
use runs::Reduce;

/// The physical optimizer rule; runs after DataFusion's own and after
/// [`crate::filter_aggregate::FilterAggregation`].
#[derive(Debug, Default)]
pub struct RunAggregation;

impl PhysicalOptimizerRule for RunAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match rewrite(&node)? {
                Some(rewritten) => Transformed::yes(rewritten),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "provdb_run_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What one aggregate becomes: the reduction of runs under the new node
/// and its argument (over the aggregation's input; `None` counts rows).
struct Planned {
    reduce: Reduce,
    argument: Option<Arc<dyn PhysicalExpr>>,
}

/// `node` with a run aggregation under it, when it is an aggregation the
/// module doc allows.
fn rewrite(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    let input = aggregate.input();
    let groups = aggregate.group_expr();
    let plain = *aggregate.mode() == AggregateMode::Partial
        && groups.is_single()
        && !groups.expr().is_empty()
        && aggregate.limit_options().is_none()
        && aggregate.dynamic_expressions_produced().is_empty()
        && aggregate.filter_expr().iter().all(Option::is_none)
        && *aggregate.input_order_mode() == InputOrderMode::Linear;
    if !plain {
        return Ok(None);
    }
    let schema = input.schema();
    let mut group = Vec::with_capacity(groups.expr().len());
    for (expr, _) in groups.expr() {
        match expr.downcast_ref::<Column>() {
            Some(c) if keyed_by_bytes(schema.field(c.index()).data_type()) => {
                group.push(c.clone());
            }
            _ => return Ok(None),
        }
    }
    let Some(planned) = aggregate
        .aggr_expr()
        .iter()
        .map(|a| plan_aggregate(a, &schema))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let runs = run_node(input, group, &planned)?;
    let rewritten = over_run_node(aggregate, &planned, Arc::new(runs))?;
    // Anything that would change what the plan above sees: keep the plan.
    Ok(rewritten
        .filter(|r| r.schema() == aggregate.schema())
        .map(|r| Arc::new(r) as Arc<dyn ExecutionPlan>))
}

/// `aggregate` again, over the run node `runs`: the same grouping (by the
/// node's first columns) and each aggregate over its runs' results.
fn over_run_node(
    aggregate: &AggregateExec,
    planned: &[Planned],
    runs: Arc<dyn ExecutionPlan>,
) -> Result<Option<AggregateExec>> {
    let schema = runs.schema();
    let column =
        |i: usize| -> Arc<dyn PhysicalExpr> { Arc::new(Column::new(schema.field(i).name(), i)) };
    let groups = aggregate.group_expr().expr();
    let group_by = PhysicalGroupBy::new_single(
        groups
            .iter()
            .enumerate()
            .map(|(i, (_, name))| (column(i), name.clone()))
            .collect(),
    );
    let mut aggregates = Vec::with_capacity(planned.len());
    for (i, (a, p)) in aggregate.aggr_expr().iter().zip(planned).enumerate() {
        match over_runs(a, p.reduce, column(groups.len() + i), &schema)? {
            Some(a) => aggregates.push(Arc::new(a)),
            None => return Ok(None),
        }
    }
    let filters = vec![None; aggregates.len()];
    let rewritten = AggregateExec::try_new(
        *aggregate.mode(),
        group_by,
        aggregates,
        filters,
        runs,
        Arc::clone(&schema),
    )?;
    Ok(Some(rewritten))
}

/// How aggregate `a` (over `schema`) is computed from runs, or None if it
/// cannot be.
fn plan_aggregate(a: &AggregateFunctionExpr, schema: &Schema) -> Option<Planned> {
    if a.is_distinct() || !a.order_bys().is_empty() || a.ignore_nulls() {
        return None;
    }
    let [argument] = a.expressions().try_into().ok()?;
    let data_type = argument.data_type(schema).ok()?;
    let reduce = match a.fun().name() {
        "min" if reducible(&data_type) => Reduce::Min,
        "max" if reducible(&data_type) => Reduce::Max,
        "sum"
            if matches!(
                data_type,
                DataType::Int64 | DataType::UInt64 | DataType::Float64
            ) =>
        {
            Reduce::Sum
        }
        "count" => Reduce::Count,
        _ => return None,
    };
    // count(*) is a count of a constant: of the rows.
    let rows = reduce == Reduce::Count
        && argument
            .downcast_ref::<Literal>()
            .is_some_and(|l| !l.value().is_null());
    Some(Planned {
        reduce,
        argument: (!rows).then_some(argument),
    })
}

/// Types whose minimum and maximum the node finds as DataFusion does:
/// integers, doubles, decimals, dates, times, timestamps and durations.
fn reducible(data_type: &DataType) -> bool {
    use DataType::*;
    data_type.is_integer()
        || matches!(
            data_type,
            Float64
                | Decimal128(..)
                | Date32
                | Date64
                | Time32(_)
                | Time64(_)
                | Timestamp(..)
                | Duration(_)
        )
}

/// The run node over the aggregation's `input` when every argument is a
/// column of it, else over a projection of the grouping columns and the
/// arguments.
fn run_node(
    input: &Arc<dyn ExecutionPlan>,
    group: Vec<Column>,
    planned: &[Planned],
) -> Result<RunAggregateExec> {
    let columns: Option<Vec<Option<Column>>> = planned
        .iter()
        .map(|p| match &p.argument {
            None => Some(None),
            Some(e) => e.downcast_ref::<Column>().cloned().map(Some),
        })
        .collect();
    if let Some(columns) = columns {
        let reductions = planned
            .iter()
            .zip(columns)
            .map(|(p, column)| Reduction {
                reduce: p.reduce,
                column,
            })
            .collect();
        return RunAggregateExec::try_new(Arc::clone(input), group, reductions);
    }
    let mut exprs: Vec<ProjectionExpr> = group
        .iter()
        .map(|c| ProjectionExpr::new(Arc::new(c.clone()), c.name().to_string()))
        .collect();
    let projected_group = group
        .iter()
        .enumerate()
        .map(|(i, c)| Column::new(c.name(), i))
        .collect();
    let mut reductions = Vec::with_capacity(planned.len());
    for (i, p) in planned.iter().enumerate() {
        let column = match &p.argument {
            None => None,
            Some(e) => {
                let name = format!("__provdb_run_argument_{i}");
                exprs.push(ProjectionExpr::new(Arc::clone(e), name.clone()));
                Some(Column::new(&name, exprs.len() - 1))
            }
        };
        reductions.push(Reduction {
            reduce: p.reduce,
            column,
        });
    }
    let projection = ProjectionExec::try_new(exprs, Arc::clone(input))?;
    RunAggregateExec::try_new(Arc::new(projection), projected_group, reductions)
}

/// Aggregate `a` over its runs' results in `column` (of `schema`, the run
/// node's): the same function for a minimum, maximum or sum, a
/// [`RunCount`] under the same name for a count.
fn over_runs(
    a: &AggregateFunctionExpr,
    reduce: Reduce,
    column: Arc<dyn PhysicalExpr>,
    schema: &Arc<Schema>,
) -> Result<Option<AggregateFunctionExpr>> {
    if reduce != Reduce::Count {
        return Ok(a.with_new_expressions(vec![column], vec![]));
    }
    let count = Arc::new(AggregateUDF::new_from_impl(RunCount::default()));
    let built = AggregateExprBuilder::new(count, vec![column])
        .schema(Arc::clone(schema))
        .alias(a.name())
        .build()?;
    Ok(Some(built))
}
