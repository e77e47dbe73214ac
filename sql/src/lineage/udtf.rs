//! The table functions:
//!
//! - `lineage(start, direction => 'upstream', max_depth => NULL,
//!   relations => NULL)`: every node reachable from `start` (one id or an
//!   array of ids), each once, at the depth it is first reached;
//! - `lineage_path(from, to, relations => NULL)`: a shortest derivation
//!   path.
//!
//! Named arguments are rewritten to positions before planning
//! ([`crate::lineage::calls::positional_args`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use provdb_engine::lineage::{Direction, KindFilter, Lineage};

use super::args;
use super::exec::{LineageExec, LineageQuery, output_schema};
use crate::session::SessionShared;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::LogicalPlan;

fn engine_err(e: provdb_engine::EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::from_engine(e)))
}

/// A call with `$n` parameters among its arguments, planned before the
/// values are bound (to describe the statement), returns no rows: an empty
/// table of `schema`. The session plans such statements again with the
/// values in place. Shared by every table function taking `$n` arguments.
pub fn deferred(args: &[Expr], schema: SchemaRef) -> Option<Arc<dyn TableProvider>> {
    let has_placeholder = args.iter().any(|e| {
        e.exists(|x| Ok(matches!(x, Expr::Placeholder(_))))
            .unwrap_or(false)
    });
    has_placeholder.then(|| Arc::new(EmptyTable::new(schema)) as Arc<dyn TableProvider>)
}

/// Whether `plan` holds a call planned by [`deferred`] (which the session
/// must plan again once values are bound).
pub fn has_deferred_call(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let walked = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && provider.downcast_ref::<EmptyTable>().is_some()
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found || walked.is_err()
}

/// Plan a call of a function taking `$n` arguments: read at run time when
/// they are parameters alone ([`BoundAtRun`]), deferred when one sits in a
/// larger expression, planned now (`make`) when there are none.
fn plan_call<F>(
    args: &[Expr],
    schema: SchemaRef,
    session: &Arc<SessionShared>,
    make: F,
) -> Result<Arc<dyn TableProvider>>
where
    F: Fn(&[Expr]) -> Result<Arc<dyn TableProvider>> + Clone + Send + Sync + 'static,
{
    if let Some(t) = BoundAtRun::try_new(args, Arc::clone(&schema), session, make.clone()) {
        return Ok(t);
    }
    if let Some(t) = deferred(args, schema) {
        return Ok(t);
    }
    make(args)
}

fn filter(lineage: &Lineage, relations: &Option<Vec<String>>) -> Result<KindFilter> {
    match relations {
        None => Ok(KindFilter::all()),
        Some(names) => lineage.kinds(names).map_err(engine_err),
    }
}

/// `lineage(start, direction, max_depth, relations)`.
#[derive(Debug, Clone)]
pub struct LineageFn {
    pub lineage: Lineage,
    /// The session, for the values bound to `$n` arguments.
    pub session: Arc<SessionShared>,
}

impl TableFunctionImpl for LineageFn {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let me = self.clone();
        plan_call(
            args.exprs(),
            output_schema(false),
            &self.session,
            move |a| me.provider(a),
        )
    }
}

impl LineageFn {
    fn provider(&self, a: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        const F: &str = "lineage";
        if a.is_empty() || a.len() > 4 {
            return plan_err!(
                "lineage(start, direction => 'upstream'|'downstream'|'both', max_depth => n, relations => ARRAY[...]) takes 1 to 4 arguments, got {}",
                a.len()
            );
        }
        let Some(start_ids) = args::texts(a, 0, F, "start")? else {
            return plan_err!("lineage(): start must not be NULL");
        };
        let direction = match args::text(a, 1, F, "direction")? {
            None => Direction::Upstream,
            Some(d) => match Direction::parse(&d) {
                Some(d) => d,
                None => {
                    return plan_err!(
                        "lineage(): direction must be 'upstream', 'downstream' or 'both', got '{d}'"
                    );
                }
            },
        };
        let max_depth = args::count(a, 2, F, "max_depth")?;
        let relations = args::texts(a, 3, F, "relations")?;
        let starts = self.lineage.resolve(&start_ids).map_err(engine_err)?;
        let query = LineageQuery::Walk {
            starts,
            start_ids,
            direction,
            max_depth,
            filter: filter(&self.lineage, &relations)?,
            relations,
        };
        Ok(Arc::new(LineageTable {
            lineage: self.lineage.clone(),
            query,
        }))
    }
}

/// `lineage_path(from, to, relations)`.
#[derive(Debug, Clone)]
pub struct LineagePathFn {
    pub lineage: Lineage,
    /// The session, for the values bound to `$n` arguments.
    pub session: Arc<SessionShared>,
}

impl TableFunctionImpl for LineagePathFn {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let me = self.clone();
        plan_call(args.exprs(), output_schema(true), &self.session, move |a| {
            me.provider(a)
        })
    }
}

