//! Which stored tables feed the graph, and the edges each of their rows
//! stands for.
//!
//! DLProv rows (rules documented in `docs/lineage.md`):
//! - a row `r` of `<tag>.ds_<set>`: `r wasGeneratedBy task:p` for every
//!   producer column `<t>_task_id = p`, `task:c used r` for every consumer
//!   column `<t>_task_id = c`;
//! - a row of `public.task`: `task:t wasInformedBy execution:<df_exec>`;
//! - a row of `public.dataflow_execution`: `wasAssociatedWith` its scientist
//!   and hardware, `hadPlan dataflow:<tag>`.
//!
//! User rows: `prov.relation(kind, subject, object)` is one edge;
//! `prov.entity|activity|agent(id)` declares a node's class.
//!
//! Each derived edge has one owner row, whose deletion removes it: the
//! dataset row for its `wasGeneratedBy` and `used` edges, the task row for
//! `wasInformedBy`, the execution row for its edges.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use provdb_storage::{TableDef, TableId};

use super::graph::{Graph, KindId, NodeIdx, NodeKind, Origin, kind};
use super::ids::{DatasetId, NodeKey};
use super::schema::{PROV_SCHEMA, RELATION_TABLE};
use crate::catalog::DEFAULT_SCHEMA;
use crate::dlprov::spec::task_column;
use crate::dlprov::state::DataflowRecord;

/// What a table's rows mean to the graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    Dataset {
        dataset: DatasetId,
        producers: Vec<String>,
        consumers: Vec<String>,
    },
    Task,
    Execution,
    UserNode(NodeKind),
    UserRelation,
}

/// An edge as (subject, kind, object).
pub type Triple = (NodeIdx, KindId, NodeIdx);

/// The tables and dataflows the maintainer knows, and the roles derived
/// from them (recomputed after DDL).
#[derive(Debug, Default)]
pub struct Roles {
    tables: HashMap<TableId, TableDef>,
    dataflows: HashMap<String, DataflowRecord>,
    roles: HashMap<TableId, Role>,
    dirty: bool,
}

impl Roles {
    pub fn new(tables: Vec<TableDef>, dataflows: HashMap<String, DataflowRecord>) -> Roles {
        Roles {
            tables: tables.into_iter().map(|t| (t.id, t)).collect(),
            dataflows,
            roles: HashMap::new(),
            dirty: true,
        }
    }

    pub fn put_table(&mut self, def: TableDef) {
        self.tables.insert(def.id, def);
        self.dirty = true;
    }

    pub fn drop_table(&mut self, id: TableId) {
        self.tables.remove(&id);
        self.dirty = true;
    }

    pub fn put_dataflow(&mut self, rec: DataflowRecord) {
        self.dataflows.insert(rec.spec.tag.clone(), rec);
        self.dirty = true;
    }

    /// The tag of the dataflow with catalog id `id`.
    pub fn dataflow_tag(&self, id: i64) -> Option<&str> {
        self.dataflows
            .values()
            .find(|r| r.id == id)
            .map(|r| r.spec.tag.as_str())
    }

    pub fn role(&mut self, graph: &mut Graph, table: TableId) -> Option<Role> {
        if self.dirty {
            self.recompute(graph);
        }
        self.roles.get(&table).cloned()
    }

    /// Every table with a role.
    pub fn tables_with_roles(&mut self, graph: &mut Graph) -> Vec<TableId> {
        if self.dirty {
            self.recompute(graph);
        }
        let mut ids: Vec<TableId> = self.roles.keys().copied().collect();
        ids.sort();
        ids
    }

    fn recompute(&mut self, graph: &mut Graph) {
        self.roles.clear();
        for def in self.tables.values() {
            if let Some(role) = self.role_of(graph, def) {
                self.roles.insert(def.id, role);
            }
        }
        self.dirty = false;
    }

