//! Eager aggregation: aggregate the big side of a join before joining.
//!
//! The DLProv questions group a few thousand configurations over the
//! million epoch rows joined to them (`itrain ⋈ otrain GROUP BY
//! optimizer, learning rate ...`). DataFusion plans those as join first,
//! aggregate after, so the hash join probes and emits a million wide rows
//! and the aggregation hashes them all on the wide keys. When every
//! aggregate argument comes from one input of a join tree, the same
//! answer is reached by first aggregating that input on the columns the
//! rest of the plan needs from it (its join keys, its grouping columns),
//! joining the partial results, and combining them (Yan and Larson's
//! eager group-by): a million rows become one per training task before
//! the join.
//!
//! Why it is exact: a group of `n` input rows sharing those columns meets
//! the same partners in every join, so each joined row of the original
//! plan stands for one (group, partners) pair repeated `n` times. The
//! partial states carry the repetition: `count` becomes a sum of counts,
//! `sum` a sum of sums, `min`/`max` stay idempotent, and `avg` is split
//! into a sum and a count divided at the end. Only these five, without
//! DISTINCT, FILTER or ORDER BY.
//!
//! A `min` or `max` reading only the other inputs stays above the join:
//! the rewrite repeats their rows fewer times, which an extreme does not
//! see (DLProv's "progress of the running executions" takes the planned
//! epochs as a max over the configuration while counting epoch rows).
//!
//! Left and right joins are allowed. On the preserved side the argument
//! above holds (an unmatched group is one NULL-extended row, as each of its
//! rows was). On the NULL-filled side an unmatched row joins one row of
//! NULL partials where it joined one row of NULL arguments: the same for an
//! aggregate over a bare column of the input (a count of it is 0 there, the
//! others NULL), not for `count(*)` or `sum(coalesce(x, 1))`, which see a
//! row or a value in the NULL row; those keep the plan. Full joins and
//! anything else, or a rewrite whose output schema would differ in any
//! name, type or nullability, leave the plan as it was.
//!
//! Aggregating first evaluates the arguments on rows the join would drop,
//! so an argument that can fail must not fail there: a bad value in an
//! epoch row of a task the query does not select leaves the answer alone
//! when the join comes first (PostgreSQL's answer). Arguments that cannot
//! fail (columns, constants, widening casts, arithmetic that wraps or is
//! on floats) are aggregated as they are. `CAST(column AS type)` of text,
//! what DfAnalyzer's TEXT attributes need, is made below the join with bad
//! values as NULL ([`CastMode::Try`]), and the bad values themselves are
//! aggregated beside it (the least per group, [`CastFaults`]); above the
//! join a group that still has one fails with the cast's own error
//! ([`RaiseCast`]). Any other argument that can fail leaves the plan as it
//! was.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema, Result};
use datafusion::functions_aggregate::expr_fn::{count, min, sum};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, Join, JoinType, LogicalPlan, Operator, Projection, cast, col,
    lit,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::coalesce;

use crate::cast_faults::CastFaults;
use crate::memo_cast::{CastMode, MemoCast, RaiseCast, is_text, parsed_type};

/// The optimizer rule. Added after DataFusion's own rules, so the plans it
/// sees already have filters and projections pushed down; the next pass
/// prunes the columns the rewrite leaves unused.
#[derive(Debug, Default)]
pub struct EagerAggregation;

