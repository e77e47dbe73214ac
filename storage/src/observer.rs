//! Commit observers: code above storage (the lineage index) that must see
//! every acknowledged change, in commit order, before the writer answers.
//!
//! The WAL writer calls [`CommitObserver::on_commit`] once per commit, after
//! the commit is durable and while it holds the state lock that makes the
//! commit visible, so anything the observer maintains is current the moment
//! the client is told the commit succeeded. Observers must be quick and must
//! not call back into [`crate::Storage`] (the writer thread would deadlock).
//! Commits replayed from the WAL at open are not observed: an observer builds
//! its initial state from the tables after open, then registers.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::record::WalOp;
use crate::table::TableId;

/// Sees every commit after it is durable.
pub trait CommitObserver: Send + Sync {
    fn on_commit(&self, lsn: u64, ops: &[WalOp]);

    /// Whether the observer reads the rows commits insert into `table`.
    /// Such rows are never staged ([`crate::staged`]): an attach op carries
    /// a file's description, not its rows. Called outside commits.
    fn reads_rows_of(&self, _table: TableId) -> bool {
        true
    }
}

/// The observer slot shared by the storage handle and the writer thread.
pub(crate) type ObserverSlot = Arc<RwLock<Option<Arc<dyn CommitObserver>>>>;