    fn role_of(&self, graph: &mut Graph, def: &TableDef) -> Option<Role> {
        match (def.namespace.as_str(), def.name.as_str()) {
            (DEFAULT_SCHEMA, "task") => return Some(Role::Task),
            (DEFAULT_SCHEMA, "dataflow_execution") => return Some(Role::Execution),
            (PROV_SCHEMA, "entity") => return Some(Role::UserNode(NodeKind::Entity)),
            (PROV_SCHEMA, "activity") => return Some(Role::UserNode(NodeKind::Activity)),
            (PROV_SCHEMA, "agent") => return Some(Role::UserNode(NodeKind::Agent)),
            (PROV_SCHEMA, RELATION_TABLE) => return Some(Role::UserRelation),
            _ => {}
        }
        let rec = self.dataflows.get(&def.namespace)?;
        let set = def.name.strip_prefix("ds_")?;
        let spec = rec.spec.set(set)?;
        Some(Role::Dataset {
            dataset: graph.symbols.add_dataset(&rec.spec.tag, set),
            producers: spec.producers.iter().map(|t| task_column(t)).collect(),
            consumers: spec.consumers.iter().map(|t| task_column(t)).collect(),
        })
    }
}

/// A batch's columns by name, each cast once (to Int64 or Utf8, as first
/// asked) and read without per-row allocation.
pub struct Columns<'a> {
    batch: &'a RecordBatch,
    cache: HashMap<String, Option<ArrayRef>>,
}

impl<'a> Columns<'a> {
    pub fn new(batch: &'a RecordBatch) -> Self {
        Columns {
            batch,
            cache: HashMap::new(),
        }
    }

    fn column(&mut self, name: &str, ty: &DataType) -> Option<&ArrayRef> {
        if !self.cache.contains_key(name) {
            let col = self
                .batch
                .column_by_name(name)
                .and_then(|c| cast(c, ty).ok());
            self.cache.insert(name.to_string(), col);
        }
        self.cache.get(name)?.as_ref()
    }

    pub fn int(&mut self, name: &str, row: usize) -> Option<i64> {
        let a = self
            .column(name, &DataType::Int64)?
            .as_primitive::<Int64Type>();
        (!a.is_null(row)).then(|| a.value(row))
    }

    pub fn text(&mut self, name: &str, row: usize) -> Option<&str> {
        let a = self.column(name, &DataType::Utf8)?.as_string::<i32>();
        (!a.is_null(row)).then(|| a.value(row))
    }

    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }
}

/// What one row is to the graph.
pub enum RowFacts {
    /// A DLProv row: the node it owns edges for, and those edges.
    Owner {
        node: NodeIdx,
        edges: Vec<Triple>,
    },
    /// A `prov.relation` row.
    UserEdge(Triple),
    /// A `prov.entity|activity|agent` row.
    Declare(NodeIdx, NodeKind),
    Nothing,
}

