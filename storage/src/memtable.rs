//! The in-memory Arrow buffer of a table: rows acknowledged but not yet in a
//! Parquet segment. Append-only; rows are addressed by their position, which
//! stays the same when the buffer is frozen and flushed to a segment.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use roaring::RoaringBitmap;

use crate::error::Result;
use crate::table::SourceId;

/// Small appended batches are merged until a batch reaches this many rows, so
/// single-row INSERTs do not leave millions of one-row batches to scan.
const COALESCE_ROWS: usize = 8192;

/// An in-memory source of rows.
#[derive(Debug, Clone)]
pub struct Memtable {
    pub id: SourceId,
    batches: Vec<RecordBatch>,
    rows: u64,
    bytes: usize,
    /// Deleted positions.
    pub dv: Arc<RoaringBitmap>,
}

impl Memtable {
    pub fn new(id: SourceId) -> Self {
        Memtable {
            id,
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            dv: Arc::new(RoaringBitmap::new()),
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Live (not deleted) rows.
    pub fn live_rows(&self) -> u64 {
        self.rows - self.dv.len()
    }

    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Append rows; returns the position of the first appended row.
    pub fn append(&mut self, batch: RecordBatch) -> Result<u32> {
        let first = self.rows as u32;
        let n = batch.num_rows();
        if n == 0 {
            return Ok(first);
        }
        self.rows += n as u64;
        self.bytes += batch.get_array_memory_size();
        if let Some(last) = self.batches.last_mut() {
            let same_schema = last.schema() == batch.schema();
            if same_schema && last.num_rows() + n <= COALESCE_ROWS {
                let merged = concat_batches(&last.schema(), [&*last, &batch])?;
                self.bytes -= last.get_array_memory_size() + batch.get_array_memory_size();
                self.bytes += merged.get_array_memory_size();
                *last = merged;
                return Ok(first);
            }
        }
        self.batches.push(batch);
        Ok(first)
    }

    /// Mark positions deleted.
    pub fn delete(&mut self, positions: &RoaringBitmap) {
        Arc::make_mut(&mut self.dv).extend(positions.iter());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(vals: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vals.to_vec()))]).unwrap()
    }

    #[test]
    fn small_batches_coalesce_and_positions_are_stable() {
        let mut m = Memtable::new(SourceId(1));
        assert_eq!(m.append(batch(&[1, 2])).unwrap(), 0);
        assert_eq!(m.append(batch(&[3])).unwrap(), 2);
        assert_eq!(m.batches().len(), 1);
        assert_eq!(m.rows(), 3);
        m.delete(&[1u32].into_iter().collect());
        assert_eq!(m.live_rows(), 2);
    }
}
