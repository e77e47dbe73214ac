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
//! Only tables without a primary key take staged segments: the key index
//! is kept from the rows a commit carries, which an attach does not.

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
    /// Start a staged segment of `table`, which must have no primary key.
    pub fn stage_segment(&self, table: TableId) -> Result<StagedSegment> {
        let (def, id) = {
            let mut st = self.inner.state.write();
            let t = st.table(table)?;
            if t.pk.is_some() {
                return Err(StorageError::Invalid(format!(
                    "rows of {} cannot be staged: it has a primary key",
                    t.def.qualified_name()
                )));
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
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        check_batch(&self.def, batch)?;
        self.writer_mut()?.write(batch).await
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

fn finished() -> StorageError {
    StorageError::Invalid("the staged segment is finished already".into())
}