impl OptimizerRule for EagerAggregation {
    fn name(&self) -> &str {
        "provdb_eager_aggregation"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match eager(aggregate)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// How one aggregate of the query is split into a partial aggregate below
/// the join and a final expression above it.
#[derive(Clone, Copy)]
enum Split {
    /// `min`, `max`: the same function over the partial results.
    Extreme,
    /// `sum`: the sum of the partial sums.
    Sum,
    /// `count`: the sum of the partial counts.
    Count,
    /// `avg`: a partial sum and a partial count.
    Avg,
    /// `min` or `max` over columns of the other inputs: computed above the
    /// join as before (the rewrite repeats those rows fewer times, which a
    /// minimum or maximum does not see).
    Keep,
}

/// The supported aggregates of `aggregate`, with their arguments, or None
/// if any is not one the rewrite knows how to split.
fn splits(aggregate: &Aggregate) -> Option<Vec<(Split, &AggregateFunction)>> {
    aggregate
        .aggr_expr
        .iter()
        .map(|e| {
            let Expr::AggregateFunction(f) = e else {
                return None;
            };
            let p = &f.params;
            if p.distinct || p.filter.is_some() || !p.order_by.is_empty() || p.args.len() != 1 {
                return None;
            }
            let split = match f.func.name() {
                "min" | "max" => Split::Extreme,
                "sum" => Split::Sum,
                "count" => Split::Count,
                "avg" => Split::Avg,
                _ => return None,
            };
            Some((split, f))
        })
        .collect()
}

/// The columns an aggregate's arguments read.
fn argument_columns(f: &AggregateFunction) -> HashSet<&Column> {
    f.params.args.iter().flat_map(|a| a.column_refs()).collect()
}

/// The input to aggregate early: the leaf holding every argument of the
/// counts, sums and averages (of every aggregate when there are none of
/// those), with each aggregate's split against it. A minimum or maximum
/// reading only other leaves is kept above the join; one reading both is
/// not rewritten. None when no leaf qualifies.
fn choose_leaf<'a>(
    leaves: &[&'a LogicalPlan],
    splits: &[(Split, &AggregateFunction)],
) -> Option<(&'a LogicalPlan, Vec<Split>)> {
    let counted: HashSet<&Column> = splits
        .iter()
        .filter(|(s, _)| !matches!(s, Split::Extreme))
        .flat_map(|(_, f)| argument_columns(f))
        .collect();
    let all: HashSet<&Column> = splits
        .iter()
        .flat_map(|(_, f)| argument_columns(f))
        .collect();
    if all.is_empty() {
        // count(*) alone: nothing says which input is the big one.
        return None;
    }
    let required = if counted.is_empty() { &all } else { &counted };
    let leaf = leaves
        .iter()
        .copied()
        .find(|l| required.iter().all(|c| l.schema().has_column(c)))?;
    let kinds = splits
        .iter()
        .map(|(split, f)| {
            let columns = argument_columns(f);
            let inside = columns
                .iter()
                .filter(|c| leaf.schema().has_column(c))
                .count();
            match split {
                Split::Extreme if inside == 0 => Some(Split::Keep),
                _ if inside == columns.len() => Some(*split),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    Some((leaf, kinds))
}

/// Try the rewrite on one Aggregate node.
fn eager(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    if aggregate.group_expr.is_empty()
        || matches!(aggregate.group_expr.as_slice(), [Expr::GroupingSet(_)])
    {
        return Ok(None);
    }
    let Some(splits) = splits(aggregate) else {
        return Ok(None);
    };
    let Some(tree) = join_tree(&aggregate.input) else {
        return Ok(None);
    };
    let mut leaves = Vec::new();
    collect_leaves(&tree, &mut leaves);
    let Some((leaf, kinds)) = choose_leaf(&leaves, &splits) else {
        return Ok(None);
    };
    if matches!(leaf, LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_)) {
        return Ok(None);
    }
    if nullable_side(&tree, leaf) && !nulls_carry_over(&splits, &kinds) {
        return Ok(None);
    }
    let keys = leaf_keys(leaf, aggregate, &tree);
    if keys.is_empty() {
        return Ok(None);
    }
    let Some(arguments) = arguments(leaf.schema(), &splits, &kinds) else {
        return Ok(None);
    };
    let mut partial_exprs = Vec::new();
    let mut finals = Vec::new();
    let mut faults: Vec<&Argument> = Vec::new();
    for (i, ((split, (_, f)), argument)) in kinds.iter().zip(&splits).zip(&arguments).enumerate() {
        let arg = argument.below_join(&f.params.args[0]);
        let name = format!("__provdb_eager_{i}");
        let final_expr = match split {
            Split::Keep => Expr::AggregateFunction((*f).clone()),
            Split::Extreme => {
                // the query's own function (provdb's min and max)
                partial_exprs.push(f.func.call(vec![arg]).alias(&name));
                f.func.call(vec![col(Column::from_name(&name))])
            }
            Split::Sum => {
                partial_exprs.push(sum(arg).alias(&name));
                sum(col(Column::from_name(&name)))
            }
            Split::Count => {
                partial_exprs.push(count(arg).alias(&name));
                coalesce(vec![sum(col(Column::from_name(&name))), lit(0i64)])
            }
            Split::Avg => {
                let count_name = format!("{name}_count");
                partial_exprs.push(sum(arg.clone()).alias(&name));
                partial_exprs.push(count(arg).alias(&count_name));
                let s = sum(col(Column::from_name(&name)));
                let c = sum(col(Column::from_name(&count_name)));
                cast(s, DataType::Float64) / cast(c, DataType::Float64)
            }
        };
        // The first aggregate over a text cast's values carries its faults.
        let final_expr = match argument {
            Argument::TextCast { column, target } if !faults.contains(&argument) => {
                let fault_name = format!("__provdb_eager_fault_{}", faults.len());
                faults.push(argument);
                let tried = argument.below_join(&f.params.args[0]);
                let fault = CastFaults::call(tried, column.clone());
                partial_exprs.push(fault.alias(&fault_name));
                let first_fault = min(col(Column::from_name(&fault_name)));
                RaiseCast::new(Arc::clone(target)).call(final_expr, first_fault)
            }
            _ => final_expr,
        };
        finals.push(final_expr);
    }
    let key_exprs: Vec<Expr> = keys.into_iter().map(Expr::Column).collect();
    let partial = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::new(leaf.clone()),
        key_exprs,
        partial_exprs,
    )?);
    let Some(joined) = replace_leaf(&tree, leaf, &partial)? else {
        return Ok(None);
    };
    finish(aggregate, joined, finals)
}

/// What an aggregate argument evaluated below the join can do on the
/// rows the join would drop.
#[derive(PartialEq)]
enum Argument {
    /// Nothing: it cannot fail (or it stays above the join).
    Safe,
    /// `CAST(column AS target)` of text: cast below the join with bad
    /// values as NULL, the bad values carried up to fail there.
    TextCast { column: Expr, target: FieldRef },
}

impl Argument {
    /// The argument to aggregate below the join in place of `arg`.
    fn below_join(&self, arg: &Expr) -> Expr {
        match self {
            Argument::Safe => arg.clone(),
            Argument::TextCast { column, target } => {
                MemoCast::with_mode(Arc::clone(target), CastMode::Try).call(column.clone())
            }
        }
    }
}

/// How each aggregate's argument is evaluated below the join (over the
/// leaf's `schema`), or None if one could fail in a way the rewrite does
/// not carry above it.
fn arguments(
    schema: &DFSchema,
    splits: &[(Split, &AggregateFunction)],
    kinds: &[Split],
) -> Option<Vec<Argument>> {
    kinds
        .iter()
        .zip(splits)
        .map(|(kind, (_, f))| {
            let arg = &f.params.args[0];
            if matches!(kind, Split::Keep) || cannot_fail(arg, schema) {
                return Some(Argument::Safe);
            }
            let Expr::Cast(c) = arg else {
                return None;
            };
            let text = c.expr.get_type(schema).ok().is_some_and(|t| is_text(&t));
            let column = matches!(c.expr.as_ref(), Expr::Column(_));
            (column && text && parsed_type(c.field.data_type())).then(|| Argument::TextCast {
                column: c.expr.as_ref().clone(),
                target: Arc::clone(&c.field),
            })
        })
        .collect()
}

/// Whether evaluating `expr` (over `schema`) cannot fail, whatever the
/// row: columns, constants, TRY_CAST, widening casts, comparisons and
/// logic, and arithmetic that wraps (integers) or cannot fail (floats).
fn cannot_fail(expr: &Expr, schema: &DFSchema) -> bool {
    let type_of = |e: &Expr| e.get_type(schema).ok();
    match expr {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::Alias(a) => cannot_fail(&a.expr, schema),
        Expr::TryCast(c) => cannot_fail(&c.expr, schema),
        Expr::IsNull(e) | Expr::IsNotNull(e) | Expr::Not(e) => cannot_fail(e, schema),
        Expr::Cast(c) => {
            cannot_fail(&c.expr, schema)
                && type_of(&c.expr).is_some_and(|from| widens(&from, c.field.data_type()))
        }
        Expr::BinaryExpr(b) => {
            let operands = cannot_fail(&b.left, schema) && cannot_fail(&b.right, schema);
            let result = type_of(expr);
            let op_ok = match b.op {
                Operator::Plus | Operator::Minus | Operator::Multiply => {
                    result.is_some_and(|t| t.is_integer() || t.is_floating())
                }
                Operator::Divide | Operator::Modulo => result.is_some_and(|t| t.is_floating()),
                Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq
                | Operator::IsDistinctFrom
                | Operator::IsNotDistinctFrom
                | Operator::And
                | Operator::Or => true,
                _ => false,
            };
            operands && op_ok
        }
        _ => false,
    }
}

/// Whether every value of `from` casts to `to`.
fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    from == to
        || matches!(to, Float64) && (from.is_integer() || from.is_floating())
        || matches!(
            (from, to),
            (Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32, Int64)
                | (Int8 | Int16 | UInt8, Int32)
                | (Float16, Float32)
        )
}

/// The top of the new plan: group the joined partial results as the
/// original did, combine the partials, and project to the original schema.
/// None when the result would not have exactly the original schema.
fn finish(
    aggregate: &Aggregate,
    joined: LogicalPlan,
    finals: Vec<Expr>,
) -> Result<Option<LogicalPlan>> {
    // Aggregate needs aggregate functions at its top level; the finals that
    // are arithmetic over aggregates (avg, count's coalesce) are computed
    // by the projection over it.
    let mut inner_aggs = Vec::new();
    let mut projected = Vec::new();
    for (i, final_expr) in finals.into_iter().enumerate() {
        projected.push(pull_aggregates(final_expr, i, &mut inner_aggs)?);
    }
    let combined = Aggregate::try_new(Arc::new(joined), aggregate.group_expr.clone(), inner_aggs)?;
    let group_fields = aggregate.group_expr.len();
    let combined_schema = Arc::clone(&combined.schema);
    let mut exprs: Vec<Expr> = combined_schema
        .iter()
        .take(group_fields)
        .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
        .collect();
    let original = aggregate.schema.as_ref();
    for (expr, (_, field)) in projected
        .into_iter()
        .zip(original.iter().skip(group_fields))
    {
        exprs.push(expr.alias(field.name()));
    }
    let projection = Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(combined)))?;
    let same = projection.schema.fields().len() == original.fields().len()
        && projection
            .schema
            .iter()
            .zip(original.iter())
            .all(|((q1, f1), (q2, f2))| {
                q1 == q2
                    && f1.name() == f2.name()
                    && f1.data_type() == f2.data_type()
                    && f1.is_nullable() == f2.is_nullable()
            });
    Ok(same.then_some(LogicalPlan::Projection(projection)))
}

