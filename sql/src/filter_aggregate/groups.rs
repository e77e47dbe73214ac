//! Group ids for the fused aggregation.
//!
//! Rows of one training run arrive together, so a grouping column like
//! `optimizer` changes a few times per batch, not at every row. Each
//! stretch of selected rows is cut into runs of rows equal to the row
//! before them, and only a run's first row is keyed:
//! its grouping values are written as bytes (one tag byte per column for
//! NULL or not, then the value: fixed-width values as they are stored,
//! strings and binaries with their length first) and looked up in a hash
//! map from bytes to group id.
//!
//! Equal bytes mean equal values for the types allowed here ([`supported`]):
//! integers, decimals, dates and times, booleans, strings and binaries
//! (`Utf8` and `Binary`, the types provdb's tables store).
//! Floating-point keys are not (`-0.0` and `0.0` are equal numbers with
//! different bytes).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayData, ArrayRef, UInt32Array};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{HashMap, Result, internal_err};

/// Whether a grouping column of this type can be keyed by its bytes.
pub(crate) fn supported(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::Binary | DataType::Boolean => true,
        t => t.is_primitive() && !t.is_floating(),
    }
}

/// The groups seen since the last emission: their ids and their values.
#[derive(Debug, Default)]
pub(super) struct Groups {
    ids: HashMap<Box<[u8]>, usize>,
    /// Per grouping column, the values of the groups in id order, one array
    /// per batch that made new groups.
    values: Vec<Vec<ArrayRef>>,
    /// The bytes of the row being keyed (kept to reuse its allocation).
    key: Vec<u8>,
}

impl Groups {
    /// How many groups there are.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Appends the group of every row of `columns` selected by `rows` (all
    /// rows when `None`) to `out`, in row order, making new groups as
    /// needed.
    ///
    /// Within each stretch of selected rows, rows equal to the row before
    /// them form runs, and each run is keyed once.
    pub(super) fn intern(
        &mut self,
        columns: &[ArrayRef],
        rows: Option<&BooleanBuffer>,
        out: &mut Vec<usize>,
    ) -> Result<()> {
        out.clear();
        let n = columns.first().map_or(0, |c| c.len());
        let data: Vec<ArrayData> = columns.iter().map(|c| c.to_data()).collect();
        let readers = data
            .iter()
            .map(KeyColumn::new)
            .collect::<Result<Vec<_>>>()?;
        let stretches: Vec<(usize, usize)> = match rows {
            Some(selected) => selected.set_slices().collect(),
            None => vec![(0, n)],
        };
        let mut new_rows: Vec<u32> = Vec::new();
        let mut changed: Vec<bool> = Vec::new();
        for (start, end) in stretches {
            changed.clear();
            changed.resize(end - start, false);
            for reader in &readers {
                reader.mark_changes(start, &mut changed);
            }
            let mut run = start;
            for row in start + 1..=end {
                if row == end || changed[row - start] {
                    let id = self.group_of_row(&readers, run, &mut new_rows);
                    out.resize(out.len() + (row - run), id);
                    run = row;
                }
            }
        }
        self.keep_values(columns, new_rows)
    }

    /// The group of `row`, keyed by its bytes; made if new.
    fn group_of_row(
        &mut self,
        readers: &[KeyColumn],
        row: usize,
        new_rows: &mut Vec<u32>,
    ) -> usize {
        self.key.clear();
        for reader in readers {
            reader.write(row, &mut self.key);
        }
        if let Some(&id) = self.ids.get(self.key.as_slice()) {
            return id;
        }
        let id = self.ids.len();
        self.ids.insert(self.key.as_slice().into(), id);
        // Batches are at most u32::MAX rows long (take's indices).
        new_rows.push(row as u32);
        id
    }

    /// Keeps the grouping values of the groups first seen at `new_rows`.
    fn keep_values(&mut self, columns: &[ArrayRef], new_rows: Vec<u32>) -> Result<()> {
        if new_rows.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(new_rows);
        if self.values.is_empty() {
            self.values = vec![Vec::new(); columns.len()];
        }
        for (values, column) in self.values.iter_mut().zip(columns) {
            values.push(take(column.as_ref(), &indices, None)?);
        }
        Ok(())
    }

