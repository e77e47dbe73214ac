//! Prepared statements (extended protocol Parse) and the plans they keep.
//!
//! A prepared query is planned once at Parse. Where it is safe, the
//! analysed and optimised logical plan is kept too, with its `$n`
//! placeholders in place, so an execution only writes the bound values into
//! it and runs the physical planner: the logical optimizer, which costs as
//! much as executing a point query, runs once per statement instead of once
//! per execution. Scans still take their snapshot at execution, so a kept
//! plan never serves stale rows.
//!
//! Not kept (optimised again at every execution, as before):
//! - plans calling a *stable* function (`now()`, `current_schema()`...): the
//!   optimizer folds those to the value they have when it runs;
//! - plans the optimizer cannot handle with placeholders in them (a `$n`
//!   whose type nothing fixes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ParamValues, Result, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};

use provdb_storage::{Storage, TableId};

use crate::direct::Direct;
use crate::kept_physical::KeptPhysical;

/// A statement prepared with the extended protocol (Parse).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The statement's text.
    pub sql: String,
    /// One type per `$n` parameter (inferred where the client sent none).
    pub param_types: Vec<DataType>,
    /// Per `$n`, the integer type the plan uses it as, where it does: a
    /// float bound to it is rounded first, as PostgreSQL assigns a float
    /// to an integer ([`crate::rounding_casts::rounded_for`]).
    pub(crate) integer_params: Vec<Option<DataType>>,
    /// The result columns, or `None` for a statement that returns no rows.
    pub result_schema: Option<SchemaRef>,
    /// The planned statement (queries and DML), reused on every execution.
    pub(crate) plan: Option<LogicalPlan>,
    /// `plan` analysed and optimised, placeholders kept, when that is safe
    /// (see the module doc).
    pub(crate) optimized: Option<Arc<KeptPlan>>,
    /// The kept plan's direct form ([`crate::direct`]), when it has one.
    pub(crate) direct: Option<Direct>,
    /// The kept plan's physical plan ([`crate::kept_physical`]), for
    /// queries that can keep one.
    pub(crate) physical: Option<Arc<KeptPhysical>>,
    /// A lineage call holds a `$n` inside a larger expression, which it
    /// cannot read at run time: plan again at each execution.
    pub(crate) replan: bool,
    /// The stored tables the plan reads or writes, with their columns at
    /// Parse: a kept plan is only valid while these are unchanged.
    pub(crate) depends: Vec<(TableId, SchemaRef)>,
    /// The DDL version at which `depends` was last found unchanged.
    pub(crate) checked_at: Arc<AtomicU64>,
    /// Subqueries given as lineage function arguments, each prepared on
    /// its own; their results bind the parameters numbered after the
    /// client's (`crate::lineage::subquery::hoist`).
    pub(crate) starts: Vec<StartQuery>,
}

/// A lineage function argument's subquery, prepared as a statement.
#[derive(Debug, Clone)]
pub(crate) struct StartQuery {
    pub(crate) prepared: Box<Prepared>,
    /// The function it is an argument of.
    pub(crate) function: String,
}

impl Prepared {
    /// A statement that is not planned by DataFusion (SET, SHOW, COPY,
    /// transaction control, the empty statement): parsed again when run.
    pub(crate) fn unplanned(sql: &str, result_schema: Option<SchemaRef>) -> Self {
        Prepared {
            sql: sql.to_string(),
            param_types: vec![],
            integer_params: vec![],
            result_schema,
            plan: None,
            optimized: None,
            direct: None,
            physical: None,
            replan: false,
            depends: Vec::new(),
            checked_at: Arc::new(AtomicU64::new(0)),
            starts: Vec::new(),
        }
    }

    /// Whether every table the plan uses still has the columns and key it
    /// had at Parse (`ALTER TABLE ... ADD COLUMN`, a table dropped and
    /// created again). When not, the statement is planned again at each
    /// execution, as PostgreSQL re-plans a cached plan after DDL.
    pub(crate) fn tables_unchanged(&self, storage: &Storage) -> bool {
        let now = storage.ddl_version();
        if self.checked_at.load(Ordering::Relaxed) == now {
            return true;
        }
        let same = self.depends.iter().all(|(id, schema)| {
            storage
                .table(*id)
                .is_some_and(|d| d.schema.as_ref() == schema.as_ref())
        });
        if same {
            self.checked_at.store(now, Ordering::Relaxed);
        }
        same
    }
}

/// An optimised plan kept for reuse, and the type each `$n` has in it.
#[derive(Debug, Clone)]
pub(crate) struct KeptPlan {
    plan: LogicalPlan,
    /// `types[i]` is the type the plan was optimised for `$i+1` (`None`
    /// where nothing in the statement fixed one).
    types: Vec<Option<DataType>>,
    /// The plan holds a `VALUES` list (bound the slower, general way).
    has_values_node: bool,
}

impl KeptPlan {
    /// The kept plan with `params` written in, or `None` when a value
    /// does not convert exactly to the type the plan was optimised for
    /// (an `int8` bound to an `INT` column, `1.5` to an integer): then the
    /// caller optimises the statement again with the value as sent, so the
    /// answer is the one an unprepared statement would give.
    pub(crate) fn bind(&self, params: &[ScalarValue]) -> Option<LogicalPlan> {
        let values = self.bound_values(params)?;
        if self.has_values_node {
            // A VALUES list takes its column types from its literals: let
            // DataFusion rebuild it.
            return self
                .plan
                .clone()
                .with_param_values(ParamValues::from(values))
                .ok();
        }
        substitute(self.plan.clone(), &values).ok()
    }

