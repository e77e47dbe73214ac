//! Reading a table snapshot row by row with the rows' addresses: what a
//! caller needs to change rows (delete by position, re-insert changed rows)
//! without going through a query engine.

use arrow::array::{Array, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use roaring::RoaringBitmap;

use crate::error::Result;
use crate::maintenance::adapt_batch;
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
    /// Every live row of `snap`, grouped by source, with positions.
    /// Segments come through the segment cache; buffers from memory.
    pub async fn read_live(&self, snap: &TableSnapshot) -> Result<Vec<SourceRows>> {
        self.read_sources(snap, None).await
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
        self.read_sources(snap, Some(mask)).await
    }

    async fn read_sources(
        &self,
        snap: &TableSnapshot,
        mask: Option<&RowMask<'_>>,
    ) -> Result<Vec<SourceRows>> {
        let schema = snap.def.schema_ref();
        let mut out = Vec::new();
        for seg in &snap.segments {
            let batches = self.segment_batches(&seg.file.meta).await?;
            out.push(live_rows(
                seg.file.meta.id,
                &batches,
                &schema,
                &seg.dv,
                mask,
            )?);
        }
        for mem in &snap.memtables {
            out.push(live_rows(mem.id, &mem.batches, &schema, &mem.dv, mask)?);
        }
        out.retain(|s| s.batch.num_rows() > 0);
        Ok(out)
    }
}

/// A row filter for [`Storage::read_live_where`]: `true` keeps the row.
pub type RowMask<'a> =
    dyn Fn(&RecordBatch) -> std::result::Result<BooleanArray, ArrowError> + Send + Sync + 'a;

/// The rows of one source's batches that `mask` keeps (all, without one)
/// and `dv` does not delete; positions count rows across the source's
/// batches in order.
fn live_rows(
    source: SourceId,
    batches: &[RecordBatch],
    schema: &SchemaRef,
    dv: &RoaringBitmap,
    mask: Option<&RowMask<'_>>,
) -> Result<SourceRows> {
    let mut positions = Vec::new();
    let mut parts = Vec::new();
    let mut offset = 0u32;
    for batch in batches {
        let batch = adapt_batch(batch, schema)?;
        let keep = mask.map(|m| m(&batch)).transpose()?;
        let n = batch.num_rows() as u32;
        let local: Vec<u32> = (0..n)
            .filter(|i| {
                keep.as_ref()
                    .is_none_or(|k| k.is_valid(*i as usize) && k.value(*i as usize))
            })
            .filter(|i| !dv.contains(offset + i))
            .collect();
        positions.extend(local.iter().map(|i| offset + i));
        if local.len() == batch.num_rows() {
            parts.push(batch);
        } else if !local.is_empty() {
            parts.push(take_record_batch(&batch, &UInt32Array::from(local))?);
        }
        offset += n;
    }
    Ok(SourceRows {
        source,
        positions,
        batch: concat_batches(schema, &parts)?,
    })
}
