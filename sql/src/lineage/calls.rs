//! The lineage function calls of a parsed statement: finding them, and
//! rewriting their named arguments (`direction => 'downstream'`) to
//! positions, since DataFusion plans table-function arguments by position
//! only.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Statement, TableFactor, Value, VisitMut, VisitorMut,
};

use crate::error::{SqlError, SqlResult};

/// Parameter names of the lineage table functions (and `prov_export`,
/// which takes the same kinds of arguments), in positional order.
fn params(function: &str) -> Option<&'static [&'static str]> {
    match function {
        "lineage" => Some(&["start", "direction", "max_depth", "relations"]),
        "lineage_path" => Some(&["from", "to", "relations"]),
        "prov_export" => Some(&["scope", "id", "format", "direction", "max_depth"]),
        _ => None,
    }
}

/// Call `f` with the (lowercase) name and the arguments of every lineage
/// function call in `stmt`, in order.
pub fn each_call(
    stmt: &mut Statement,
    f: impl FnMut(&str, &mut Vec<FunctionArg>) -> ControlFlow<SqlError>,
) -> SqlResult<()> {
    struct V<F>(F);
    impl<F: FnMut(&str, &mut Vec<FunctionArg>) -> ControlFlow<SqlError>> VisitorMut for V<F> {
        type Break = SqlError;
        fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<SqlError> {
            if let TableFactor::Table {
                name,
                args: Some(fargs),
                ..
            } = tf
            {
                let function = name.to_string().to_ascii_lowercase();
                if params(&function).is_some() {
                    (self.0)(&function, &mut fargs.args)?;
                }
            }
            ControlFlow::Continue(())
        }
    }
    match stmt.visit(&mut V(f)) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Call `f` with every argument expression of every lineage function call.
pub fn each_arg(
    stmt: &mut Statement,
    mut f: impl FnMut(&mut Expr, &str) -> ControlFlow<SqlError>,
) -> SqlResult<()> {
    each_call(stmt, |function, args| {
        for arg in args {
            if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
            | FunctionArg::Named {
                arg: FunctionArgExpr::Expr(e),
                ..
            }
            | FunctionArg::ExprNamed {
                arg: FunctionArgExpr::Expr(e),
                ..
            } = arg
            {
                f(e, function)?;
            }
        }
        ControlFlow::Continue(())
    })
}

/// Rewrite named arguments to positional ones, with NULL for the
/// parameters skipped.
pub fn positional_args(stmt: &mut Statement) -> SqlResult<()> {
    each_call(stmt, |function, args| {
        if args
            .iter()
            .any(|a| matches!(a, FunctionArg::Named { .. } | FunctionArg::ExprNamed { .. }))
        {
            match reorder(function, std::mem::take(args)) {
                Ok(positional) => *args = positional,
                Err(e) => return ControlFlow::Break(e),
            }
        }
        ControlFlow::Continue(())
    })
}

fn reorder(function: &str, args: Vec<FunctionArg>) -> SqlResult<Vec<FunctionArg>> {
    let params = params(function).unwrap_or_default();
    let mut slots: Vec<Option<FunctionArgExpr>> = vec![None; params.len()];
    let mut next = 0;
    for arg in args {
        let (named, value) = match arg {
            FunctionArg::Named { name, arg, .. } => (Some(name.value), arg),
            FunctionArg::ExprNamed { name, arg, .. } => (Some(name.to_string()), arg),
            FunctionArg::Unnamed(arg) => (None, arg),
        };
        let at = match named {
            Some(n) => {
                let n = n.to_ascii_lowercase();
                params.iter().position(|p| *p == n).ok_or_else(|| {
                    SqlError::new(
                        "42883",
                        format!(
                            "{function}() has no parameter named {n} (parameters: {})",
                            params.join(", ")
                        ),
                    )
                })?
            }
            None => next,
        };
        let Some(slot) = slots.get_mut(at) else {
            return Err(SqlError::invalid_param(format!(
                "{function}() takes at most {} arguments",
                params.len()
            )));
        };
        if slot.is_some() {
            return Err(SqlError::invalid_param(format!(
                "{function}(): parameter {} given twice",
                params[at]
            )));
        }
        *slot = Some(value);
        next = at + 1;
    }
    let used = slots.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    Ok(slots
        .into_iter()
        .take(used)
        .map(|s| {
            FunctionArg::Unnamed(
                s.unwrap_or(FunctionArgExpr::Expr(Expr::Value(Value::Null.into()))),
            )
        })
        .collect())
}
