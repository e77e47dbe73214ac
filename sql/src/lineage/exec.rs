//! [`LineageExec`]: the physical operator behind `lineage()` and
//! `lineage_path()`. It walks the engine's lineage index one frontier at a
//! time and streams one or more batches per level, so the first rows arrive
//! before the walk ends and a `LIMIT` stops it early. Each level takes the
//! index's read lock only while it expands, so writes land between levels.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use provdb_engine::lineage::graph::Graph;
use provdb_engine::lineage::traverse::shortest_path;
use provdb_engine::lineage::{Direction, KindFilter, Lineage, NodeIdx, Step, Traversal};

use crate::batches::batch_of;

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
        output_schema(matches!(self, LineageQuery::Path { .. }))
    }

    /// A fresh walk for a `lineage()` query.
    fn traversal(&self) -> Option<Traversal> {
        match self {
            LineageQuery::Walk {
                starts,
                direction,
                max_depth,
                filter,
                ..
            } => Some(Traversal::new(
                starts.clone(),
                *direction,
                *max_depth,
                filter.clone(),
            )),
            LineageQuery::Path { .. } => None,
        }
    }
}

/// The output columns of `lineage()` (`path` false) or `lineage_path()`.
pub fn output_schema(path: bool) -> SchemaRef {
    {
        let first = match path {
            false => vec![
                Field::new("node", DataType::Utf8, false),
                Field::new("node_kind", DataType::Utf8, false),
                Field::new("depth", DataType::Int32, false),
            ],
            true => vec![
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
    /// The whole answer of a small walk, found when the plan was built.
    precomputed: Option<Answer>,
}

/// A small walk's answer: its steps, or only their number when no column
/// is read (`count(*)`).
#[derive(Debug, Clone)]
enum Answer {
    Steps(Arc<Vec<Step>>),
    Count(usize),
}

impl Answer {
    fn len(&self) -> usize {
        match self {
            Answer::Steps(s) => s.len(),
            Answer::Count(n) => *n,
        }
    }
}

/// Walks that finish within this many nodes are run when the plan is built:
/// the optimizer then knows the exact row count (no repartitioning of a tiny
/// input; `count(*)` answered from statistics).
const EAGER_STEPS: usize = 8192;

/// The walk's answer if it ends within [`EAGER_STEPS`]; a longer walk is
/// abandoned here and run again, streaming, when the plan executes.
fn precompute(lineage: &Lineage, query: &LineageQuery, count_only: bool) -> Option<Answer> {
    let mut t = query.traversal()?;
    let g = lineage.graph();
    if count_only {
        let mut n = 0;
        while let Some(level) = t.next_level_count(&g) {
            n += level;
            if n > EAGER_STEPS {
                return None;
            }
        }
        return Some(Answer::Count(n));
    }
    let mut steps = Vec::new();
    while t.next_level_into(&g, &mut |s| steps.push(s)) {
        if steps.len() > EAGER_STEPS {
            return None;
        }
    }
    Some(Answer::Steps(Arc::new(steps)))
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
            precomputed: precompute(
                &lineage,
                &query,
                projection.as_ref().is_some_and(|p| p.is_empty()),
            ),
            lineage,
            query,
            projection,
            schema,
            limit,
            props: Arc::new(props),
        })
    }

    /// A walker yielding the answer in batches of `batch_size` rows.
    fn walker(&self, batch_size: usize) -> Walker {
        Walker {
            lineage: self.lineage.clone(),
            source: match (&self.precomputed, &self.query) {
                (Some(answer), _) => Source::Answered(Some(answer.clone())),
                (
                    None,
                    LineageQuery::Path {
                        from, to, filter, ..
                    },
                ) => Source::Path(Some((*from, *to, filter.clone()))),
                (None, walk) => walk
                    .traversal()
                    .map_or(Source::Answered(None), |t| Source::Walk(Box::new(t))),
            },
            path: matches!(self.query, LineageQuery::Path { .. }),
            full_schema: self.query.schema(),
            projection: self.projection.clone(),
            remaining: self.limit.unwrap_or(usize::MAX),
            batch_size: batch_size.max(1),
            pending: Default::default(),
        }
    }

    /// The whole answer, without a task context; `None` when it holds more
    /// than `max_rows` rows.
    pub(crate) fn collect_rows(&self, max_rows: usize) -> Result<Option<Vec<RecordBatch>>> {
        let mut walker = self.walker(8192);
        let (mut batches, mut rows) = (Vec::new(), 0usize);
        while let Some(b) = walker.next_batch()? {
            rows += b.num_rows();
            if rows > max_rows {
                return Ok(None);
            }
            batches.push(b);
        }
        Ok(Some(batches))
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
        if let Some(steps) = &self.precomputed {
            write!(f, ", walked_at_planning={}", steps.len())?;
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

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema);
        if let Some(steps) = &self.precomputed {
            let n = self.limit.map_or(steps.len(), |l| l.min(steps.len()));
            stats = stats.with_num_rows(Precision::Exact(n));
        }
        Ok(Arc::new(stats))
    }

    fn execute(
        &self,
        _partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let walker = self.walker(ctx.session_config().batch_size());
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
    Walk(Box<Traversal>),
    Path(Option<(NodeIdx, NodeIdx, KindFilter)>),
    /// A walk already run when the plan was built (taken when sent).
    Answered(Option<Answer>),
}

/// The stream's state: the walk and the steps found but not yet sent.
struct Walker {
    lineage: Lineage,
    source: Source,
    path: bool,
    full_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    remaining: usize,
    batch_size: usize,
    pending: std::collections::VecDeque<Step>,
}

/// An output column of the lineage functions.
#[derive(Clone, Copy)]
enum Col {
    Depth,
    Node,
    Kind,
    Relation,
    Via,
}

impl Walker {
    fn columns(&self) -> Vec<Col> {
        let all = if self.path {
            [Col::Depth, Col::Node, Col::Kind, Col::Relation, Col::Via]
        } else {
            [Col::Node, Col::Kind, Col::Depth, Col::Relation, Col::Via]
        };
        match &self.projection {
            Some(p) => p.iter().filter_map(|&i| all.get(i).copied()).collect(),
            None => all.to_vec(),
        }
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.columns().is_empty() {
            return self.next_count_batch();
        }
        let g = self.lineage.graph();
        while self.pending.is_empty() {
            if self.remaining == 0 {
                return Ok(None);
            }
            let steps = match &mut self.source {
                Source::Walk(t) => t.next_level(&g),
                Source::Path(job) => job
                    .take()
                    .map(|(from, to, filter)| shortest_path(&g, from, to, &filter)),
                Source::Answered(answer) => match answer.take() {
                    Some(Answer::Steps(s)) => Some(s.as_ref().clone()),
                    Some(Answer::Count(_)) | None => None,
                },
            };
            let Some(steps) = steps else {
                return Ok(None);
            };
            self.pending = steps.into();
        }
        let n = self.pending.len().min(self.batch_size).min(self.remaining);
        let steps: Vec<Step> = self.pending.drain(..n).collect();
        self.remaining -= n;
        if self.remaining == 0 {
            self.pending.clear();
        }
        self.batch(&g, &steps, steps.len()).map(Some)
    }

    /// No column is needed (`count(*)`): walk, counting the nodes reached,
    /// and send batches of that many rows without materializing steps.
    fn next_count_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut rows = 0usize;
        while rows < self.batch_size && self.remaining > rows {
            let g = self.lineage.graph();
            let more = match &mut self.source {
                Source::Walk(t) => t.next_level_count(&g).map(|n| rows += n).is_some(),
                Source::Path(job) => match job.take() {
                    Some((from, to, filter)) => {
                        rows += shortest_path(&g, from, to, &filter).len();
                        true
                    }
                    None => false,
                },
                Source::Answered(answer) => answer.take().map(|a| rows += a.len()).is_some(),
            };
            if !more {
                break;
            }
        }
        let rows = rows.min(self.remaining);
        if rows == 0 {
            return Ok(None);
        }
        self.remaining -= rows;
        self.batch(&self.lineage.graph(), &[], rows).map(Some)
    }

    /// Render only the projected columns (`count(*)` renders none).
    fn batch(&self, g: &Graph, steps: &[Step], rows: usize) -> Result<RecordBatch> {
        let text = |f: &dyn Fn(&Step) -> Option<String>| -> ArrayRef {
            let mut b = StringBuilder::new();
            for s in steps {
                b.append_option(f(s));
            }
            Arc::new(b.finish())
        };
        let columns: Vec<ArrayRef> = self
            .columns()
            .into_iter()
            .map(|c| match c {
                Col::Depth => Arc::new(Int32Array::from_iter_values(
                    steps
                        .iter()
                        .map(|s| i32::try_from(s.depth).unwrap_or(i32::MAX)),
                )) as ArrayRef,
                Col::Node => text(&|s| Some(g.node_text(s.node))),
                Col::Kind => text(&|s| Some(g.class(s.node).name().to_string())),
                Col::Relation => text(&|s| s.kind.map(|k| g.kinds.name(k).to_string())),
                Col::Via => text(&|s| s.via.map(|v| g.node_text(v))),
            })
            .collect();
        let schema = match &self.projection {
            Some(p) => Arc::new(self.full_schema.project(p)?),
            None => Arc::clone(&self.full_schema),
        };
        batch_of(&schema, columns, rows)
    }
}
