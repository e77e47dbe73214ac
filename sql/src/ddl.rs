//! DDL: CREATE/DROP SCHEMA, TABLE, VIEW, SEQUENCE; ALTER TABLE ADD COLUMN and
//! RENAME. DDL takes effect immediately, also inside a transaction block
//! (see docs/sql.md): it is committed on its own, like a sequence change.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::sql::sqlparser::ast::{
    AlterTableOperation, ColumnDef, ColumnOption, CreateTable, CreateView, Expr, GeneratedAs,
    Ident, IndexColumn, ObjectName, ObjectNamePart, ObjectType, Query, SequenceOptions, Statement,
    TableConstraint,
};
use provdb_engine::catalog::SEQUENCE_PREFIX;
use provdb_storage::{TableDef, WalOp};
use serde_json::json;

use crate::catalog::{SessionCatalog, ViewDef, schema_key, view_key};
use crate::error::{SqlError, SqlResult, from_datafusion, from_storage};
use crate::sequence::{SequenceDef, sequence_key};
use crate::session::{CommandTag, Session};
use crate::types::{arrow_type, is_serial};

/// The notice `CREATE INDEX` and `DROP INDEX` answer with.
pub(crate) const NO_INDEXES: &str = "provdb keeps no secondary indexes; the statement changes \
nothing (scans skip batches by their min/max values, joins filter at run time, primary keys \
are indexed)";

/// An identifier as PostgreSQL folds it: unquoted → lower case.
pub fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

/// Split `[schema.]name`, resolving an unqualified name to the session's
/// current schema.
pub fn split_name(name: &ObjectName, current_schema: &str) -> SqlResult<(String, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Ok(ident(i)),
            other => Err(SqlError::syntax(format!("unsupported name part {other}"))),
        })
        .collect::<SqlResult<_>>()?;
    match parts.as_slice() {
        [n] => Ok((current_schema.to_string(), n.clone())),
        [s, n] => Ok((s.clone(), n.clone())),
        [_db, s, n] => Ok((s.clone(), n.clone())),
        _ => Err(SqlError::syntax(format!("improper qualified name: {name}"))),
    }
}

/// Resolve `[schema.]name` naming an existing relation with `lookup`: an
/// unqualified name is looked up in each schema of `path` in order (as
/// PostgreSQL does), and falls back to the first one when no schema has it
/// (so that errors name the schema a CREATE would use). Returns the schema,
/// the name and what `lookup` found there.
pub fn resolve_name<T>(
    name: &ObjectName,
    path: &[String],
    lookup: impl Fn(&str, &str) -> Option<T>,
) -> SqlResult<(String, String, Option<T>)> {
    let first = path.first().map_or("public", String::as_str);
    let (schema, table) = split_name(name, first)?;
    if name.0.len() > 1 {
        let found = lookup(&schema, &table);
        return Ok((schema, table, found));
    }
    for s in path {
        if let Some(found) = lookup(s, &table) {
            return Ok((s.clone(), table, Some(found)));
        }
    }
    Ok((schema, table, None))
}

/// One column of a table being created.
struct ColumnSpec {
    field: Field,
    default: Option<String>,
    primary: bool,
    serial: bool,
}

impl Session {
    /// Where an unqualified CREATE puts its object: the first existing
    /// schema of the search path.
    pub(crate) fn current_schema(&self) -> String {
        self.schema_path().swap_remove(0)
    }

    /// The existing schemas of the search path, in order (`public` when
    /// none exists).
    pub(crate) fn schema_path(&self) -> Vec<String> {
        let path: Vec<String> = self
            .shared
            .search_path
            .read()
            .iter()
            .filter(|s| SessionCatalog::schema_exists(&self.db.shared, s))
            .cloned()
            .collect();
        if path.is_empty() {
            vec!["public".into()]
        } else {
            path
        }
    }

    /// Resolve the name of an existing table, view or sequence through the
    /// search path ([`resolve_name`]).
    pub(crate) fn resolve_relation(&self, name: &ObjectName) -> SqlResult<(String, String)> {
        let (schema, name, _) = resolve_name(name, &self.schema_path(), |s, n| {
            self.relation_exists(s, n).then_some(())
        })?;
        Ok((schema, name))
    }

