//! Results computed from an Arrow array, kept for the next time the same
//! array is seen.
//!
//! The batches a scan yields from the segment cache and the table buffers
//! are shared and immutable: the same column `Arc` comes back query after
//! query. What is derived from such an array alone (its min/max, its values
//! cast from text to timestamps) can be computed once. An [`ArrayMemo`] maps
//! an array's address to that result and holds a reference to the array,
//! so the address cannot name another array while the entry exists. Entries
//! are bounded by the bytes they pin (the array and the result).
//!
//! Not every array comes back: a join's or a filter's output is made anew
//! at every query. So a result is kept only for an array seen before (the
//! address among the last [`SEEN`] misses), and eviction gives a second
//! chance to entries used since they were queued (a clock): arrays that
//! never return go first, and a busy dashboard's filtered batches do not
//! push out the casts of a million-row table.

use std::collections::{BTreeMap, VecDeque};

use datafusion::arrow::array::{Array, ArrayRef};
use parking_lot::Mutex;

/// How many recent misses are remembered for admission.
pub const SEEN: usize = 512;

/// One memo: `V` is the result kept per array.
pub struct ArrayMemo<V> {
    budget: usize,
    inner: Mutex<Memo<V>>,
}

struct Memo<V> {
    entries: BTreeMap<usize, Entry<V>>,
    /// Keys in queue order, with the tick they were queued at.
    order: VecDeque<(usize, u64)>,
    pinned: usize,
    tick: u64,
    /// Addresses of recent misses.
    seen: VecDeque<usize>,
}

struct Entry<V> {
    _array: ArrayRef,
    bytes: usize,
    value: V,
    /// Tick of the last use.
    used: u64,
}

/// The array's own allocation, which names it while an entry holds it.
fn key(array: &ArrayRef) -> usize {
    std::sync::Arc::as_ptr(array) as *const () as usize
}

impl<V> Memo<V> {
    /// Whether `k` is among the recent misses; if not, it becomes one.
    fn sighted(&mut self, k: usize) -> bool {
        if self.seen.contains(&k) {
            return true;
        }
        self.seen.push_back(k);
        if self.seen.len() > SEEN {
            self.seen.pop_front();
        }
        false
    }

