//! [`Session`]: one client's connection state and the statement dispatcher.
//!
//! Every statement runs in the same frame: check the transaction state, run,
//! then either fold the statement's staged writes into the open transaction
//! or (outside a transaction block) commit them at once. A failed statement
//! discards its writes, so nothing of it is ever half-applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, ParamValues, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::dml::WriteOp as DfWriteOp;
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{SendableRecordBatchStream, collect, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, ObjectType, Set, Statement, Value};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use parking_lot::{Mutex, RwLock};
use provdb_storage::{Storage, TableId, TableSnapshot};
use tokio::sync::OwnedMutexGuard;

use crate::catalog::{SessionCatalog, ViewDef};
use crate::copy::CopyIn;
use crate::copy_stage::CopyStaging;
use crate::database::Database;
use crate::direct::{Bound, Direct, Outcome};
use crate::error::{SqlError, SqlResult, from_datafusion, from_storage};
use crate::kept_physical::{KeptPhysical, Run};
use crate::planning_state::PlanningStates;
use crate::prepared::{KeptPlan, Prepared, StartQuery};
use crate::sequence::{SeqFn, SequenceUdf};
use crate::txn::WriteSet;

/// Name of the one catalog (database).
pub const CATALOG: &str = "provdb";

/// How long UPDATE/DELETE wait for another session's write lock on a table.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Transaction state as reported in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// Not in a transaction block ('I').
    Idle,
    /// In a transaction block ('T').
    InBlock,
    /// In a failed transaction block; only ROLLBACK is accepted ('E').
    Failed,
}

/// The command tag of a statement that returns no rows, e.g. `INSERT 0 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTag {
    /// The tag word(s): `INSERT`, `UPDATE`, `CREATE TABLE`, `BEGIN`, ...
    pub command: String,
    /// Row count for INSERT/UPDATE/DELETE/COPY/SELECT-like commands.
    pub rows: Option<u64>,
    /// A notice for the client (PostgreSQL's NOTICE), sent before the tag.
    pub notice: Option<&'static str>,
}

impl CommandTag {
    pub fn new(command: impl Into<String>) -> Self {
        CommandTag {
            command: command.into(),
            rows: None,
            notice: None,
        }
    }
    pub fn with_rows(command: impl Into<String>, rows: u64) -> Self {
        CommandTag {
            rows: Some(rows),
            ..CommandTag::new(command)
        }
    }
    pub fn with_notice(mut self, notice: &'static str) -> Self {
        self.notice = Some(notice);
        self
    }
}

impl QueryOutput {
    /// A result set whose batches carry `schema`'s column names
    /// ([`crate::output_names::relabel_stream`]).
    fn rows(schema: SchemaRef, stream: SendableRecordBatchStream) -> Self {
        let stream = crate::output_names::relabel_stream(&schema, stream);
        QueryOutput::Rows { schema, stream }
    }
}

/// What a statement produced.
pub enum QueryOutput {
    /// A result set, streamed.
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    },
    /// A command that returns no rows.
    Command(CommandTag),
    /// `COPY ... FROM STDIN`: the server must now run the COPY sub-protocol.
    CopyIn(Box<CopyIn>),
    /// An empty query string.
    Empty,
}

impl std::fmt::Debug for QueryOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryOutput::Rows { schema, .. } => write!(f, "Rows({schema:?})"),
            QueryOutput::Command(t) => write!(f, "Command({t:?})"),
            QueryOutput::CopyIn(c) => write!(f, "CopyIn({c:?})"),
            QueryOutput::Empty => write!(f, "Empty"),
        }
    }
}

/// Session state shared with the table providers of the session.
#[derive(Debug)]
pub struct SessionShared {
    /// Writes of the open transaction block (empty outside one).
    pub txn: Mutex<WriteSet>,
    /// Writes of the statement being executed.
    pub stmt: Mutex<WriteSet>,
    /// Snapshot of every table, taken at the first scan of a statement.
    snapshots: Mutex<Option<HashMap<TableId, TableSnapshot>>>,
    pub search_path: Arc<RwLock<Vec<String>>>,
    /// Table write locks held until the end of the transaction.
    locks: Mutex<HashMap<TableId, OwnedMutexGuard<()>>>,
    /// The session's DataFusion state, for planning views.
    state: RwLock<Weak<parking_lot::RwLock<SessionState>>>,
    /// Session-private tables (resolved before stored ones).
    pub temp: Mutex<HashMap<String, Arc<dyn datafusion::catalog::TableProvider>>>,
    /// Values bound to the prepared statement being executed (read by
    /// lineage calls whose arguments are `$n` parameters).
    pub params: Mutex<Vec<ScalarValue>>,
}

impl SessionShared {
    pub fn new(search_path: Vec<String>) -> Self {
        SessionShared {
            txn: Mutex::new(WriteSet::default()),
            stmt: Mutex::new(WriteSet::default()),
            snapshots: Mutex::new(None),
            search_path: Arc::new(RwLock::new(search_path)),
            locks: Mutex::new(HashMap::new()),
            state: RwLock::new(Weak::new()),
            temp: Mutex::new(HashMap::new()),
            params: Mutex::new(Vec::new()),
        }
    }

    /// The statement's snapshot of `table` (all tables are snapshotted
    /// together, so one statement sees one consistent state).
    pub fn snapshot(
        &self,
        storage: &Storage,
        table: TableId,
    ) -> provdb_storage::Result<TableSnapshot> {
        let mut cache = self.snapshots.lock();
        if cache.is_none() {
            let ids: Vec<TableId> = storage.tables().iter().map(|t| t.id).collect();
            let snaps = storage.snapshot_many(&ids)?;
            *cache = Some(ids.into_iter().zip(snaps).collect());
        }
        if let Some(s) = cache.as_ref().and_then(|c| c.get(&table)) {
            return Ok(s.clone());
        }
        let s = storage.snapshot(table)?;
        if let Some(c) = cache.as_mut() {
            c.insert(table, s.clone());
        }
        Ok(s)
    }

