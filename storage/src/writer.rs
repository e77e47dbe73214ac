//! Group commit. One thread owns the WAL. It takes every commit request that
//! is waiting, validates each against the state (so two commits of one group
//! cannot both insert the same key), appends the accepted ones to the WAL,
//! fsyncs once for the whole group, applies them to memory, and only then
//! answers the callers. Acknowledged therefore means durable and visible.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::error::{Result, StorageError};
use crate::record::{Freeze, WalOp};
use crate::state::{GroupOverlay, State};
use crate::wal::WalWriter;

/// Most requests folded into one group (one fsync).
const MAX_GROUP: usize = 1024;

/// What a successful commit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    pub lsn: u64,
}

pub(crate) enum Request {
    Commit {
        ops: Vec<WalOp>,
        reply: oneshot::Sender<Result<CommitInfo>>,
    },
    /// Freeze every non-empty buffer; logged like a commit.
    Checkpoint {
        reply: oneshot::Sender<Result<(u64, Vec<Freeze>)>>,
    },
    /// Delete WAL files covered by a durable manifest.
    Truncate {
        through_lsn: u64,
        reply: oneshot::Sender<Result<usize>>,
    },
    Shutdown,
}

pub(crate) struct Writer {
    pub wal: WalWriter,
    pub state: Arc<RwLock<State>>,
    /// Set after an fsync failure: the log may not hold what memory holds, so
    /// no further commit is accepted (as PostgreSQL does on fsync failure).
    pub poisoned: Option<String>,
    /// Told of every commit once durable, before its caller is answered.
    pub observer: crate::observer::ObserverSlot,
}

impl Writer {
    pub fn run(mut self, rx: Receiver<Request>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            if self.process(group) {
                break;
            }
        }
        if let Err(e) = self.wal.sync() {
            error!(error = %e, "final WAL sync failed");
        }
    }

    /// Handle one group; returns true on shutdown.
    fn process(&mut self, group: Vec<Request>) -> bool {
        let mut commits = Vec::new();
        let mut shutdown = false;
        for req in group {
            match req {
                Request::Commit { ops, reply } => commits.push((ops, reply)),
                Request::Checkpoint { reply } => {
                    self.flush_commits(std::mem::take(&mut commits));
                    let _ = reply.send(self.checkpoint());
                }
                Request::Truncate { through_lsn, reply } => {
                    self.flush_commits(std::mem::take(&mut commits));
                    let _ = reply.send(self.wal.remove_through(through_lsn));
                }
                Request::Shutdown => shutdown = true,
            }
        }
        self.flush_commits(commits);
        shutdown
    }

    fn flush_commits(&mut self, commits: Vec<(Vec<WalOp>, oneshot::Sender<Result<CommitInfo>>)>) {
        if commits.is_empty() {
            return;
        }
        if let Some(reason) = &self.poisoned {
            for (_, reply) in commits {
                let _ = reply.send(Err(StorageError::Invalid(format!(
                    "writes are disabled: {reason}"
                ))));
            }
            return;
        }
        let accepted = self.validate_and_log(commits);
        if let Err(e) = self.wal.sync() {
            let msg = format!("WAL fsync failed: {e}; restart the server to recover from the log");
            error!("{msg}");
            self.poisoned = Some(msg.clone());
            for (_, _, reply) in accepted {
                let _ = reply.send(Err(StorageError::Invalid(msg.clone())));
            }
            return;
        }
        let mut state = self.state.write();
        let observer = self.observer.read().clone();
        for (lsn, ops, reply) in accepted {
            if let Some(obs) = &observer {
                obs.on_commit(lsn, &ops);
            }
            let result = state.apply_commit(lsn, ops);
            if let Err(e) = &result {
                error!(lsn, error = %e, "applying a logged commit failed");
            }
            let _ = reply.send(result.map(|_| CommitInfo { lsn }));
        }
    }

    /// Validate each commit of the group in order and append the valid ones.
    #[allow(clippy::type_complexity)]
    fn validate_and_log(
        &mut self,
        commits: Vec<(Vec<WalOp>, oneshot::Sender<Result<CommitInfo>>)>,
    ) -> Vec<(u64, Vec<WalOp>, oneshot::Sender<Result<CommitInfo>>)> {
        let state = self.state.read();
        let mut overlay = GroupOverlay::default();
        let mut accepted = Vec::with_capacity(commits.len());
        let count = commits.len();
        for (i, (ops, reply)) in commits.into_iter().enumerate() {
            if let Err(e) = state.validate(&ops, &mut overlay, i + 1 == count) {
                let _ = reply.send(Err(e));
                continue;
            }
            match self.wal.append(&ops) {
                Ok(lsn) => accepted.push((lsn, ops, reply)),
                Err(e) => {
                    warn!(error = %e, "WAL append failed");
                    let _ = reply.send(Err(e));
                }
            }
        }
        accepted
    }

    fn checkpoint(&mut self) -> Result<(u64, Vec<Freeze>)> {
        if let Some(reason) = &self.poisoned {
            return Err(StorageError::Invalid(format!(
                "writes are disabled: {reason}"
            )));
        }
        let freezes = self.state.write().plan_freezes();
        let op = WalOp::Checkpoint {
            freezes: freezes.clone(),
        };
        let lsn = self.wal.append(std::slice::from_ref(&op))?;
        self.wal.sync()?;
        self.wal.rotate()?;
        self.state.write().apply(lsn, op)?;
        Ok((lsn, freezes))
    }
}
