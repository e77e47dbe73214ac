//! [`GraphTable`]: how `prov.entity`, `prov.activity`, `prov.agent` and
//! `prov.relation` appear in SQL. Each is its stored table (rows users
//! insert, update and delete) united with the rows derived from DLProv data
//! by the lineage index. Writes go to the stored table only; derived rows
//! change when the DLProv rows they come from change.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use parking_lot::Mutex;
use provdb_engine::lineage::graph::Graph;
use provdb_engine::lineage::schema::{PROV_SCHEMA, RELATION_TABLE};
use provdb_engine::lineage::{Lineage, NodeKind, view};

/// Which `prov` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Relation,
    Nodes(NodeKind),
}

impl Part {
    pub fn of(schema: &str, table: &str) -> Option<Part> {
        if schema != PROV_SCHEMA {
            return None;
        }
        match table {
            RELATION_TABLE => Some(Part::Relation),
            "entity" => Some(Part::Nodes(NodeKind::Entity)),
            "activity" => Some(Part::Nodes(NodeKind::Activity)),
            "agent" => Some(Part::Nodes(NodeKind::Agent)),
            _ => None,
        }
    }
}

/// Derived rows of one part, with the graph version and schema they match.
type CachedPart = (u64, SchemaRef, Arc<Vec<RecordBatch>>);

/// Derived rows per part, rebuilt when the graph's version changes.
#[derive(Debug, Default)]
pub struct DerivedCache {
    parts: Mutex<HashMap<Part, CachedPart>>,
}

impl DerivedCache {
    fn get(
        &self,
        lineage: &Lineage,
        part: Part,
        schema: &SchemaRef,
    ) -> Result<Arc<Vec<RecordBatch>>> {
        let g = lineage.graph();
        if let Some((v, s, b)) = self.parts.lock().get(&part)
            && *v == g.version()
            && s == schema
        {
            return Ok(Arc::clone(b));
        }
        let batch = match part {
            Part::Relation => relation_batch(&g, schema)?,
            Part::Nodes(class) => node_batch(&g, class, schema)?,
        };
        let batches = Arc::new(vec![batch]);
        self.parts.lock().insert(
            part,
            (g.version(), Arc::clone(schema), Arc::clone(&batches)),
        );
        Ok(batches)
    }
}

/// Build a batch of `schema` from named text columns; other columns NULL.
fn batch_of(
    schema: &SchemaRef,
    rows: usize,
    mut text: HashMap<&str, StringArray>,
) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match text.remove(f.name().as_str()) {
            Some(a) => Arc::new(a) as ArrayRef,
            None => new_null_array(f.data_type(), rows),
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

fn relation_batch(g: &Graph, schema: &SchemaRef) -> Result<RecordBatch> {
    let rows = view::derived_relations(g);
    let text: HashMap<&str, StringArray> = HashMap::from([
        (
            "kind",
            rows.iter().map(|r| Some(g.kinds.name(r.1))).collect(),
        ),
        (
            "subject",
            rows.iter().map(|r| Some(g.node_text(r.0))).collect(),
        ),
        (
            "object",
            rows.iter().map(|r| Some(g.node_text(r.2))).collect(),
        ),
    ]);
    batch_of(schema, rows.len(), text)
}

fn node_batch(g: &Graph, class: NodeKind, schema: &SchemaRef) -> Result<RecordBatch> {
    let nodes = view::derived_nodes(g, class);
    let text: HashMap<&str, StringArray> = HashMap::from([
        ("id", nodes.iter().map(|&n| Some(g.node_text(n))).collect()),
        (
            "type",
            nodes.iter().map(|&n| g.key(n).type_name()).collect(),
        ),
        ("label", nodes.iter().map(|&n| view::label(g, n)).collect()),
    ]);
    batch_of(schema, nodes.len(), text)
}

/// A `prov` table: stored rows plus derived rows.
#[derive(Debug)]
pub struct GraphTable {
    pub stored: Arc<dyn TableProvider>,
    pub part: Part,
    pub lineage: Lineage,
    pub cache: Arc<DerivedCache>,
}

#[async_trait]
impl TableProvider for GraphTable {
    fn schema(&self) -> SchemaRef {
        self.stored.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.stored.get_column_default(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let stored = self.stored.scan(state, projection, filters, limit).await?;
        let schema = self.schema();
        let derived = self.cache.get(&self.lineage, self.part, &schema)?;
        let mem = MemorySourceConfig::try_new(&[derived.to_vec()], schema, projection.cloned())?
            .with_limit(limit);
        UnionExec::try_new(vec![stored, DataSourceExec::from_data_source(mem)])
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.stored.insert_into(state, input, insert_op).await
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.stored.delete_from(state, filters).await
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.stored.update(state, assignments, filters).await
    }
}
