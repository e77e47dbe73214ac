//! [`LineageExec`]: the physical operator behind `lineage()` and
//! `lineage_path()`. It walks the engine's lineage index one frontier at a
//! time and streams one or more batches per level, so the first rows arrive
//! before the walk ends and a `LIMIT` stops it early. Each level takes the
//! index's read lock only while it expands, so writes land between levels.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use provdb_engine::lineage::graph::Graph;
use provdb_engine::lineage::traverse::shortest_path;
use provdb_engine::lineage::{Direction, KindFilter, Lineage, NodeIdx, Step, Traversal};

/// What to compute.
#[derive(Debug, Clone)]
pub enum LineageQuery {
    Walk {
        starts: Vec<NodeIdx>,
        start_ids: Vec<String>,
        direction: Direction,
        max_depth: Option<u32>,
        filter: KindFilter,
        relations: Option<Vec<String>>,
    },
    Path {
        from: NodeIdx,
        to: NodeIdx,
        ids: (String, String),
        filter: KindFilter,
        relations: Option<Vec<String>>,
    },
}

impl LineageQuery {
    /// Output columns: `lineage()` gives (node, node_kind, depth, relation,
    /// via); `lineage_path()` gives (step, node, node_kind, relation, via).
    pub fn schema(&self) -> SchemaRef {
        let first = match self {
            LineageQuery::Walk { .. } => vec![
                Field::new("node", DataType::Utf8, false),
                Field::new("node_kind", DataType::Utf8, false),
                Field::new("depth", DataType::Int32, false),
            ],
            LineageQuery::Path { .. } => vec![
                Field::new("step", DataType::Int32, false),
                Field::new("node", DataType::Utf8, false),
                Field::new("node_kind", DataType::Utf8, false),
            ],
        };
        let mut fields = first;
        fields.push(Field::new("relation", DataType::Utf8, true));
        fields.push(Field::new("via", DataType::Utf8, true));
        Arc::new(Schema::new(fields))
    }
}

/// Walks the lineage index.
#[derive(Debug)]
pub struct LineageExec {
    lineage: Lineage,
    query: LineageQuery,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    limit: Option<usize>,
    props: Arc<PlanProperties>,
}

impl LineageExec {
    pub fn try_new(
        lineage: Lineage,
        query: LineageQuery,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Self> {
        let full = query.schema();
        let schema = match &projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full,
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(LineageExec {
            lineage,
            query,
            projection,
            schema,
            limit,
            props: Arc::new(props),
        })
    }
}

fn list(v: &Option<Vec<String>>) -> String {
    match v {
        Some(v) => format!("[{}]", v.join(", ")),
        None => "all".into(),
    }
}

impl DisplayAs for LineageExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.query {
            LineageQuery::Walk {
                start_ids,
                direction,
                max_depth,
                relations,
                ..
            } => {
                write!(
                    f,
                    "LineageExec: start=[{}], direction={}, max_depth={}, relations={}",
                    start_ids.join(", "),
                    format!("{direction:?}").to_lowercase(),
                    max_depth.map_or("none".to_string(), |d| d.to_string()),
                    list(relations),
                )?;
            }
            LineageQuery::Path { ids, relations, .. } => {
                write!(
                    f,
                    "LineageExec: shortest path from={} to={}, relations={}",
                    ids.0,
                    ids.1,
                    list(relations)
                )?;
            }
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LineageExec {
    fn name(&self) -> &str {
        "LineageExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let walker = Walker {
            lineage: self.lineage.clone(),
            source: match &self.query {
                LineageQuery::Walk {
                    starts,
                    direction,
                    max_depth,
                    filter,
                    ..
                } => Source::Walk(Traversal::new(
                    starts.clone(),
                    *direction,
                    *max_depth,
                    filter.clone(),
                )),
                LineageQuery::Path {
                    from, to, filter, ..
                } => Source::Path(Some((*from, *to, filter.clone()))),
            },
            path: matches!(self.query, LineageQuery::Path { .. }),
            full_schema: self.query.schema(),
            projection: self.projection.clone(),
            remaining: self.limit.unwrap_or(usize::MAX),
            batch_size: ctx.session_config().batch_size().max(1),
            pending: Vec::new(),
        };
        let stream = futures::stream::unfold(walker, |mut w| async move {
            match w.next_batch() {
                Ok(Some(b)) => Some((Ok(b), w)),
                Ok(None) => None,
                Err(e) => {
                    w.remaining = 0;
                    Some((Err(e), w))
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

enum Source {
    Walk(Traversal),
    Path(Option<(NodeIdx, NodeIdx, KindFilter)>),
}

/// The stream's state: the walk, rows rendered but not yet sent.
struct Walker {
    lineage: Lineage,
    source: Source,
    path: bool,
    full_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    remaining: usize,
    batch_size: usize,
    pending: Vec<Row>,
}

/// A rendered output row.
struct Row {
    depth: i32,
    node: String,
    kind: &'static str,
    relation: Option<String>,
    via: Option<String>,
}

fn render(g: &Graph, s: &Step) -> Row {
    Row {
        depth: i32::try_from(s.depth).unwrap_or(i32::MAX),
        node: g.node_text(s.node),
        kind: g.class(s.node).name(),
        relation: s.kind.map(|k| g.kinds.name(k).to_string()),
        via: s.via.map(|v| g.node_text(v)),
    }
}

impl Walker {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        while self.pending.is_empty() {
            if self.remaining == 0 {
                return Ok(None);
            }
            let g = self.lineage.graph();
            let steps = match &mut self.source {
                Source::Walk(t) => t.next_level(&g),
                Source::Path(job) => job
                    .take()
                    .map(|(from, to, filter)| shortest_path(&g, from, to, &filter)),
            };
            let Some(steps) = steps else {
                return Ok(None);
            };
            self.pending = steps.iter().rev().map(|s| render(&g, s)).collect();
        }
        let n = self.pending.len().min(self.batch_size).min(self.remaining);
        let at = self.pending.len() - n;
        let rows: Vec<Row> = self.pending.drain(at..).rev().collect();
        self.remaining -= n;
        if self.remaining == 0 {
            self.pending.clear();
        }
        self.batch(rows).map(Some)
    }

    fn batch(&self, rows: Vec<Row>) -> Result<RecordBatch> {
        let depth: ArrayRef = Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.depth)));
        let mut node = StringBuilder::new();
        let mut kind = StringBuilder::new();
        let mut relation = StringBuilder::new();
        let mut via = StringBuilder::new();
        for r in &rows {
            node.append_value(&r.node);
            kind.append_value(r.kind);
            relation.append_option(r.relation.as_deref());
            via.append_option(r.via.as_deref());
        }
        let (node, kind): (ArrayRef, ArrayRef) = (Arc::new(node.finish()), Arc::new(kind.finish()));
        let mut columns = if self.path {
            vec![depth, node, kind]
        } else {
            vec![node, kind, depth]
        };
        columns.push(Arc::new(relation.finish()));
        columns.push(Arc::new(via.finish()));
        let batch = RecordBatch::try_new(Arc::clone(&self.full_schema), columns)?;
        Ok(match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        })
    }
}
