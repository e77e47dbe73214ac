//! The table functions:
//!
//! - `lineage(start, direction => 'upstream', max_depth => NULL,
//!   relations => NULL)`: every node reachable from `start` (one id or an
//!   array of ids), each once, at the depth it is first reached;
//! - `lineage_path(from, to, relations => NULL)`: a shortest derivation
//!   path.
//!
//! Named arguments are rewritten to positions before planning
//! ([`crate::rewrite::table_function_named_args`]).

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
use datafusion::common::tree_node::TreeNode;
use datafusion::datasource::empty::EmptyTable;

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

fn filter(lineage: &Lineage, relations: &Option<Vec<String>>) -> Result<KindFilter> {
    match relations {
        None => Ok(KindFilter::all()),
        Some(names) => lineage.kinds(names).map_err(engine_err),
    }
}

/// `lineage(start, direction, max_depth, relations)`.
#[derive(Debug)]
pub struct LineageFn {
    pub lineage: Lineage,
}

impl TableFunctionImpl for LineageFn {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const F: &str = "lineage";
        let a = args.exprs();
        if let Some(t) = deferred(a, output_schema(false)) {
            return Ok(t);
        }
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
#[derive(Debug)]
pub struct LineagePathFn {
    pub lineage: Lineage,
}

impl TableFunctionImpl for LineagePathFn {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const F: &str = "lineage_path";
        let a = args.exprs();
        if let Some(t) = deferred(a, output_schema(true)) {
            return Ok(t);
        }
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