    /// Snapshot `tables` together for the statement about to run, unless
    /// it already holds snapshots; returns how many live rows they hold.
    pub fn snapshot_tables(
        &self,
        storage: &Storage,
        tables: &[TableId],
    ) -> provdb_storage::Result<u64> {
        let mut cache = self.snapshots.lock();
        let cache = match &mut *cache {
            Some(cache) => cache,
            empty => {
                let snaps = storage.snapshot_many(tables)?;
                empty.insert(tables.iter().copied().zip(snaps).collect())
            }
        };
        let mut rows = 0u64;
        for id in tables {
            let snap = match cache.get(id) {
                Some(s) => s,
                None => cache.entry(*id).or_insert(storage.snapshot(*id)?),
            };
            rows = rows.saturating_add(snap.live_rows());
        }
        Ok(rows)
    }

    fn new_statement(&self) {
        *self.snapshots.lock() = None;
        *self.stmt.lock() = WriteSet::default();
    }

    /// Take `table`'s write lock for the rest of the transaction.
    pub async fn lock_table(&self, storage: &Storage, table: TableId) -> SqlResult<()> {
        if self.locks.lock().contains_key(&table) {
            return Ok(());
        }
        let lock = storage.write_lock(table);
        let guard = tokio::time::timeout(LOCK_TIMEOUT, lock.lock_owned())
            .await
            .map_err(|_| {
                SqlError::new(
                    "55P03",
                    "could not obtain lock on relation: another transaction is updating it",
                )
            })?;
        self.locks.lock().insert(table, guard);
        Ok(())
    }

    fn release_locks(&self) {
        self.locks.lock().clear();
    }

    /// Plan a stored view in the schema it was created in.
    pub async fn plan_view(&self, view: &ViewDef) -> datafusion::error::Result<LogicalPlan> {
        let Some(state) = self.state.read().upgrade() else {
            return Err(DataFusionError::Internal("session is gone".into()));
        };
        let mut state = state.read().clone();
        state.config_mut().options_mut().catalog.default_schema = view.schema.clone();
        state.create_logical_plan(&view.sql).await
    }
}

/// A statement to run: parsed text, or a prepared plan with its parameters bound.
enum Work {
    Statement(Box<Statement>),
    Plan(Box<LogicalPlan>),
    /// A plan the optimizer has already run over (a kept prepared plan).
    Optimized(Box<LogicalPlan>),
    /// A prepared statement run without DataFusion ([`crate::direct`]).
    Direct(Box<DirectWork>),
    /// A prepared query that may run its kept physical plan
    /// ([`crate::kept_physical`]).
    Kept(Box<KeptWork>),
}

/// A prepared query with its values bound, converted to the kept plan's
/// types.
struct KeptWork {
    kept: Arc<KeptPlan>,
    physical: Arc<KeptPhysical>,
    values: Vec<ScalarValue>,
}

/// A bound direct statement and, for a lookup the key index cannot answer,
/// what runs it the general way (its kept physical plan, if it has one).
struct DirectWork {
    bound: Bound,
    kept: Arc<KeptPlan>,
    physical: Option<Arc<KeptPhysical>>,
    values: Vec<ScalarValue>,
}

/// One client's session. Not shared between connections: a `SET` here never
/// leaks into another session.
pub struct Session {
    pub(crate) db: Arc<Database>,
    pub(crate) ctx: SessionContext,
    pub(crate) shared: Arc<SessionShared>,
    vars: BTreeMap<String, String>,
    status: TxnStatus,
    /// The open block is the implicit one of a multi-statement query string.
    implicit: bool,
    /// DataFusion states reused from statement to statement.
    planning: PlanningStates,
    /// Executions that ran without DataFusion ([`crate::direct`]), not
    /// counting those that gave way to the general path.
    pub(crate) direct_runs: u64,
    /// Executions that ran a kept physical plan ([`crate::kept_physical`]).
    pub(crate) kept_runs: u64,
}

