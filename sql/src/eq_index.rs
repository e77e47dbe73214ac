//! Equality lookups on text and integer columns of cached batches, through
//! an index kept per array.
//!
//! DLProv's point questions name one model by its `model_dir`:
//! `otrainedmodel.model_dir = $1` compared ten thousand strings of one
//! length and a long common prefix at every execution (a sixth of the
//! server's time for Q7), and a join handing one task id to its probe scan
//! (`key_join`) compared every task id of the batches its range
//! kept. The batches a scan reads from the segment cache and the table
//! buffers are immutable and come back query after query, so a hash index
//! of each such array (value hash -> row positions) is built once, the
//! second time the array is seen ([`crate::array_memo`]), and an equality
//! then costs one hash and the comparisons of the rows that share it. The
//! scan yields only those rows; the filter or join above it still checks
//! them (the scan's filters are inexact).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type};
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

static INDEXES: ArrayMemo<Arc<EqIndex>> = ArrayMemo::new(INDEX_BYTES);

/// A value the index can look up: text, or an integer of 32 or 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key<'a> {
    Text(&'a str),
    Int(i64),
}

impl<'a> Key<'a> {
    fn of_scalar(value: &'a ScalarValue) -> Option<Self> {
        match value {
            ScalarValue::Utf8(Some(s)) => Some(Key::Text(s)),
            ScalarValue::Int32(Some(v)) => Some(Key::Int(i64::from(*v))),
            ScalarValue::Int64(Some(v)) => Some(Key::Int(*v)),
            _ => None,
        }
    }

    /// Whether a key of this kind can be compared with `t`'s values.
    fn fits(&self, t: &DataType) -> bool {
        match self {
            Key::Text(_) => t == &DataType::Utf8,
            Key::Int(_) => matches!(t, DataType::Int32 | DataType::Int64),
        }
    }

    fn hash(&self, hasher: &RandomState) -> u64 {
        match self {
            Key::Text(s) => hasher.hash_one(s),
            Key::Int(v) => hasher.hash_one(v),
        }
    }
}

/// An indexable array (text, or integers of 32 or 64 bits), downcast once.
#[derive(Clone, Copy)]
enum Values<'a> {
    Text(&'a StringArray),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
}

impl<'a> Values<'a> {
    fn of(array: &'a ArrayRef) -> Option<Self> {
        match array.data_type() {
            DataType::Utf8 => Some(Values::Text(array.as_string::<i32>())),
            DataType::Int32 => Some(Values::Int32(array.as_primitive::<Int32Type>())),
            DataType::Int64 => Some(Values::Int64(array.as_primitive::<Int64Type>())),
            _ => None,
        }
    }

    /// The key at row `i`, `None` for NULL.
    fn key(self, i: usize) -> Option<Key<'a>> {
        match self {
            Values::Text(a) => a.is_valid(i).then(|| Key::Text(a.value(i))),
            Values::Int32(a) => a.is_valid(i).then(|| Key::Int(i64::from(a.value(i)))),
            Values::Int64(a) => a.is_valid(i).then(|| Key::Int(a.value(i))),
        }
    }
}

/// Row positions of an array by value hash.
pub struct EqIndex {
    hasher: RandomState,
    rows: HashMap<u64, Vec<u32>>,
}

impl EqIndex {
    fn build(array: &ArrayRef) -> Option<(Self, usize)> {
        let values = Values::of(array)?;
        let hasher = RandomState::new();
        let mut rows: HashMap<u64, Vec<u32>> = HashMap::new();
        for i in 0..array.len() {
            if let Some(key) = values.key(i) {
                rows.entry(key.hash(&hasher)).or_default().push(i as u32);
            }
        }
        let bytes = array.len() * BYTES_PER_ROW;
        Some((EqIndex { hasher, rows }, bytes))
    }

