//! Physical plans kept by prepared statements.
//!
//! A prepared query keeps its optimised logical plan ([`crate::prepared`]),
//! but DataFusion's physical planner and physical optimizer still ran at
//! every execution: about 60 µs of server CPU for `SELECT 1`, and most of
//! the server's time on a point question about one model. A query planned
//! in one partition (it reads few rows, [`crate::parallelism`]) therefore
//! keeps its physical plan too, made so that it can run again on newer
//! data:
//!
//! - each table scan is a [`DeferredScan`]: a leaf with the table's
//!   columns and, for the planner's choices, the statistics the table had
//!   when the plan was made (marked inexact, so no answer is folded from
//!   them). The scan the table provider builds — the statement's snapshot,
//!   a key lookup, pruning, a lineage walk — is built again at every
//!   execution, before the first batch is asked for ([`prime`]);
//! - each `$n` outside a scan reads the execution's value from a slot
//!   ([`ParamUdf`]); a scan's filters get the values written in when the
//!   scan is built;
//! - between executions the plan is reset (`reset_plan_states`): joins drop
//!   their build side and their run-time filter, scalar subqueries their
//!   results, deferred scans the run-time filters pushed into them. Then
//!   the optimizer's post-optimisation filter pushdown runs again over the
//!   reset plan ([`rewire_dynamic_filters`]): each hash join makes a fresh
//!   filter and the deferred scans of its probe side take it, so one run's
//!   epochs are found in a million-row table as the general plan finds them.
//!   Top-k and aggregate run-time filters, which cannot be renewed that
//!   way, are not made for kept plans, and a plan in which any run-time
//!   filter survives the reset is not kept. Renewing costs about a tenth of
//!   a millisecond, more than the filter saves on small tables: only
//!   statements over many rows get these filters
//!   ([`crate::planning_state::Mode::KeptFiltered`]), and only when one of
//!   their hash joins is not keyed;
//! - a hash join whose probe-side key is a column of a deferred scan hands
//!   its build side's keys to that scan, which gathers its rows only when
//!   first polled ([`crate::key_join`]), so a join of one model's row with
//!   a fifty-thousand-row table reads one row of it.
//!
//! The first two executions of a statement are planned the general way (a
//! statement run once pays nothing for this; the first, which warms caches,
//! is not timed, the second is what the kept plan is judged against; a
//! first run of DLProv's Q1 took 19 ms, the next ones 3). A statement over
//! [`crate::parallelism::SERIAL_ROWS`] rows or more, which the general way
//! plans in parallel, is planned the general way [`TRIALS`] times before
//! its kept plan (in one partition) is tried, and given up if slower.
//! Planned the general way too: an execution while an earlier one of the
//! same statement is still streaming (a suspended portal), plans made
//! before a `SET` changed the session's configuration, and statements that
//! cannot be kept: DML, EXPLAIN, recursive queries, `VALUES` lists, scans
//! of sources that are not table providers, a `$n` of unknown type, or a
//! plan whose first planning failed.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    ColumnStatistics, Result, ScalarValue, Statistics, internal_err, plan_err,
};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::expr::{Placeholder, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableProviderFilterPushDown, TableScan, TableType, Volatility,
};
use datafusion::physical_expr::{DynamicFilterTracking, EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, reset_plan_states};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::metrics::Count;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, execute_stream,
};
use futures::{StreamExt, TryStreamExt};
use parking_lot::{Mutex, RwLock};
use provdb_storage::TableId;

use crate::key_join::{self, KeyFilter, KeySlot};
use crate::live_source::{BatchFilter, filter_stream};
use crate::planning_state::Mode;
use crate::prepared::{KeptPlan, bind_expr, map_placeholders, param_index};
use crate::scan_casts::ScanCast;
use crate::table::{ProvTable, ScanPlan};

/// The physical plan a prepared query keeps, from its second execution on.
pub(crate) struct KeptPhysical {
    /// The stored tables the plan reads, snapshotted before each run.
    tables: Vec<TableId>,
    /// The result columns (the kept logical plan's).
    schema: SchemaRef,
    slot: Mutex<Slot>,
    /// How fast executions ran each way, to give up a kept plan that is
    /// slower than planning afresh.
    timings: Mutex<Timings>,
}