    /// The values of every group, one array per grouping column in id
    /// order, forgetting the groups.
    pub(super) fn emit(&mut self) -> Result<Vec<ArrayRef>> {
        self.ids.clear();
        std::mem::take(&mut self.values)
            .into_iter()
            .map(|arrays| {
                let parts: Vec<&dyn Array> = arrays.iter().map(Arc::as_ref).collect();
                Ok(concat(&parts)?)
            })
            .collect()
    }
}

/// Where each run of rows equal in every one of `columns` (`n` rows each,
/// types [`supported`]) starts, then `n`: run `i` is rows `bounds[i]..bounds[i
/// + 1]`. NULLs are equal to each other, as in a grouping. The same
/// comparison loops as [`Groups::intern`]'s, for nodes that reduce runs
/// ([`crate::run_aggregate`]).
pub(crate) fn run_bounds(columns: &[ArrayRef], n: usize) -> Result<Vec<usize>> {
    let data: Vec<ArrayData> = columns.iter().map(|c| c.to_data()).collect();
    let mut changed = vec![false; n];
    for d in &data {
        KeyColumn::new(d)?.mark_changes(0, &mut changed);
    }
    let starts = changed.iter().enumerate().skip(1).filter(|(_, c)| **c);
    let mut bounds: Vec<usize> = Vec::with_capacity(n / 64 + 2);
    bounds.extend((n > 0).then_some(0));
    bounds.extend(starts.map(|(i, _)| i));
    bounds.push(n);
    Ok(bounds)
}

/// Reads one grouping column's values as bytes.
enum KeyColumn<'a> {
    Fixed {
        values: &'a [u8],
        width: usize,
        nulls: Option<&'a NullBuffer>,
    },
    Bytes {
        offsets: &'a [i32],
        values: &'a [u8],
        nulls: Option<&'a NullBuffer>,
    },
    Bool {
        values: BooleanBuffer,
        nulls: Option<&'a NullBuffer>,
    },
}

impl<'a> KeyColumn<'a> {
    fn new(data: &'a ArrayData) -> Result<Self> {
        let nulls = data.nulls();
        let buffer = |i: usize| data.buffers().get(i).map(|b| b.as_slice());
        Ok(match (data.data_type(), buffer(0), buffer(1)) {
            (DataType::Utf8 | DataType::Binary, Some(_), Some(values)) => Self::Bytes {
                offsets: data.buffer::<i32>(0),
                values,
                nulls,
            },
            (DataType::Boolean, Some(_), _) => Self::Bool {
                values: BooleanBuffer::new(data.buffers()[0].clone(), data.offset(), data.len()),
                nulls,
            },
            (t, Some(values), _) if supported(t) => match t.primitive_width() {
                Some(width) => Self::Fixed {
                    values: &values[data.offset() * width..],
                    width,
                    nulls,
                },
                None => return internal_err!("no fixed width for grouping type {t}"),
            },
            (t, ..) => return internal_err!("cannot key a grouping column of type {t}"),
        })
    }

    fn nulls(&self) -> Option<&NullBuffer> {
        match self {
            Self::Fixed { nulls, .. } | Self::Bytes { nulls, .. } | Self::Bool { nulls, .. } => {
                *nulls
            }
        }
    }

    /// Marks `changed[i]` for every `i` from 1 whose row `start + i`
    /// differs from the row before; one tight loop per kind of column.
    fn mark_changes(&self, start: usize, changed: &mut [bool]) {
        let rows = changed.iter_mut().enumerate().skip(1);
        if let Some(nulls) = self.nulls() {
            // Compare NULL-ness first; two valid values as below.
            for (i, mark) in rows {
                let row = start + i;
                let (before, here) = (nulls.is_null(row - 1), nulls.is_null(row));
                *mark |= if before || here {
                    before != here
                } else {
                    !self.same_value(row)
                };
            }
            return;
        }
        match self {
            Self::Fixed { values, width, .. } => {
                let values = &values[start * width..];
                match width {
                    1 => fixed_changes::<1>(values, changed),
                    2 => fixed_changes::<2>(values, changed),
                    4 => fixed_changes::<4>(values, changed),
                    8 => fixed_changes::<8>(values, changed),
                    16 => fixed_changes::<16>(values, changed),
                    _ => rows.for_each(|(i, mark)| *mark |= !self.same_value(start + i)),
                }
            }
            Self::Bytes {
                offsets, values, ..
            } => bytes_changes(&offsets[start..], values, changed),
            Self::Bool { .. } => rows.for_each(|(i, mark)| *mark |= !self.same_value(start + i)),
        }
    }

