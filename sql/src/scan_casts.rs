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
//! So, in a kept plan, an aggregate reading a keyed scan directly has the
//! [`MemoCast`] calls on that scan's columns moved into the scan
//! ([`into_keyed_scans`]): the scan outputs each cast as one more column,
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
/// over keyed scans moved into those scans.
pub(crate) fn into_keyed_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            match moved(aggregate)? {
                Some(rewritten) => Ok(Transformed::yes(rewritten)),
                None => Ok(Transformed::no(node)),
            }
        })?
        .data)
}

/// `aggregate` reading its keyed scan's casts from the scan, when its
/// input is such a scan and some argument casts one of its columns.
fn moved(aggregate: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    // (a cooperative yield point may sit between)
    let coop = aggregate.input().downcast_ref::<CooperativeExec>();
    let input = coop.map_or(aggregate.input(), |c| c.input());
    let Some(scan) = input.downcast_ref::<DeferredScan>() else {
        return Ok(None);
    };
    if !scan.is_keyed() || scan.has_casts() {
        return Ok(None);
    }
    let schema = scan.schema();
    let mut casts: Vec<ScanCast> = Vec::new();
    let mut exprs: Vec<Arc<AggregateFunctionExpr>> = Vec::new();
    for aggr in aggregate.aggr_expr() {
        let all = aggr.all_expressions();
        let mut changed = false;
        let mut args = Vec::with_capacity(all.args.len());
        for arg in all.args {
            let arg = arg.transform_down(|e| {
                Ok(match cast_column(&e, &schema, &mut casts)? {
                    Some(column) => Transformed::yes(column),
                    None => Transformed::no(e),
                })
            })?;
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
    let options = || ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
    let mut input: Arc<dyn ExecutionPlan> = Arc::new(scan.with_casts(casts));
    if coop.is_some() {
        input = Arc::clone(aggregate.input()).replace_children(vec![input], options())?;
    }
    let aggregate = Arc::new(aggregate.with_new_aggr_exprs(exprs));
    Ok(Some(aggregate.replace_children(vec![input], options())?))
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
        .position(|c| c.source == column.index() && c.cast.target() == cast.target());
    let at = match found {
        Some(at) => at,
        None => {
            let field = expr.return_field(schema)?;
            let name = format!("{}#{}", field.name(), casts.len());
            casts.push(ScanCast {
                source: column.index(),
                cast: Arc::new(MemoCast::new(Arc::clone(cast.target()))),
                expr: Arc::clone(expr),
                field: Arc::new(field.as_ref().clone().with_name(name)),
            });
            casts.len() - 1
        }
    };
    let index = schema.fields().len() + at;
    Ok(Some(Arc::new(Column::new(casts[at].field.name(), index))))
}