/// Kept plans are made without dynamic filters; where those filters save
/// more than planning costs (a join whose run-time filter lets the probe
/// side skip most of its batches), the kept plan is slower. After
/// [`TRIALS`] kept executions, the plan is given up if the fastest of them
/// took longer than the fastest general one (from Execute to the last
/// batch) by more than a tenth and more than [`MARGIN`]; judged at every
/// run from then on, so a general time recorded late still counts.
#[derive(Debug, Default)]
struct Timings {
    general: Option<Duration>,
    general_runs: u32,
    kept: Option<Duration>,
    kept_runs: u32,
    /// Tests of what a kept plan does, not of how fast: never give it up
    /// (debug builds time differently).
    #[cfg(test)]
    never_refuse: bool,
}

/// Kept executions timed before a kept plan is judged.
const TRIALS: u32 = 3;

/// A kept plan is given up only when slower by more than this too (noise).
const MARGIN: Duration = Duration::from_micros(200);

/// Which way an execution ran.
#[derive(Debug, Clone, Copy)]
enum Way {
    General,
    Kept,
}

enum Slot {
    /// Never executed.
    Empty,
    /// Executed once, the general way: a statement run once (an unnamed
    /// statement, a one-shot query) never pays for keeping a plan.
    Seen,
    /// Cannot be kept: every execution is planned.
    Refused,
    Ready(Ready),
}

struct Ready {
    /// The plan, reset and with no scan built.
    plan: Arc<dyn ExecutionPlan>,
    params: Arc<ParamSlot>,
    /// [`crate::planning_state::PlanningStates::epoch`] it was planned at.
    epoch: u64,
    /// The mode it was planned in.
    mode: Mode,
    /// Whether its hash joins' run-time filters are renewed at each run:
    /// in [`Mode::KeptFiltered`], unless every hash join hands its keys to
    /// its probe scan instead ([`crate::key_join`]).
    rewire: bool,
    /// One clone per execution still streaming.
    running: Arc<()>,
    /// The key slots of the hash joins whose probe scans are keyed.
    #[cfg(test)]
    keyed: Vec<Arc<KeySlot>>,
}

impl fmt::Debug for KeptPhysical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.slot.lock() {
            Slot::Empty => "empty",
            Slot::Seen => "seen",
            Slot::Refused => "refused",
            Slot::Ready(_) => "ready",
        };
        f.debug_struct("KeptPhysical")
            .field("tables", &self.tables)
            .field("state", &state)
            .finish()
    }
}

/// A plan to run and the token its stream holds.
type Planned = (Arc<dyn ExecutionPlan>, Arc<()>);

/// What one execution of a kept plan needs from the session.
pub(crate) struct Run<'a> {
    /// The state of the mode [`KeptPhysical::mode`] chose.
    pub state: &'a SessionState,
    pub mode: Mode,
    pub task: &'a Arc<TaskContext>,
    pub epoch: u64,
    /// When the execution began.
    pub start: Instant,
}

impl KeptPhysical {
    /// A keeper for `kept`'s physical plan, or `None` for statements that
    /// are not queries (what else is never kept, [`defer`] finds out at
    /// the second execution).
    pub(crate) fn for_plan(kept: &KeptPlan, tables: Vec<TableId>) -> Option<Self> {
        let query = !matches!(
            kept.plan(),
            LogicalPlan::Dml(_)
                | LogicalPlan::Ddl(_)
                | LogicalPlan::Statement(_)
                | LogicalPlan::Explain(_)
                | LogicalPlan::Analyze(_)
                | LogicalPlan::Copy(_)
                | LogicalPlan::DescribeTable(_)
        );
        query.then(|| KeptPhysical {
            tables,
            schema: crate::output_names::output_schema(kept.plan()),
            slot: Mutex::new(Slot::Empty),
            timings: Mutex::new(Timings::default()),
        })
    }

    /// The mode an execution reading `rows` stored rows runs a kept plan
    /// in, or `None` when it is to be planned the general way. The first
    /// execution, which warms caches, is planned the general way and not
    /// timed; then a statement over few rows runs a kept plan once the
    /// general way has been timed once, and one over many (which the
    /// general way plans in parallel) once it has been timed [`TRIALS`]
    /// times, so that the kept plan, in one partition, is judged against a
    /// fair time. Only the latter has hash-join filters renewed at each run.
    /// A plan kept in the other mode (the tables grew or shrank past
    /// [`crate::parallelism::SERIAL_ROWS`]) is planned again.
    pub(crate) fn mode(&self, rows: u64) -> Option<Mode> {
        let timed = self.timings.lock().general_runs;
        if crate::parallelism::is_small(rows) {
            (timed >= 1).then_some(Mode::Kept)
        } else {
            (timed >= TRIALS).then_some(Mode::KeptFiltered)
        }
    }

