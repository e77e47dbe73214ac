//! Streaming a large `COPY ... FROM STDIN` to Parquet while it is parsed.
//!
//! A COPY holds its parsed rows until CopyDone, and its commit logs them
//! all: a million rows are a hundred megabytes in memory, then as many in
//! the write-ahead log, then once more when the buffer is flushed to a
//! segment. A COPY that may stage ([`CopyStaging::Ready`]: into a table
//! that takes staged segments, every column copied, outside a transaction
//! block) and has parsed a full batch instead hands its batches to a
//! [`Stager`]: a thread that writes them to staged segments
//! ([`StagedRows`]) on the other core while the connection parses the
//! next ones. The commit logs only the segments' attach ops, so the rows
//! become visible all at once, as any committed rows do, and are already
//! in Parquet. A COPY that fails or whose client goes away drops its
//! stager, and the staged files are deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use provdb_storage::{StagedRows, Storage, TableDef, WalOp, staged::SEGMENT_ROWS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use datafusion::arrow::array::RecordBatch;

use crate::copy::CopyIn;
use crate::error::{SqlError, SqlResult, from_datafusion, from_storage};

/// Parsed batches waiting for the stager; the connection waits when they
/// are this many (each is a few megabytes).
const QUEUE_BATCHES: usize = 2;

/// Whether, and how, a COPY streams its rows to staged segments.
#[derive(Default)]
pub(crate) enum CopyStaging {
    /// It may not: the rows are committed as an insert.
    #[default]
    Off,
    /// It may, once it has parsed a full batch, unless the lineage index
    /// reads the table's rows.
    Ready { storage: Storage, def: TableDef },
    /// It does.
    On(Stager),
}

/// The thread writing one COPY's batches to staged segments.
pub(crate) struct Stager {
    tx: Option<mpsc::Sender<RecordBatch>>,
    task: Option<JoinHandle<SqlResult<StagedRows>>>,
    /// Set when the COPY is abandoned: queued batches are not written.
    abandoned: Arc<AtomicBool>,
}

impl std::fmt::Debug for CopyStaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyStaging::Off => "Off",
            CopyStaging::Ready { .. } => "Ready",
            CopyStaging::On(_) => "On",
        })
    }
}

impl CopyIn {
    /// Consume one CopyData payload, then hand the batches parsed so far
    /// to the stager, started at the first full batch of a COPY that may
    /// stage. What [`CopyIn::push`] does for the server.
    pub async fn feed(&mut self, data: &[u8]) -> SqlResult<()> {
        self.push(data)?;
        if self.state.batches.is_empty() {
            return Ok(());
        }
        if let CopyStaging::Ready { storage, def } = &self.staging {
            // The lineage index derives its graph from the rows a commit
            // logs: the rows of a table it reads are not staged.
            self.staging = if storage.rows_observed(def.id) {
                CopyStaging::Off
            } else {
                CopyStaging::On(Stager::start(storage, def.clone())?)
            };
        }
        if let CopyStaging::On(stager) = &mut self.staging {
            for batch in std::mem::take(&mut self.state.batches) {
                stager.send(batch).await?;
            }
        }
        Ok(())
    }
}

impl Stager {
    /// Start writing rows of `def` (a table without a primary key).
    pub(crate) fn start(storage: &Storage, def: TableDef) -> SqlResult<Self> {
        let rows = StagedRows::new(storage, def.id, SEGMENT_ROWS).map_err(from_storage)?;
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let abandoned = Arc::new(AtomicBool::new(false));
        // A thread of its own, not a task: a task spawned from the
        // connection's task tends to run on the same runtime worker, taking
        // turns with the parsing instead of running beside it.
        let runtime = tokio::runtime::Handle::current();
        let flag = Arc::clone(&abandoned);
        let task =
            tokio::task::spawn_blocking(move || runtime.block_on(write_all(rows, def, rx, flag)));
        Ok(Stager {
            tx: Some(tx),
            task: Some(task),
            abandoned,
        })
    }

    /// Queue `batch` (with the copied columns' schema); waits while the
    /// queue is full. A write that failed is reported here.
    pub(crate) async fn send(&mut self, batch: RecordBatch) -> SqlResult<()> {
        let Some(tx) = &self.tx else {
            return Err(SqlError::internal("the COPY stager is finished"));
        };
        if tx.send(batch).await.is_ok() {
            return Ok(());
        }
        // The task stopped taking batches: it failed.
        Err(match self.join().await {
            Err(e) => e,
            Ok(_) => SqlError::internal("the COPY stager stopped early"),
        })
    }

    /// Wait for every queued batch to be written, finish the last segment
    /// and return the ops that attach them all, with the files (to
    /// [`StagedRows::keep`] once their commit was tried).
    pub(crate) async fn finish(mut self) -> SqlResult<(Vec<WalOp>, StagedRows)> {
        let mut rows = self.join().await?;
        let ops = rows.finish().await.map_err(from_storage)?;
        Ok((ops, rows))
    }

    /// Close the queue and wait for the thread's result.
    async fn join(&mut self) -> SqlResult<StagedRows> {
        self.tx = None;
        let task = self
            .task
            .take()
            .ok_or_else(|| SqlError::internal("the COPY stager is finished"))?;
        task.await
            .map_err(|e| SqlError::internal(format!("the COPY stager failed: {e}")))?
    }
}

impl Drop for Stager {
    /// An abandoned COPY stops its thread after the batch it is writing;
    /// dropping the staged rows deletes their files.
    fn drop(&mut self) {
        if self.task.is_some() {
            self.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

/// The stager's thread: conform each batch to the table as an insert does,
/// and write it.
async fn write_all(
    mut rows: StagedRows,
    def: TableDef,
    mut rx: mpsc::Receiver<RecordBatch>,
    abandoned: Arc<AtomicBool>,
) -> SqlResult<StagedRows> {
    while let Some(batch) = rx.recv().await {
        if abandoned.load(Ordering::Relaxed) {
            break;
        }
        let batch = crate::table::conform(&def, &batch).map_err(from_datafusion)?;
        rows.write(&batch).await.map_err(from_storage)?;
    }
    Ok(rows)
}