/// Move the aggregate functions of `expr` into `aggs` (named
/// `__provdb_final_{n}_{k}`) and return `expr` reading their columns.
fn pull_aggregates(expr: Expr, n: usize, aggs: &mut Vec<Expr>) -> Result<Expr> {
    use datafusion::common::tree_node::TreeNode;
    let mut k = 0;
    let rewritten = expr.transform_down(|e| {
        if let Expr::AggregateFunction(_) = e {
            let name = format!("__provdb_final_{n}_{k}");
            k += 1;
            aggs.push(e.alias(&name));
            return Ok(Transformed::yes(col(Column::from_name(name))));
        }
        Ok(Transformed::no(e))
    })?;
    Ok(rewritten.data)
}

/// The join tree (inner, left and right joins) under an Aggregate, with the column-only
/// projections between its joins removed (they only prune columns, and the
/// rewrite changes which columns exist). None if the input is not such a
/// tree.
fn join_tree(plan: &LogicalPlan) -> Option<LogicalPlan> {
    let plan = strip_column_projections(plan);
    let LogicalPlan::Join(join) = plan else {
        return None;
    };
    let kind_ok = matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::Right
    );
    if !kind_ok || join.null_aware {
        return None;
    }
    let side = |p: &LogicalPlan| -> Option<LogicalPlan> {
        match strip_column_projections(p) {
            LogicalPlan::Join(_) => join_tree(p),
            _ => Some(p.clone()),
        }
    };
    let left = side(&join.left)?;
    let right = side(&join.right)?;
    rebuild_join(join, left, right).ok()
}