    /// For each hash join of the kept plan whose probe scan is keyed by
    /// its build side's keys ([`crate::key_join`]), how many executions'
    /// scans got keys; empty when no plan is kept.
    #[cfg(test)]
    pub(crate) fn keyed_joins(&self) -> Vec<u64> {
        match &*self.slot.lock() {
            Slot::Ready(r) => r.keyed.iter().map(|k| k.narrowed()).collect(),
            _ => Vec::new(),
        }
    }

    /// Keep the plan however slow its executions (see [`Timings`]).
    #[cfg(test)]
    pub(crate) fn keep_even_if_slower(&self) {
        self.timings.lock().never_refuse = true;
    }

    /// The kept plan, displayed; `None` when none is kept.
    #[cfg(test)]
    pub(crate) fn kept_plan(&self) -> Option<String> {
        match &*self.slot.lock() {
            Slot::Ready(r) => Some(
                datafusion::physical_plan::displayable(r.plan.as_ref())
                    .indent(false)
                    .to_string(),
            ),
            _ => None,
        }
    }

    /// The stored tables the plan reads.
    pub(crate) fn tables(&self) -> &[TableId] {
        &self.tables
    }

    /// The result columns.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Run the kept plan with `values` bound (already of the plan's
    /// types), planning and keeping it first at the second execution.
    /// `Ok(None)`: this execution must be planned the general way.
    pub(crate) async fn run(
        self: &Arc<Self>,
        kept: &KeptPlan,
        values: &[ScalarValue],
        run: Run<'_>,
    ) -> Result<Option<SendableRecordBatchStream>> {
        let reuse = self.take_ready(values, run.epoch, run.mode);
        let (plan, running) = match reuse {
            Some(((plan, running), rewire)) => {
                let mut plan = reset_plan_states(plan)?;
                if rewire {
                    plan = rewire_dynamic_filters(plan, run.state)?;
                }
                prime(&plan, run.state).await?;
                (plan, running)
            }
            None => match self.plan(kept, values, &run).await? {
                Some(planned) => planned,
                None => return Ok(None),
            },
        };
        let stream = execute_stream(plan, Arc::clone(run.task))?;
        Ok(Some(self.timed(
            stream,
            run.start,
            Way::Kept,
            Some(running),
        )))
    }

    /// `stream` of an execution planned the general way, timed to judge
    /// the kept plan against.
    pub(crate) fn time_general(
        self: &Arc<Self>,
        stream: SendableRecordBatchStream,
        start: Instant,
    ) -> SendableRecordBatchStream {
        self.timed(stream, start, Way::General, None)
    }

