//! Subqueries as arguments of the lineage functions:
//! `lineage((SELECT 'alexnet.otest:' || id FROM alexnet.otest ...))`.
//!
//! DataFusion needs table-function arguments as constants when it plans, so
//! the session runs each such subquery first (in the statement's snapshot)
//! and replaces it by the array of its first column's values (for
//! `lineage_path`, by its single value). The subquery is evaluated once,
//! when the statement is planned.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Array, Expr, FunctionArg, FunctionArgExpr, Query, Statement, TableFactor, Value, VisitMut,
    VisitorMut,
};

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
                let e = match e {
                    Expr::Nested(inner) => inner.as_mut(),
                    other => other,
                };
                if matches!(e, Expr::Subquery(_)) {
                    (self.0)(e, &fname)?;
                }
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