    /// The optimised plan, placeholders in place.
    pub(crate) fn plan(&self) -> &LogicalPlan {
        &self.plan
    }

    /// `params` converted to the types the plan was optimised for, or
    /// `None` when one does not convert exactly (see [`KeptPlan::bind`]).
    pub(crate) fn bound_values(&self, params: &[ScalarValue]) -> Option<Vec<ScalarValue>> {
        params
            .iter()
            .enumerate()
            .map(|(i, v)| match self.types.get(i).cloned().flatten() {
                Some(t) if t != v.data_type() => exact_cast(v, &t),
                _ => Some(v.clone()),
            })
            .collect()
    }
}

/// `plan` with `values[n-1]` in place of each `$n`. Every value already has
/// the type the plan was optimised for, so no schema changes and only the
/// nodes whose expressions held a parameter are rebuilt (DataFusion's
/// `with_param_values` recomputes the schema of every node, which costs as
/// much as the rest of a point query's binding).
fn substitute(plan: LogicalPlan, values: &[ScalarValue]) -> Result<LogicalPlan> {
    let literal = |p: &Placeholder| literal_for(p, values);
    plan.transform_up_with_subqueries(|node| map_placeholders(node, &literal))
        .map(|t| t.data)
}

/// `node` with each `$n` in its own expressions replaced by `with($n)`.
/// Output names are kept, so the node's schema keeps its field names; only
/// a node that held a parameter is rebuilt.
pub(crate) fn map_placeholders(
    node: LogicalPlan,
    with: &dyn Fn(&Placeholder) -> Result<Expr>,
) -> Result<Transformed<LogicalPlan>> {
    let names = NamePreserver::new(&node);
    let node = node.map_expressions(|e| {
        if !e.exists(|x| Ok(matches!(x, Expr::Placeholder(_))))? {
            return Ok(Transformed::no(e));
        }
        let saved = names.save(&e);
        let e = e.transform_up(|x| match x {
            Expr::Placeholder(p) => Ok(Transformed::yes(with(&p)?)),
            other => Ok(Transformed::no(other)),
        })?;
        Ok(e.update_data(|e| saved.restore(e)))
    })?;
    if node.transformed {
        node.map_data(|n| n.recompute_schema())
    } else {
        Ok(node)
    }
}

/// `e` with `values[n-1]` in place of each `$n`.
pub(crate) fn bind_expr(e: Expr, values: &[ScalarValue]) -> Result<Expr> {
    e.transform_up(|x| match x {
        Expr::Placeholder(p) => Ok(Transformed::yes(literal_for(&p, values)?)),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// The literal bound to placeholder `p`.
fn literal_for(p: &Placeholder, values: &[ScalarValue]) -> Result<Expr> {
    Ok(Expr::Literal(value_of(&p.id, values)?, None))
}

/// The index of placeholder `id` in the bound values (`$1` is 0).
pub(crate) fn param_index(id: &str) -> Option<usize> {
    id.strip_prefix('$')?.parse::<usize>().ok()?.checked_sub(1)
}

/// The value bound to placeholder `id` (`$1` is `values[0]`).
fn value_of(id: &str, values: &[ScalarValue]) -> Result<ScalarValue> {
    param_index(id)
        .and_then(|i| values.get(i))
        .cloned()
        .ok_or_else(|| DataFusionError::Plan(format!("no value bound for parameter {id}")))
}

/// `v` as type `t`, if converting it back gives `v` again.
fn exact_cast(v: &ScalarValue, t: &DataType) -> Option<ScalarValue> {
    let cast = v.cast_to(t).ok()?;
    let back = cast.cast_to(&v.data_type()).ok()?;
    (back == *v).then_some(cast)
}

/// `plan` optimised once for reuse across executions, or `None` when it
/// must be optimised at each execution.
pub(crate) fn optimize_for_reuse(state: &SessionState, plan: &LogicalPlan) -> Option<KeptPlan> {
    if calls_stable_function(plan) {
        return None;
    }
    let optimized = match state.optimize(plan) {
        Ok(optimized) => optimized,
        Err(e) => {
            tracing::debug!(error = %e, "prepared plan not kept optimised");
            return None;
        }
    };
    let found = optimized.get_parameter_types().ok()?;
    let count = found
        .keys()
        .filter_map(|k| k.strip_prefix('$')?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    let types = (1..=count)
        .map(|n| found.get(&format!("${n}")).cloned().flatten())
        .collect();
    let mut has_values_node = false;
    let walked = optimized.apply_with_subqueries(|p| {
        has_values_node |= matches!(p, LogicalPlan::Values(_));
        Ok(TreeNodeRecursion::Continue)
    });
    has_values_node |= walked.is_err();
    Some(KeptPlan {
        plan: optimized,
        types,
        has_values_node,
    })
}

/// Whether any expression of `plan` (subqueries included) calls a function
/// whose value the optimizer would fold at planning time.
fn calls_stable_function(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if is_folded_per_statement(e) {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    // A walk that fails is treated as "found": do not keep the plan.
    found || walked.is_err()
}

fn is_folded_per_statement(e: &Expr) -> bool {
    match e {
        Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Stable,
        Expr::ScalarVariable(..) => true,
        _ => false,
    }
}