fn default_vars() -> BTreeMap<String, String> {
    [
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("datestyle", "ISO, MDY"),
        ("default_transaction_isolation", "read committed"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("is_superuser", "on"),
        ("search_path", "public"),
        ("server_encoding", "UTF8"),
        ("server_version", crate::SERVER_VERSION),
        ("server_version_num", "160000"),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("timezone", "UTC"),
        ("transaction_isolation", "read committed"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Session {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        let shared = Arc::new(SessionShared::new(vec!["public".into()]));
        // information_schema is provdb's (crate::information_schema).
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_default_catalog_and_schema(CATALOG, "public")
            .with_create_default_catalog_and_schema(false)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&db.shared.runtime))
            .with_default_features()
            .with_analyzer_rule(Arc::new(crate::rounding_casts::RoundingCasts))
            .with_optimizer_rule(Arc::new(crate::eager_aggregate::EagerAggregation))
            .with_optimizer_rule(Arc::new(crate::memo_cast::MemoCasts))
            .with_physical_optimizer_rule(Arc::new(crate::filter_aggregate::FilterAggregation))
            .with_physical_optimizer_rule(Arc::new(crate::run_aggregate::RunAggregation))
            .with_type_planner(crate::pg_catalog::type_planner())
            .build();
        let ctx = SessionContext::new_with_state(state);
        let catalog = SessionCatalog {
            db: Arc::clone(&db.shared),
            session: Arc::clone(&shared),
            extra: RwLock::new(HashMap::new()),
        };
        let info = crate::information_schema::PgInformationSchema::new(
            ctx.state_ref().read().catalog_list(),
        );
        catalog.extra.write().insert(
            crate::information_schema::INFORMATION_SCHEMA.to_string(),
            Arc::new(info),
        );
        ctx.register_catalog(CATALOG, Arc::new(catalog));
        if let Err(e) = crate::pg_catalog::setup(&ctx, CATALOG) {
            tracing::warn!(error = %e, "pg_catalog setup failed");
        }
        for kind in [SeqFn::NextVal, SeqFn::SetVal] {
            let udf = SequenceUdf::new(
                kind,
                db.shared.storage.clone(),
                Arc::clone(&db.shared.sequences),
                Arc::clone(&shared.search_path),
            );
            ctx.register_udf(ScalarUDF::new_from_impl(udf));
        }
        crate::functions::register(&ctx);
        let lineage = db.shared.lineage.clone();
        ctx.register_udtf(
            "lineage",
            Arc::new(crate::lineage::LineageFn {
                lineage: lineage.clone(),
                session: Arc::clone(&shared),
            }),
        );
        ctx.register_udtf(
            "lineage_path",
            Arc::new(crate::lineage::LineagePathFn {
                lineage: lineage.clone(),
                session: Arc::clone(&shared),
            }),
        );
        ctx.register_udtf(
            "prov_export",
            Arc::new(crate::prov_export::ProvExportFn {
                storage: db.shared.storage.clone(),
                lineage,
            }),
        );
        *shared.state.write() = Arc::downgrade(&ctx.state_ref());
        Session {
            db,
            ctx,
            shared,
            vars: default_vars(),
            status: TxnStatus::Idle,
            implicit: false,
            planning: PlanningStates::default(),
            direct_runs: 0,
            kept_runs: 0,
        }
    }

    /// The session's DataFusion context (for embedding programs).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Run every statement of a simple-protocol query string, in order.
    /// Returns the outputs of the statements that succeeded and, if one
    /// failed, its error (later statements are not run).
    pub async fn execute(&mut self, sql: &str) -> (Vec<QueryOutput>, Option<SqlError>) {
        let statements = match parse(sql) {
            Ok(s) => s,
            Err(e) => {
                self.on_error();
                return (vec![], Some(e));
            }
        };
        if statements.is_empty() {
            return (vec![QueryOutput::Empty], None);
        }
        let mut outputs = Vec::with_capacity(statements.len());
        let count = statements.len();
        for (i, stmt) in statements.into_iter().enumerate() {
            // Several statements in one query string run as one implicit
            // transaction, as in PostgreSQL.
            if count > 1 && self.status == TxnStatus::Idle {
                self.status = TxnStatus::InBlock;
                self.implicit = true;
            }
            if matches!(stmt, Statement::StartTransaction { .. }) {
                self.implicit = false;
            }
            match self.run(Work::Statement(Box::new(stmt))).await {
                Ok(out) => outputs.push(out),
                Err(e) => {
                    if self.implicit {
                        self.rollback();
                    }
                    return (outputs, Some(e));
                }
            }
            if self.implicit && (i + 1 == count) && self.status == TxnStatus::InBlock {
                self.implicit = false;
                self.status = TxnStatus::Idle;
                if let Err(e) = self.commit_txn().await {
                    self.rollback();
                    return (outputs, Some(e));
                }
            }
        }
        (outputs, None)
    }

    /// Parse and plan one statement (extended protocol Parse).
    /// `param_types[i]` is the client's declared type for `$i+1`, if any.
    pub async fn prepare(
        &mut self,
        sql: &str,
        param_types: &[Option<DataType>],
    ) -> SqlResult<Prepared> {
        let mut statements = parse(sql)?;
        if statements.len() > 1 {
            return Err(SqlError::syntax(
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(stmt) = statements.pop() else {
            return Ok(Prepared::unplanned(sql, None));
        };
        if !is_datafusion_statement(&stmt) {
            if matches!(stmt, Statement::Copy { .. }) {
                // Resolve the target now, as PostgreSQL does at Parse.
                drop(self.copy_start(&stmt)?);
            }
            let result_schema = match &stmt {
                Statement::ShowVariable { variable } => Some(show_schema(&variable_name(variable))),
                _ => None,
            };
            return Ok(Prepared::unplanned(sql, result_schema));
        }
        let mut stmt = stmt;
        let ddl_version = self.db.shared.storage.ddl_version();
        // Parameters in table-function arguments are not among those
        // DataFusion infers: count them in the text.
        let client_params =
            crate::lineage::subquery::highest_placeholder(&stmt).max(param_types.len());
        let starts = self
            .prepare_starts(&mut stmt, client_params, param_types)
            .await?;
        self.shared.new_statement();
        let plan = self.plan_statement(stmt).await?;
        // Calls that could not take their `$n` values at run time
        // (deferred) are planned again at each execution.
        let replan = crate::lineage::udtf::has_deferred_call(&plan);
        let inferred = plan.get_parameter_types().map_err(from_datafusion)?;
        let count = inferred.len().max(client_params);
        let types = (0..count)
            .map(|i| {
                let declared = param_types.get(i).cloned().flatten();
                let found = inferred.get(&format!("${}", i + 1)).cloned().flatten();
                // A parameter used only in a start subquery: its type there.
                let in_start = || {
                    starts
                        .iter()
                        .find_map(|s| s.prepared.param_types.get(i).cloned())
                };
                declared
                    .or(found)
                    .or_else(in_start)
                    .unwrap_or(DataType::Utf8)
            })
            .collect();
        let cast_params = crate::rounding_casts::integer_cast_params(&plan);
        let integer_params = (0..count)
            .map(|i| {
                let id = format!("${}", i + 1);
                let found = inferred.get(&id).cloned().flatten();
                found
                    .filter(DataType::is_integer)
                    .or_else(|| cast_params.get(&id).cloned())
            })
            .collect();
        let result_schema = if matches!(plan, LogicalPlan::Dml(_)) {
            None
        } else {
            Some(crate::output_names::output_schema(&plan))
        };
        let optimized = if replan {
            None
        } else {
            crate::prepared::optimize_for_reuse(&self.ctx.state(), &plan).map(Arc::new)
        };
        let direct = optimized.as_ref().and_then(|kept| Direct::compile(kept));
        let storage = &self.db.shared.storage;
        let depends: Vec<(TableId, SchemaRef)> = crate::parallelism::stored_tables(&plan)
            .into_iter()
            .filter_map(|id| Some((id, storage.table(id)?.schema_ref())))
            .collect();
        let tables = depends.iter().map(|(id, _)| *id).collect();
        // A lookup chain that gives way runs the kept physical plan.
        let physical = match (&optimized, &direct) {
            (Some(kept), None | Some(Direct::Chain(_))) => {
                KeptPhysical::for_plan(kept, tables).map(Arc::new)
            }
            _ => None,
        };
        Ok(Prepared {
            sql: sql.to_string(),
            param_types: types,
            integer_params,
            result_schema,
            plan: Some(plan),
            optimized,
            direct,
            physical,
            replan,
            depends,
            checked_at: Arc::new(AtomicU64::new(ddl_version)),
            starts,
        })
    }

    /// Prepare the subqueries given as lineage function arguments as
    /// statements of their own, with hidden parameters numbered after the
    /// client's in their place (see [`crate::lineage::subquery`]).
    async fn prepare_starts(
        &mut self,
        stmt: &mut Statement,
        client_params: usize,
        param_types: &[Option<DataType>],
    ) -> SqlResult<Vec<StartQuery>> {
        let found = crate::lineage::subquery::hoist(stmt, client_params + 1)?;
        let mut starts = Vec::with_capacity(found.len());
        for arg in found {
            let sql = arg.query.to_string();
            let prepared = Box::pin(self.prepare(&sql, param_types)).await?;
            starts.push(StartQuery {
                prepared: Box::new(prepared),
                function: arg.function,
            });
        }
        Ok(starts)
    }

    /// Run the start subqueries of a prepared statement with the client's
    /// values and append their results, as the hidden parameters.
    async fn bind_starts(
        &mut self,
        prepared: &Prepared,
        mut params: Vec<ScalarValue>,
    ) -> SqlResult<Vec<ScalarValue>> {
        if prepared.starts.is_empty() {
            return Ok(params);
        }
        params.resize(prepared.param_types.len(), ScalarValue::Null);
        let client = params.clone();
        for start in &prepared.starts {
            let own = client.len().min(start.prepared.param_types.len());
            let out = Box::pin(self.bind_and_run(&start.prepared, client[..own].to_vec())).await?;
            let texts = match out {
                QueryOutput::Rows { stream, .. } => {
                    let batches = datafusion::physical_plan::common::collect(stream)
                        .await
                        .map_err(from_datafusion)?;
                    first_column_texts(&batches)?
                }
                _ => Vec::new(),
            };
            params.push(start_param(&start.function, texts)?);
        }
        Ok(params)
    }

    /// Execute a prepared statement with bound parameter values. An error
    /// raised before the statement runs (binding, re-planning after DDL)
    /// fails the open transaction block like any failed statement.
    pub async fn execute_prepared(
        &mut self,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
    ) -> SqlResult<QueryOutput> {
        let out = self.bind_and_run(prepared, params).await;
        if out.is_err() {
            self.on_error();
        }
        out
    }

    async fn bind_and_run(
        &mut self,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
    ) -> SqlResult<QueryOutput> {
        let params = round_integer_params(prepared, params);
        if prepared.replan || !prepared.tables_unchanged(&self.db.shared.storage) {
            return self.execute_replanned(prepared, params).await;
        }
        let params = self.bind_starts(prepared, params).await?;
        *self.shared.params.lock() = params.clone();
        match &prepared.plan {
            None => {
                let mut statements = parse(&prepared.sql)?;
                match statements.pop() {
                    Some(stmt) => self.run(Work::Statement(Box::new(stmt))).await,
                    None => Ok(QueryOutput::Empty),
                }
            }
            Some(plan) => {
                if let Some(work) = self.direct_work(prepared, &params)? {
                    return self.run(work).await;
                }
                if let (Some(kept), Some(physical)) = (&prepared.optimized, &prepared.physical)
                    && let Some(values) = kept.bound_values(&params)
                {
                    let work = KeptWork {
                        kept: Arc::clone(kept),
                        physical: Arc::clone(physical),
                        values,
                    };
                    return self.run(Work::Kept(Box::new(work))).await;
                }
                if let Some(kept) = prepared.optimized.as_ref().and_then(|k| k.bind(&params)) {
                    return self.run(Work::Optimized(Box::new(kept))).await;
                }
                let plan = plan
                    .clone()
                    .with_param_values(ParamValues::from(params))
                    .map_err(from_datafusion)?;
                self.run(Work::Plan(Box::new(plan))).await
            }
        }
    }

    /// Execute a prepared statement planned again at each execution (a
    /// lineage argument that cannot take its `$n` at run time, or tables
    /// changed by DDL since Parse): write the bound values into the
    /// lineage arguments and plan the text again (which runs its subquery
    /// arguments in the statement).
    async fn execute_replanned(
        &mut self,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
    ) -> SqlResult<QueryOutput> {
        let Some(mut stmt) = parse(&prepared.sql)?.pop() else {
            return Ok(QueryOutput::Empty);
        };
        crate::lineage::subquery::bind_placeholder_args(&mut stmt, &params)?;
        self.shared.new_statement();
        let plan = self
            .plan_statement(stmt)
            .await?
            .with_param_values(ParamValues::from(params))
            .map_err(from_datafusion)?;
        if let (Some(described), false) = (&prepared.result_schema, prepared.replan) {
            // The client was told the columns at Describe: after DDL they
            // must still be these (PostgreSQL's rule for cached plans).
            let now = crate::output_names::output_schema(&plan);
            let same = described.fields().len() == now.fields().len()
                && described
                    .fields()
                    .iter()
                    .zip(now.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
            if !same {
                return Err(SqlError::new(
                    "0A000",
                    "cached plan must not change result type",
                ));
            }
        }
        self.run(Work::Plan(Box::new(plan))).await
    }

    /// The direct form of a prepared statement with `params` bound, when
    /// it has one and can take these values ([`crate::direct`]).
    fn direct_work(&self, prepared: &Prepared, params: &[ScalarValue]) -> SqlResult<Option<Work>> {
        let (Some(direct), Some(kept)) = (&prepared.direct, &prepared.optimized) else {
            return Ok(None);
        };
        let Some(values) = kept.bound_values(params) else {
            return Ok(None);
        };
        let txn = &self.shared.txn;
        let pending = |t| txn.lock().inserts.contains_key(&t);
        let Some(bound) = direct.bind(&values, pending).map_err(from_datafusion)? else {
            return Ok(None);
        };
        Ok(Some(Work::Direct(Box::new(DirectWork {
            bound,
            kept: Arc::clone(kept),
            physical: prepared.physical.clone(),
            values,
        }))))
    }

    /// Run a bound direct statement; a lookup the key index cannot answer
    /// for this snapshot runs the kept plan instead.
    async fn execute_direct(&mut self, work: DirectWork) -> SqlResult<QueryOutput> {
        let ctx = &self.ctx;
        let outcome = work.bound.run(|| ctx.task_ctx()).await;
        if !matches!(outcome, Ok(Outcome::Unanswered)) {
            self.direct_runs += 1;
        }
        match outcome.map_err(from_datafusion)? {
            Outcome::Inserted(rows) => {
                Ok(QueryOutput::Command(CommandTag::with_rows("INSERT", rows)))
            }
            Outcome::Rows(schema, stream) => Ok(QueryOutput::rows(schema, stream)),
            Outcome::Unanswered => match work.physical {
                Some(physical) => {
                    let kept = KeptWork {
                        kept: work.kept,
                        physical,
                        values: work.values,
                    };
                    self.execute_kept(kept).await
                }
                None => self.execute_bound(&work.kept, &work.values).await,
            },
        }
    }

    /// Run the kept optimised plan with `values` (already converted to its
    /// types by [`KeptPlan::bound_values`]) the general way.
    async fn execute_bound(
        &mut self,
        kept: &KeptPlan,
        values: &[ScalarValue],
    ) -> SqlResult<QueryOutput> {
        match kept.bind(values) {
            Some(plan) => self.execute_plan(plan, true).await,
            None => Err(SqlError::internal(
                "a kept plan refused values it took before",
            )),
        }
    }

    /// Run a prepared query from its kept physical plan when it reads few
    /// rows now and the plan can be kept; plan it the general way if not.
    async fn execute_kept(&mut self, work: KeptWork) -> SqlResult<QueryOutput> {
        let rows = self
            .shared
            .snapshot_tables(&self.db.shared.storage, work.physical.tables())
            .map_err(from_storage)?;
        let start = Instant::now();
        if let Some(mode) = work.physical.mode(rows) {
            let planner = self.planning.take(&self.ctx, mode);
            let run = Run {
                state: &planner.state,
                mode,
                task: &planner.task,
                epoch: self.planning.epoch(),
                start,
            };
            let ran = work.physical.run(&work.kept, &work.values, run).await;
            self.planning.give_back(planner);
            if let Some(stream) = ran.map_err(from_datafusion)? {
                self.kept_runs += 1;
                let schema = work.physical.schema();
                return Ok(QueryOutput::rows(schema, stream));
            }
        }
        match self.execute_bound(&work.kept, &work.values).await? {
            QueryOutput::Rows { schema, stream } => {
                let stream = work.physical.time_general(stream, start);
                Ok(QueryOutput::Rows { schema, stream })
            }
            other => Ok(other),
        }
    }

    /// Finish a COPY FROM STDIN after the client sent CopyDone: commit its rows
    /// atomically (or add them to the open transaction). Returns `COPY n`.
    pub async fn copy_finish(&mut self, mut copy: Box<CopyIn>) -> SqlResult<CommandTag> {
        self.shared.new_statement();
        let result = self.store_copy(&mut copy).await;
        let rows = copy.state.rows;
        self.finish_statement(
            result.map(|_| QueryOutput::Command(CommandTag::with_rows("COPY", rows))),
        )
        .await
        .map(|out| match out {
            QueryOutput::Command(t) => t,
            _ => CommandTag::with_rows("COPY", rows),
        })
    }

    /// A staged COPY's rest goes to its stager and its segments are
    /// attached by a commit of their own (see [`crate::copy_stage`]); other
    /// COPYs stage their rows in the statement's write set.
    async fn store_copy(&mut self, copy: &mut CopyIn) -> SqlResult<()> {
        let batches = copy.finish()?;
        if let CopyStaging::On(mut stager) = std::mem::take(&mut copy.staging) {
            for b in batches {
                stager.send(b).await?;
            }
            let (ops, staged) = stager.finish().await?;
            let committed = self.db.shared.storage.commit(ops).await;
            staged.keep();
            return committed.map(|_| ()).map_err(from_storage);
        }
        let def = self
            .db
            .shared
            .storage
            .table(copy.target.table)
            .ok_or_else(|| {
                SqlError::new(
                    "42P01",
                    format!("relation \"{}\" does not exist", copy.target.qualified_name),
                )
            })?;
        if copy.target.columns.is_none() {
            let mut stmt = self.shared.stmt.lock();
            for b in batches {
                stmt.insert(
                    def.id,
                    crate::table::conform(&def, &b).map_err(from_datafusion)?,
                );
            }
            return Ok(());
        }
        // A column list: go through INSERT ... SELECT so defaults apply.
        let src =
            datafusion::datasource::MemTable::try_new(Arc::clone(&copy.schema), vec![batches])
                .map_err(from_datafusion)?;
        let name = "__provdb_copy_src";
        self.shared
            .temp
            .lock()
            .insert(name.to_string(), Arc::new(src));
        let cols = copy
            .target
            .columns
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO \"{}\".\"{}\" ({cols}) SELECT * FROM {name}",
            def.namespace, def.name
        );
        let result = async {
            let df = self.ctx.sql(&sql).await?;
            df.collect().await
        }
        .await;
        self.shared.temp.lock().remove(name);
        result.map(|_| ()).map_err(from_datafusion)
    }

    /// Abandon a COPY (CopyFail or a vanished client): nothing of it is stored.
    /// Inside a transaction block the transaction becomes failed.
    pub fn copy_abort(&mut self, copy: Box<CopyIn>) {
        drop(copy);
        *self.shared.stmt.lock() = WriteSet::default();
        self.on_error();
    }

    /// Report that a statement failed after `execute` returned its rows (an
    /// error or a cancel while streaming): inside a transaction block the
    /// block becomes failed, as in PostgreSQL.
    pub fn statement_failed(&mut self) {
        self.on_error();
    }

    /// Current transaction status for ReadyForQuery.
    pub fn transaction_status(&self) -> TxnStatus {
        self.status
    }

    /// Set a session variable from the startup packet or `SET`
    /// (`search_path`, `application_name`, `DateStyle`, ...).
    pub fn set_variable(&mut self, name: &str, value: &str) -> SqlResult<()> {
        let name = name.to_ascii_lowercase();
        self.planning.invalidate();
        match name.as_str() {
            "search_path" | "schema" => {
                let path = parse_search_path(value);
                if path.is_empty() {
                    return Err(SqlError::invalid_param(
                        "search_path must name at least one schema",
                    ));
                }
                *self.shared.search_path.write() = path.clone();
                let current = self.current_schema();
                self.ctx
                    .state_ref()
                    .write()
                    .config_mut()
                    .options_mut()
                    .catalog
                    .default_schema = current;
                self.vars.insert("search_path".into(), path.join(", "));
            }
            "transaction_isolation" | "default_transaction_isolation" => {
                self.vars.insert(name, value.to_ascii_lowercase());
            }
            n if n.starts_with("datafusion.") => {
                self.ctx
                    .state_ref()
                    .write()
                    .config_mut()
                    .options_mut()
                    .set(n, value)
                    .map_err(from_datafusion)?;
                self.vars.insert(name, value.to_string());
            }
            _ => {
                self.vars.insert(name, value.to_string());
            }
        }
        Ok(())
    }

    /// The value of a session variable (`SHOW name`), if set.
    pub fn variable(&self, name: &str) -> Option<String> {
        self.vars.get(&name.to_ascii_lowercase()).cloned()
    }

    /// Called when the client disconnects: rolls back any open transaction.
    pub fn close(&mut self) {
        self.rollback();
    }

    fn rollback(&mut self) {
        self.implicit = false;
        *self.shared.txn.lock() = WriteSet::default();
        *self.shared.stmt.lock() = WriteSet::default();
        self.shared.release_locks();
        self.status = TxnStatus::Idle;
    }

    fn on_error(&mut self) {
        *self.shared.stmt.lock() = WriteSet::default();
        if self.status == TxnStatus::InBlock {
            self.status = TxnStatus::Failed;
        } else if self.status == TxnStatus::Idle {
            self.shared.release_locks();
        }
    }

    /// Run one statement in the statement frame.
    async fn run(&mut self, work: Work) -> SqlResult<QueryOutput> {
        let is_end = matches!(
            &work,
            Work::Statement(s) if matches!(**s, Statement::Rollback { .. } | Statement::Commit { .. })
        );
        if self.status == TxnStatus::Failed && !is_end {
            return Err(SqlError::new(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        self.shared.new_statement();
        let result = match work {
            Work::Plan(plan) => self.execute_plan(*plan, false).await,
            Work::Optimized(plan) => self.execute_plan(*plan, true).await,
            Work::Direct(work) => self.execute_direct(*work).await,
            Work::Kept(work) => self.execute_kept(*work).await,
            Work::Statement(stmt) => self.dispatch(*stmt).await,
        };
        self.finish_statement(result).await
    }

    async fn finish_statement(&mut self, result: SqlResult<QueryOutput>) -> SqlResult<QueryOutput> {
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                self.on_error();
                return Err(e);
            }
        };
        let stmt = std::mem::take(&mut *self.shared.stmt.lock());
        let in_block = self.status != TxnStatus::Idle;
        let before = if in_block {
            Some(self.shared.txn.lock().clone())
        } else {
            None
        };
        let absorbed = self.shared.txn.lock().absorb(stmt);
        if let Err(e) = absorbed {
            self.on_error();
            return Err(from_datafusion(e));
        }
        if in_block {
            let checked = self.shared.txn.lock().check_keys(&self.db.shared.storage);
            if let Err(e) = checked {
                if let Some(b) = before {
                    *self.shared.txn.lock() = b;
                }
                self.on_error();
                return Err(e);
            }
        }
        if self.status == TxnStatus::Idle
            && let Err(e) = self.commit_txn().await
        {
            self.on_error();
            return Err(e);
        }
        Ok(out)
    }

    /// Commit the transaction's writes as one storage commit.
    async fn commit_txn(&mut self) -> SqlResult<()> {
        let writes = std::mem::take(&mut *self.shared.txn.lock());
        let result = if writes.is_empty() {
            Ok(())
        } else {
            let storage = self.db.shared.storage.clone();
            let ops = writes
                .into_ops(|t| {
                    storage
                        .table(t)
                        .filter(|d| !d.primary_key.is_empty())
                        .and_then(|d| d.schema.project(&d.primary_key).ok().map(Arc::new))
                })
                .map_err(from_datafusion)?;
            storage.commit(ops).await.map(|_| ()).map_err(from_storage)
        };
        self.shared.release_locks();
        result
    }

    async fn dispatch(&mut self, stmt: Statement) -> SqlResult<QueryOutput> {
        use QueryOutput::Command as C;
        match &stmt {
            Statement::StartTransaction { .. } => {
                if self.status != TxnStatus::Idle {
                    return Ok(C(CommandTag::new("BEGIN"))); // PostgreSQL warns and carries on
                }
                self.status = TxnStatus::InBlock;
                Ok(C(CommandTag::new("BEGIN")))
            }
            Statement::Commit { .. } => {
                let failed = self.status == TxnStatus::Failed;
                if failed {
                    self.rollback();
                    return Ok(C(CommandTag::new("ROLLBACK")));
                }
                self.status = TxnStatus::Idle;
                self.implicit = false;
                self.commit_txn().await?;
                Ok(C(CommandTag::new("COMMIT")))
            }
            Statement::Rollback {
                savepoint: Some(_), ..
            } => Err(SqlError::feature_not_supported(
                "savepoints are not supported",
            )),
            Statement::Rollback { .. } => {
                self.rollback();
                Ok(C(CommandTag::new("ROLLBACK")))
            }
            Statement::Set(set) => self.set(set).map(C),
            Statement::ShowVariable { variable } => self.show(&variable_name(variable)),
            Statement::CreateSchema {
                schema_name,
                if_not_exists,
                ..
            } => {
                let name = schema_name.to_string().trim_matches('"').to_string();
                let name = if schema_name.to_string().starts_with('"') {
                    name
                } else {
                    name.to_ascii_lowercase()
                };
                self.create_schema(&name, *if_not_exists).await.map(C)
            }
            Statement::CreateTable(ct) => self.create_table(ct).await.map(C),
            Statement::CreateView(cv) => self.create_view(cv).await.map(C),
            Statement::CreateSequence {
                name,
                if_not_exists,
                sequence_options,
                ..
            } => self
                .create_sequence(name, *if_not_exists, sequence_options)
                .await
                .map(C),
            Statement::CreateIndex(ci) => self.create_index(&ci.table_name, &ci.columns).map(C),
            Statement::Drop {
                object_type: ObjectType::Index,
                ..
            } => Ok(C(
                CommandTag::new("DROP INDEX").with_notice(crate::ddl::NO_INDEXES)
            )),
            Statement::Drop { .. } => self.drop_objects(&stmt).await.map(C),
            Statement::AlterTable(at) => self
                .alter_table(&at.name, at.if_exists, &at.operations)
                .await
                .map(C),
            Statement::Copy { .. } => self
                .copy_start(&stmt)
                .map(|c| QueryOutput::CopyIn(Box::new(c))),
            Statement::Truncate(t) => self.truncate(t).await,
            Statement::Discard { .. } => Ok(C(CommandTag::new("DISCARD ALL"))),
            Statement::Deallocate { .. } => Ok(C(CommandTag::new("DEALLOCATE"))),
            Statement::Comment { .. } => Ok(C(CommandTag::new("COMMENT"))),
            _ => {
                let plan = self.plan_statement(stmt).await?;
                self.execute_plan(plan, false).await
            }
        }
    }

    /// Run the subqueries given as lineage function arguments and put their
    /// values in their place (see [`crate::lineage::subquery`]).
    async fn lineage_subqueries(&self, stmt: &mut Statement) -> SqlResult<()> {
        let found = crate::lineage::subquery::find(stmt)?;
        if found.is_empty() {
            return Ok(());
        }
        let mut values = Vec::with_capacity(found.len());
        for arg in found {
            let query = Statement::Query(Box::new(arg.query));
            let plan = Box::pin(self.plan_statement(query)).await?;
            let batches = self
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(from_datafusion)?
                .collect()
                .await
                .map_err(from_datafusion)?;
            values.push((arg.function, first_column_texts(&batches)?));
        }
        crate::lineage::subquery::substitute(stmt, values)
    }

    async fn plan_statement(&self, mut stmt: Statement) -> SqlResult<LogicalPlan> {
        if matches!(stmt, Statement::Insert(_)) {
            let path = self.schema_path();
            crate::rewrite::insert_defaults(&mut stmt, &self.db.shared.storage, &path)?;
        }
        crate::lineage::calls::positional_args(&mut stmt)?;
        self.lineage_subqueries(&mut stmt).await?;
        let state = self.ctx.state();
        if let Some(named) = crate::output_names::pg_named(&mut stmt) {
            stmt = named;
        }
        // Boxed: a Statement is large, and this future nests in others.
        let labelled = crate::output_names::labelled(&mut stmt).map(Box::new);
        let typed =
            (!crate::typed_casts::cast_types(&mut stmt).is_empty()).then(|| Box::new(stmt.clone()));
        let planned =
            match Box::pin(state.statement_to_plan(DfStatement::Statement(Box::new(stmt)))).await {
                Err(e) if crate::output_names::is_duplicate_name_error(&e) => match labelled {
                    Some(stmt) => {
                        Box::pin(state.statement_to_plan(DfStatement::Statement(stmt))).await
                    }
                    None => Err(e),
                },
                planned => planned,
            };
        match (planned, typed) {
            (Err(e), Some(stmt)) if crate::typed_casts::is_duplicate_field_error(&e) => {
                Box::pin(plan_typed(&state, *stmt))
                    .await
                    // The statement's own error if the typed one fails too.
                    .ok_or_else(|| from_datafusion(e))
            }
            (planned, _) => planned.map_err(from_datafusion),
        }
    }

    /// Execute a planned query or DML statement; `optimized` says the
    /// logical optimizer has already run over `plan`.
    async fn execute_plan(&mut self, plan: LogicalPlan, optimized: bool) -> SqlResult<QueryOutput> {
        let dml = match &plan {
            LogicalPlan::Dml(d) => Some(match d.op {
                DfWriteOp::Insert(_) => "INSERT",
                DfWriteOp::Update => "UPDATE",
                DfWriteOp::Delete => "DELETE",
                _ => "MERGE",
            }),
            _ => None,
        };
        if let LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) = &plan {
            return Err(SqlError::feature_not_supported(format!(
                "statement not supported: {}",
                plan.display()
            )));
        }
        let target = match &plan {
            LogicalPlan::Dml(d) => Some((d.table_name.table().to_string(), d.target.schema())),
            _ => None,
        };
        let name_column =
            |e: DataFusionError| name_null_column(from_datafusion(e), target.as_ref());
        let tables = crate::parallelism::stored_tables(&plan);
        let rows = self
            .shared
            .snapshot_tables(&self.db.shared.storage, &tables)
            .map_err(from_storage)?;
        let planner = self
            .planning
            .take(&self.ctx, crate::parallelism::mode_for(rows));
        let state = &planner.state;
        let planned = async {
            let plan = if optimized {
                plan
            } else {
                state.optimize(&plan)?
            };
            let physical = state
                .query_planner()
                .create_physical_plan(&plan, state)
                .await?;
            Ok::<_, DataFusionError>((plan, physical))
        }
        .await;
        let task = Arc::clone(&planner.task);
        self.planning.give_back(planner);
        let (plan, physical) = planned.map_err(name_column)?;
        if let Some(tag) = dml {
            let batches = collect(physical, task).await.map_err(name_column)?;
            let rows = count_of(&batches);
            return Ok(QueryOutput::Command(CommandTag::with_rows(tag, rows)));
        }
        let schema: SchemaRef = crate::output_names::output_schema(&plan);
        let stream = execute_stream(physical, task).map_err(from_datafusion)?;
        Ok(QueryOutput::rows(schema, stream))
    }

    async fn truncate(
        &mut self,
        t: &datafusion::sql::sqlparser::ast::Truncate,
    ) -> SqlResult<QueryOutput> {
        for target in &t.table_names {
            let sql = format!("DELETE FROM {}", target.name);
            let plan = self.plan_statement(parse(&sql)?.remove(0)).await?;
            let df = self
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(from_datafusion)?;
            df.collect().await.map_err(from_datafusion)?;
        }
        Ok(QueryOutput::Command(CommandTag::new("TRUNCATE TABLE")))
    }

    fn set(&mut self, set: &Set) -> SqlResult<CommandTag> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_ascii_lowercase();
                let value = values.iter().map(expr_text).collect::<Vec<_>>().join(", ");
                self.set_variable(&name, &value)?;
            }
            Set::SetTimeZone { value, .. } => {
                self.vars.insert("timezone".into(), expr_text(value));
            }
            Set::SetNames { .. } | Set::SetNamesDefault {} | Set::SetTransaction { .. } => {}
            Set::MultipleAssignments { assignments } => {
                for a in assignments {
                    self.set_variable(&a.name.to_string(), &expr_text(&a.value))?;
                }
            }
            other => {
                return Err(SqlError::feature_not_supported(format!(
                    "{other} is not supported"
                )));
            }
        }
        Ok(CommandTag::new("SET"))
    }

    fn show(&self, name: &str) -> SqlResult<QueryOutput> {
        let (schema, names, values): (SchemaRef, Vec<String>, Vec<String>) = if name == "all" {
            let schema = Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("setting", DataType::Utf8, false),
            ]));
            (
                schema,
                self.vars.keys().cloned().collect(),
                self.vars.values().cloned().collect(),
            )
        } else {
            let value = self.variable(name).ok_or_else(|| {
                SqlError::new(
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            })?;
            (show_schema(name), vec![], vec![value])
        };
        let batch = if name == "all" {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(names)),
                    Arc::new(StringArray::from(values)),
                ],
            )
        } else {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(StringArray::from(values))],
            )
        }
        .map_err(|e| SqlError::internal(e.to_string()))?;
        let stream = RecordBatchStreamAdapter::new(
            Arc::clone(&schema),
            futures::stream::iter(vec![Ok(batch)]),
        );
        Ok(QueryOutput::Rows {
            schema,
            stream: Box::pin(stream),
        })
    }
}