    fn relation_exists(&self, schema: &str, name: &str) -> bool {
        let st = &self.db.shared.storage;
        st.table_by_name(schema, name).is_some()
            || st.meta_get(&view_key(schema, name)).is_some()
            || st.meta_get(&sequence_key(schema, name)).is_some()
    }

    async fn commit_ddl(&self, ops: Vec<WalOp>) -> SqlResult<()> {
        self.db
            .shared
            .storage
            .commit(ops)
            .await
            .map_err(from_storage)?;
        Ok(())
    }

    pub(crate) async fn create_schema(
        &self,
        name: &str,
        if_not_exists: bool,
    ) -> SqlResult<CommandTag> {
        if SessionCatalog::schema_exists(&self.db.shared, name) {
            if if_not_exists {
                return Ok(CommandTag::new("CREATE SCHEMA"));
            }
            return Err(SqlError::new(
                "42P06",
                format!("schema \"{name}\" already exists"),
            ));
        }
        self.commit_ddl(vec![WalOp::PutMeta {
            key: schema_key(name),
            value: json!({}),
        }])
        .await?;
        Ok(CommandTag::new("CREATE SCHEMA"))
    }

    pub(crate) async fn create_table(&self, ct: &CreateTable) -> SqlResult<CommandTag> {
        let (schema, name) = split_name(&ct.name, &self.current_schema())?;
        if !SessionCatalog::schema_exists(&self.db.shared, &schema) {
            return Err(SqlError::new(
                "3F000",
                format!("schema \"{schema}\" does not exist"),
            ));
        }
        if self.relation_exists(&schema, &name) {
            if ct.if_not_exists {
                return Ok(CommandTag::new("CREATE TABLE"));
            }
            return Err(SqlError::new(
                "42P07",
                format!("relation \"{name}\" already exists"),
            ));
        }
        if let Some(query) = &ct.query {
            return self.create_table_as(&schema, &name, query).await;
        }
        let mut specs = ct
            .columns
            .iter()
            .map(column_spec)
            .collect::<SqlResult<Vec<_>>>()?;
        let mut pk: Vec<usize> = specs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.primary)
            .map(|(i, _)| i)
            .collect();
        for c in &ct.constraints {
            pk.extend(table_constraint_pk(c, &specs)?);
        }
        pk.dedup();
        let mut ops = Vec::new();
        for (i, spec) in specs.iter_mut().enumerate() {
            if pk.contains(&i) {
                spec.field = spec.field.clone().with_nullable(false);
            }
            if spec.serial {
                let seq = format!("{name}_{}_seq", spec.field.name());
                let def = SequenceDef {
                    start: 1,
                    increment: 1,
                    reserved: None,
                };
                let value =
                    serde_json::to_value(def).map_err(|e| SqlError::internal(e.to_string()))?;
                ops.push(WalOp::PutMeta {
                    key: sequence_key(&schema, &seq),
                    value,
                });
                spec.default = Some(format!("nextval('{schema}.{seq}')"));
            }
        }
        let defaults: BTreeMap<String, String> = specs
            .iter()
            .filter_map(|s| s.default.clone().map(|d| (s.field.name().clone(), d)))
            .collect();
        let fields: Vec<Field> = specs.into_iter().map(|s| s.field).collect();
        check_unique_names(&fields)?;
        let (id, source) = self.db.shared.storage.allocate_table_ids();
        let def = TableDef {
            id,
            namespace: schema,
            name,
            schema: Arc::new(Schema::new(fields)),
            primary_key: pk,
            properties: json!({ "defaults": defaults }),
        };
        self.validate_defaults(&def)?;
        ops.push(WalOp::CreateTable { def, source });
        self.commit_ddl(ops).await?;
        Ok(CommandTag::new("CREATE TABLE"))
    }

    fn validate_defaults(&self, def: &TableDef) -> SqlResult<()> {
        // Parsing them now turns a bad DEFAULT into an error at CREATE time.
        let probe = Arc::new(crate::session::SessionShared::new(vec!["public".into()]));
        self.db
            .shared
            .table_provider(def.clone(), &probe)
            .map_err(from_datafusion)?;
        Ok(())
    }

    async fn create_table_as(
        &self,
        schema: &str,
        name: &str,
        query: &datafusion::sql::sqlparser::ast::Query,
    ) -> SqlResult<CommandTag> {
        let df = self
            .ctx
            .sql(&query.to_string())
            .await
            .map_err(from_datafusion)?;
        let fields: Vec<Field> = df
            .schema()
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), storage_type(f.data_type()), true))
            .collect();
        check_unique_names(&fields)?;
        let batches = df.collect().await.map_err(from_datafusion)?;
        let schema_ref = Arc::new(Schema::new(fields));
        let (id, source) = self.db.shared.storage.allocate_table_ids();
        let def = TableDef {
            id,
            namespace: schema.to_string(),
            name: name.to_string(),
            schema: Arc::clone(&schema_ref),
            primary_key: vec![],
            properties: json!({}),
        };
        let mut ops = vec![WalOp::CreateTable {
            def: def.clone(),
            source,
        }];
        let mut rows = 0u64;
        for b in batches {
            let b = crate::table::conform(&def, &b).map_err(from_datafusion)?;
            rows += b.num_rows() as u64;
            if b.num_rows() > 0 {
                ops.push(WalOp::Insert {
                    table: id,
                    batch: b,
                });
            }
        }
        self.commit_ddl(ops).await?;
        Ok(CommandTag::with_rows("SELECT", rows))
    }

    pub(crate) async fn create_view(&self, cv: &CreateView) -> SqlResult<CommandTag> {
        if cv.materialized {
            return Err(SqlError::feature_not_supported(
                "materialized views are not supported",
            ));
        }
        let current = self.current_schema();
        let (schema, name) = split_name(&cv.name, &current)?;
        let exists_as_view = self
            .db
            .shared
            .storage
            .meta_get(&view_key(&schema, &name))
            .is_some();
        if self.relation_exists(&schema, &name) && !(cv.or_replace && exists_as_view) {
            if cv.if_not_exists {
                return Ok(CommandTag::new("CREATE VIEW"));
            }
            return Err(SqlError::new(
                "42P07",
                format!("relation \"{name}\" already exists"),
            ));
        }
        let mut query = cv.query.as_ref().clone();
        crate::output_names::name_view_columns(&mut query);
        let view_def = |query: &Query| {
            let mut sql = query.to_string();
            if !cv.columns.is_empty() {
                let cols = cv
                    .columns
                    .iter()
                    .map(|c| format!("\"{}\"", ident(&c.name)))
                    .collect::<Vec<_>>()
                    .join(", ");
                sql = format!("SELECT * FROM ({sql}) AS __provdb_view({cols})");
            }
            ViewDef {
                sql,
                schema: current.clone(),
            }
        };
        let mut view = view_def(&query);
        // Plan it now: an invalid view is an error at CREATE time.
        let planned = match self.shared.plan_view(&view).await {
            Err(e) if crate::typed_casts::is_duplicate_field_error(&e) => {
                // Casts DataFusion names alike get their type in the name.
                match crate::typed_casts::typed_in(&self.ctx.state(), &query).await {
                    Some(typed) => {
                        let typed_view = view_def(&typed);
                        let planned = self.shared.plan_view(&typed_view).await.map_err(|_| e);
                        view = typed_view;
                        planned
                    }
                    None => Err(e),
                }
            }
            planned => planned,
        };
        planned.map_err(|e| {
            if crate::output_names::is_duplicate_name_error(&e) {
                SqlError::new(
                    "42701",
                    format!("two columns of view \"{name}\" have one name; alias them"),
                )
            } else {
                from_datafusion(e)
            }
        })?;
        let value = serde_json::to_value(&view).map_err(|e| SqlError::internal(e.to_string()))?;
        self.commit_ddl(vec![WalOp::PutMeta {
            key: view_key(&schema, &name),
            value,
        }])
        .await?;
        Ok(CommandTag::new("CREATE VIEW"))
    }

    pub(crate) async fn create_sequence(
        &self,
        name: &ObjectName,
        if_not_exists: bool,
        options: &[SequenceOptions],
    ) -> SqlResult<CommandTag> {
        let (schema, name) = split_name(name, &self.current_schema())?;
        if self.relation_exists(&schema, &name) {
            if if_not_exists {
                return Ok(CommandTag::new("CREATE SEQUENCE"));
            }
            return Err(SqlError::new(
                "42P07",
                format!("relation \"{name}\" already exists"),
            ));
        }
        let mut def = SequenceDef {
            start: 1,
            increment: 1,
            reserved: None,
        };
        for o in options {
            match o {
                SequenceOptions::StartWith(e, _) => def.start = int_literal(e)?,
                SequenceOptions::IncrementBy(e, _) => def.increment = int_literal(e)?,
                _ => {}
            }
        }
        if def.increment == 0 {
            return Err(SqlError::invalid_param("INCREMENT must not be zero"));
        }
        let value = serde_json::to_value(def).map_err(|e| SqlError::internal(e.to_string()))?;
        self.commit_ddl(vec![WalOp::PutMeta {
            key: sequence_key(&schema, &name),
            value,
        }])
        .await?;
        Ok(CommandTag::new("CREATE SEQUENCE"))
    }

    pub(crate) async fn drop_objects(&self, stmt: &Statement) -> SqlResult<CommandTag> {
        let Statement::Drop {
            object_type,
            if_exists,
            names,
            cascade,
            ..
        } = stmt
        else {
            return Err(SqlError::internal("not a DROP"));
        };
        let current = self.current_schema();
        let mut ops = Vec::new();
        let mut dropped = Vec::new();
        for n in names {
            match object_type {
                ObjectType::Schema => {
                    let name = split_name(n, &current)?.1;
                    let schema_ops = self.drop_schema_ops(&name, *if_exists, *cascade)?;
                    // Its sequences' cached positions go with them.
                    dropped.extend(schema_ops.iter().filter_map(|op| match op {
                        WalOp::DeleteMeta { key } if key.starts_with(SEQUENCE_PREFIX) => {
                            Some(key.clone())
                        }
                        _ => None,
                    }));
                    ops.extend(schema_ops);
                }
                _ => {
                    let (schema, name) = self.resolve_relation(n)?;
                    ops.extend(self.drop_relation_op(object_type, &schema, &name, *if_exists)?);
                    dropped.push(sequence_key(&schema, &name));
                }
            }
        }
        if !ops.is_empty() {
            self.commit_ddl(ops).await?;
        }
        for key in &dropped {
            self.db.shared.sequences.forget(key);
        }
        Ok(CommandTag::new(format!(
            "DROP {}",
            object_type.to_string().to_ascii_uppercase()
        )))
    }

    fn drop_relation_op(
        &self,
        kind: &ObjectType,
        schema: &str,
        name: &str,
        if_exists: bool,
    ) -> SqlResult<Vec<WalOp>> {
        let st = &self.db.shared.storage;
        let found = match kind {
            ObjectType::Table => st.table_by_name(schema, name).map(|t| {
                // A table's serial sequences go with it.
                let mut ops = vec![WalOp::DropTable { table: t.id }];
                for (k, _) in st.meta_scan(&sequence_key(schema, &format!("{name}_"))) {
                    if k.ends_with("_seq") {
                        ops.push(WalOp::DeleteMeta { key: k });
                    }
                }
                ops
            }),
            ObjectType::View => st.meta_get(&view_key(schema, name)).map(|_| {
                vec![WalOp::DeleteMeta {
                    key: view_key(schema, name),
                }]
            }),
            ObjectType::Sequence => st.meta_get(&sequence_key(schema, name)).map(|_| {
                vec![WalOp::DeleteMeta {
                    key: sequence_key(schema, name),
                }]
            }),
            ObjectType::Index => return Ok(vec![]),
            other => {
                return Err(SqlError::feature_not_supported(format!(
                    "DROP {other} is not supported"
                )));
            }
        };
        match found {
            Some(ops) => Ok(ops),
            None if if_exists => Ok(vec![]),
            None => {
                let what = kind.to_string().to_ascii_lowercase();
                Err(SqlError::new(
                    "42P01",
                    format!("{what} \"{name}\" does not exist"),
                ))
            }
        }
    }

    fn drop_schema_ops(&self, name: &str, if_exists: bool, cascade: bool) -> SqlResult<Vec<WalOp>> {
        let st = &self.db.shared.storage;
        if !SessionCatalog::schema_exists(&self.db.shared, name) {
            if if_exists {
                return Ok(vec![]);
            }
            return Err(SqlError::new(
                "3F000",
                format!("schema \"{name}\" does not exist"),
            ));
        }
        let mut ops: Vec<WalOp> = st
            .tables()
            .into_iter()
            .filter(|t| t.namespace == name)
            .map(|t| WalOp::DropTable { table: t.id })
            .collect();
        for prefix in [format!("view/{name}/"), format!("{SEQUENCE_PREFIX}{name}/")] {
            ops.extend(
                st.meta_scan(&prefix)
                    .into_iter()
                    .map(|(key, _)| WalOp::DeleteMeta { key }),
            );
        }
        if !ops.is_empty() && !cascade {
            return Err(SqlError::new(
                "2BP01",
                format!("cannot drop schema {name} because other objects depend on it"),
            )
            .with_hint("Use DROP ... CASCADE to drop the dependent objects too."));
        }
        ops.push(WalOp::DeleteMeta {
            key: schema_key(name),
        });
        Ok(ops)
    }

    /// `CREATE INDEX`: provdb keeps no secondary indexes (scans skip
    /// batches by their min/max, hash joins filter their probe side at run
    /// time, primary keys are indexed), so the statement creates nothing.
    /// It is checked like PostgreSQL checks it — the table and the named
    /// columns must exist — and answered with a notice saying so, so that
    /// scripts written for PostgreSQL run unchanged and nobody is misled.
    pub(crate) fn create_index(
        &self,
        table: &ObjectName,
        columns: &[IndexColumn],
    ) -> SqlResult<CommandTag> {
        let (schema, name) = self.resolve_relation(table)?;
        let def = self
            .db
            .shared
            .storage
            .table_by_name(&schema, &name)
            .ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" does not exist")))?;
        for c in columns {
            if let Expr::Identifier(id) = &c.column.expr {
                let name = ident(id);
                if def.schema.field_with_name(&name).is_err() {
                    return Err(SqlError::new(
                        "42703",
                        format!("column \"{name}\" does not exist"),
                    ));
                }
            }
        }
        Ok(CommandTag::new("CREATE INDEX").with_notice(NO_INDEXES))
    }

    pub(crate) async fn alter_table(
        &self,
        name: &ObjectName,
        if_exists: bool,
        operations: &[AlterTableOperation],
    ) -> SqlResult<CommandTag> {
        let (schema, tname) = self.resolve_relation(name)?;
        let Some(mut def) = self.db.shared.storage.table_by_name(&schema, &tname) else {
            if if_exists {
                return Ok(CommandTag::new("ALTER TABLE"));
            }
            return Err(SqlError::new(
                "42P01",
                format!("relation \"{tname}\" does not exist"),
            ));
        };
        for op in operations {
            match op {
                AlterTableOperation::AddColumn {
                    if_not_exists,
                    column_def,
                    ..
                } => {
                    let spec = column_spec(column_def)?;
                    if def.schema.field_with_name(spec.field.name()).is_ok() {
                        if *if_not_exists {
                            continue;
                        }
                        return Err(SqlError::new(
                            "42701",
                            format!(
                                "column \"{}\" of relation \"{tname}\" already exists",
                                spec.field.name()
                            ),
                        ));
                    }
                    if spec.default.is_some()
                        || spec.primary
                        || !spec.field.is_nullable()
                        || spec.serial
                    {
                        return Err(SqlError::feature_not_supported(
                            "ADD COLUMN supports nullable columns without DEFAULT only",
                        ));
                    }
                    let mut fields: Vec<Field> = def
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone())
                        .collect();
                    fields.push(spec.field);
                    def.schema = Arc::new(Schema::new(fields));
                }
                AlterTableOperation::RenameTable { table_name } => {
                    let new = table_name.to_string();
                    let new = new
                        .trim_start_matches("TO ")
                        .trim_start_matches("AS ")
                        .trim()
                        .trim_matches('"')
                        .to_string();
                    if self.relation_exists(&schema, &new) {
                        return Err(SqlError::new(
                            "42P07",
                            format!("relation \"{new}\" already exists"),
                        ));
                    }
                    def.name = new;
                }
                other => {
                    return Err(SqlError::feature_not_supported(format!(
                        "ALTER TABLE {other} is not supported"
                    )));
                }
            }
        }
        self.commit_ddl(vec![WalOp::AlterTable { def }]).await?;
        Ok(CommandTag::new("ALTER TABLE"))
    }
}