    /// `stream`, recording its time from `start` to its end as `way`, and
    /// holding a kept plan's `running` token until it ends or is dropped.
    fn timed(
        self: &Arc<Self>,
        stream: SendableRecordBatchStream,
        start: Instant,
        way: Way,
        running: Option<Arc<()>>,
    ) -> SendableRecordBatchStream {
        let schema = stream.schema();
        let me = Arc::clone(self);
        let end = futures::stream::once(async move {
            me.record(way, start.elapsed());
            drop(running);
            None
        })
        .filter_map(|batch: Option<Result<RecordBatch>>| async move { batch });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream.chain(end)))
    }

    fn record(&self, way: Way, took: Duration) {
        let mut t = self.timings.lock();
        let faster = |best: Option<Duration>| Some(best.map_or(took, |b| b.min(took)));
        match way {
            Way::General => {
                // The statement's first execution warms caches (zone maps,
                // kept casts, segments) and is not a fair time to judge by.
                let mut slot = self.slot.lock();
                if matches!(*slot, Slot::Empty) {
                    *slot = Slot::Seen;
                    return;
                }
                drop(slot);
                t.general = faster(t.general);
                t.general_runs += 1;
            }
            Way::Kept => {
                t.kept = faster(t.kept);
                t.kept_runs += 1;
            }
        }
        #[cfg(test)]
        let judged = !t.never_refuse;
        #[cfg(not(test))]
        let judged = true;
        if let (Some(general), Some(kept)) = (t.general, t.kept)
            && judged
            && t.kept_runs >= TRIALS
            && kept > general + (general / 10).max(MARGIN)
        {
            let mut slot = self.slot.lock();
            if !matches!(*slot, Slot::Refused) {
                tracing::debug!(
                    ?general,
                    ?kept,
                    "kept physical plan slower; planning afresh"
                );
                *slot = Slot::Refused;
            }
        }
    }

    /// The kept plan and its running token, with `values` in its slot,
    /// when it is ready for `epoch` and no other execution streams from it,
    /// and whether its hash joins' run-time filters are to be renewed.
    fn take_ready(
        &self,
        values: &[ScalarValue],
        epoch: u64,
        mode: Mode,
    ) -> Option<(Planned, bool)> {
        match &*self.slot.lock() {
            Slot::Ready(r)
                if r.epoch == epoch && r.mode == mode && Arc::strong_count(&r.running) == 1 =>
            {
                *r.params.0.write() = values.to_vec();
                let planned = (Arc::clone(&r.plan), Arc::clone(&r.running));
                Some((planned, r.rewire))
            }
            _ => None,
        }
    }

    /// Plan the statement for keeping and keep it. `None` at the first
    /// execution, when it cannot be kept, or when another execution
    /// streams from the kept plan now.
    async fn plan(
        &self,
        kept: &KeptPlan,
        values: &[ScalarValue],
        run: &Run<'_>,
    ) -> Result<Option<Planned>> {
        {
            let slot = self.slot.lock();
            match &*slot {
                Slot::Refused => return Ok(None),
                // In use by another execution.
                Slot::Ready(r) if r.epoch == run.epoch && r.mode == run.mode => return Ok(None),
                // (Empty is not met here: `mode` lets no execution run a
                // kept plan before a general one has been timed.)
                Slot::Empty | Slot::Seen | Slot::Ready(_) => {}
            }
        }
        let params = Arc::new(ParamSlot(RwLock::new(values.to_vec())));
        let planned = match defer(kept.plan(), &params) {
            Some(logical) => run
                .state
                .query_planner()
                .create_physical_plan(&logical, run.state)
                .await
                .and_then(|physical| {
                    let mut kept = key_join::key_joins(reset_plan_states(Arc::clone(&physical))?)?;
                    kept.plan = crate::scan_casts::into_keyed_scans(kept.plan)?;
                    Ok((kept, physical))
                }),
            None => plan_err!("not kept"),
        };
        let planned = planned.and_then(|(kept_plan, physical)| {
            if outlived_reset(&physical, &kept_plan.plan)? {
                return plan_err!("a run-time filter outlived the plan's reset");
            }
            Ok((kept_plan, physical))
        });
        let (
            key_join::KeyedPlan {
                plan: kept_plan,
                slots: keyed,
            },
            physical,
        ) = match planned {
            Ok(p) => p,
            Err(e) => {
                // Planned the general way from now on; that path reports
                // the error if it is one the statement has.
                tracing::debug!(error = %e, "physical plan not kept");
                *self.slot.lock() = Slot::Refused;
                return Ok(None);
            }
        };
        let joins = hash_joins(&kept_plan)?;
        let rewire = run.mode == Mode::KeptFiltered && keyed.len() < joins;
        tracing::debug!(
            joins,
            keyed_joins = keyed.len(),
            rewire,
            "physical plan kept"
        );
        tracing::trace!(
            plan = %datafusion::physical_plan::displayable(kept_plan.as_ref()).indent(true),
            "kept physical plan"
        );
        let running = Arc::new(());
        *self.slot.lock() = Slot::Ready(Ready {
            plan: kept_plan,
            params,
            epoch: run.epoch,
            mode: run.mode,
            rewire,
            running: Arc::clone(&running),
            #[cfg(test)]
            keyed,
        });
        Ok(Some((physical, running)))
    }
}

/// Give a plan reset for a new execution fresh run-time filters: each hash
/// join makes a new one (its old one went with the reset, and with the
/// deferred scans' copies of it) and pushes it to the scans of its probe
/// side, as when the plan was first optimised.
fn rewire_dynamic_filters(
    plan: Arc<dyn ExecutionPlan>,
    state: &SessionState,
) -> Result<Arc<dyn ExecutionPlan>> {
    FilterPushdown::new_post_optimization().optimize(plan, state.config_options())
}

