//! Staged segments: rows written to a Parquet segment before the commit
//! that makes them part of a table ([`WalOp::AttachSegment`]).
//!
//! A large atomic write, such as the import of a document with a million
//! metric points, streams its rows to the object store as it produces them
//! instead of holding them in memory until one commit logs them all; the
//! commit then logs only the segment's description, and the rows are
//! visible from that commit on, as any committed rows are. Until then a
//! staged file belongs to no table: a [`StagedSegment`] dropped before its
//! commit was tried queues its file for deletion, and a file left by a
//! crash (named by no manifest and no replayed commit) is deleted when
//! storage next opens.
//!
//! A staged segment stores its float columns as scaled integers when the
//! values of its first batch allow it ([`crate::scaled`]); a later batch
//! whose values do not fit goes to the next segment. [`StagedRows`] keeps
//! that bookkeeping, and a size limit per segment, for writers that stage
//! any number of rows (COPY, the import of metric points).
//!
//! Only tables without a primary key, whose rows the commit observer (the
//! lineage index) does not read, take staged segments: the key index and
//! the observer are kept from the rows a commit carries, which an attach
//! does not.

use arrow::array::RecordBatch;
use object_store::path::Path as ObjPath;
use tracing::debug;

use crate::error::{Result, StorageError};
use crate::maintenance::Garbage;
use crate::record::WalOp;
use crate::segment::{self, SegmentWriter};
use crate::state::check_batch;
use crate::storage::Storage;
use crate::table::{SourceId, TableDef, TableId};

/// A segment being written for a later commit. See the module docs.
pub struct StagedSegment {
    storage: Storage,
    def: TableDef,
    id: SourceId,
    path: ObjPath,
    /// `None` once finished.
    writer: Option<SegmentWriter>,
    /// Whether dropping this deletes the file: until [`StagedSegment::keep`].
    discard_on_drop: bool,
}

impl Storage {
    /// Start a staged segment of `table`, which must take them (no primary
    /// key; rows the commit observer does not read).
    pub fn stage_segment(&self, table: TableId) -> Result<StagedSegment> {
        let observed = self.rows_observed(table);
        let (def, id) = {
            let mut st = self.inner.state.write();
            let t = st.table(table)?;
            if let Some(why) = unstageable(&t.def, observed) {
                return Err(why);
            }
            let def = t.def.clone();
            (def, st.alloc_source())
        };
        let path = segment::segment_path(&self.inner.prefix, table, id);
        let writer = SegmentWriter::new(&self.inner.store, &path, &def.schema_ref());
        debug!(table = %def.qualified_name(), %path, "staging a segment");
        Ok(StagedSegment {
            storage: self.clone(),
            def,
            id,
            path,
            writer: Some(writer),
            discard_on_drop: true,
        })
    }
}

impl StagedSegment {
    /// Append rows, checked against the table's columns as an insert is.
    /// The first batch chooses how floats are stored; a later one whose
    /// floats do not fit that choice is not written (`false`).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<bool> {
        check_batch(&self.def, batch)?;
        let schema = self.def.schema_ref();
        let first = self.rows() == 0;
        let writer = self.writer_mut()?;
        if first {
            writer.choose_columns(&schema, batch);
        }
        writer.write_fitting(batch).await
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.writer.as_ref().map_or(0, SegmentWriter::rows)
    }

    /// Close the file, make it durable and return the op that attaches it.
    /// Commit that op to make the rows part of the table, then call
    /// [`StagedSegment::keep`]; dropping `self` instead deletes the file.
    pub async fn finish(&mut self) -> Result<WalOp> {
        let writer = self.writer.take().ok_or_else(finished)?;
        let segment = writer.finish(self.id).await?;
        self.storage.sync_file(&self.path).await?;
        Ok(WalOp::AttachSegment {
            table: self.def.id,
            segment,
        })
    }

    /// Leave the file to the commit of the attach op, once it was tried:
    /// committed, the file is the table's; failed, it may still be in the
    /// log, and the next open keeps or deletes it as the log says.
    pub fn keep(mut self) {
        self.discard_on_drop = false;
    }

    fn writer_mut(&mut self) -> Result<&mut SegmentWriter> {
        self.writer.as_mut().ok_or_else(finished)
    }

    /// Queue the file for the garbage collector (which tolerates a file
    /// that was never created).
    fn discard(&self) {
        debug!(path = %self.path, "discarding a staged segment");
        self.storage.inner.garbage.lock().push(Garbage {
            path: self.path.clone(),
            holder: None,
        });
    }
}