/// Whether `leaf` lies on the side of an outer join of `tree` that is
/// filled with NULLs where nothing matches.
fn nullable_side(tree: &LogicalPlan, leaf: &LogicalPlan) -> bool {
    let LogicalPlan::Join(join) = tree else {
        return false;
    };
    let in_left = contains(&join.left, leaf);
    let nullable = match join.join_type {
        JoinType::Left => !in_left,
        JoinType::Right => in_left,
        _ => false,
    };
    nullable || nullable_side(if in_left { &join.left } else { &join.right }, leaf)
}

fn contains(tree: &LogicalPlan, leaf: &LogicalPlan) -> bool {
    std::ptr::eq(tree, leaf)
        || matches!(tree, LogicalPlan::Join(j) if contains(&j.left, leaf) || contains(&j.right, leaf))
}

/// Whether the rewrite keeps the answers when the aggregated leaf is on
/// the NULL-filled side of an outer join. An unmatched row then joins one
/// row of NULL partials, where it used to join one row of NULL arguments;
/// that is the same thing for an aggregate over a bare column of the leaf
/// (its partial is NULL or a count of 0 there, as the column was NULL), not
/// for `count(*)` or `coalesce(x, 0)`, which count or see a value in the
/// NULL row.
fn nulls_carry_over(splits: &[(Split, &AggregateFunction)], kinds: &[Split]) -> bool {
    kinds.iter().zip(splits).all(|(kind, (_, f))| {
        matches!(kind, Split::Keep) || matches!(f.params.args.as_slice(), [Expr::Column(_)])
    })
}

