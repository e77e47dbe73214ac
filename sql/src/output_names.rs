//! Result column names as PostgreSQL gives them.
//!
//! DataFusion names an unaliased expression by rendering it (`count(*)`,
//! `min(epochs.loss)`, `t.a + Int64(1)`); PostgreSQL by the function's name
//! or `?column?`, which is what psql prints and pandas keys a frame by.
//! [`pg_named`] aliases each such item of a query's outermost SELECT with
//! PostgreSQL's label, then [`LABEL_END`] and the item's position, so that
//! the plan's names stay unique; [`output_schema`] cuts the suffix off
//! again in the result's schema. A view's columns get the labels
//! themselves ([`name_view_columns`]). Plans, EXPLAIN and inner queries
//! keep DataFusion's names.
//!
//! PostgreSQL also lets a query return several columns of one name
//! (`SELECT v, v FROM t`, `INSERT ... SELECT a, a`); DataFusion requires a
//! projection's names to be unique. When planning fails for that reason,
//! the statement is planned again from [`labelled`]: every item of its
//! outermost SELECT aliased with the name PostgreSQL would give it (the
//! column's name, the function's name, or `?column?`), then [`LABEL_END`]
//! and the item's position, which makes the names unique; [`output_schema`]
//! cuts the suffix off again in the result's schema. Other queries are
//! planned as before: only statements whose items would share a PostgreSQL
//! label are copied, and only those that fail are planned again.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{Expr, Ident, Query, Select, SelectItem, SetExpr, Statement};
use futures::StreamExt;

use crate::batches::batch_of;

/// Ends the label of an output column made unique by [`labelled`].
/// PostgreSQL identifiers cannot hold NUL, so no user name contains it.
pub const LABEL_END: char = '\0';

/// Whether `e` is DataFusion refusing a projection with repeated names
/// (the same expression twice, or a column named like another table's).
pub fn is_duplicate_name_error(e: &DataFusionError) -> bool {
    let text = e.to_string();
    text.contains("require unique expression names")
        || (text.contains("Schema contains") && text.contains("which would be ambiguous"))
}

/// A copy of `stmt`, a query, whose outermost SELECT has each unaliased
/// item that is not a plain column aliased with its PostgreSQL label (made
/// unique by [`LABEL_END`] and the item's position); `None` when there is
/// no such item, when the SELECT has a wildcard (its positions are not
/// known) and for other statements.
pub fn pg_named(stmt: &mut Statement) -> Option<Statement> {
    if !matches!(stmt, Statement::Query(_)) || !renames(outer_select(stmt)?) {
        return None;
    }
    let mut copy = stmt.clone();
    alias_expressions(outer_select(&mut copy)?, true);
    Some(copy)
}

/// Alias each unaliased expression of the outermost SELECT of `query`, a
/// view's definition, with its PostgreSQL label, as PostgreSQL names a
/// view's columns (`count`, not `count(*)`). Two columns of one name then
/// fail to plan, as they fail in PostgreSQL. Left alone with a wildcard.
pub fn name_view_columns(query: &mut Query) {
    if let Some(select) = select_of(query.body.as_mut()).filter(|s| renames(s)) {
        alias_expressions(select, false);
    }
}

/// Alias each unaliased item of `select` that is not a plain column with
/// its PostgreSQL label, made unique by [`LABEL_END`] and the item's
/// position when `unique`.
fn alias_expressions(select: &mut Select, unique: bool) {
    for (i, item) in select.projection.iter_mut().enumerate() {
        if let SelectItem::UnnamedExpr(expr) = item
            && !is_column(expr)
        {
            let label = expr_label(expr);
            *item = if unique {
                labelled_item(expr, &label, i)
            } else {
                SelectItem::ExprWithAlias {
                    expr: expr.clone(),
                    alias: Ident::with_quote('"', label),
                }
            };
        }
    }
}

/// Whether `select` has an unaliased expression to name, and no wildcard.
fn renames(select: &Select) -> bool {
    let mut unnamed = false;
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(e) => unnamed |= !is_column(e),
            SelectItem::ExprWithAlias { .. } => {}
            _ => return false,
        }
    }
    unnamed
}

/// A column reference, which DataFusion names as PostgreSQL does.
fn is_column(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

/// A copy of `stmt` (a query or an INSERT's source) whose outermost SELECT
/// has every item aliased with a unique label, when two of its items would
/// show the same name in PostgreSQL; `None` otherwise, and when the SELECT
/// has a wildcard (its columns cannot be named without the tables).
/// Statements with unique labels cannot hit DataFusion's rule: its names
/// are PostgreSQL's labels or longer. `stmt` is not changed (it is taken
/// `mut` to reach its SELECT with `outer_select`); only a statement whose
/// labels repeat is copied.
pub fn labelled(stmt: &mut Statement) -> Option<Statement> {
    let labels = repeated_labels(outer_select(stmt)?)?;
    let mut copy = stmt.clone();
    let select = outer_select(&mut copy)?;
    for (i, (item, label)) in select.projection.iter_mut().zip(labels).enumerate() {
        if let SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } = item {
            *item = labelled_item(expr, &label, i);
        }
    }
    Some(copy)
}

/// Item `i` of a SELECT, `expr`, aliased with `label` made unique.
fn labelled_item(expr: &Expr, label: &str, i: usize) -> SelectItem {
    SelectItem::ExprWithAlias {
        expr: expr.clone(),
        alias: Ident::with_quote('"', format!("{label}{LABEL_END}{i}")),
    }
}

