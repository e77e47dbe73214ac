//! The segment cache: decoded Parquet segments kept in memory as Arrow
//! batches, so a query over flushed data reads memory instead of decoding
//! Parquet again (what a buffer pool does for a row store).
//!
//! Segments are immutable, so an entry never goes stale: it is keyed by the
//! segment's object-store path, which names one file forever (ids are never
//! reused). Deletion vectors are applied by the reader, as for buffers.
//! Entries are evicted least recently used first once the cached batches
//! exceed the budget (`StorageOptions::segment_cache_bytes`); a segment
//! larger than the whole budget is not cached. A flush puts the buffer it
//! wrote into the cache (the rows are already in memory), so recently
//! written data stays hot; compaction and garbage collection drop the
//! entries of the segments they remove.
//!
//! The batches of an entry share one schema object: the Parquet reader
//! makes a new one for every batch, and a scan compares each batch's schema
//! with its table's at every query, which is a pointer comparison only when
//! the schema objects are shared.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use parking_lot::Mutex;

/// Decoded batches of one segment, in position order, in the schema the
/// segment was written with.
pub type CachedSegment = Arc<Vec<RecordBatch>>;

#[derive(Debug)]
struct Entry {
    batches: CachedSegment,
    bytes: usize,
    last_used: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
}

/// An LRU cache of decoded segments bounded by bytes.
#[derive(Debug)]
pub struct SegmentCache {
    budget: usize,
    state: Mutex<State>,
}

/// Counters for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub segments: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

impl SegmentCache {
    pub fn new(budget: usize) -> Self {
        SegmentCache {
            budget,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether caching is on at all (a budget of 0 turns it off).
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// The cached batches of the segment at `path`, marking it used.
    pub fn get(&self, path: &str) -> Option<CachedSegment> {
        let mut st = self.state.lock();
        st.tick += 1;
        let tick = st.tick;
        let found = st.entries.get_mut(path).map(|e| {
            e.last_used = tick;
            Arc::clone(&e.batches)
        });
        if found.is_some() {
            st.hits += 1;
        } else {
            st.misses += 1;
        }
        found
    }

    /// Cache the batches of the segment at `path`, evicting the least
    /// recently used entries to stay within the budget. Returns the shared
    /// batches either way.
    pub fn insert(&self, path: &str, batches: Vec<RecordBatch>) -> CachedSegment {
        let batches = share_schema(batches);
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        let batches = Arc::new(batches);
        if bytes > self.budget {
            return batches;
        }
        let mut st = self.state.lock();
        st.tick += 1;
        let tick = st.tick;
        if let Some(old) = st.entries.remove(path) {
            st.bytes -= old.bytes;
        }
        while st.bytes + bytes > self.budget {
            let Some(victim) = st
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = st.entries.remove(&victim) {
                st.bytes -= e.bytes;
            }
        }
        st.bytes += bytes;
        st.entries.insert(
            path.to_string(),
            Entry {
                batches: Arc::clone(&batches),
                bytes,
                last_used: tick,
            },
        );
        batches
    }

    /// Drop the entry of a segment that no longer exists.
    pub fn remove(&self, path: &str) {
        let mut st = self.state.lock();
        if let Some(e) = st.entries.remove(path) {
            st.bytes -= e.bytes;
        }
    }

    pub fn stats(&self) -> CacheStats {
        let st = self.state.lock();
        CacheStats {
            segments: st.entries.len(),
            bytes: st.bytes,
            hits: st.hits,
            misses: st.misses,
        }
    }
}

/// `batches` with every schema equal to the first batch's replaced by that
/// very object (one comparison per batch, once, when the segment is cached).
fn share_schema(batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    let Some(first) = batches.first().map(RecordBatch::schema) else {
        return batches;
    };
    batches
        .into_iter()
        .map(|b| {
            if Arc::ptr_eq(b.schema_ref(), &first) || *b.schema_ref() != first {
                return b;
            }
            b.clone().with_schema(Arc::clone(&first)).unwrap_or(b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let col = Int64Array::from_iter_values(0..rows as i64);
        RecordBatch::try_new(schema, vec![Arc::new(col)]).expect("batch")
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let one = batch(1000).get_array_memory_size();
        let cache = SegmentCache::new(one * 2 + one / 2);
        cache.insert("a", vec![batch(1000)]);
        cache.insert("b", vec![batch(1000)]);
        assert!(cache.get("a").is_some()); // b is now the oldest
        cache.insert("c", vec![batch(1000)]);
        assert!(cache.get("b").is_none());
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        let st = cache.stats();
        assert_eq!(st.segments, 2);
        assert!(st.bytes <= one * 2 + one / 2);
    }

    #[test]
    fn batches_of_a_segment_share_one_schema_object() {
        let cache = SegmentCache::new(1 << 20);
        let got = cache.insert("s", vec![batch(10), batch(20), batch(30)]);
        assert!(Arc::ptr_eq(got[0].schema_ref(), got[1].schema_ref()));
        assert!(Arc::ptr_eq(got[0].schema_ref(), got[2].schema_ref()));
        assert_eq!(got[2].num_rows(), 30);
    }

    #[test]
    fn too_large_segments_and_zero_budget_are_not_kept() {
        let cache = SegmentCache::new(10);
        let got = cache.insert("big", vec![batch(1000)]);
        assert_eq!(got[0].num_rows(), 1000);
        assert!(cache.get("big").is_none());
        assert!(!SegmentCache::new(0).enabled());
        let cache = SegmentCache::new(1 << 20);
        cache.insert("x", vec![batch(10)]);
        cache.remove("x");
        assert_eq!(cache.stats().bytes, 0);
    }
}