/// Turn DataFusion's "Invalid batch column at 'i' has null" into
/// PostgreSQL's message naming the column.
fn name_null_column(e: SqlError, target: Option<&(String, SchemaRef)>) -> SqlError {
    let Some((table, schema)) = target else {
        return e;
    };
    if e.code != "23502" {
        return e;
    }
    let detail = e.detail.clone().unwrap_or_default();
    // Either "column at '1'" (an index) or "Column 'name'" (a name).
    let quoted = detail.split('\'').nth(1).unwrap_or_default();
    let column = match quoted.parse::<usize>() {
        Ok(i) => schema.fields().get(i).map(|f| f.name().clone()),
        Err(_) => schema
            .field_with_name(quoted)
            .ok()
            .map(|f| f.name().clone())
            .or_else(|| {
                // VALUES columns are named column1.. in the table's column order.
                let k = quoted.strip_prefix("column")?.parse::<usize>().ok()?;
                schema
                    .fields()
                    .get(k.checked_sub(1)?)
                    .map(|f| f.name().clone())
            }),
    };
    match column {
        Some(c) => SqlError::new(
            "23502",
            format!(
                "null value in column \"{c}\" of relation \"{table}\" violates not-null constraint"
            ),
        ),
        None => e,
    }
}

fn show_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
}

