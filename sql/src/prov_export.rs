//! `prov_export(scope, id, format => 'provn', direction => 'upstream',
//! max_depth => NULL)`: a PROV document of the graph as one row of text.
//!
//! - `scope`: `'execution'` (id = an execution tag), `'dataflow'` (id = a
//!   dataflow tag), `'node'` (id = one node id or an array of ids; the
//!   lineage closure in `direction`, up to `max_depth` hops) or `'all'`;
//! - `format`: `'provn'`, `'json'`, `'dot'` or `'svg'` (needs Graphviz).
//!
//! The document is built when the plan runs (the table's scan), from the
//! lineage graph and the tables (`provdb_engine::prov::export`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use provdb_engine::lineage::{Direction, Lineage};
use provdb_engine::prov::{Format, Scope};
use provdb_storage::Storage;

use crate::lineage::args;

const F: &str = "prov_export";

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "document",
        DataType::Utf8,
        false,
    )]))
}

/// Parse the scope arguments shared by SQL, HTTP and the CLI.
pub fn scope(
    kind: &str,
    ids: Option<Vec<String>>,
    direction: Option<&str>,
    max_depth: Option<u32>,
) -> Result<Scope, String> {
    let one = |ids: Option<Vec<String>>| -> Result<String, String> {
        match ids.as_deref() {
            Some([id]) => Ok(id.clone()),
            _ => Err(format!("scope '{kind}' needs exactly one id")),
        }
    };
    Ok(match kind.to_ascii_lowercase().as_str() {
        "execution" => Scope::Execution(one(ids)?),
        "dataflow" => Scope::Dataflow(one(ids)?),
        "all" => Scope::All,
        "node" | "closure" | "lineage" => Scope::Closure {
            start: ids
                .filter(|v| !v.is_empty())
                .ok_or("scope 'node' needs one or more node ids")?,
            direction: match direction {
                None => Direction::Upstream,
                Some(d) => Direction::parse(d).ok_or_else(|| {
                    format!("direction must be 'upstream', 'downstream' or 'both', got '{d}'")
                })?,
            },
            max_depth,
        },
        other => {
            return Err(format!(
                "scope must be 'execution', 'dataflow', 'node' or 'all', got '{other}'"
            ));
        }
    })
}

/// The `prov_export` table function.
#[derive(Debug)]
pub struct ProvExportFn {
    pub storage: Storage,
    pub lineage: Lineage,
}

impl TableFunctionImpl for ProvExportFn {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let a = args.exprs();
        if let Some(t) = crate::lineage::udtf::deferred(a, schema()) {
            return Ok(t);
        }
        if a.is_empty() || a.len() > 5 {
            return plan_err!(
                "prov_export(scope, id, format => 'provn'|'json'|'dot'|'svg', direction => 'upstream', max_depth => n) takes 1 to 5 arguments, got {}",
                a.len()
            );
        }
        let Some(kind) = args::text(a, 0, F, "scope")? else {
            return plan_err!("prov_export(): scope must not be NULL");
        };
        let ids = args::texts(a, 1, F, "id")?;
        let format = args::text(a, 2, F, "format")?.unwrap_or_else(|| "provn".into());
        let format = Format::parse(&format)
            .map_err(|e| DataFusionError::Plan(format!("prov_export(): {e}")))?;
        let direction = args::text(a, 3, F, "direction")?;
        let max_depth = args::count(a, 4, F, "max_depth")?;
        let scope = scope(&kind, ids, direction.as_deref(), max_depth)
            .map_err(|e| DataFusionError::Plan(format!("prov_export(): {e}")))?;
        Ok(Arc::new(ExportTable {
            storage: self.storage.clone(),
            lineage: self.lineage.clone(),
            scope,
            format,
        }))
    }
}

#[derive(Debug)]
struct ExportTable {
    storage: Storage,
    lineage: Lineage,
    scope: Scope,
    format: Format,
}

#[async_trait]
impl TableProvider for ExportTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let engine = |e| DataFusionError::External(Box::new(crate::error::from_engine(e)));
        let doc = provdb_engine::prov::export(&self.storage, &self.lineage, &self.scope)
            .await
            .map_err(engine)?;
        let bytes = provdb_engine::prov::render(&doc, self.format).map_err(engine)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(StringArray::from(vec![text]))])?;
        let mem = MemorySourceConfig::try_new(&[vec![batch]], schema(), projection.cloned())?;
        Ok(DataSourceExec::from_data_source(mem))
    }
}
