//! Results computed from an Arrow array, kept for the next time the same
//! array is seen.
//!
//! The batches a scan yields from the segment cache and the table buffers
//! are shared and immutable: the same column `Arc` comes back query after
//! query. What is derived from such an array alone (its min/max, its values
//! cast from text to timestamps) can be computed once. An [`ArrayMemo`] maps
//! an array's address to that result and holds a reference to the array,
//! so the address cannot name another array while the entry exists. Entries
//! are bounded by the bytes they pin (the array and the result), oldest
//! dropped first.

use std::collections::{BTreeMap, VecDeque};

use datafusion::arrow::array::{Array, ArrayRef};
use parking_lot::Mutex;

/// One memo: `V` is the result kept per array.
pub struct ArrayMemo<V> {
    budget: usize,
    inner: Mutex<Memo<V>>,
}

struct Memo<V> {
    entries: BTreeMap<usize, Entry<V>>,
    order: VecDeque<usize>,
    pinned: usize,
}

struct Entry<V> {
    _array: ArrayRef,
    bytes: usize,
    value: V,
}

/// The array's own allocation, which names it while an entry holds it.
fn key(array: &ArrayRef) -> usize {
    std::sync::Arc::as_ptr(array) as *const () as usize
}

impl<V: Clone> ArrayMemo<V> {
    /// A memo pinning at most `budget` bytes.
    pub const fn new(budget: usize) -> Self {
        ArrayMemo {
            budget,
            inner: Mutex::new(Memo {
                entries: BTreeMap::new(),
                order: VecDeque::new(),
                pinned: 0,
            }),
        }
    }

    /// The result kept for `array`, if any.
    pub fn get(&self, array: &ArrayRef) -> Option<V> {
        let memo = self.inner.lock();
        memo.entries.get(&key(array)).map(|e| e.value.clone())
    }

    /// Keep `value` for `array`; `value_bytes` is what it holds in memory.
    /// Nothing is kept when the two exceed the whole budget.
    pub fn insert(&self, array: &ArrayRef, value: V, value_bytes: usize) {
        let bytes = array.get_array_memory_size() + value_bytes;
        if bytes > self.budget {
            return;
        }
        let mut memo = self.inner.lock();
        while memo.pinned + bytes > self.budget {
            let Some(old) = memo.order.pop_front() else {
                break;
            };
            if let Some(e) = memo.entries.remove(&old) {
                memo.pinned -= e.bytes;
            }
        }
        let k = key(array);
        let entry = Entry {
            _array: std::sync::Arc::clone(array),
            bytes,
            value,
        };
        match memo.entries.insert(k, entry) {
            Some(old) => memo.pinned -= old.bytes,
            None => memo.order.push_back(k),
        }
        memo.pinned += bytes;
    }

    /// The result for `array`: kept, or computed by `compute` (returning
    /// the result and the bytes it holds) and kept.
    pub fn get_or_compute<E>(
        &self,
        array: &ArrayRef,
        compute: impl FnOnce() -> Result<(V, usize), E>,
    ) -> Result<V, E> {
        if let Some(v) = self.get(array) {
            return Ok(v);
        }
        let (value, bytes) = compute()?;
        self.insert(array, value.clone(), bytes);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;

    use super::*;

    fn array(n: i64) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(0..n))
    }

    #[test]
    fn results_are_kept_per_array_within_the_budget() {
        let a = array(1000);
        let size = a.get_array_memory_size();
        let memo: ArrayMemo<u32> = ArrayMemo::new(2 * size + 10);
        let calls = std::cell::Cell::new(0);
        let get = |arr: &ArrayRef| {
            memo.get_or_compute(arr, || {
                calls.set(calls.get() + 1);
                Ok::<_, ()>((7, 4))
            })
        };
        assert_eq!(get(&a), Ok(7));
        assert_eq!(get(&a), Ok(7));
        // a slice is another array (other Arc), computed on its own
        let tail = a.slice(10, 10);
        assert_eq!(get(&tail), Ok(7));
        assert_eq!(calls.get(), 2);
        // a third big array pushes the oldest entry out
        let b = array(1000);
        let c = array(1000);
        get(&b).unwrap();
        get(&c).unwrap();
        assert_eq!(calls.get(), 4);
        get(&a).unwrap();
        assert_eq!(calls.get(), 5, "the first array was dropped to make room");
        // an array larger than the budget is never kept
        let huge = array(10_000);
        get(&huge).unwrap();
        get(&huge).unwrap();
        assert_eq!(calls.get(), 7);
    }
}