    /// Whether the values of `row` and the row before (both valid) are
    /// equal.
    fn same_value(&self, row: usize) -> bool {
        match self {
            Self::Fixed { values, width, .. } => {
                let w = *width;
                values[(row - 1) * w..row * w] == values[row * w..(row + 1) * w]
            }
            Self::Bytes {
                offsets, values, ..
            } => {
                let [a, b, c] = [row - 1, row, row + 1].map(|i| offsets[i] as usize);
                same_bytes(values, a, b, c)
            }
            Self::Bool { values, .. } => values.value(row - 1) == values.value(row),
        }
    }

    /// Appends the bytes of `row`'s value to `key`.
    fn write(&self, row: usize, key: &mut Vec<u8>) {
        if self.nulls().is_some_and(|n| n.is_null(row)) {
            key.push(0);
            return;
        }
        key.push(1);
        match self {
            Self::Fixed { values, width, .. } => {
                key.extend_from_slice(&values[row * width..(row + 1) * width]);
            }
            Self::Bytes {
                offsets, values, ..
            } => write_bytes(
                offsets[row] as usize,
                offsets[row + 1] as usize,
                values,
                key,
            ),
            Self::Bool { values, .. } => key.push(u8::from(values.value(row))),
        }
    }
}

/// Marks the rows whose `W`-byte value differs from the row before's.
fn fixed_changes<const W: usize>(values: &[u8], changed: &mut [bool]) {
    let mut rows = values.chunks_exact(W).map(<[u8; W]>::try_from);
    let Some(Ok(mut before)) = rows.next() else {
        return;
    };
    for (mark, value) in changed.iter_mut().skip(1).zip(rows) {
        let Ok(value) = value else { return };
        *mark |= value != before;
        before = value;
    }
}

/// Marks the rows whose string (or binary) differs from the row before's.
fn bytes_changes(offsets: &[i32], values: &[u8], changed: &mut [bool]) {
    for (mark, w) in changed.iter_mut().skip(1).zip(offsets.windows(3)) {
        *mark |= !same_bytes(values, w[0] as usize, w[1] as usize, w[2] as usize);
    }
}

/// Whether `values[a..b]` equals `values[b..c]`. Values of up to eight
/// bytes, most grouping strings, are compared as one word each (a call to
/// `memcmp` per row costs several times more).
#[inline(always)]
fn same_bytes(values: &[u8], a: usize, b: usize, c: usize) -> bool {
    let len = b - a;
    if len != c - b {
        return false;
    }
    if len <= 8 && b + 8 <= values.len() {
        let word = |i: usize| <[u8; 8]>::try_from(&values[i..i + 8]).map_or(0, u64::from_le_bytes);
        let mask = u64::MAX.checked_shr(64 - 8 * len as u32).unwrap_or(0);
        return (word(a) ^ word(b)) & mask == 0;
    }
    values[a..b] == values[b..c]
}