fn variable_name(parts: &[datafusion::sql::sqlparser::ast::Ident]) -> String {
    parts
        .iter()
        .map(|p| p.value.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
        .replace("time zone", "timezone")
}

/// The text of a SET value: identifiers and strings without quotes.
fn expr_text(e: &SqlExpr) -> String {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        SqlExpr::Identifier(i) => i.value.clone(),
        other => other.to_string().trim_matches('\'').to_string(),
    }
}

/// `stmt` planned with its casts inside calls spelled with their type
/// ([`crate::typed_casts`]); `None` if that changes nothing or fails.
async fn plan_typed(state: &SessionState, stmt: Statement) -> Option<LogicalPlan> {
    let stmt = crate::typed_casts::typed_in(state, &stmt).await?;
    state
        .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
        .await
        .ok()
}

/// `params` with each float bound to a parameter the plan uses as an
/// integer rounded as PostgreSQL assigns it (ties to even), so that every
/// way of binding (direct, kept, DataFusion's) casts a whole number.
fn round_integer_params(prepared: &Prepared, mut params: Vec<ScalarValue>) -> Vec<ScalarValue> {
    for (value, target) in params.iter_mut().zip(&prepared.integer_params) {
        if let Some(t) = target {
            let v = std::mem::replace(value, ScalarValue::Null);
            *value = crate::rounding_casts::rounded_for(v, t);
        }
    }
    params
}

