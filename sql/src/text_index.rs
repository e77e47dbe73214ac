//! Equality lookups on text columns of cached batches, through an index
//! kept per array.
//!
//! DLProv's point questions name one model by its `model_dir`:
//! `otrainedmodel.model_dir = $1` compares ten thousand strings of one
//! length and a long common prefix at every execution (a sixth of the
//! server's time for Q7). The batches a scan reads from the segment cache
//! and the table buffers are immutable and come back query after query, so
//! a hash index of each such text array (value hash -> row positions) is
//! built once, the second time the array is seen ([`crate::array_memo`]),
//! and an equality then costs one hash and the comparisons of the rows
//! that share it. The scan yields only those rows; the filter above it
//! still checks them (the scan's filters are inexact).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator;

use crate::array_memo::ArrayMemo;
use crate::zone_map::Bound;

/// Arrays shorter than this are compared row by row.
pub const INDEX_MIN_ROWS: usize = 1024;

/// Most bytes the indexes and the arrays they pin hold.
pub const INDEX_BYTES: usize = 64 << 20;

/// What an index holds per row, about (a position, a share of a hash
/// table entry and of its vector).
const BYTES_PER_ROW: usize = 48;

static INDEXES: ArrayMemo<Arc<TextIndex>> = ArrayMemo::new(INDEX_BYTES);

/// Row positions of a text array by value hash.
pub struct TextIndex {
    hasher: RandomState,
    rows: HashMap<u64, Vec<u32>>,
}

impl TextIndex {
    fn build(array: &ArrayRef) -> Option<(Self, usize)> {
        let text = array.as_string_opt::<i32>()?;
        let hasher = RandomState::new();
        let mut rows: HashMap<u64, Vec<u32>> = HashMap::new();
        for (i, value) in text.iter().enumerate() {
            if let Some(v) = value {
                rows.entry(hasher.hash_one(v)).or_default().push(i as u32);
            }
        }
        let bytes = text.len() * BYTES_PER_ROW;
        Some((TextIndex { hasher, rows }, bytes))
    }

    /// Positions, ascending, of the rows of `array` (the array this index
    /// was built from) equal to `value`.
    fn lookup(&self, array: &ArrayRef, value: &str) -> Vec<u32> {
        let (Some(text), Some(candidates)) = (
            array.as_string_opt::<i32>(),
            self.rows.get(&self.hasher.hash_one(value)),
        ) else {
            return Vec::new();
        };
        candidates
            .iter()
            .copied()
            .filter(|&i| text.is_valid(i as usize) && text.value(i as usize) == value)
            .collect()
    }
}

/// The kept index of `array`: looked up, or built when the array has been
/// seen before; `None` the first time (most arrays a query makes are never
/// seen again).
fn index_of(array: &ArrayRef) -> Option<Arc<TextIndex>> {
    if let Some(index) = INDEXES.get(array) {
        return Some(index);
    }
    // An array whose index could not be kept would be indexed again at
    // every query: a quarter of the budget at most.
    let estimate = array.get_array_memory_size() + array.len() * BYTES_PER_ROW;
    if estimate > INDEX_BYTES / 4 || !INDEXES.seen_before(array) {
        return None;
    }
    let (index, bytes) = TextIndex::build(array)?;
    let index = Arc::new(index);
    INDEXES.insert(array, Arc::clone(&index), bytes);
    Some(index)
}

/// The positions of the rows of `batch` that an equality of `bounds` on a
/// text column selects, found through that column's index; `None` when no
/// such equality can be answered so (every row is then a candidate).
pub fn eq_rows(batch: &RecordBatch, bounds: &[Bound]) -> Option<Vec<u32>> {
    bounds.iter().find_map(|b| {
        let (column, Operator::Eq, ScalarValue::Utf8(Some(value))) = b.parts() else {
            return None;
        };
        let array = batch.columns().get(column)?;
        if array.len() < INDEX_MIN_ROWS || array.data_type() != &DataType::Utf8 {
            return None;
        }
        Some(index_of(array)?.lookup(array, value))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};

    use super::*;
    use crate::zone_map;

    fn eq_bound(column: usize, value: &str) -> Vec<Bound> {
        let expr: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("s", column)),
            Operator::Eq,
            Arc::new(Literal::new(ScalarValue::Utf8(Some(value.to_string())))),
        ));
        zone_map::bounds(&expr)
    }

    #[test]
    fn equality_on_a_text_array_seen_twice_is_answered_by_its_index() {
        let values: Vec<Option<String>> = (0..5000)
            .map(|i| (i % 11 != 0).then(|| format!("models/run-{:05}", i % 700)))
            .collect();
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values))]).expect("batch");
        let bounds = eq_bound(0, "models/run-00042");
        assert_eq!(eq_rows(&batch, &bounds), None, "first sight: no index yet");
        let rows = eq_rows(&batch, &bounds).expect("second sight: indexed");
        let expected: Vec<u32> = (0..5000u32)
            .filter(|i| i % 700 == 42 && i % 11 != 0)
            .collect();
        assert_eq!(rows, expected);
        assert_eq!(
            eq_rows(&batch, &eq_bound(0, "models/run-99999")),
            Some(Vec::new())
        );
        let small = batch.slice(0, 100);
        assert_eq!(
            eq_rows(&small, &bounds),
            None,
            "short arrays are not indexed"
        );
    }
}
