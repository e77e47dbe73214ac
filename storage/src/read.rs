//! Reading a table snapshot row by row with the rows' addresses: what a
//! caller needs to change rows (delete by position, re-insert changed rows)
//! without going through a query engine.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::error::ArrowError;

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

    /// The live rows of `snap` that `mask` keeps, grouped by source, with
    /// positions. `mask` sees each stored batch (with the table's current
    /// columns) and answers row by row, so a caller looking for a few rows
    /// pays a vectorised comparison per batch instead of copying the table.
    pub async fn read_live_where(
        &self,
        snap: &TableSnapshot,
        mask: &RowMask<'_>,
    ) -> Result<Vec<SourceRows>> {
        let schema = snap.def.schema_ref();
        let mut out = Vec::new();
        for seg in &snap.segments {
            let batches = self.segment_batches(&seg.file.meta).await?;
            out.push(matching_rows(
                seg.file.meta.id,
                &batches,
                &schema,
                &seg.dv,
                mask,
            )?);
        }
        for mem in &snap.memtables {
            out.push(matching_rows(mem.id, &mem.batches, &schema, &mem.dv, mask)?);
        }
        out.retain(|s| s.batch.num_rows() > 0);
        Ok(out)
    }
}

/// A row filter for [`Storage::read_live_where`]: `true` keeps the row.
pub type RowMask<'a> =
    dyn Fn(&RecordBatch) -> std::result::Result<BooleanArray, ArrowError> + Send + Sync + 'a;

/// The rows of one source's batches that `mask` keeps and `dv` does not
/// delete; positions count rows across the source's batches in order.
fn matching_rows(
    source: SourceId,
    batches: &[RecordBatch],
    schema: &arrow::datatypes::SchemaRef,
    dv: &roaring::RoaringBitmap,
    mask: &RowMask<'_>,
) -> Result<SourceRows> {
    let mut positions = Vec::new();
    let mut parts = Vec::new();
    let mut offset = 0u32;
    for batch in batches {
        let batch = crate::maintenance::adapt_batch(batch, schema)?;
        let keep = mask(&batch)?;
        let mut local = Vec::new();
        for (i, kept) in keep.iter().enumerate() {
            let pos = offset + i as u32;
            if kept == Some(true) && !dv.contains(pos) {
                local.push(i as u32);
                positions.push(pos);
            }
        }
        if !local.is_empty() {
            parts.push(take_record_batch(&batch, &UInt32Array::from(local))?);
        }
        offset += batch.num_rows() as u32;
    }
    Ok(SourceRows {
        source,
        positions,
        batch: concat_batches(schema, &parts)?,
    })
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
