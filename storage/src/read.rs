//! Reading a table snapshot row by row with the rows' addresses: what a
//! caller needs to change rows (delete by position, re-insert changed rows)
//! without going through a query engine.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};

use crate::error::Result;
use crate::maintenance::adapt_batches;
use crate::storage::{Storage, TableSnapshot};
use crate::table::SourceId;

/// The live rows of one source (buffer or segment) and their positions.
#[derive(Debug, Clone)]
pub struct SourceRows {
    pub source: SourceId,
    /// Position of each row of `batch` within the source.
    pub positions: Vec<u32>,
    /// The rows, with the table's current columns.
    pub batch: RecordBatch,
}

impl Storage {
    /// Every live row of `snap`, grouped by source, with positions. Segments
    /// are read from the object store; buffers are copied from memory.
    pub async fn read_live(&self, snap: &TableSnapshot) -> Result<Vec<SourceRows>> {
        let schema = snap.def.schema_ref();
        let mut out = Vec::new();
        for seg in &snap.segments {
            let batches = self.segment_batches(&seg.file.meta).await?;
            let all = concat_batches(&schema, &adapt_batches(&batches, &schema)?)?;
            out.push(live_rows(seg.file.meta.id, all, &seg.dv)?);
        }
        for mem in &snap.memtables {
            let all = concat_batches(&schema, &adapt_batches(&mem.batches, &schema)?)?;
            out.push(live_rows(mem.id, all, &mem.dv)?);
        }
        out.retain(|s| s.batch.num_rows() > 0);
        Ok(out)
    }
}

fn live_rows(
    source: SourceId,
    all: RecordBatch,
    dv: &Arc<roaring::RoaringBitmap>,
) -> Result<SourceRows> {
    let positions: Vec<u32> = (0..all.num_rows() as u32)
        .filter(|p| !dv.contains(*p))
        .collect();
    let batch = if positions.len() == all.num_rows() {
        all
    } else {
        take_record_batch(&all, &UInt32Array::from(positions.clone()))?
    };
    Ok(SourceRows {
        source,
        positions,
        batch,
    })
}