fn write_bytes(start: usize, end: usize, values: &[u8], key: &mut Vec<u8>) {
    key.extend_from_slice(&(end - start).to_le_bytes());
    key.extend_from_slice(&values[start..end]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::Int32Type;

    fn groups_of(g: &mut Groups, columns: &[ArrayRef], rows: Option<&[bool]>) -> Vec<usize> {
        let mut out = Vec::new();
        let rows = rows.map(BooleanBuffer::from);
        g.intern(columns, rows.as_ref(), &mut out).unwrap();
        out
    }

    #[test]
    fn equal_values_share_a_group_across_runs_batches_and_nulls() {
        let mut g = Groups::default();
        let a: ArrayRef = Arc::new(StringArray::from(vec![
            Some("sgd"),
            Some("sgd"),
            None,
            Some("adam"),
            Some("sgd"),
        ]));
        assert_eq!(groups_of(&mut g, &[a], None), vec![0, 0, 1, 2, 0]);
        let b: ArrayRef = Arc::new(StringArray::from(vec![Some("adam"), None, Some("x")]));
        assert_eq!(groups_of(&mut g, &[b], None), vec![2, 1, 3]);
        let values = g.emit().unwrap();
        let strings = values[0].as_string::<i32>();
        let got: Vec<Option<&str>> = strings.iter().collect();
        assert_eq!(got, vec![Some("sgd"), None, Some("adam"), Some("x")]);
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn rows_not_selected_make_no_group() {
        let mut g = Groups::default();
        let a: ArrayRef = Arc::new(Int32Array::from(vec![7, 8, 9, 8]));
        let ids = groups_of(&mut g, &[a], Some(&[false, true, false, true]));
        assert_eq!(ids, vec![0, 0]);
        assert_eq!(g.len(), 1);
        let values = g.emit().unwrap();
        assert_eq!(values[0].as_primitive::<Int32Type>().values(), &[8]);
    }

    #[test]
    fn rows_in_runs_and_rows_alone_get_their_groups() {
        // Runs of ten rows, then every row its own run; every third row selected.
        let selected: Vec<bool> = (0..200).map(|i| i % 3 == 0).collect();
        for (runs, width) in [(true, 10), (false, 1)] {
            let mut g = Groups::default();
            let a: ArrayRef = Arc::new(Int32Array::from_iter_values((0..200).map(|i| i / width)));
            let ids = groups_of(&mut g, &[a], Some(&selected));
            let keys: Vec<i32> = (0..200).filter(|i| i % 3 == 0).map(|i| i / width).collect();
            let expected = first_seen(&keys);
            let mut distinct = keys.clone();
            distinct.dedup();
            assert_eq!(ids, expected, "runs {runs}");
            let values = g.emit().unwrap();
            assert_eq!(
                values[0].as_primitive::<Int32Type>().values(),
                distinct.as_slice()
            );
        }
    }

    /// First-seen group numbers of `keys`, as interning must give them.
    fn first_seen<K: PartialEq + Clone>(keys: &[K]) -> Vec<usize> {
        let mut seen: Vec<K> = Vec::new();
        keys.iter()
            .map(|k| match seen.iter().position(|s| s == k) {
                Some(p) => p,
                None => {
                    seen.push(k.clone());
                    seen.len() - 1
                }
            })
            .collect()
    }

    #[test]
    fn runs_of_strings_and_nulls_are_told_apart() {
        // Words of 0 to 21 bytes, two that differ only in their eighth
        // byte, NULL beside the empty string; runs of 20 rows (keyed a run
        // at a time) and the last run at the very end of the buffer.
        let words = [
            Some("abcdefgh"),
            Some("abcdefgi"),
            Some(""),
            None,
            Some("a"),
            Some("a longer string value"),
            Some("abcdefg"),
            Some("abcdefgh"),
        ];
        let keys: Vec<Option<&str>> = (0..400).map(|i| words[(i / 20) % words.len()]).collect();
        let a: ArrayRef = Arc::new(StringArray::from(keys.clone()));
        let mut g = Groups::default();
        assert_eq!(
            groups_of(&mut g, &[Arc::clone(&a)], None),
            first_seen(&keys)
        );
        assert_eq!(g.len(), 7);
        // Stretches of selected rows that start inside runs.
        let selected: Vec<bool> = (0..400).map(|i| i % 20 >= 5 || i % 7 == 0).collect();
        let picked: Vec<Option<&str>> =
            (0..400).filter(|&i| selected[i]).map(|i| keys[i]).collect();
        let mut g = Groups::default();
        assert_eq!(
            groups_of(&mut g, &[a], Some(&selected)),
            first_seen(&picked)
        );
    }

    #[test]
    fn columns_are_delimited_in_a_key() {
        // ("ab", "c") and ("a", "bc") must be different groups.
        let mut g = Groups::default();
        let x: ArrayRef = Arc::new(StringArray::from(vec!["ab", "a"]));
        let y: ArrayRef = Arc::new(StringArray::from(vec!["c", "bc"]));
        assert_eq!(groups_of(&mut g, &[x, y], None), vec![0, 1]);
    }

    #[test]
    fn sliced_arrays_read_their_own_rows() {
        let mut g = Groups::default();
        let a = Int32Array::from(vec![1, 2, 3, 4]).slice(2, 2);
        let s = StringArray::from(vec!["p", "q", "r", "r"]).slice(2, 2);
        let ids = groups_of(&mut g, &[Arc::new(a), Arc::new(s)], None);
        assert_eq!(ids, vec![0, 1]);
        let values = g.emit().unwrap();
        assert_eq!(values[0].as_primitive::<Int32Type>().values(), &[3, 4]);
    }
}