fn parse_search_path(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty() && *s != "\"$user\"" && *s != "$user")
        .map(|s| {
            if s.starts_with('"') {
                s.trim_matches('"').to_string()
            } else {
                s.trim_matches('\'').to_ascii_lowercase()
            }
        })
        .collect()
}

fn count_of(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .map(|a| a.iter().flatten().sum::<u64>())
        })
        .sum()
}

/// Statements planned and executed by DataFusion.
fn is_datafusion_statement(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Explain { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
    )
}

/// The non-NULL values of the first column of `batches`, as text.
fn first_column_texts(batches: &[RecordBatch]) -> SqlResult<Vec<String>> {
    let mut texts = Vec::new();
    for b in batches {
        if b.num_columns() == 0 {
            continue;
        }
        let col = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8)
            .map_err(|e| SqlError::internal(e.to_string()))?;
        let col = datafusion::arrow::array::AsArray::as_string::<i32>(col.as_ref());
        texts.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(texts)
}

/// A start subquery's result as the value of its hidden parameter: the
/// array of its values, or the single value `lineage_path` takes.
fn start_param(function: &str, texts: Vec<String>) -> SqlResult<ScalarValue> {
    use crate::lineage::subquery::{StartValue, start_value};
    Ok(match start_value(function, texts)? {
        StartValue::One(one) => ScalarValue::Utf8(Some(one)),
        StartValue::Many(all) => {
            let values: Vec<ScalarValue> = all
                .into_iter()
                .map(|t| ScalarValue::Utf8(Some(t)))
                .collect();
            ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Utf8))
        }
    })
}