/// How many hash joins `plan` has.
fn hash_joins(plan: &Arc<dyn ExecutionPlan>) -> Result<usize> {
    let mut n = 0;
    plan.apply(|node| {
        n += usize::from(node.downcast_ref::<HashJoinExec>().is_some());
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(n)
}

/// The identities of the run-time filters `plan`'s nodes hold.
fn dynamic_filter_ids(plan: &Arc<dyn ExecutionPlan>) -> Result<HashSet<u64>> {
    let mut ids = HashSet::new();
    plan.apply(|node| {
        node.apply_expressions(&mut |e| {
            e.apply(|sub| {
                ids.extend(sub.expression_id());
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(ids)
}

/// Whether `reset` (`planned` after `reset_plan_states`) still holds a
/// run-time filter of `planned`: that filter would carry one execution's
/// state into the next, so such a plan is not kept. (Filters the reset made
/// afresh, like a sort's, are no harm.)
fn outlived_reset(
    planned: &Arc<dyn ExecutionPlan>,
    reset: &Arc<dyn ExecutionPlan>,
) -> Result<bool> {
    let before = dynamic_filter_ids(planned)?;
    Ok(dynamic_filter_ids(reset)?
        .iter()
        .any(|id| before.contains(id)))
}

/// Build the scans of a plan reset for a new execution.
async fn prime(plan: &Arc<dyn ExecutionPlan>, state: &SessionState) -> Result<()> {
    let mut stack = vec![Arc::clone(plan)];
    while let Some(node) = stack.pop() {
        if let Some(scan) = node.downcast_ref::<DeferredScan>() {
            scan.build(state).await?;
        }
        stack.extend(node.children().into_iter().cloned());
    }
    Ok(())
}

/// `plan` with deferred scans and parameter slots, or `None` when it holds
/// something a kept plan cannot (see the module doc).
fn defer(plan: &LogicalPlan, params: &Arc<ParamSlot>) -> Option<LogicalPlan> {
    let param = |p: &Placeholder| param_call(p, params);
    plan.clone()
        .transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(scan) => defer_scan(scan, params),
            LogicalPlan::RecursiveQuery(_)
            | LogicalPlan::Extension(_)
            | LogicalPlan::Values(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_) => plan_err!("not kept"),
            other => map_placeholders(other, &param),
        })
        .ok()
        .map(|t| t.data)
}

fn defer_scan(scan: TableScan, params: &Arc<ParamSlot>) -> Result<Transformed<LogicalPlan>> {
    let provider = source_as_provider(&scan.source)?;
    let deferred = DeferredTable {
        inner: provider,
        params: Arc::clone(params),
    };
    Ok(Transformed::yes(LogicalPlan::TableScan(TableScan {
        source: provider_as_source(Arc::new(deferred)),
        ..scan
    })))
}

/// The call reading `$n` from the execution's slot.
fn param_call(p: &Placeholder, params: &Arc<ParamSlot>) -> Result<Expr> {
    let (Some(index), Some(field)) = (param_index(&p.id), &p.field) else {
        return plan_err!("parameter {} has no known type", p.id);
    };
    let udf = ParamUdf {
        name: p.id.clone(),
        index,
        data_type: field.data_type().clone(),
        params: Arc::clone(params),
        signature: Signature::nullary(Volatility::Volatile),
    };
    Ok(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(udf)),
        vec![],
    )))
}

/// The values bound to the execution of a kept plan.
#[derive(Debug, Default)]
struct ParamSlot(RwLock<Vec<ScalarValue>>);

/// `$n` in a kept plan: the value bound to the running execution.
#[derive(Debug)]
struct ParamUdf {
    name: String,
    index: usize,
    data_type: DataType,
    params: Arc<ParamSlot>,
    signature: Signature,
}

impl PartialEq for ParamUdf {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
            && self.data_type == other.data_type
            && Arc::ptr_eq(&self.params, &other.params)
    }
}
impl Eq for ParamUdf {}
impl std::hash::Hash for ParamUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state);
    }
}

impl ScalarUDFImpl for ParamUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(value) = self.params.0.read().get(self.index).cloned() else {
            return plan_err!("no value bound for parameter {}", self.name);
        };
        if value.data_type() == self.data_type {
            Ok(ColumnarValue::Scalar(value))
        } else {
            Ok(ColumnarValue::Scalar(value.cast_to(&self.data_type)?))
        }
    }
}

