//! The PROV graph over everything stored and its lineage index.
//!
//! - [`ids`]: stable text ids of nodes (`task:42`, `alexnet.otrain:17`);
//! - [`graph`]: the index itself, compact node ids and typed adjacency in
//!   both directions;
//! - [`derive`]: which tables feed the graph and the edges each row stands
//!   for (DLProv rows and the `prov.*` tables);
//! - [`maintain`]: applies each commit to the graph (a storage
//!   [`CommitObserver`]), so lineage is current the moment a write is
//!   acknowledged;
//! - [`traverse`]: frontier-at-a-time BFS and shortest paths;
//! - [`schema`]: the stored `prov` tables;
//! - [`view`]: the derived rows schema `prov` shows beside the stored ones.
//!
//! The index lives in memory only. [`Lineage::open`] rebuilds it from the
//! tables when the database opens (`docs/lineage.md` gives the measured
//! cost), then follows every commit.

pub mod derive;
pub mod graph;
pub mod ids;
pub mod maintain;
pub mod schema;
pub mod traverse;
pub mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use provdb_storage::{CommitObserver, Storage, WalOp};
use tracing::info;

use crate::dlprov::state::DataflowRecord;
use crate::error::{EngineError, Result};
use derive::Roles;
use graph::Graph;
use maintain::Maintainer;

pub use graph::{KindId, NodeIdx, NodeKind};
pub use traverse::{Direction, KindFilter, Step, Traversal};

struct Shared {
    graph: RwLock<Graph>,
    maintainer: Mutex<Maintainer>,
}

impl CommitObserver for Shared {
    fn on_commit(&self, _lsn: u64, ops: &[WalOp]) {
        if !Maintainer::relevant(ops) {
            return;
        }
        let mut m = self.maintainer.lock();
        let mut g = self.graph.write();
        m.apply(&mut g, ops);
    }
}

/// Handle to the lineage index. Cheap to clone.
#[derive(Clone)]
pub struct Lineage {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.shared.graph.read();
        f.debug_struct("Lineage")
            .field("nodes", &g.node_count())
            .field("edges", &g.edge_count())
            .finish()
    }
}

impl Lineage {
    /// Create the `prov` tables if needed, build the index from the tables,
    /// and follow every later commit. Call before anything else writes.
    pub async fn open(storage: &Storage) -> Result<Lineage> {
        schema::ensure_tables(storage).await?;
        let started = Instant::now();
        let mut graph = Graph::default();
        let roles = Roles::new(storage.tables(), DataflowRecord::load_all(storage)?);
        let mut maintainer = Maintainer::new(roles);
        graph.set_bulk(true);
        for table in maintainer.roles.tables_with_roles(&mut graph) {
            let snap = storage.snapshot(table).map_err(EngineError::from)?;
            for part in storage.read_live(&snap).await.map_err(EngineError::from)? {
                maintainer.insert(&mut graph, table, &part.batch, &mut Default::default());
            }
        }
        graph.set_bulk(false);
        graph.compact();
        info!(
            nodes = graph.node_count(),
            edges = graph.edge_count(),
            heap_bytes = graph.heap_bytes(),
            adjacency_bytes = graph.adjacency_bytes(),
            ms = started.elapsed().as_millis() as u64,
            "lineage index built"
        );
        let shared = Arc::new(Shared {
            graph: RwLock::new(graph),
            maintainer: Mutex::new(maintainer),
        });
        storage.set_observer(Some(Arc::clone(&shared) as Arc<dyn CommitObserver>));
        Ok(Lineage { shared })
    }

    /// Read access to the graph. Hold it briefly: commits wait for it.
    pub fn graph(&self) -> RwLockReadGuard<'_, Graph> {
        self.shared.graph.read()
    }

    /// Resolve text ids to nodes; unknown ids are an error naming them.
    pub fn resolve(&self, ids: &[String]) -> Result<Vec<NodeIdx>> {
        let g = self.graph();
        ids.iter()
            .map(|id| {
                g.find(id)
                    .ok_or_else(|| EngineError::NotFound(format!("no PROV node has id '{id}'")))
            })
            .collect()
    }

    /// Resolve relation names; unknown names are an error listing the known.
    pub fn kinds(&self, names: &[String]) -> Result<KindFilter> {
        let g = self.graph();
        let ids = names
            .iter()
            .map(|n| {
                g.kinds.get(n).ok_or_else(|| {
                    EngineError::NotFound(format!(
                        "unknown relation '{n}' (known: {})",
                        graph::KNOWN_KINDS
                            .iter()
                            .map(|k| k.0)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KindFilter::only(ids))
    }
}