    /// Drop entries until `bytes` more fit in `budget`: the oldest queued
    /// first, but one used since it was queued goes to the back instead.
    fn make_room(&mut self, bytes: usize, budget: usize) {
        while self.pinned + bytes > budget {
            let Some((k, queued)) = self.order.pop_front() else {
                break;
            };
            let Some(used) = self.entries.get(&k).map(|e| e.used) else {
                continue;
            };
            if used > queued {
                self.order.push_back((k, self.tick));
            } else if let Some(e) = self.entries.remove(&k) {
                self.pinned -= e.bytes;
            }
        }
    }
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
                tick: 0,
                seen: VecDeque::new(),
            }),
        }
    }

    /// The result kept for `array`, if any.
    pub fn get(&self, array: &ArrayRef) -> Option<V> {
        let mut memo = self.inner.lock();
        memo.tick += 1;
        let tick = memo.tick;
        let e = memo.entries.get_mut(&key(array))?;
        e.used = tick;
        Some(e.value.clone())
    }

    /// Whether `array` was seen before (a miss of [`Self::insert`] or of
    /// this call); the sighting is recorded. For results too costly to
    /// compute for an array that may never come back.
    pub fn seen_before(&self, array: &ArrayRef) -> bool {
        self.inner.lock().sighted(key(array))
    }

    /// Keep `value` for `array` if the array was seen before; `value_bytes`
    /// is what the value holds in memory. Nothing is kept when the two
    /// exceed the whole budget.
    pub fn insert(&self, array: &ArrayRef, value: V, value_bytes: usize) {
        self.keep(array, value, value_bytes, true);
    }

    /// As [`Self::insert`], kept at the first sighting of `array` (a
    /// stored array, known to come back).
    pub fn insert_stored(&self, array: &ArrayRef, value: V, value_bytes: usize) {
        self.keep(array, value, value_bytes, false);
    }

    /// As [`Self::insert`]; `admit_seen: false` keeps `value` whether the
    /// array was seen before or not (an array known to come back).
    fn keep(&self, array: &ArrayRef, value: V, value_bytes: usize, admit_seen: bool) {
        let bytes = array.get_array_memory_size() + value_bytes;
        if bytes > self.budget {
            return;
        }
        let k = key(array);
        let mut memo = self.inner.lock();
        // An array with an entry is one that came back: its entry may grow
        // (another cast of it) though its sighting left the queue long ago.
        if admit_seen && !memo.entries.contains_key(&k) && !memo.sighted(k) {
            return;
        }
        memo.make_room(bytes, self.budget);
        let tick = memo.tick;
        let entry = Entry {
            _array: std::sync::Arc::clone(array),
            bytes,
            value,
            used: tick,
        };
        match memo.entries.insert(k, entry) {
            Some(old) => memo.pinned -= old.bytes,
            None => memo.order.push_back((k, tick)),
        }
        memo.pinned += bytes;
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

    /// A memo of budget `n` arrays of 1,000 integers, and a lookup that
    /// counts computations.
    fn memo(n: usize) -> ArrayMemo<u32> {
        ArrayMemo::new(n * (array(1000).get_array_memory_size() + 4) + 10)
    }

    fn get(memo: &ArrayMemo<u32>, arr: &ArrayRef, calls: &mut u32) -> u32 {
        lookup(memo, arr, calls, false)
    }

    /// The kept result, or 7 computed (counted in `calls`) and offered for
    /// keeping as a stored array's or as another's.
    fn lookup(memo: &ArrayMemo<u32>, arr: &ArrayRef, calls: &mut u32, stored: bool) -> u32 {
        if let Some(v) = memo.get(arr) {
            return v;
        }
        *calls += 1;
        if stored {
            memo.insert_stored(arr, 7, 4);
        } else {
            memo.insert(arr, 7, 4);
        }
        7
    }

    #[test]
    fn a_result_is_kept_from_the_second_sighting_of_its_array() {
        let m = memo(2);
        let mut calls = 0;
        let a = array(1000);
        for _ in 0..4 {
            assert_eq!(get(&m, &a, &mut calls), 7);
        }
        assert_eq!(calls, 2, "computed when first seen, then kept");
        // a slice is another array (another Arc), computed on its own
        let tail = a.slice(10, 10);
        get(&m, &tail, &mut calls);
        get(&m, &tail, &mut calls);
        get(&m, &tail, &mut calls);
        assert_eq!(calls, 4);
        // an array larger than the budget is never kept
        let huge = array(10_000);
        for _ in 0..3 {
            get(&m, &huge, &mut calls);
        }
        assert_eq!(calls, 7);
    }

    #[test]
    fn a_stored_array_has_its_result_kept_at_first_sight() {
        let m = memo(2);
        let mut calls = 0;
        let a = array(1000);
        for _ in 0..3 {
            assert_eq!(lookup(&m, &a, &mut calls, true), 7);
        }
        assert_eq!(calls, 1, "computed once, kept at once");
        let mut calls = 0;
        get(&m, &a, &mut calls);
        assert_eq!(calls, 0, "the other lookup finds it too");
    }

    #[test]
    fn a_kept_entry_can_grow_after_its_sighting_left_the_queue() {
        let m = memo(4);
        let a = array(1000);
        m.insert(&a, 7, 4);
        m.insert(&a, 7, 4);
        assert_eq!(m.get(&a), Some(7), "kept at the second sighting");
        // many other misses push a's sighting out of the queue
        let others: Vec<ArrayRef> = (0..SEEN as i64 + 10).map(|i| array(i % 3)).collect();
        for o in &others {
            m.seen_before(o);
        }
        m.insert(&a, 8, 4);
        assert_eq!(m.get(&a), Some(8), "an array with an entry came back");
    }

    #[test]
    fn arrays_in_use_outlive_arrays_seen_twice_and_never_again() {
        let m = memo(2);
        let mut calls = 0;
        let hot = array(1000);
        get(&m, &hot, &mut calls);
        get(&m, &hot, &mut calls); // kept
        for _ in 0..5 {
            // an array seen twice, kept, then never used again
            let once = array(1000);
            get(&m, &once, &mut calls);
            get(&m, &once, &mut calls);
            // the hot one is used between them
            get(&m, &hot, &mut calls);
        }
        let before = calls;
        get(&m, &hot, &mut calls);
        assert_eq!(calls, before, "the array in use was never pushed out");
        // (an address freed by an evicted array and reused by the next one
        // counts as seen: at most one computation each, never a wrong value)
        assert!(calls <= 2 + 5 * 2, "{calls}");
    }
}