/// A table as the kept plan sees it: planning it gives a [`DeferredScan`].
#[derive(Debug)]
struct DeferredTable {
    inner: Arc<dyn TableProvider>,
    params: Arc<ParamSlot>,
}

#[async_trait]
impl TableProvider for DeferredTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.inner.schema().project(p)?),
            None => self.inner.schema(),
        };
        let mut scan = DeferredScan {
            provider: Arc::clone(&self.inner),
            projection: projection.cloned(),
            filters: filters.to_vec(),
            limit,
            params: Arc::clone(&self.params),
            stats: Arc::new(Statistics::new_unknown(&schema)),
            dynamic: Vec::new(),
            keyed: None,
            casts: Arc::from([]),
            planned: OnceLock::new(),
            props: scan_properties(schema),
            built: OnceLock::new(),
        };
        // Built now for the execution being planned; its statistics guide
        // the planner for every later one.
        let built = scan.build_plan(state).await?;
        let stats = StatisticsContext::new().compute(built.as_ref(), &StatisticsArgs::new())?;
        scan.stats = Arc::new(stats.as_ref().clone().to_inexact());
        scan.built = OnceLock::from(built);
        Ok(Arc::new(scan))
    }
}

/// The properties of a deferred scan outputting `schema`: one partition,
/// bounded, batches as they come.
fn scan_properties(schema: SchemaRef) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(1),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// A table scan of a kept plan, built again at each execution.
pub(crate) struct DeferredScan {
    provider: Arc<dyn TableProvider>,
    projection: Option<Vec<usize>>,
    /// Filters as planned, `$n` still in them.
    filters: Vec<Expr>,
    limit: Option<usize>,
    params: Arc<ParamSlot>,
    props: Arc<PlanProperties>,
    stats: Arc<Statistics>,
    /// Run-time filters of this execution (a hash join's, pushed down by
    /// [`rewire_dynamic_filters`]), applied to the batches the scan yields.
    dynamic: Vec<Arc<dyn PhysicalExpr>>,
    /// The scan for the current execution.
    built: OnceLock<Arc<dyn ExecutionPlan>>,
    /// The probe side of a hash join whose build-side keys narrow this
    /// scan ([`crate::key_join`]): gathered when first polled.
    keyed: Option<Keyed>,
    /// Casts a keyed scan adds as columns ([`crate::scan_casts`]).
    casts: Arc<[ScanCast]>,
    /// A keyed scan's snapshot and filters for the current execution.
    planned: OnceLock<Arc<ScanPlan>>,
}

/// Where a keyed scan's keys come from and which column they are of.
#[derive(Clone)]
struct Keyed {
    /// Column index in the table's schema.
    column: usize,
    slot: Arc<KeySlot>,
}

impl DeferredScan {
    /// This scan, not built, with `dynamic` as its run-time filters.
    fn unbuilt(&self, dynamic: Vec<Arc<dyn PhysicalExpr>>) -> DeferredScan {
        DeferredScan {
            provider: Arc::clone(&self.provider),
            projection: self.projection.clone(),
            filters: self.filters.clone(),
            limit: self.limit,
            params: Arc::clone(&self.params),
            props: Arc::clone(&self.props),
            stats: Arc::clone(&self.stats),
            dynamic,
            built: OnceLock::new(),
            keyed: self.keyed.clone(),
            casts: Arc::clone(&self.casts),
            planned: OnceLock::new(),
        }
    }

    /// Whether build-side keys narrow this scan.
    pub(crate) fn is_keyed(&self) -> bool {
        self.keyed.is_some()
    }

    /// Whether this scan adds cast columns.
    pub(crate) fn has_casts(&self) -> bool {
        !self.casts.is_empty()
    }

    /// This keyed scan with `casts` of its columns added after them.
    pub(crate) fn with_casts(&self, casts: Vec<ScanCast>) -> DeferredScan {
        let schema = crate::scan_casts::with_cast_fields(&self.schema(), &casts);
        let mut stats = self.stats.as_ref().clone();
        stats
            .column_statistics
            .extend(casts.iter().map(|_| ColumnStatistics::new_unknown()));
        DeferredScan {
            props: scan_properties(schema),
            stats: Arc::new(stats),
            casts: Arc::from(casts),
            ..self.unbuilt(self.dynamic.clone())
        }
    }

