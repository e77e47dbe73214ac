//! Keeps the graph equal to what the tables say: applies each commit's
//! inserts and deletes, in order, as edge changes.
//!
//! An UPDATE reaches storage as the delete of the old row version followed
//! by the insert of the new one, in the same commit. Deleted rows are
//! therefore held back until the end of the commit: a row re-inserted by the
//! same commit only changes the edges that differ (linking a consumer task
//! to a producer's rows adds one `used` edge and touches nothing else); rows
//! still deleted at the end lose every edge they own.

use std::collections::HashSet;

use provdb_storage::{TableId, WalOp};
use tracing::warn;

use super::derive::{
    Columns, Deleted, Role, Roles, RowFacts, deleted_owner, owned_edges, row_facts,
};
use super::graph::{Graph, Origin};
use crate::dlprov::state::DATAFLOW_PREFIX;
use crate::dlprov::state::DataflowRecord;

/// Applies commits to the graph.
#[derive(Debug, Default)]
pub struct Maintainer {
    pub roles: Roles,
}

/// Rows deleted by the commit being applied and not (yet) re-inserted.
type Pending = HashSet<Deleted>;

impl Maintainer {
    pub fn new(roles: Roles) -> Self {
        Maintainer { roles }
    }

    /// Whether a commit can change the graph at all.
    pub fn relevant(ops: &[WalOp]) -> bool {
        !ops.iter()
            .all(|op| matches!(op, WalOp::Checkpoint { .. } | WalOp::DeleteMeta { .. }))
    }

    /// Apply one commit's ops.
    pub fn apply(&mut self, graph: &mut Graph, ops: &[WalOp]) {
        let mut pending = Pending::new();
        for op in ops {
            match op {
                WalOp::CreateTable { def, .. } | WalOp::AlterTable { def } => {
                    self.roles.put_table(def.clone());
                }
                WalOp::DropTable { table } => self.roles.drop_table(*table),
                WalOp::PutMeta { key, value } if key.starts_with(DATAFLOW_PREFIX) => {
                    match serde_json::from_value::<DataflowRecord>(value.clone()) {
                        Ok(rec) => self.roles.put_dataflow(rec),
                        Err(e) => warn!(key, error = %e, "lineage: unreadable dataflow record"),
                    }
                }
                WalOp::Insert { table, batch } => {
                    self.insert(graph, *table, batch, &mut pending);
                }
                WalOp::Delete {
                    table,
                    keys: Some(keys),
                    ..
                } => self.delete(graph, *table, keys, &mut pending),
                _ => {}
            }
        }
        for deleted in pending {
            match deleted {
                Deleted::Owner(node) => {
                    for (s, k, o) in owned_edges(graph, node) {
                        graph.remove_edge(s, k, o, Origin::Derived);
                    }
                }
                Deleted::UserEdge((s, k, o)) => {
                    graph.remove_edge(s, k, o, Origin::User);
                }
            }
        }
    }

    /// Add the rows of `batch` (an insert into `table`).
    pub fn insert(
        &mut self,
        graph: &mut Graph,
        table: TableId,
        batch: &arrow::array::RecordBatch,
        pending: &mut Pending,
    ) {
        let Some(role) = self.roles.role(graph, table) else {
            return;
        };
        let mut cols = Columns::new(batch);
        for row in 0..cols.rows() {
            match row_facts(graph, &self.roles, &role, &mut cols, row) {
                RowFacts::Owner { node, edges } => {
                    if pending.remove(&Deleted::Owner(node)) {
                        let old = owned_edges(graph, node);
                        for &(s, k, o) in old.iter().filter(|e| !edges.contains(e)) {
                            graph.remove_edge(s, k, o, Origin::Derived);
                        }
                        for &(s, k, o) in edges.iter().filter(|e| !old.contains(e)) {
                            graph.add_edge(s, k, o, Origin::Derived);
                        }
                    } else {
                        for (s, k, o) in edges {
                            graph.add_edge(s, k, o, Origin::Derived);
                        }
                    }
                }
                RowFacts::UserEdge(t) => {
                    if !pending.remove(&Deleted::UserEdge(t)) {
                        graph.add_edge(t.0, t.1, t.2, Origin::User);
                    }
                }
                RowFacts::Declare(node, class) => graph.declare(node, class),
                RowFacts::Nothing => {}
            }
        }
    }

    fn delete(
        &mut self,
        graph: &mut Graph,
        table: TableId,
        keys: &arrow::array::RecordBatch,
        pending: &mut Pending,
    ) {
        let Some(role) = self.roles.role(graph, table) else {
            return;
        };
        if matches!(role, Role::UserNode(_)) {
            return;
        }
        let mut cols = Columns::new(keys);
        for row in 0..cols.rows() {
            if let Some(d) = deleted_owner(graph, &role, &mut cols, row) {
                pending.insert(d);
            }
        }
    }
}