impl LineagePathFn {
    fn provider(&self, a: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        const F: &str = "lineage_path";
        if a.len() < 2 || a.len() > 3 {
            return plan_err!(
                "lineage_path(from, to, relations => ARRAY[...]) takes 2 or 3 arguments, got {}",
                a.len()
            );
        }
        let (Some(from), Some(to)) = (args::text(a, 0, F, "from")?, args::text(a, 1, F, "to")?)
        else {
            return plan_err!("lineage_path(): from and to must not be NULL");
        };
        let relations = args::texts(a, 2, F, "relations")?;
        let nodes = self
            .lineage
            .resolve(&[from.clone(), to.clone()])
            .map_err(engine_err)?;
        let query = LineageQuery::Path {
            from: nodes[0],
            to: nodes[1],
            ids: (from, to),
            filter: filter(&self.lineage, &relations)?,
            relations,
        };
        Ok(Arc::new(LineageTable {
            lineage: self.lineage.clone(),
            query,
        }))
    }
}

type MakeProvider = dyn Fn(&[Expr]) -> Result<Arc<dyn TableProvider>> + Send + Sync;

/// A call whose `$n` arguments are parameters alone: planned once with the
/// statement (the kept plan of a prepared statement), it reads the values
/// bound to the execution when it runs and builds the call then.
struct BoundAtRun {
    schema: SchemaRef,
    args: Vec<Expr>,
    session: Arc<SessionShared>,
    make: Box<MakeProvider>,
}

impl std::fmt::Debug for BoundAtRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundAtRun")
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl BoundAtRun {
    /// `Some` when `args` hold a `$n` parameter and every argument that
    /// holds one is that parameter alone.
    fn try_new(
        args: &[Expr],
        schema: SchemaRef,
        session: &Arc<SessionShared>,
        make: impl Fn(&[Expr]) -> Result<Arc<dyn TableProvider>> + Send + Sync + 'static,
    ) -> Option<Arc<dyn TableProvider>> {
        let holds = |e: &Expr| {
            e.exists(|x| Ok(matches!(x, Expr::Placeholder(_))))
                .unwrap_or(false)
        };
        let bare = |e: &Expr| matches!(e, Expr::Placeholder(_));
        let any = args.iter().any(bare);
        let all_bare = args.iter().all(|e| bare(e) || !holds(e));
        (any && all_bare).then(|| {
            Arc::new(BoundAtRun {
                schema,
                args: args.to_vec(),
                session: Arc::clone(session),
                make: Box::new(make),
            }) as Arc<dyn TableProvider>
        })
    }

    /// The arguments with the bound values in place of the parameters.
    fn bound_args(&self) -> Result<Vec<Expr>> {
        let params = self.session.params.lock().clone();
        self.args
            .iter()
            .map(|e| crate::prepared::bind_expr(e.clone(), &params))
            .collect()
    }
}

#[async_trait]
impl TableProvider for BoundAtRun {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let provider = (self.make)(&self.bound_args()?)?;
        provider.scan(state, projection, filters, limit).await
    }
}

/// Whether `provider` is a `lineage()` or `lineage_path()` call (with its
/// `$n` arguments read at run time, or none).
pub(crate) fn is_walk(provider: &dyn TableProvider) -> bool {
    provider.downcast_ref::<LineageTable>().is_some()
        || provider.downcast_ref::<BoundAtRun>().is_some()
}

/// The walk of a call [`is_walk`] accepts, its arguments bound to the
/// session's current values, as a plan built without a DataFusion session
/// (for [`crate::lookup_plan`]).
pub(crate) fn walk_exec(
    provider: &dyn TableProvider,
    projection: Option<&Vec<usize>>,
) -> Result<LineageExec> {
    let exec = |t: &LineageTable| {
        LineageExec::try_new(
            t.lineage.clone(),
            t.query.clone(),
            projection.cloned(),
            None,
        )
    };
    if let Some(t) = provider.downcast_ref::<LineageTable>() {
        return exec(t);
    }
    let Some(bound) = provider.downcast_ref::<BoundAtRun>() else {
        return plan_err!("not a lineage call");
    };
    let made = (bound.make)(&bound.bound_args()?)?;
    match made.downcast_ref::<LineageTable>() {
        Some(t) => exec(t),
        None => plan_err!("not a lineage call"),
    }
}

/// The relation a lineage function call returns.
#[derive(Debug)]
struct LineageTable {
    lineage: Lineage,
    query: LineageQuery,
}

#[async_trait]
impl TableProvider for LineageTable {
    fn schema(&self) -> SchemaRef {
        self.query.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(LineageExec::try_new(
            self.lineage.clone(),
            self.query.clone(),
            projection.cloned(),
            limit,
        )?))
    }
}