    /// This scan keyed by the build-side keys `slot` receives for its
    /// output `column`, when it reads a stored table (not a view or a
    /// function) without a limit and that column's type can be keyed.
    pub(crate) fn keyed(&self, column: usize, slot: &Arc<KeySlot>) -> Option<DeferredScan> {
        let table = self.provider.downcast_ref::<ProvTable>()?;
        let column = match &self.projection {
            Some(p) => *p.get(column)?,
            None => column,
        };
        let field = table.schema().fields().get(column).cloned()?;
        // A limited scan would take other rows than the ones it keeps.
        if !key_join::keyable(field.data_type()) || self.keyed.is_some() || self.limit.is_some() {
            return None;
        }
        Some(DeferredScan {
            keyed: Some(Keyed {
                column,
                slot: Arc::clone(slot),
            }),
            ..self.unbuilt(self.dynamic.clone())
        })
    }

    /// Build this execution's scan, unless built already (a keyed scan:
    /// take its snapshot and filters, to gather it when first polled).
    async fn build(&self, state: &SessionState) -> Result<()> {
        if let (Some(table), None) = (self.keyed_table(), self.built.get()) {
            if self.planned.get().is_none() {
                let values = self.params.0.read().clone();
                let filters = self.bound_filters(&values)?;
                let plan =
                    table.plan_scan(state, self.projection.as_ref(), &filters, self.limit)?;
                let _ = self.planned.set(Arc::new(plan));
            }
        } else if self.built.get().is_none() {
            let plan = self.build_plan(state).await?;
            // Executions are primed one node at a time: nothing else sets it.
            let _ = self.built.set(plan);
        }
        Ok(())
    }

    fn keyed_table(&self) -> Option<&ProvTable> {
        self.keyed.as_ref()?;
        self.provider.downcast_ref::<ProvTable>()
    }

    /// The filters with the execution's `$n` values written in.
    fn bound_filters(&self, values: &[ScalarValue]) -> Result<Vec<Expr>> {
        self.filters
            .iter()
            .map(|f| bind_expr(f.clone(), values))
            .collect()
    }

    async fn build_plan(&self, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        let values = self.params.0.read().clone();
        let filters = self.bound_filters(&values)?;
        let plan = self
            .provider
            .scan(state, self.projection.as_ref(), &filters, self.limit)
            .await?;
        if plan.output_partitioning().partition_count() == 1 {
            Ok(plan)
        } else {
            Ok(Arc::new(CoalescePartitionsExec::new(plan)))
        }
    }
}

impl DeferredScan {
    /// The keyed scan's stream: gathered, with the build side's keys, when
    /// first polled (the join polls its probe side after its build side).
    fn gather_keyed(
        &self,
        planned: Arc<ScanPlan>,
        ctx: Arc<TaskContext>,
    ) -> SendableRecordBatchStream {
        let provider = Arc::clone(&self.provider);
        let keyed = self.keyed.clone();
        let casts = Arc::clone(&self.casts);
        let gathered = async move {
            let (Some(table), Some(keyed)) = (provider.downcast_ref::<ProvTable>(), keyed) else {
                return internal_err!("a keyed scan over something else than a table");
            };
            let keys = match keyed.slot.keys()? {
                Some(values) => KeyFilter::new(table.schema(), keyed.column, values)?,
                None => None,
            };
            let mut plan = table.gather(&planned, keys.as_ref(), &casts).await?;
            if plan.output_partitioning().partition_count() != 1 {
                plan = Arc::new(CoalescePartitionsExec::new(plan));
            }
            plan.execute(0, ctx)
        };
        let stream = futures::stream::once(gathered).try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.schema(), stream))
    }
}

impl fmt::Debug for DeferredScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredScan")
            .field("projection", &self.projection)
            .field("filters", &self.filters)
            .field("limit", &self.limit)
            .field("keyed", &self.keyed.as_ref().map(|k| k.column))
            .finish_non_exhaustive()
    }
}

