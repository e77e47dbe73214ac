//! Casts inside function calls, spelled so that DataFusion's names show
//! their type.
//!
//! DataFusion names an expression by rendering it, and renders a cast as
//! its operand: `max(CAST(n AS BIGINT))` and `max(CAST(n AS DOUBLE
//! PRECISION))`, or `max(n)` and `max(n::bigint)`, are both `max(t.n)`, so
//! an aggregation holding both fails to plan ("Schema contains duplicate
//! unqualified field name", apache/datafusion#18975) where PostgreSQL
//! answers. When planning fails that way, the statement is planned again
//! with each such cast written `arrow_cast(operand, 'type')`: the type is
//! in the call's name, and DataFusion's simplifier turns the call back into
//! the same cast before any other rule sees it. Other statements are
//! planned as written.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::sql::sqlparser::ast::{CastKind, DataType as SqlType, Expr, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Whether `e` is DataFusion refusing a plan whose expressions render
/// alike.
pub fn is_duplicate_field_error(e: &DataFusionError) -> bool {
    e.to_string()
        .contains("Schema contains duplicate unqualified field name")
}

/// The types casts inside function calls of `node` (a statement, a view's
/// query) cast to, each once, in the order they appear.
pub fn cast_types<T: VisitMut>(node: &mut T) -> Vec<SqlType> {
    let mut types: Vec<SqlType> = Vec::new();
    let _ = visit_casts(node, |cast| {
        if let Expr::Cast { data_type, .. } = cast
            && !types.contains(data_type)
        {
            types.push(data_type.clone());
        }
        None
    });
    types
}

/// A copy of `node` whose casts inside function calls are `arrow_cast`
/// calls to the types `resolved` gives (keyed by the SQL type's text);
/// casts of other types stay. `None` when no cast changes.
pub fn typed<T: VisitMut + Clone>(node: &T, resolved: &HashMap<String, DataType>) -> Option<T> {
    let mut copy = node.clone();
    let mut changed = false;
    let _ = visit_casts(&mut copy, |cast| {
        let Expr::Cast {
            expr, data_type, ..
        } = cast
        else {
            return None;
        };
        let target = resolved.get(&data_type.to_string())?;
        let call = arrow_cast(expr, target)?;
        changed = true;
        Some(call)
    });
    changed.then_some(copy)
}

/// A copy of `node` whose casts inside function calls are `arrow_cast`
/// calls, each type resolved as `state` plans a cast to it; `None` when no
/// cast changes.
pub async fn typed_in<T: VisitMut + Clone>(state: &SessionState, node: &T) -> Option<T> {
    let mut probe = node.clone();
    let mut resolved = HashMap::new();
    for t in cast_types(&mut probe) {
        let sql = format!("SELECT CAST(NULL AS {t})");
        if let Ok(plan) = state.create_logical_plan(&sql).await {
            let data_type = plan.schema().field(0).data_type().clone();
            resolved.insert(t.to_string(), data_type);
        }
    }
    typed(node, &resolved)
}

/// `arrow_cast(operand, 'target')`, parsed from its text (the operand's
/// own rendering, which sqlparser reads back).
fn arrow_cast(operand: &Expr, target: &DataType) -> Option<Expr> {
    let text = format!("arrow_cast({operand}, '{target}')");
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .ok()?
        .parse_expr()
        .ok()
}

/// Call `f` on each `CAST(x AS t)` and `x::t` inside the arguments of a
/// function call of `node`, innermost first, replacing the cast with what
/// `f` returns. Casts outside calls are named as PostgreSQL names them
/// ([`crate::output_names`]) and are left alone.
fn visit_casts<T: VisitMut>(node: &mut T, f: impl FnMut(&Expr) -> Option<Expr>) -> ControlFlow<()> {
    struct V<F> {
        calls: usize,
        f: F,
    }
    impl<F: FnMut(&Expr) -> Option<Expr>> VisitorMut for V<F> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if matches!(e, Expr::Function(_)) {
                self.calls += 1;
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            match e {
                Expr::Function(_) => self.calls -= 1,
                Expr::Cast {
                    kind: CastKind::Cast | CastKind::DoubleColon,
                    format: None,
                    ..
                } if self.calls > 0 => {
                    if let Some(replaced) = (self.f)(e) {
                        *e = replaced;
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    node.visit(&mut V { calls: 0, f })
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::Statement;

    use super::*;

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .remove(0)
    }

    #[test]
    fn casts_inside_calls_become_arrow_casts() {
        let mut stmt = statement(
            "SELECT CAST(n AS BIGINT), max(CAST(n AS BIGINT)), max(n::double precision), \
             max(n) FROM t",
        );
        let types: Vec<String> = cast_types(&mut stmt)
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(types, ["BIGINT", "DOUBLE PRECISION"]);
        let resolved = HashMap::from([("BIGINT".to_string(), DataType::Int64)]);
        let Some(typed) = typed(&stmt, &resolved) else {
            panic!("a cast inside a call changes");
        };
        assert_eq!(
            typed.to_string(),
            "SELECT CAST(n AS BIGINT), max(arrow_cast(n, 'Int64')), \
             max(n::DOUBLE PRECISION), max(n) FROM t"
        );
    }

    #[test]
    fn statements_without_casts_in_calls_are_not_copied() {
        let mut stmt = statement("SELECT CAST(n AS BIGINT), max(n) FROM t");
        assert!(cast_types(&mut stmt).is_empty());
        let resolved = HashMap::from([("BIGINT".to_string(), DataType::Int64)]);
        assert!(typed(&stmt, &resolved).is_none());
    }
}