/// The facts of row `row` of a table with role `role`, creating nodes.
pub fn row_facts(
    graph: &mut Graph,
    roles: &Roles,
    role: &Role,
    cols: &mut Columns<'_>,
    row: usize,
) -> RowFacts {
    match role {
        Role::Dataset {
            dataset,
            producers,
            consumers,
        } => {
            let Some(id) = cols.int("id", row) else {
                return RowFacts::Nothing;
            };
            let node = graph.node(NodeKey::Row {
                dataset: *dataset,
                id,
            });
            let mut edges = Vec::new();
            for c in producers {
                if let Some(t) = cols.int(c, row) {
                    edges.push((node, kind::WAS_GENERATED_BY, graph.node(NodeKey::Task(t))));
                }
            }
            for c in consumers {
                if let Some(t) = cols.int(c, row) {
                    let edge = (graph.node(NodeKey::Task(t)), kind::USED, node);
                    if !edges.contains(&edge) {
                        edges.push(edge);
                    }
                }
            }
            RowFacts::Owner { node, edges }
        }
        Role::Task => {
            let Some(id) = cols.int("id", row) else {
                return RowFacts::Nothing;
            };
            let node = graph.node(NodeKey::Task(id));
            let mut edges = Vec::new();
            if let Some(exec) = cols.text("df_exec", row) {
                let tag = graph.sym(exec);
                edges.push((
                    node,
                    kind::WAS_INFORMED_BY,
                    graph.node(NodeKey::Execution(tag)),
                ));
            }
            RowFacts::Owner { node, edges }
        }
        Role::Execution => {
            let Some(tag) = cols.text("tag", row) else {
                return RowFacts::Nothing;
            };
            let tag = graph.sym(tag);
            let node = graph.node(NodeKey::Execution(tag));
            let mut edges = Vec::new();
            if let Some(s) = cols.int("scientist_id", row) {
                let agent = graph.node(NodeKey::Scientist(s));
                edges.push((node, kind::WAS_ASSOCIATED_WITH, agent));
            }
            if let Some(h) = cols.int("hardware_id", row) {
                let agent = graph.node(NodeKey::Hardware(h));
                edges.push((node, kind::WAS_ASSOCIATED_WITH, agent));
            }
            if let Some(df) = cols.int("df_id", row).and_then(|d| roles.dataflow_tag(d)) {
                let df = graph.sym(df);
                edges.push((node, kind::HAD_PLAN, graph.node(NodeKey::Dataflow(df))));
            }
            RowFacts::Owner { node, edges }
        }
        Role::UserNode(class) => match cols.text("id", row) {
            Some(id) => RowFacts::Declare(graph.node_for_text(id), *class),
            None => RowFacts::Nothing,
        },
        Role::UserRelation => {
            // The three columns are NOT NULL; a NULL would skip the row.
            let Some(kind) = cols.text("kind", row).map(|k| graph.kinds.intern(k)) else {
                return RowFacts::Nothing;
            };
            let Some(s) = cols.text("subject", row).map(|t| graph.node_for_text(t)) else {
                return RowFacts::Nothing;
            };
            let Some(o) = cols.text("object", row).map(|t| graph.node_for_text(t)) else {
                return RowFacts::Nothing;
            };
            RowFacts::UserEdge((s, kind, o))
        }
    }
}

/// The node a deleted row's key names, if that node exists (`None` for user
/// node tables: nodes are never removed).
pub fn deleted_owner(
    graph: &Graph,
    role: &Role,
    keys: &mut Columns<'_>,
    row: usize,
) -> Option<Deleted> {
    match role {
        Role::Dataset { dataset, .. } => {
            let id = keys.int("id", row)?;
            graph
                .lookup(&NodeKey::Row {
                    dataset: *dataset,
                    id,
                })
                .map(Deleted::Owner)
        }
        Role::Task => graph
            .lookup(&NodeKey::Task(keys.int("id", row)?))
            .map(Deleted::Owner),
        Role::Execution => {
            let tag = graph.symbols.get(keys.text("tag", row)?)?;
            graph.lookup(&NodeKey::Execution(tag)).map(Deleted::Owner)
        }
        Role::UserNode(_) => None,
        Role::UserRelation => {
            let kind = graph.kinds.get(keys.text("kind", row)?)?;
            let s = graph.find(keys.text("subject", row)?)?;
            let o = graph.find(keys.text("object", row)?)?;
            Some(Deleted::UserEdge((s, kind, o)))
        }
    }
}

/// A row removed by a commit, until the same commit re-inserts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deleted {
    Owner(NodeIdx),
    UserEdge(Triple),
}

/// The derived edges `node` owns (see the module doc).
pub fn owned_edges(graph: &Graph, node: NodeIdx) -> Vec<Triple> {
    let task = graph.is_task(node);
    let mut out: Vec<Triple> = graph
        .out_edges(node)
        .filter(|e| e.origin == Origin::Derived && !(task && e.kind == kind::USED))
        .map(|e| (node, e.kind, e.node))
        .collect();
    if graph.is_row(node) {
        out.extend(
            graph
                .in_edges(node)
                .filter(|e| e.origin == Origin::Derived && e.kind == kind::USED)
                .map(|e| (e.node, e.kind, node)),
        );
    }
    out
}
