//! Group commit. The WAL belongs to one `Writer`, kept in a
//! `WriterSlot` behind a mutex. A thread takes every commit request that
//! is waiting, validates each against the state (so two commits of one group
//! cannot both insert the same key), appends the accepted ones to the WAL,
//! fsyncs once for the whole group, applies them to memory, and only then
//! answers the callers. Acknowledged therefore means durable and visible.
//!
//! A small commit that finds the writer idle and nothing queued does the
//! same work itself, on its own thread (`WriterSlot::try_commit_inline`):
//! a lone committer then waits for its fdatasync and nothing else, instead of
//! waking the writer thread and being woken back (two thread hand-offs,
//! which cost about as much as the fdatasync on this kind of machine). When
//! commits overlap, the later ones find the writer busy and queue for the
//! thread, which folds them into one group as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::error::{Result, StorageError};
use crate::record::{Freeze, WalOp};
use crate::state::{GroupOverlay, State};
use crate::wal::WalWriter;

/// Most requests folded into one group (one fsync).
const MAX_GROUP: usize = 1024;

/// Largest commit (estimated encoded bytes) its caller writes itself; larger
/// ones (COPY, bulk inserts) go to the writer thread, so that the caller's
/// thread, often an async worker, is never held for long.
const INLINE_MAX_BYTES: usize = 64 << 10;

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

/// The writer, shared by its thread and by committers that find it idle.
pub(crate) struct WriterSlot {
    /// `None` once the thread has stopped (the WAL file is closed).
    writer: Mutex<Option<Writer>>,
    /// Requests sent to the thread and not yet handled. A committer does not
    /// write inline while any are waiting: it joins their group instead.
    queued: AtomicUsize,
    /// Commits written by their caller / handed to the thread, since open.
    inline_commits: AtomicU64,
    queued_commits: AtomicU64,
}

impl WriterSlot {
    pub fn new(writer: Writer) -> Arc<Self> {
        Arc::new(WriterSlot {
            writer: Mutex::new(Some(writer)),
            queued: AtomicUsize::new(0),
            inline_commits: AtomicU64::new(0),
            queued_commits: AtomicU64::new(0),
        })
    }

    /// Commits written by their caller and commits grouped by the thread.
    pub fn commit_counts(&self) -> (u64, u64) {
        (
            self.inline_commits.load(Ordering::Relaxed),
            self.queued_commits.load(Ordering::Relaxed),
        )
    }

    /// Count a request about to be sent to the thread.
    pub fn note_queued(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// Undo [`Self::note_queued`] for a request that could not be sent.
    pub fn note_unqueued(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Commit `ops` on the calling thread if the commit is small, nothing is
    /// queued for the writer thread and the writer is idle (one `try_lock`;
    /// this never waits). Hands `ops` back when it did not commit them.
    pub fn try_commit_inline(
        &self,
        ops: Vec<WalOp>,
    ) -> std::result::Result<Result<CommitInfo>, Vec<WalOp>> {
        let bytes: usize = ops.iter().map(WalOp::approx_len).sum();
        if bytes > INLINE_MAX_BYTES || self.queued.load(Ordering::Acquire) != 0 {
            return Err(ops);
        }
        let Some(mut guard) = self.writer.try_lock() else {
            return Err(ops);
        };
        let Some(writer) = guard.as_mut() else {
            return Ok(Err(StorageError::Closed));
        };
        if !writer.wal.has_room(bytes) {
            return Err(ops);
        }
        let (reply, mut rx) = oneshot::channel();
        writer.flush_commits(vec![(ops, reply)]);
        self.inline_commits.fetch_add(1, Ordering::Relaxed);
        Ok(rx.try_recv().unwrap_or(Err(StorageError::Closed)))
    }

    /// The writer thread: handle queued requests in groups until shutdown
    /// or until every sender is gone, then sync and close the log.
    pub fn run(&self, rx: Receiver<Request>) {
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
            let count = group.len();
            let commits = group
                .iter()
                .filter(|r| matches!(r, Request::Commit { .. }))
                .count();
            self.queued_commits
                .fetch_add(commits as u64, Ordering::Relaxed);
            let shutdown = match self.writer.lock().as_mut() {
                Some(writer) => writer.process(group),
                None => true,
            };
            self.queued.fetch_sub(count, Ordering::AcqRel);
            if shutdown {
                break;
            }
        }
        // Dropping the writer closes the log (cutting its zeros).
        if let Some(mut writer) = self.writer.lock().take()
            && let Err(e) = writer.wal.sync()
        {
            error!(error = %e, "final WAL sync failed");
        }
    }
}

impl Writer {
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