    /// Append to `out` the positions, ascending, of the rows of `values`
    /// (the array this index was built from) equal to `key`.
    fn lookup(&self, values: Values<'_>, key: Key<'_>, out: &mut Vec<u32>) {
        if let Some(candidates) = self.rows.get(&key.hash(&self.hasher)) {
            out.extend(
                candidates
                    .iter()
                    .filter(|&&i| values.key(i as usize) == Some(key)),
            );
        }
    }
}

/// The kept index of `array`: looked up, or built when the array has been
/// seen before; `None` the first time (most arrays a query makes are never
/// seen again).
fn index_of(array: &ArrayRef) -> Option<Arc<EqIndex>> {
    if let Some(index) = INDEXES.get(array) {
        return Some(index);
    }
    // An array whose index could not be kept would be indexed again at
    // every query: a quarter of the budget at most.
    let estimate = array.get_array_memory_size() + array.len() * BYTES_PER_ROW;
    if estimate > INDEX_BYTES / 4 || !INDEXES.seen_before(array) {
        return None;
    }
    let (index, bytes) = EqIndex::build(array)?;
    let index = Arc::new(index);
    INDEXES.insert(array, Arc::clone(&index), bytes);
    Some(index)
}

/// The positions of the rows of `batch` that an equality of `bounds` on a
/// text or integer column selects, found through that column's index;
/// `None` when no such equality can be answered so (every row is then a
/// candidate).
pub fn eq_rows(batch: &RecordBatch, bounds: &[Bound]) -> Option<Vec<u32>> {
    bounds.iter().find_map(|b| {
        let (column, Operator::Eq, value) = b.parts() else {
            return None;
        };
        rows_in(batch, column, std::slice::from_ref(value))
    })
}

/// The positions, ascending, of the rows of `batch` whose `column` equals
/// one of `values`, found through the column's index, or row by row in a
/// short array (the tail of a table's buffer, where a live run's newest
/// rows are); `None` when neither can answer (an array seen for the first
/// time, a value of another kind than the column's).
pub fn rows_in(batch: &RecordBatch, column: usize, values: &[ScalarValue]) -> Option<Vec<u32>> {
    let array = batch.columns().get(column)?;
    let keys = values
        .iter()
        .map(|v| Key::of_scalar(v).filter(|k| k.fits(array.data_type())))
        .collect::<Option<Vec<Key<'_>>>>()?;
    if array.len() < INDEX_MIN_ROWS {
        return Some(scan_rows(Values::of(array)?, array.len(), &keys));
    }
    let index = index_of(array)?;
    let values = Values::of(array)?;
    let mut rows: Vec<u32> = Vec::new();
    for &key in &keys {
        index.lookup(values, key, &mut rows);
    }
    if keys.len() > 1 {
        rows = in_position_order(rows, array.len());
    }
    Some(rows)
}

/// Up to this many keys, [`scan_rows`] compares each row with every key
/// rather than hashing it: a point question's one or few keys cost a
/// comparison each, less than hashing the row's value.
const FEW_KEYS: usize = 8;

/// The positions of the first `len` rows of `values` equal to one of `keys`.
fn scan_rows(values: Values<'_>, len: usize, keys: &[Key<'_>]) -> Vec<u32> {
    let rows = 0..len as u32;
    if keys.len() <= FEW_KEYS {
        return rows
            .filter(|&i| values.key(i as usize).is_some_and(|k| keys.contains(&k)))
            .collect();
    }
    let keys: HashSet<Key<'_>> = keys.iter().copied().collect();
    rows.filter(|&i| values.key(i as usize).is_some_and(|k| keys.contains(&k)))
        .collect()
}