fn check_unique_names(fields: &[Field]) -> SqlResult<()> {
    for (i, f) in fields.iter().enumerate() {
        if fields[..i].iter().any(|g| g.name() == f.name()) {
            return Err(SqlError::new(
                "42701",
                format!("column \"{}\" specified more than once", f.name()),
            ));
        }
    }
    Ok(())
}

/// The type a query result column is stored as.
fn storage_type(
    t: &datafusion::arrow::datatypes::DataType,
) -> datafusion::arrow::datatypes::DataType {
    use datafusion::arrow::datatypes::DataType as D;
    match t {
        D::Utf8View | D::LargeUtf8 => D::Utf8,
        D::BinaryView | D::LargeBinary => D::Binary,
        D::Null => D::Utf8,
        other => other.clone(),
    }
}

fn int_literal(e: &datafusion::sql::sqlparser::ast::Expr) -> SqlResult<i64> {
    e.to_string()
        .trim()
        .parse::<i64>()
        .map_err(|_| SqlError::invalid_param(format!("expected an integer, got {e}")))
}

fn column_spec(c: &ColumnDef) -> SqlResult<ColumnSpec> {
    let name = ident(&c.name);
    let serial = is_serial(&c.data_type);
    let mut field = Field::new(&name, arrow_type(&c.data_type)?, true);
    let mut spec = ColumnSpec {
        field: field.clone(),
        default: None,
        primary: false,
        serial,
    };
    for opt in &c.options {
        match &opt.option {
            ColumnOption::Null => {}
            ColumnOption::NotNull => field = field.with_nullable(false),
            ColumnOption::Default(e) => spec.default = Some(e.to_string()),
            ColumnOption::PrimaryKey(_) => {
                spec.primary = true;
                field = field.with_nullable(false);
            }
            ColumnOption::Unique(_) => {
                return Err(SqlError::feature_not_supported(format!(
                    "UNIQUE on column \"{name}\": only PRIMARY KEY uniqueness is enforced in this version"
                )));
            }
            ColumnOption::ForeignKey(_) | ColumnOption::Comment(_) | ColumnOption::Collation(_) => {
            }
            ColumnOption::Check(_) => {
                return Err(SqlError::feature_not_supported(
                    "CHECK constraints are not supported yet",
                ));
            }
            ColumnOption::Generated {
                generated_as: GeneratedAs::Always | GeneratedAs::ByDefault,
                generation_expr: None,
                ..
            } => {
                spec.serial = true;
            }
            ColumnOption::Identity(_) => spec.serial = true,
            other => {
                return Err(SqlError::feature_not_supported(format!(
                    "column option {other} is not supported"
                )));
            }
        }
    }
    if spec.serial {
        if !field.data_type().is_integer() {
            return Err(SqlError::new(
                "42804",
                format!("identity column \"{name}\" must be an integer type"),
            ));
        }
        field = field.with_nullable(false);
    }
    spec.field = field;
    Ok(spec)
}

fn table_constraint_pk(c: &TableConstraint, specs: &[ColumnSpec]) -> SqlResult<Vec<usize>> {
    match c {
        TableConstraint::PrimaryKey(pk) => pk
            .columns
            .iter()
            .map(|ic| {
                let col = ic
                    .column
                    .expr
                    .to_string()
                    .trim_matches('"')
                    .to_ascii_lowercase();
                specs
                    .iter()
                    .position(|s| s.field.name().eq_ignore_ascii_case(&col))
                    .ok_or_else(|| {
                        SqlError::new(
                            "42703",
                            format!("column \"{col}\" named in key does not exist"),
                        )
                    })
            })
            .collect(),
        TableConstraint::Unique(_) => Err(SqlError::feature_not_supported(
            "UNIQUE constraints other than the primary key are not enforced yet",
        )),
        TableConstraint::Check(_) => Err(SqlError::feature_not_supported(
            "CHECK constraints are not supported yet",
        )),
        // Foreign keys are accepted and not enforced (documented in docs/sql.md).
        _ => Ok(vec![]),
    }
}
