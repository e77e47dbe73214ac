//! The PROV graph over everything stored and its lineage index.
//!
//! - [`ids`]: stable text ids of nodes (`task:42`, `alexnet.otrain:17`);
//! - [`graph`]: the index itself, compact node ids and typed adjacency in
//!   both directions; `offsets` packs its per-node offsets in ~2 bytes;
//! - [`derive`](mod@derive): which tables feed the graph and the edges each row stands
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
//! cost), then follows every commit, and compacts it once writes pause.

pub mod derive;
pub mod graph;
pub mod ids;
pub mod maintain;
mod offsets;
pub mod schema;
pub mod traverse;
pub mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use provdb_storage::{CommitObserver, Storage, TableId, WalOp};
use tracing::{debug, info};

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
    /// When the graph last changed, in ms since `opened`.
    last_change_ms: AtomicU64,
    opened: Instant,
}

/// The graph is compacted once no commit has changed it for this long
/// (see [`Graph::wants_idle_compaction`]), checked this often.
const IDLE_BEFORE_COMPACTION: Duration = Duration::from_secs(1);
const IDLE_CHECK: Duration = Duration::from_millis(500);

impl CommitObserver for Shared {
    fn on_commit(&self, _lsn: u64, ops: &[WalOp]) {
        if !Maintainer::relevant(ops) {
            return;
        }
        let mut m = self.maintainer.lock();
        let mut g = self.graph.write();
        m.apply(&mut g, ops);
        self.last_change_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The tables whose rows are nodes or edges (DLProv's task, execution
    /// and dataset tables, the prov tables).
    fn reads_rows_of(&self, table: TableId) -> bool {
        let mut m = self.maintainer.lock();
        let mut g = self.graph.write();
        m.roles.role(&mut g, table).is_some()
    }
}

impl Shared {
    /// Whether writes have paused and enough edges wait (cheap: an atomic
    /// and a brief read lock).
    fn idle_compaction_due(&self) -> bool {
        let idle_since = Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(idle_since) >= IDLE_BEFORE_COMPACTION
            && self.graph.read().wants_idle_compaction()
    }

    /// Compact the graph if it still wants it once the write lock is held.
    fn compact_if_idle(&self) {
        let started = Instant::now();
        let mut g = self.graph.write();
        if !g.wants_idle_compaction() {
            return;
        }
        let pending = g.pending_edges();
        g.compact();
        debug!(
            pending,
            edges = g.edge_count(),
            ms = started.elapsed().as_millis() as u64,
            "lineage index compacted while writes paused"
        );
    }

    /// Check for an idle compaction every [`IDLE_CHECK`] until the index
    /// is dropped (needs a tokio runtime; without one, writes alone
    /// compact).
    fn start_idle_compactions(shared: &Arc<Shared>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(shared);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(IDLE_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else {
                    break;
                };
                if shared.idle_compaction_due() {
                    // Compaction holds the write lock for up to a second on
                    // millions of edges: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || shared.compact_if_idle()).await;
                }
            }
        });
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
            last_change_ms: AtomicU64::new(0),
            opened: Instant::now(),
        });
        Shared::start_idle_compactions(&shared);
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