impl Drop for StagedSegment {
    fn drop(&mut self) {
        if self.discard_on_drop {
            self.discard();
        }
    }
}

/// Why rows of `def` cannot be staged, if they cannot: the key index and
/// the commit observer (when `observed`) are kept from the rows a commit
/// carries, which an attach op does not.
fn unstageable(def: &TableDef, observed: bool) -> Option<StorageError> {
    let why = if !def.primary_key.is_empty() {
        "it has a primary key"
    } else if observed {
        "the commit observer (the lineage index) reads its rows"
    } else {
        return None;
    };
    Some(StorageError::Invalid(format!(
        "rows of {} cannot be staged: {why}",
        def.qualified_name()
    )))
}

fn finished() -> StorageError {
    StorageError::Invalid("the staged segment is finished already".into())
}

/// Rows per staged segment: 16 Parquet row groups.
pub const SEGMENT_ROWS: u64 = 1 << 20;

/// Rows of one table staged for one commit, in as many segments as they
/// take: a segment is finished once it holds `segment_rows` rows, and a
/// batch that does not fit the open segment's float scales starts the next
/// one. [`StagedRows::finish`] gives the ops that attach them all; after
/// the commit was tried, [`StagedRows::keep`] leaves the files to it, and
/// dropping `self` before deletes them.
pub struct StagedRows {
    storage: Storage,
    table: TableId,
    segment_rows: u64,
    open: Option<StagedSegment>,
    finished: Vec<StagedSegment>,
    ops: Vec<WalOp>,
    rows: u64,
}

impl StagedRows {
    /// Stage rows of `table` (which must take staged segments, as
    /// [`Storage::stage_segment`] says).
    pub fn new(storage: &Storage, table: TableId, segment_rows: u64) -> Result<Self> {
        // Refuse a table that takes none now rather than at the first write.
        let def = storage
            .table(table)
            .ok_or_else(|| StorageError::NoSuchTable(table.to_string()))?;
        if let Some(why) = unstageable(&def, storage.rows_observed(table)) {
            return Err(why);
        }
        Ok(StagedRows {
            storage: storage.clone(),
            table,
            segment_rows: segment_rows.max(1),
            open: None,
            finished: Vec::new(),
            ops: Vec::new(),
            rows: 0,
        })
    }

    /// Append `batch` to the open segment, or to a new one.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let written = match &mut self.open {
            Some(open) => open.write(batch).await?,
            None => false,
        };
        if !written {
            self.finish_open().await?;
            let open = self.open.insert(self.storage.stage_segment(self.table)?);
            // A segment's first batch chooses its scales: it always fits.
            if !open.write(batch).await? {
                return Err(StorageError::Invalid(
                    "a staged segment refused its first batch".into(),
                ));
            }
        }
        self.rows += batch.num_rows() as u64;
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.rows() >= self.segment_rows)
        {
            self.finish_open().await?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether a segment is open (its rows not yet finished): a writer
    /// with a few rows left may rather log them than start a segment.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Finish the open segment and return the attach ops of all of them,
    /// in the order written.
    pub async fn finish(&mut self) -> Result<Vec<WalOp>> {
        self.finish_open().await?;
        Ok(std::mem::take(&mut self.ops))
    }

    /// Leave every file to the commit of the attach ops, once it was tried
    /// (see [`StagedSegment::keep`]).
    pub fn keep(self) {
        self.finished.into_iter().for_each(StagedSegment::keep);
    }

    async fn finish_open(&mut self) -> Result<()> {
        if let Some(mut open) = self.open.take() {
            let op = open.finish().await;
            // Finished or not, the file is deleted if `self` is dropped.
            self.finished.push(open);
            self.ops.push(op?);
        }
        Ok(())
    }
}
