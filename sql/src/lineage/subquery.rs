//! Subqueries as arguments of the lineage functions:
//! `lineage((SELECT 'alexnet.otest:' || id FROM alexnet.otest ...))`.
//!
//! DataFusion needs table-function arguments as constants when it plans, so
//! the session runs each such subquery first (in the statement's snapshot)
//! and replaces it by the array of its first column's values (for
//! `lineage_path`, by its single value). The subquery is evaluated once,
//! when the statement is planned.
//!
//! `$n` parameters of prepared statements in these arguments are handled the
//! same way: such a statement is planned again at each execution, with the
//! bound values written into the arguments.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Array, Expr, FunctionArg, FunctionArgExpr, Query, Statement, TableFactor, Value, VisitMut,
    VisitorMut,
};

use datafusion::common::ScalarValue;

use crate::error::{SqlError, SqlResult};

/// A subquery argument found in a statement.
#[derive(Debug, Clone)]
pub struct SubqueryArg {
    pub query: Query,
    /// `lineage_path` arguments take one value, not an array.
    pub single: bool,
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

/// Visit every argument expression of lineage function calls, in order.
fn each_arg(
    stmt: &mut Statement,
    mut f: impl FnMut(&mut Expr, &str) -> ControlFlow<SqlError>,
) -> SqlResult<()> {
    struct V<F>(F);
    impl<F: FnMut(&mut Expr, &str) -> ControlFlow<SqlError>> VisitorMut for V<F> {
        type Break = SqlError;
        fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<SqlError> {
            let TableFactor::Table {
                name,
                args: Some(fargs),
                ..
            } = tf
            else {
                return ControlFlow::Continue(());
            };
            let fname = name.to_string().to_ascii_lowercase();
            if fname != "lineage" && fname != "lineage_path" {
                return ControlFlow::Continue(());
            }
            for arg in &mut fargs.args {
                let (FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                | FunctionArg::Named {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                }
                | FunctionArg::ExprNamed {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                }) = arg
                else {
                    continue;
                };
                (self.0)(e, &fname)?;
            }
            ControlFlow::Continue(())
        }
    }
    match stmt.visit(&mut V(&mut f)) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The subquery arguments of lineage functions in `stmt`.
pub fn find(stmt: &mut Statement) -> SqlResult<Vec<SubqueryArg>> {
    let mut found = Vec::new();
    each_subquery(stmt, |e, function| {
        if let Expr::Subquery(q) = e {
            found.push(SubqueryArg {
                query: q.as_ref().clone(),
                single: function == "lineage_path",
                function: function.to_string(),
            });
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// Replace the subquery arguments, in the order [`find`] returned them, by
/// the values they produced.
pub fn substitute(stmt: &mut Statement, values: Vec<(SubqueryArg, Vec<String>)>) -> SqlResult<()> {
    let mut values = values.into_iter();
    each_subquery(stmt, |e, _| {
        let Some((arg, vals)) = values.next() else {
            return ControlFlow::Break(SqlError::internal("lineage subquery arguments changed"));
        };
        let lit = |s: &String| Expr::Value(Value::SingleQuotedString(s.clone()).into());
        *e = if arg.single {
            match vals.as_slice() {
                [one] => lit(one),
                other => {
                    return ControlFlow::Break(SqlError::new(
                        "21000",
                        format!(
                            "{}(): a subquery used as an argument must return one row, it returned {}",
                            arg.function,
                            other.len()
                        ),
                    ));
                }
            }
        } else {
            Expr::Array(Array {
                elem: vals.iter().map(lit).collect(),
                named: true,
            })
        };
        ControlFlow::Continue(())
    })
}

/// Whether a lineage function argument is (or holds) a `$n` parameter.
/// Such statements are planned again at each execution with the parameter
/// values in place (see `Session::execute_prepared`).
pub fn has_placeholder_args(stmt: &mut Statement) -> bool {
    let mut found = false;
    let _ = each_arg(stmt, |e, _| {
        if contains_placeholder(e) {
            found = true;
        }
        ControlFlow::Continue(())
    });
    found
}

fn contains_placeholder(e: &Expr) -> bool {
    use datafusion::sql::sqlparser::ast::Visit;
    struct P(bool);
    impl datafusion::sql::sqlparser::ast::Visitor for P {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = e
                && matches!(v.value, Value::Placeholder(_))
            {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut p = P(false);
    let _ = e.visit(&mut p);
    p.0
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
    let value = name
        .strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
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

/// The highest `$n` in a statement (0 when there is none): parameters inside
/// table-function arguments are invisible to DataFusion's type inference.
pub fn max_placeholder(stmt: &Statement) -> usize {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    struct M(usize);
    impl Visitor for M {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = e
                && let Value::Placeholder(p) = &v.value
                && let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
            {
                self.0 = self.0.max(n);
            }
            ControlFlow::Continue(())
        }
    }
    let mut m = M(0);
    let _ = stmt.visit(&mut m);
    m.0
}