/// `rows` (positions below `len`, each key's ascending) ascending and
/// without repeats: through a bitmap of the array's rows, which costs
/// less than sorting once a few hundred rows are found (a join's hundred
/// keys find thousands of rows in a batch of a million-row table).
fn in_position_order(mut rows: Vec<u32>, len: usize) -> Vec<u32> {
    if rows.len() < 64 {
        rows.sort_unstable();
        rows.dedup();
        return rows;
    }
    let mut words = vec![0u64; len.div_ceil(64)];
    for &r in &rows {
        words[r as usize / 64] |= 1 << (r % 64);
    }
    rows.clear();
    for (w, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            rows.push((w * 64) as u32 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
    rows
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
        eq_value(column, ScalarValue::Utf8(Some(value.to_string())))
    }

    fn eq_value(column: usize, value: ScalarValue) -> Vec<Bound> {
        let expr: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("c", column)),
            Operator::Eq,
            Arc::new(Literal::new(value)),
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
        let in_small: Vec<u32> = expected.iter().copied().filter(|&i| i < 100).collect();
        assert_eq!(
            eq_rows(&small, &bounds),
            Some(in_small),
            "short arrays are compared row by row"
        );
        let many: Vec<ScalarValue> = (40..50)
            .map(|i| ScalarValue::Utf8(Some(format!("models/run-{i:05}"))))
            .collect();
        let in_small: Vec<u32> = (40..50).filter(|i| i % 11 != 0).collect();
        assert_eq!(
            rows_in(&small, 0, &many),
            Some(in_small),
            "several keys too"
        );
    }

    #[test]
    fn rows_found_by_several_keys_come_out_ascending_and_once() {
        for (len, found) in [(10usize, 7usize), (5000, 40), (5000, 3000), (4097, 4097)] {
            // each key's rows ascending, keys interleaved, some rows twice
            let rows: Vec<u32> = (0..found)
                .map(|i| ((i * 7919) % len) as u32)
                .chain((0..found / 3).map(|i| (i * 3 % len) as u32))
                .collect();
            let mut expected = rows.clone();
            expected.sort_unstable();
            expected.dedup();
            assert_eq!(
                in_position_order(rows, len),
                expected,
                "{len} rows, {found}"
            );
        }
        assert_eq!(in_position_order(Vec::new(), 0), Vec::<u32>::new());
    }

    #[test]
    fn equality_on_an_integer_array_seen_twice_is_answered_by_its_index() {
        use ScalarValue::Int32;
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Int64, false),
        ]));
        let a: ArrayRef = Arc::new(datafusion::arrow::array::Int32Array::from_iter(
            (0..4000).map(|i| (i % 13 != 0).then_some(i / 10)),
        ));
        let b: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
            (0..4000).map(|i| i64::from(i) % 500 - 250),
        ));
        let batch = RecordBatch::try_new(schema, vec![a, b]).expect("batch");
        let on_a = eq_value(0, ScalarValue::Int32(Some(7)));
        assert_eq!(eq_rows(&batch, &on_a), None, "first sight: no index yet");
        let expected: Vec<u32> = (70..80u32).filter(|i| i % 13 != 0).collect();
        assert_eq!(eq_rows(&batch, &on_a), Some(expected));
        let on_b = eq_value(1, ScalarValue::Int64(Some(-3)));
        assert_eq!(eq_rows(&batch, &on_b), None);
        let expected: Vec<u32> = (0..4000u32).filter(|i| i % 500 == 247).collect();
        assert_eq!(eq_rows(&batch, &on_b), Some(expected));
        // a 64-bit value past 32 bits matches nothing in a 32-bit column
        let far = eq_value(0, ScalarValue::Int64(Some(1 << 40)));
        assert_eq!(eq_rows(&batch, &far), Some(Vec::new()));
        // several values: their rows merged in position order; a value of
        // another kind than the column's leaves the lookup to a scan
        let several = [Int32(Some(8)), Int32(Some(7)), Int32(Some(8))];
        let expected: Vec<u32> = (70..90u32).filter(|i| i % 13 != 0).collect();
        assert_eq!(rows_in(&batch, 0, &several), Some(expected));
        assert_eq!(rows_in(&batch, 0, &[]), Some(Vec::new()));
        let mixed = [Int32(Some(7)), ScalarValue::Utf8(Some("7".into()))];
        assert_eq!(rows_in(&batch, 0, &mixed), None);
        // a text value on an integer column is not looked up
        assert_eq!(
            eq_rows(&batch, &eq_value(1, ScalarValue::Utf8(Some("7".into())))),
            None
        );
    }
}
