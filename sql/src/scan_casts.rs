//! Casts of stored text columns moved into the keyed scans of kept plans.
//!
//! DLProv's M3 sums `CAST(elapsed_time AS DOUBLE PRECISION)` over the
//! epochs of the hundred running executions: a key join hands their task
//! ids to otrain's scan ([`crate::key_join`]), which takes those rows out
//! of the stored batches, and the aggregate above then parses the taken
//! strings at every execution (13% of the server's time). The casts of
//! whole stored arrays are kept ([`crate::memo_cast`]), but the taken rows
//! are new arrays each time.
//!
//! So, in a kept plan, an aggregate or a projection reading a keyed scan
//! directly has the [`MemoCast`] calls (either mode) on that scan's
//! columns moved into the scan ([`into_keyed_scans`]): the scan outputs
//! each cast as one more column,
//! made from the whole stored array (kept from its second sighting on) and
//! taken with the rows, and the aggregate reads that column. A cast that
//! fails on a whole array (a bad value in a row the query does not read)
//! is made on the taken rows instead, so a query fails only on its own
//! rows, as before. Scans read from Parquet or through the key index add
//! the column by a projection over what they read.

use std::sync::Arc;

use datafusion::arrow::datatypes::{FieldRef, Fields, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, PhysicalExpr, ReplaceChildrenOptions,
};

use crate::kept_physical::DeferredScan;
use crate::memo_cast::MemoCast;

/// A column a keyed scan adds: one of its columns cast.
#[derive(Debug, Clone)]
pub(crate) struct ScanCast {
    /// The cast column's index among the scan's columns.
    pub source: usize,
    pub cast: Arc<MemoCast>,
    /// The call as planned, over the scan's columns.
    pub expr: Arc<dyn PhysicalExpr>,
    /// The added column.
    pub field: FieldRef,
}

/// `base` (a scan's columns) with the columns `casts` add after them.
pub(crate) fn with_cast_fields(base: &SchemaRef, casts: &[ScanCast]) -> SchemaRef {
    if casts.is_empty() {
        return Arc::clone(base);
    }
    let fields = base
        .fields()
        .iter()
        .cloned()
        .chain(casts.iter().map(|c| Arc::clone(&c.field)));
    Arc::new(Schema::new_with_metadata(
        fields.collect::<Fields>(),
        base.metadata().clone(),
    ))
}

/// `plan` (a kept plan with keyed scans) with the casts of its aggregates
/// and projections over keyed scans moved into those scans.
pub(crate) fn into_keyed_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let moved = if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
                moved_from_aggregate(aggregate)?
            } else if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
                moved_from_projection(projection)?
            } else {
                None
            };
            match moved {
                Some(rewritten) => Ok(Transformed::yes(rewritten)),
                None => Ok(Transformed::no(node)),
            }
        })?
        .data)
}

/// The keyed scan `input` is, directly or under a cooperative yield point,
/// if it has no casts yet.
fn keyed_scan(input: &Arc<dyn ExecutionPlan>) -> Option<&DeferredScan> {
    let coop = input.downcast_ref::<CooperativeExec>();
    let scan = coop
        .map_or(input, |c| c.input())
        .downcast_ref::<DeferredScan>()?;
    (scan.is_keyed() && !scan.has_casts()).then_some(scan)
}

/// `input` (a keyed scan, perhaps under a yield point) with `casts` added.
fn with_scan_casts(
    input: &Arc<dyn ExecutionPlan>,
    scan: &DeferredScan,
    casts: Vec<ScanCast>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let scan: Arc<dyn ExecutionPlan> = Arc::new(scan.with_casts(casts));
    if input.downcast_ref::<CooperativeExec>().is_none() {
        return Ok(scan);
    }
    Arc::clone(input).replace_children(vec![scan], recompute())
}

fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// `expr` reading the scan's added columns for its casts of the scan's
/// columns (`schema`), the casts added to `casts`.
fn read_casts(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
    casts: &mut Vec<ScanCast>,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    Arc::clone(expr).transform_down(|e| {
        Ok(match cast_column(&e, schema, casts)? {
            Some(column) => Transformed::yes(column),
            None => Transformed::no(e),
        })
    })
}

/// `aggregate` reading its keyed scan's casts from the scan, when its
/// input is such a scan and some argument casts one of its columns.
fn moved_from_aggregate(aggregate: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = keyed_scan(aggregate.input()) else {
        return Ok(None);
    };
    let schema = scan.schema();
    let mut casts: Vec<ScanCast> = Vec::new();
    let mut exprs: Vec<Arc<AggregateFunctionExpr>> = Vec::new();
    for aggr in aggregate.aggr_expr() {
        let all = aggr.all_expressions();
        let mut changed = false;
        let mut args = Vec::with_capacity(all.args.len());
        for arg in &all.args {
            let arg = read_casts(arg, &schema, &mut casts)?;
            changed |= arg.transformed;
            args.push(arg.data);
        }
        if !changed {
            exprs.push(Arc::clone(aggr));
            continue;
        }
        let Some(rewritten) = aggr.with_new_expressions(args, all.order_by_exprs) else {
            return Ok(None);
        };
        exprs.push(Arc::new(rewritten));
    }
    if casts.is_empty() {
        return Ok(None);
    }
    let input = with_scan_casts(aggregate.input(), scan, casts)?;
    let aggregate = Arc::new(aggregate.with_new_aggr_exprs(exprs));
    Ok(Some(aggregate.replace_children(vec![input], recompute())?))
}

/// `projection` reading its keyed scan's casts from the scan. DataFusion
/// moves a cast two aggregates share into such a projection below them
/// (eager aggregation's `provdb_memo_try_cast` is one).
fn moved_from_projection(projection: &ProjectionExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = keyed_scan(projection.input()) else {
        return Ok(None);
    };
    let schema = scan.schema();
    let mut casts: Vec<ScanCast> = Vec::new();
    let mut exprs: Vec<ProjectionExpr> = Vec::with_capacity(projection.expr().len());
    for p in projection.expr() {
        let expr = read_casts(&p.expr, &schema, &mut casts)?.data;
        exprs.push(ProjectionExpr::new(expr, p.alias.clone()));
    }
    if casts.is_empty() {
        return Ok(None);
    }
    let input = with_scan_casts(projection.input(), scan, casts)?;
    Ok(Some(Arc::new(ProjectionExec::try_new(exprs, input)?)))
}

/// For `expr`, a [`MemoCast`] of a column of the scan (of `schema`), the
/// column of the scan's output that will hold the cast (added to `casts`
/// unless an equal cast is there).
fn cast_column(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
    casts: &mut Vec<ScanCast>,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let Some(call) = expr.downcast_ref::<ScalarFunctionExpr>() else {
        return Ok(None);
    };
    let (Some(cast), [arg]) = (call.fun().inner().downcast_ref::<MemoCast>(), call.args()) else {
        return Ok(None);
    };
    let Some(column) = arg.downcast_ref::<Column>() else {
        return Ok(None);
    };
    let found = casts
        .iter()
        .position(|c| c.source == column.index() && *c.cast == *cast);
    let at = match found {
        Some(at) => at,
        None => {
            let field = expr.return_field(schema)?;
            let name = format!("{}#{}", field.name(), casts.len());
            casts.push(ScanCast {
                source: column.index(),
                cast: Arc::new(cast.clone()),
                expr: Arc::clone(expr),
                field: Arc::new(field.as_ref().clone().with_name(name)),
            });
            casts.len() - 1
        }
    };
    let index = schema.fields().len() + at;
    Ok(Some(Arc::new(Column::new(casts[at].field.name(), index))))
}