/// The PostgreSQL labels of `select`'s items, when two of them repeat.
fn repeated_labels(select: &Select) -> Option<Vec<String>> {
    let labels: Vec<String> = select.projection.iter().map(label).collect::<Option<_>>()?;
    let mut seen = HashSet::new();
    let unique = labels.iter().all(|l| seen.insert(l.as_str()));
    (!unique).then_some(labels)
}

/// The SELECT whose items name the result: of a query, or of an INSERT's
/// source; the left-most one of a set operation.
fn outer_select(stmt: &mut Statement) -> Option<&mut Select> {
    let body = match stmt {
        Statement::Query(q) => q.body.as_mut(),
        Statement::Insert(insert) => insert.source.as_mut()?.body.as_mut(),
        _ => return None,
    };
    select_of(body)
}

/// The SELECT whose items name `body`'s columns.
fn select_of(mut body: &mut SetExpr) -> Option<&mut Select> {
    loop {
        match body {
            SetExpr::Query(q) => body = q.body.as_mut(),
            SetExpr::SetOperation { left, .. } => body = left.as_mut(),
            SetExpr::Select(select) => return Some(select),
            _ => return None,
        }
    }
}

/// The name PostgreSQL gives a select item; `None` for wildcards.
fn label(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => Some(ident_name(alias)),
        SelectItem::UnnamedExpr(e) => Some(expr_label(e)),
        _ => None,
    }
}

fn expr_label(e: &Expr) -> String {
    match e {
        Expr::Identifier(id) => ident_name(id),
        Expr::CompoundIdentifier(ids) => ids.last().map(ident_name).unwrap_or_default(),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(ident_name)
            .unwrap_or_else(|| "?column?".to_string()),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => expr_label(expr),
        Expr::Case { .. } => "case".to_string(),
        Expr::Exists { .. } => "exists".to_string(),
        _ => "?column?".to_string(),
    }
}

/// An identifier as DataFusion normalizes it: unquoted ones fold to lower case.
fn ident_name(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_lowercase(),
    }
}

/// `stream` with its batches under `schema` (the same columns, named by
/// [`output_schema`]) when the plan's names carry labels, so that
/// in-process callers see the names the client sees; unchanged otherwise.
pub fn relabel_stream(
    schema: &SchemaRef,
    stream: SendableRecordBatchStream,
) -> SendableRecordBatchStream {
    let labelled = |s: &Schema| s.fields().iter().any(|f| f.name().contains(LABEL_END));
    if !labelled(&stream.schema()) {
        return stream;
    }
    let to = Arc::clone(schema);
    let batches = stream.map(move |batch| {
        let batch = batch?;
        batch_of(&to, batch.columns().to_vec(), batch.num_rows())
    });
    Box::pin(RecordBatchStreamAdapter::new(Arc::clone(schema), batches))
}

/// The Arrow schema of a query's result, with labels cut back to the name
/// the client sees.
pub fn output_schema(plan: &LogicalPlan) -> SchemaRef {
    let schema = plan.schema().as_arrow();
    if !schema.fields().iter().any(|f| f.name().contains(LABEL_END)) {
        return Arc::new(schema.clone());
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name().split(LABEL_END).next().unwrap_or_default();
            f.as_ref().clone().with_name(name)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::parse;

    fn relabel(sql: &str) -> Option<String> {
        let mut stmt = parse(sql).expect("parse").remove(0);
        labelled(&mut stmt).map(|s| s.to_string().replace(LABEL_END, "|"))
    }

    fn named(sql: &str) -> Option<String> {
        let mut stmt = parse(sql).expect("parse").remove(0);
        pg_named(&mut stmt).map(|s| s.to_string().replace(LABEL_END, "|"))
    }

    #[test]
    fn unaliased_expressions_of_a_query_get_postgres_labels() {
        assert_eq!(
            named("SELECT run, min(loss), count(*) AS n, 1 + 1, CASE WHEN a THEN 1 END FROM t")
                .as_deref(),
            Some(
                "SELECT run, min(loss) AS \"min|1\", count(*) AS n, 1 + 1 AS \"?column?|3\", \
                 CASE WHEN a THEN 1 END AS \"case|4\" FROM t"
            )
        );
        assert_eq!(named("SELECT a, t.b, c AS d FROM t"), None, "columns only");
        assert_eq!(named("SELECT *, count(*) OVER () FROM t"), None, "wildcard");
        assert_eq!(
            named("INSERT INTO t SELECT max(a) FROM s"),
            None,
            "not a query"
        );
        assert_eq!(
            named("SELECT sum(a) FROM s UNION ALL SELECT sum(b) FROM s").as_deref(),
            Some("SELECT sum(a) AS \"sum|0\" FROM s UNION ALL SELECT sum(b) FROM s"),
            "the left-most SELECT names a set operation's columns"
        );
    }

    #[test]
    fn items_get_postgres_labels_and_positions() {
        assert_eq!(
            relabel("SELECT v, t.V, count(*), 1 + 1, x AS \"v\", CAST(w AS TEXT) FROM t")
                .as_deref(),
            Some(
                "SELECT v AS \"v|0\", t.V AS \"v|1\", count(*) AS \"count|2\", 1 + 1 AS \"?column?|3\", \
                 x AS \"v|4\", CAST(w AS TEXT) AS \"w|5\" FROM t"
            )
        );
        assert_eq!(
            relabel("INSERT INTO t SELECT a, a FROM s").as_deref(),
            Some("INSERT INTO t SELECT a AS \"a|0\", a AS \"a|1\" FROM s")
        );
        assert_eq!(relabel("SELECT v, w FROM t"), None, "unique labels");
        assert_eq!(
            relabel("SELECT *, v FROM t"),
            None,
            "wildcards are left alone"
        );
    }
}