fn strip_column_projections(mut plan: &LogicalPlan) -> &LogicalPlan {
    while let LogicalPlan::Projection(p) = plan {
        if !p.expr.iter().all(|e| matches!(e, Expr::Column(_))) {
            break;
        }
        plan = &p.input;
    }
    plan
}

fn rebuild_join(join: &Join, left: LogicalPlan, right: LogicalPlan) -> Result<LogicalPlan> {
    Ok(LogicalPlan::Join(Join::try_new(
        Arc::new(left),
        Arc::new(right),
        join.on.clone(),
        join.filter.clone(),
        join.join_type,
        join.join_constraint,
        join.null_equality,
        join.null_aware,
    )?))
}

/// The inputs of the join tree that are not themselves joins of it.
fn collect_leaves<'a>(plan: &'a LogicalPlan, out: &mut Vec<&'a LogicalPlan>) {
    match plan {
        LogicalPlan::Join(join) => {
            collect_leaves(&join.left, out);
            collect_leaves(&join.right, out);
        }
        other => out.push(other),
    }
}

/// The columns of `leaf` that the plan above it reads, other than through
/// the aggregate arguments: join keys and filters anywhere in the tree and
/// the grouping expressions. In schema order, so the plan is deterministic.
fn leaf_keys(leaf: &LogicalPlan, aggregate: &Aggregate, tree: &LogicalPlan) -> Vec<Column> {
    let mut used: HashSet<Column> = HashSet::new();
    for e in &aggregate.group_expr {
        used.extend(e.column_refs().into_iter().cloned());
    }
    join_columns(tree, &mut used);
    leaf.schema()
        .columns()
        .into_iter()
        .filter(|c| used.contains(c))
        .collect()
}

fn join_columns(plan: &LogicalPlan, used: &mut HashSet<Column>) {
    if let LogicalPlan::Join(join) = plan {
        for (l, r) in &join.on {
            used.extend(l.column_refs().into_iter().cloned());
            used.extend(r.column_refs().into_iter().cloned());
        }
        if let Some(f) = &join.filter {
            used.extend(f.column_refs().into_iter().cloned());
        }
        join_columns(&join.left, used);
        join_columns(&join.right, used);
    }
}

/// `tree` with the input `leaf` (compared by address) replaced by
/// `replacement`, every join above it rebuilt. None if a join no longer
/// builds (for instance a name clash the removed projections had hidden).
fn replace_leaf(
    tree: &LogicalPlan,
    leaf: &LogicalPlan,
    replacement: &LogicalPlan,
) -> Result<Option<LogicalPlan>> {
    if std::ptr::eq(tree, leaf) {
        return Ok(Some(replacement.clone()));
    }
    let LogicalPlan::Join(join) = tree else {
        return Ok(Some(tree.clone()));
    };
    let (Some(left), Some(right)) = (
        replace_leaf(&join.left, leaf, replacement)?,
        replace_leaf(&join.right, leaf, replacement)?,
    ) else {
        return Ok(None);
    };
    Ok(rebuild_join(join, left, right).ok())
}