impl DisplayAs for DeferredScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DeferredScan: built={}", self.built.get().is_some())?;
        if let Some(k) = &self.keyed {
            write!(f, ", keyed_by_column={}", k.column)?;
        }
        for c in self.casts.iter() {
            write!(f, ", adds={}", c.expr)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DeferredScan {
    fn name(&self) -> &str {
        "DeferredScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        // A hash join makes its filter only when a node below it shows it.
        for e in &self.dynamic {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(self.unbuilt(Vec::new())))
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        // Run-time filters are taken (and applied to every batch); the
        // statement's own predicates stay with the FilterExec above, and
        // reach the scan as its filters.
        let offered: Vec<Arc<dyn PhysicalExpr>> = child_pushdown_result
            .parent_filters
            .into_iter()
            .map(|f| f.filter)
            .collect();
        let taken: Vec<bool> = offered
            .iter()
            .map(|f| DynamicFilterTracking::classify(f).contains_dynamic_filter())
            .collect();
        let verdicts = taken
            .iter()
            .map(|t| if *t { PushedDown::Yes } else { PushedDown::No })
            .collect();
        let result = FilterPushdownPropagation::with_parent_pushdown_result(verdicts);
        if !taken.contains(&true) {
            return Ok(result);
        }
        let mut dynamic = self.dynamic.clone();
        dynamic.extend(
            offered
                .into_iter()
                .zip(taken)
                .filter_map(|(f, t)| t.then_some(f)),
        );
        let built = self.built.get().cloned();
        let planned = self.planned.get().cloned();
        let node = DeferredScan {
            built: built.map(OnceLock::from).unwrap_or_default(),
            planned: planned.map(OnceLock::from).unwrap_or_default(),
            ..self.unbuilt(dynamic)
        };
        Ok(result.with_updated_node(Arc::new(node)))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::clone(&self.stats))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = match (self.built.get(), self.planned.get()) {
            (Some(plan), _) => plan.execute(partition, ctx)?,
            (None, Some(planned)) => self.gather_keyed(Arc::clone(planned), ctx),
            (None, None) => return internal_err!("a kept plan's scan ran before it was built"),
        };
        if self.dynamic.is_empty() {
            return Ok(stream);
        }
        let filters = self
            .dynamic
            .iter()
            .map(|f| BatchFilter::new(Arc::clone(f), Count::new()))
            .collect();
        Ok(filter_stream(stream, filters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeper() -> KeptPhysical {
        KeptPhysical {
            tables: vec![],
            schema: Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            slot: Mutex::new(Slot::Seen),
            timings: Mutex::new(Timings::default()),
        }
    }

    fn refused(k: &KeptPhysical) -> bool {
        matches!(*k.slot.lock(), Slot::Refused)
    }

    #[test]
    fn the_first_execution_is_not_timed() {
        let k = KeptPhysical {
            slot: Mutex::new(Slot::Empty),
            ..keeper()
        };
        let small = crate::parallelism::SERIAL_ROWS - 1;
        assert!(k.mode(small).is_none());
        k.record(Way::General, Duration::from_millis(19));
        assert!(matches!(*k.slot.lock(), Slot::Seen));
        assert!(
            k.timings.lock().general.is_none(),
            "the warm-up is not a time"
        );
        assert!(k.mode(small).is_none(), "one timed general run first");
        k.record(Way::General, Duration::from_millis(3));
        assert_eq!(k.mode(small), Some(Mode::Kept));
        let large = crate::parallelism::SERIAL_ROWS;
        assert!(
            k.mode(large).is_none(),
            "{TRIALS} timed runs for a large one"
        );
        for _ in 1..TRIALS {
            k.record(Way::General, Duration::from_millis(3));
        }
        assert_eq!(k.mode(large), Some(Mode::KeptFiltered));
        assert_eq!(k.timings.lock().general, Some(Duration::from_millis(3)));
    }

    #[test]
    fn a_kept_plan_slower_than_planning_afresh_is_given_up() {
        let ms = |n: u64| Duration::from_micros(n * 100);
        let slow = keeper();
        slow.record(Way::General, ms(50));
        slow.record(Way::Kept, ms(70));
        slow.record(Way::Kept, ms(60));
        assert!(!refused(&slow), "judged after {TRIALS} kept runs only");
        slow.record(Way::Kept, ms(65));
        assert!(refused(&slow));

        let fast = keeper();
        fast.record(Way::General, ms(50));
        for _ in 0..TRIALS {
            fast.record(Way::Kept, ms(30));
        }
        assert!(!refused(&fast));

        // Slower by a tenth but by less than the margin: noise, kept.
        let close = keeper();
        close.record(Way::General, ms(10));
        for _ in 0..TRIALS {
            close.record(Way::Kept, ms(11) + ms(1) / 2);
        }
        assert!(!refused(&close));
    }
}
