//! Subqueries as arguments of the lineage functions:
//! `lineage((SELECT 'alexnet.otest:' || id FROM alexnet.otest ...))`.
//!
//! DataFusion needs table-function arguments as constants when it plans, so
//! the session runs each such subquery first (in the statement's snapshot)
//! and replaces it by the array of its first column's values (for
//! `lineage_path`, by its single value), when the statement is planned.
//!
//! A prepared statement is planned once instead: each subquery argument
//! is prepared as a statement of its own and replaced by a hidden
//! parameter numbered after the client's ([`hoist`]); an execution first
//! runs the subqueries with the client's values (through their own kept
//! plans) and binds their results to the hidden parameters, which the call
//! reads when it runs (`udtf::BoundAtRun`). The statement is then planned once, like any
//! other. The subqueries run as statements of their own, just before it:
//! they read a snapshot taken a moment earlier than the statement's.
//!
//! `$n` parameters of prepared statements in these arguments: an argument
//! that is a parameter alone is read when the call runs
//! (`udtf::BoundAtRun`); one inside a larger expression leaves the call
//! deferred, and the statement is planned again at each execution with the
//! bound values written into the arguments.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Array, Expr, Query, Statement, Value};

use datafusion::common::ScalarValue;

use super::calls::each_arg;
use crate::error::{SqlError, SqlResult};

/// A subquery argument found in a statement.
#[derive(Debug, Clone)]
pub struct SubqueryArg {
    pub query: Query,
    pub function: String,
}

/// Visit the subquery arguments of lineage function calls, in order.
fn each_subquery(
    stmt: &mut Statement,
    mut f: impl FnMut(&mut Expr, &str) -> ControlFlow<SqlError>,
) -> SqlResult<()> {
    each_arg(stmt, |e, name| {
        let e = match e {
            Expr::Nested(inner) => inner.as_mut(),
            other => other,
        };
        if matches!(e, Expr::Subquery(_)) {
            f(e, name)
        } else {
            ControlFlow::Continue(())
        }
    })
}

/// The subquery arguments of lineage functions in `stmt`.
pub fn find(stmt: &mut Statement) -> SqlResult<Vec<SubqueryArg>> {
    take(stmt, |_| None)
}

/// For preparing a statement: replace each subquery argument, in order, by
/// the parameter `$first`, `$first + 1`, ... and return the subqueries.
pub fn hoist(stmt: &mut Statement, first: usize) -> SqlResult<Vec<SubqueryArg>> {
    take(stmt, |i| {
        Some(Expr::Value(
            Value::Placeholder(format!("${}", first + i)).into(),
        ))
    })
}

/// The subquery arguments, in order; the `i`-th is replaced by
/// `instead(i)` when that gives an expression.
fn take(
    stmt: &mut Statement,
    mut instead: impl FnMut(usize) -> Option<Expr>,
) -> SqlResult<Vec<SubqueryArg>> {
    let mut found = Vec::new();
    each_subquery(stmt, |e, function| {
        if let Expr::Subquery(q) = e {
            found.push(SubqueryArg {
                query: q.as_ref().clone(),
                function: function.to_string(),
            });
            if let Some(new) = instead(found.len() - 1) {
                *e = new;
            }
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// The highest `$n` parameter anywhere in `stmt` (0 when there is none).
pub fn highest_placeholder(stmt: &Statement) -> usize {
    let mut highest = 0;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(stmt, |x| {
        if let Expr::Value(v) = x
            && let Value::Placeholder(p) = &v.value
            && let Some(i) = crate::prepared::param_index(p)
        {
            highest = highest.max(i + 1);
        }
        ControlFlow::<()>::Continue(())
    });
    highest
}

/// What a subquery argument stands for once it has run.
pub enum StartValue {
    /// The one value of a function that takes a single start
    /// (`lineage_path`).
    One(String),
    /// The array of start nodes of the other lineage functions.
    Many(Vec<String>),
}

/// The value of a subquery given to `function` that returned `values`
/// (SQLSTATE 21000 when a single-value function got other than one row).
pub fn start_value(function: &str, mut values: Vec<String>) -> SqlResult<StartValue> {
    if function != "lineage_path" {
        return Ok(StartValue::Many(values));
    }
    match values.len() {
        1 => Ok(StartValue::One(values.remove(0))),
        n => Err(SqlError::new(
            "21000",
            format!(
                "{function}(): a subquery used as an argument must return one row, it returned {n}"
            ),
        )),
    }
}

/// Replace the subquery arguments, in the order [`find`] returned them, by
/// the values they produced (with the name of the function they are
/// arguments of).
pub fn substitute(stmt: &mut Statement, values: Vec<(String, Vec<String>)>) -> SqlResult<()> {
    let mut values = values.into_iter();
    each_subquery(stmt, |e, _| {
        let Some((function, vals)) = values.next() else {
            return ControlFlow::Break(SqlError::internal("lineage subquery arguments changed"));
        };
        let lit = |s: String| Expr::Value(Value::SingleQuotedString(s).into());
        *e = match start_value(&function, vals) {
            Ok(StartValue::One(one)) => lit(one),
            Ok(StartValue::Many(all)) => Expr::Array(Array {
                elem: all.into_iter().map(lit).collect(),
                named: true,
            }),
            Err(e) => return ControlFlow::Break(e),
        };
        ControlFlow::Continue(())
    })
}

/// Replace `$n` parameters inside lineage function arguments by the literal
/// values bound to them.
pub fn bind_placeholder_args(stmt: &mut Statement, params: &[ScalarValue]) -> SqlResult<()> {
    each_arg(stmt, |e, _| {
        let mut failure = None;
        let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(e, |x| {
            if let Expr::Value(v) = x
                && let Value::Placeholder(name) = &v.value
            {
                match placeholder_literal(name, params) {
                    Ok(lit) => *x = lit,
                    Err(err) => {
                        failure = Some(err);
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        });
        match failure {
            Some(err) => ControlFlow::Break(err),
            None => ControlFlow::Continue(()),
        }
    })
}

fn placeholder_literal(name: &str, params: &[ScalarValue]) -> SqlResult<Expr> {
    let value = crate::prepared::param_index(name)
        .and_then(|i| params.get(i))
        .ok_or_else(|| SqlError::new("08P01", format!("no value bound for parameter {name}")))?;
    scalar_literal(value)
}

fn scalar_literal(v: &ScalarValue) -> SqlResult<Expr> {
    use datafusion::arrow::array::{Array as _, AsArray};
    if v.is_null() {
        return Ok(Expr::Value(Value::Null.into()));
    }
    if v.data_type().is_integer() {
        return Ok(Expr::Value(Value::Number(v.to_string(), false).into()));
    }
    match v {
        ScalarValue::List(a) => {
            let values = datafusion::arrow::compute::cast(
                a.values(),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .map_err(|e| SqlError::invalid_param(e.to_string()))?;
            let strings = values.as_string::<i32>();
            let elem = (0..strings.len())
                .map(|i| {
                    Expr::Value(Value::SingleQuotedString(strings.value(i).to_string()).into())
                })
                .collect();
            Ok(Expr::Array(Array { elem, named: true }))
        }
        other => match other.cast_to(&datafusion::arrow::datatypes::DataType::Utf8) {
            Ok(ScalarValue::Utf8(Some(s))) => Ok(Expr::Value(Value::SingleQuotedString(s).into())),
            _ => Err(SqlError::invalid_param(format!(
                "a lineage argument cannot be a {} parameter",
                other.data_type()
            ))),
        },
    }
}
