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
/// Merging works like a binary counter (a batch merges into the one before
/// it while that one is no bigger), so a run of one-row appends copies each
/// row about log2(COALESCE_ROWS) times, not COALESCE_ROWS / 2 times, and
/// the buffer's tail holds at most that many small batches.
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
        self.batches.push(batch);
        while let [.., older, newer] = self.batches.as_slice() {
            let fits = older.num_rows() <= newer.num_rows()
                && older.num_rows() + newer.num_rows() <= COALESCE_ROWS;
            if !fits || older.schema() != newer.schema() {
                break;
            }
            let merged = concat_batches(&older.schema(), [older, newer])?;
            self.bytes -= older.get_array_memory_size() + newer.get_array_memory_size();
            self.bytes += merged.get_array_memory_size();
            self.batches.pop();
            if let Some(last) = self.batches.last_mut() {
                *last = merged;
            }
        }
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
    fn one_row_appends_merge_like_a_binary_counter() {
        let mut m = Memtable::new(SourceId(1));
        for i in 0..(COALESCE_ROWS as i64 + 7) {
            assert_eq!(m.append(batch(&[i])).unwrap(), i as u32);
        }
        let sizes: Vec<usize> = m.batches().iter().map(|b| b.num_rows()).collect();
        // 8192 + 7 rows: one full batch, then 4 + 2 + 1
        assert_eq!(sizes, vec![COALESCE_ROWS, 4, 2, 1]);
        let values: Vec<i64> = m
            .batches()
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                a.values().to_vec()
            })
            .collect();
        assert_eq!(values, (0..COALESCE_ROWS as i64 + 7).collect::<Vec<_>>());
        let expected: usize = m.batches().iter().map(|b| b.get_array_memory_size()).sum();
        assert_eq!(m.bytes(), expected);
    }

    #[test]
    fn small_batches_coalesce_and_positions_are_stable() {
        let mut m = Memtable::new(SourceId(1));
        assert_eq!(m.append(batch(&[1, 2])).unwrap(), 0);
        assert_eq!(m.append(batch(&[3])).unwrap(), 2);
        assert_eq!(m.batches().len(), 2, "a smaller batch waits for its equal");
        assert_eq!(m.append(batch(&[4])).unwrap(), 3);
        assert_eq!(m.batches().len(), 1, "1 + 1 then 2 + 2 merged");
        assert_eq!(m.rows(), 4);
        m.delete(&[1u32].into_iter().collect());
        assert_eq!(m.live_rows(), 3);
    }
}
