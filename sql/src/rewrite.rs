//! Rewrites of parsed statements for PostgreSQL forms DataFusion or
//! sqlparser do not accept as written:
//! - `INSERT ... VALUES (..., DEFAULT, ...)`: `DEFAULT` becomes the column's
//!   default expression (or NULL);
//! - `CREATE SEQUENCE` options in any order (sqlparser wants a fixed order).
//!
//! Lineage function calls are rewritten by [`crate::lineage::calls`].

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, Insert, ObjectName, SetExpr, Statement, TableObject,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use provdb_storage::{Storage, TableDef};

use crate::ddl::resolve_name;
use crate::error::{SqlError, SqlResult};

/// Replace `DEFAULT` in the VALUES rows of an INSERT.
pub fn insert_defaults(stmt: &mut Statement, storage: &Storage, path: &[String]) -> SqlResult<()> {
    let Statement::Insert(insert) = stmt else {
        return Ok(());
    };
    let mut target = Target {
        storage,
        path,
        def: None,
    };
    if insert.source.is_none() {
        // INSERT ... DEFAULT VALUES: one row of DEFAULTs.
        let Some(def) = target.get(&insert.table)? else {
            return Ok(());
        };
        let row = vec!["DEFAULT"; def.schema.fields().len()].join(", ");
        let query = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&format!("VALUES ({row})"))
            .and_then(|mut p| p.parse_query())
            .map_err(|e| SqlError::internal(e.to_string()))?;
        insert.columns.clear();
        insert.source = Some(query);
    }
    name_leading_columns(insert, &mut target)?;
    let Some(source) = insert.source.as_mut() else {
        return Ok(());
    };
    let SetExpr::Values(values) = source.body.as_mut() else {
        return Ok(());
    };
    let has_default = values
        .rows
        .iter()
        .flat_map(|r| r.content.iter())
        .any(is_default);
    if !has_default {
        return Ok(());
    }
    let Some(def) = target.get(&insert.table)? else {
        return Ok(());
    };
    let columns: Vec<String> = if insert.columns.is_empty() {
        def.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    } else {
        insert
            .columns
            .iter()
            .map(|c| c.to_string().trim_matches('"').to_ascii_lowercase())
            .collect()
    };
    let defaults = def
        .properties
        .get("defaults")
        .and_then(|d| d.as_object())
        .cloned()
        .unwrap_or_default();
    for row in values.rows.iter_mut() {
        for (i, e) in row.content.iter_mut().enumerate() {
            if !is_default(e) {
                continue;
            }
            let sql = columns
                .get(i)
                .and_then(|c| defaults.get(c))
                .and_then(|v| v.as_str())
                .unwrap_or("NULL");
            *e = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(sql)
                .and_then(|mut p| p.parse_expr())
                .map_err(|err| {
                    SqlError::internal(format!("stored default {sql:?} does not parse: {err}"))
                })?;
        }
    }
    Ok(())
}

/// `INSERT INTO t VALUES (...)` without a column list whose rows are
/// shorter than the table: PostgreSQL fills the leading columns and gives
/// the rest their defaults; DataFusion wants one value per column, so the
/// leading columns are named. Rows of different lengths are left for
/// DataFusion to refuse.
fn name_leading_columns(insert: &mut Insert, target: &mut Target<'_>) -> SqlResult<()> {
    if !insert.columns.is_empty() {
        return Ok(());
    }
    let Some(SetExpr::Values(values)) = insert.source.as_deref().map(|q| q.body.as_ref()) else {
        return Ok(());
    };
    let Some(width) = values.rows.first().map(|r| r.content.len()) else {
        return Ok(());
    };
    if values.rows.iter().any(|r| r.content.len() != width) {
        return Ok(());
    }
    let Some(def) = target.get(&insert.table)? else {
        return Ok(());
    };
    let fields = def.schema.fields();
    if width == 0 || width >= fields.len() {
        return Ok(());
    }
    insert.columns = fields[..width]
        .iter()
        .map(|f| ObjectName::from(vec![Ident::with_quote('"', f.name())]))
        .collect();
    Ok(())
}

/// The stored table an INSERT writes to, resolved at most once per
/// statement (`None` for anything else: a view, a temporary or catalog
/// table, a table function).
struct Target<'a> {
    storage: &'a Storage,
    /// The search path's existing schemas, in order.
    path: &'a [String],
    def: Option<Option<TableDef>>,
}

impl Target<'_> {
    fn get(&mut self, table: &TableObject) -> SqlResult<Option<&TableDef>> {
        if self.def.is_none() {
            let found = match table {
                TableObject::TableName(name) => {
                    let storage = self.storage;
                    resolve_name(name, self.path, |s, n| storage.table_by_name(s, n))?.2
                }
                _ => None,
            };
            self.def = Some(found);
        }
        Ok(self.def.as_ref().and_then(Option::as_ref))
    }
}

fn is_default(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

/// `CREATE SEQUENCE name <options in any order>` with the options put in the
/// order sqlparser parses. `None` if `sql` is not such a statement.
pub fn create_sequence_in_order(sql: &str) -> Option<String> {
    let text = sql.trim().trim_end_matches(';').trim();
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.len() < 3
        || !tokens[0].eq_ignore_ascii_case("create")
        || !tokens[1].eq_ignore_ascii_case("sequence")
    {
        return None;
    }
    let mut i = 2;
    let mut head = vec!["CREATE", "SEQUENCE"];
    if tokens.len() > 5 && tokens[2].eq_ignore_ascii_case("if") {
        head.extend(&tokens[2..5]);
        i = 5;
    }
    head.push(tokens.get(i)?);
    i += 1;
    // Canonical order: INCREMENT, MINVALUE, MAXVALUE, START, CACHE, CYCLE.
    let mut slots: [Vec<&str>; 6] = Default::default();
    while i < tokens.len() {
        let t = tokens[i].to_ascii_lowercase();
        let (slot, take) = match t.as_str() {
            "increment" => (
                0,
                if tokens.get(i + 1)?.eq_ignore_ascii_case("by") {
                    3
                } else {
                    2
                },
            ),
            "minvalue" => (1, 2),
            "maxvalue" => (2, 2),
            "no" => match tokens.get(i + 1)?.to_ascii_lowercase().as_str() {
                "minvalue" => (1, 2),
                "maxvalue" => (2, 2),
                "cycle" => (5, 2),
                _ => return None,
            },
            "start" => (
                3,
                if tokens.get(i + 1)?.eq_ignore_ascii_case("with") {
                    3
                } else {
                    2
                },
            ),
            "cache" => (4, 2),
            "cycle" => (5, 1),
            "as" => (0, 2), // data type: ignored (values are bigint)
            _ => return None,
        };
        let part = tokens.get(i..i + take)?;
        if t != "as" {
            slots[slot].extend(part);
        }
        i += take;
    }
    let mut out: Vec<&str> = head;
    for s in &slots {
        out.extend(s);
    }
    Some(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_options_are_reordered() {
        assert_eq!(
            create_sequence_in_order("CREATE SEQUENCE s2 START WITH 100 INCREMENT BY 10;")
                .as_deref(),
            Some("CREATE SEQUENCE s2 INCREMENT BY 10 START WITH 100")
        );
        assert_eq!(create_sequence_in_order("SELECT 1"), None);
    }
}
