//! Filtered aggregation in one pass: a `WHERE` and the `GROUP BY` above it
//! fused into one plan node ([`FilterAggregateExec`]).
//!
//! DataFusion runs `SELECT optimizer, count(*), avg(loss) FROM epochs WHERE
//! epoch >= 50 GROUP BY optimizer` as a filter that copies the selected rows
//! of every column the aggregation reads (strings included) into new
//! batches, then an aggregation that hashes each copied row's grouping
//! values. Over millions of cached rows those copies and hashes are most of
//! the query's time. The fused node evaluates the predicate to a selection,
//! finds the groups of the selected rows from the unfiltered grouping
//! columns, keying each run of equal values once (`groups.rs`: provenance
//! rows of one run arrive together), and filters only the columns the
//! aggregate functions' arguments read.
//!
//! The answers are DataFusion's: its own group accumulators see the same
//! rows in the same order, arguments are evaluated on the selected rows
//! only (as after a filter), and the node emits the replaced aggregation's
//! schema (partial states for a final aggregation above, or final values
//! for a single-stage one). The rule ([`FilterAggregation`]) fuses only
//! what that holds for:
//! - a partial or single-stage aggregation directly over a filter without a
//!   limit, with plain grouping columns (no grouping sets) of types whose
//!   bytes are their values (`groups::supported`), and no limit or
//!   run-time filter of its own;
//! - aggregate functions with group accumulators, without DISTINCT, ORDER
//!   BY or FILTER;
//! - an input partitioned without a declared hash partitioning, which the
//!   node would not carry on.
//!
//! A partial aggregation with many groups emits them early, as DataFusion's
//! does under memory pressure; a single-stage one keeps all its groups, as
//! DataFusion's does without a memory limit. Run-time filters from above
//! (a hash join's) reach the input through grouping columns, as through
//! DataFusion's aggregation, and key joins see through the node
//! (`FilterAggregateExec::input_group_column`).

mod exec;
mod groups;

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, internal_err};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, InputOrderMode, Partitioning,
};

pub use exec::FilterAggregateExec;
pub(crate) use groups::{run_bounds, supported as keyed_by_bytes};

use exec::Output;

/// The physical optimizer rule; runs after DataFusion's own, on the plan
/// they leave.
#[derive(Debug, Default)]
pub struct FilterAggregation;

impl PhysicalOptimizerRule for FilterAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match fuse(&node)? {
                Some(fused) => Transformed::yes(Arc::new(fused) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "provdb_filter_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` as a fused filter and aggregation, when it is an aggregation the
/// module doc allows over a filter.
fn fuse(node: &Arc<dyn ExecutionPlan>) -> Result<Option<FilterAggregateExec>> {
    let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    let Some(filter) = aggregate.input().downcast_ref::<FilterExec>() else {
        return Ok(None);
    };
    let output = match aggregate.mode() {
        AggregateMode::Partial => Output::Partial,
        AggregateMode::Single => Output::Final,
        _ => return Ok(None),
    };
    let groups = aggregate.group_expr();
    let plain = groups.is_single()
        && !groups.expr().is_empty()
        && aggregate.limit_options().is_none()
        && aggregate.dynamic_expressions_produced().is_empty()
        && aggregate.filter_expr().iter().all(Option::is_none)
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && filter.fetch().is_none()
        && !matches!(filter.input().output_partitioning(), Partitioning::Hash(..))
        && aggregate.aggr_expr().iter().all(|a| fusable(a));
    if !plain {
        return Ok(None);
    }
    // Grouping columns and arguments are over the filter's output; the
    // node reads the filter's input.
    let filtered = filter.schema();
    let projection = filter.projection().clone();
    let to_input = |c: &Column| match &projection {
        Some(p) => match p.get(c.index()) {
            Some(&i) => Ok(Column::new(c.name(), i)),
            None => internal_err!("column {c} beyond the filter's projection"),
        },
        None => Ok(c.clone()),
    };
    let mut group = Vec::with_capacity(groups.expr().len());
    for (expr, name) in groups.expr() {
        match expr.downcast_ref::<Column>() {
            Some(c) if groups::supported(filtered.field(c.index()).data_type()) => {
                group.push((to_input(c)?, name.clone()));
            }
            _ => return Ok(None),
        }
    }
    let arguments = aggregate
        .aggr_expr()
        .iter()
        .map(|a| {
            a.expressions()
                .iter()
                .map(|e| remap_columns(e, &to_input))
                .collect()
        })
        .collect::<Result<Vec<_>>>()?;
    FilterAggregateExec::try_new(
        Arc::clone(filter.input()),
        Arc::clone(filter.predicate()),
        group,
        aggregate.aggr_expr().to_vec(),
        &arguments,
        output,
        aggregate.schema(),
    )
    .map(Some)
}

/// `expr` with each column replaced by `to(column)`.
fn remap_columns(
    expr: &Arc<dyn PhysicalExpr>,
    to: &dyn Fn(&Column) -> Result<Column>,
) -> Result<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform(|node| match node.downcast_ref::<Column>() {
            Some(c) => Ok(Transformed::yes(Arc::new(to(c)?) as Arc<dyn PhysicalExpr>)),
            None => Ok(Transformed::no(node)),
        })
        .data()
}

/// Whether an aggregate function's groups can be updated by the node.
fn fusable(aggregate: &AggregateFunctionExpr) -> bool {
    !aggregate.is_distinct()
        && aggregate.order_bys().is_empty()
        && aggregate.groups_accumulator_supported()
}