/// Parse a query string into statements (PostgreSQL dialect, with the
/// rewrites client tools need, and MonetDB's `SET SCHEMA x`).
pub fn parse(sql: &str) -> SqlResult<Vec<Statement>> {
    // Building the parser tokenizes its table of rewrites: about a tenth of
    // the time of a statement planned from text, so it is built once.
    static PARSER: LazyLock<PostgresCompatibilityParser> =
        LazyLock::new(PostgresCompatibilityParser::new);
    let sql = rewrite_set_schema(sql);
    let parser = &*PARSER;
    match parser.parse(&sql) {
        Ok(s) => Ok(s),
        Err(e) => match crate::rewrite::create_sequence_in_order(&sql) {
            Some(fixed) => parser
                .parse(&fixed)
                .map_err(|_| SqlError::syntax(e.to_string())),
            None => Err(SqlError::syntax(e.to_string())),
        },
    }
}

/// MonetDB's `SET SCHEMA x` (typed by DLProv users) → `SET search_path TO x`.
fn rewrite_set_schema(sql: &str) -> String {
    let trimmed = sql.trim_start();
    let lower = trimmed.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("set schema")
        && (rest.starts_with(char::is_whitespace) && !sql.contains(';')
            || sql.trim_end().ends_with(';') && sql.matches(';').count() == 1)
    {
        {
            let value = trimmed["set schema".len()..]
                .trim()
                .trim_end_matches(';')
                .trim();
            return format!("SET search_path TO {value}");
        }
    }
    sql.to_string()
}

impl Session {
    fn copy_start(&self, stmt: &Statement) -> SqlResult<CopyIn> {
        crate::copy_stmt::start(self, stmt)
    }
}
