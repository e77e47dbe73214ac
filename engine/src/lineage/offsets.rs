//! The per-node offsets of a compressed-sparse-row adjacency, in about 2
//! bytes per node instead of 4.
//!
//! Offsets are grouped in blocks of [`BLOCK`] nodes: a block stores its
//! first offset in full, and each node its distance from it in 16 bits.
//! Graphs are mostly sparse, so a block's edges fit 16 bits; a block that
//! holds a hub (more than 65,535 edges among its nodes) keeps its offsets
//! in full in a side table instead. Reading an offset is two array reads,
//! and the block array (8 bytes per 64 nodes) stays in cache.

use std::ops::Range;

/// Nodes per block.
const BLOCK: usize = 64;

/// Set in a block word when the block's offsets are kept in full; the low
/// 32 bits are then where they start in the side table.
const WIDE: u64 = 1 << 63;

/// Offsets `0 = o(0) <= o(1) <= ... <= o(len)`: node `n`'s entries are
/// `o(n)..o(n + 1)`.
#[derive(Debug, Default)]
pub struct Offsets {
    /// Per block: its first offset, or [`WIDE`] and a side-table position.
    blocks: Vec<u64>,
    /// Per offset: its distance from its block's first (0 in wide blocks).
    rel: Vec<u16>,
    /// The offsets of wide blocks, [`BLOCK`] (or fewer, for the last) each.
    wide: Vec<u32>,
}

impl Offsets {
    /// The offsets of nodes with `counts[n]` entries each, and the total.
    /// Sums past `u32::MAX` saturate (the entry arrays are indexed by u32).
    pub fn from_counts(counts: &[u32]) -> (Offsets, u32) {
        let len = counts.len() + 1;
        let mut out = Offsets {
            blocks: Vec::with_capacity(len.div_ceil(BLOCK)),
            rel: Vec::with_capacity(len),
            wide: Vec::new(),
        };
        let mut block = [0u32; BLOCK];
        let mut next = 0u32;
        for start in (0..len).step_by(BLOCK) {
            let end = (start + BLOCK).min(len);
            for (i, slot) in (start..end).zip(block.iter_mut()) {
                *slot = next;
                if let Some(c) = counts.get(i) {
                    next = next.saturating_add(*c);
                }
            }
            out.push_block(&block[..end - start]);
        }
        (out, next)
    }

    fn push_block(&mut self, offsets: &[u32]) {
        let first = offsets[0];
        let last = offsets[offsets.len() - 1];
        if last - first <= u16::MAX as u32 {
            self.blocks.push(first as u64);
            self.rel.extend(offsets.iter().map(|o| (o - first) as u16));
        } else {
            self.blocks.push(WIDE | self.wide.len() as u64);
            self.wide.extend_from_slice(offsets);
            self.rel.extend(std::iter::repeat_n(0, offsets.len()));
        }
    }

    /// Offset `i`, if there is one.
    #[inline]
    pub fn get(&self, i: usize) -> Option<u32> {
        let rel = *self.rel.get(i)?;
        let word = self.blocks[i / BLOCK];
        Some(if word & WIDE == 0 {
            word as u32 + rel as u32
        } else {
            self.wide[(word & !WIDE) as usize + i % BLOCK]
        })
    }

    /// Node `n`'s entries (empty for nodes past the end).
    #[inline]
    pub fn range(&self, n: usize) -> Range<usize> {
        match (self.get(n), self.get(n + 1)) {
            (Some(a), Some(b)) => a as usize..b as usize,
            _ => 0..0,
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.blocks.capacity() * 8 + self.rel.capacity() * 2 + self.wide.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(counts: &[u32]) {
        let (offsets, total) = Offsets::from_counts(counts);
        let mut at = 0usize;
        for (n, c) in counts.iter().enumerate() {
            assert_eq!(offsets.range(n), at..at + *c as usize, "node {n}");
            at += *c as usize;
        }
        assert_eq!(total as usize, at);
        assert_eq!(offsets.range(counts.len()), 0..0, "past the end");
        assert_eq!(offsets.get(counts.len()), Some(total));
    }

    #[test]
    fn offsets_match_prefix_sums_with_and_without_hubs() {
        check(&[]);
        check(&[3]);
        check(&[0; 200]);
        let sparse: Vec<u32> = (0..1000u32).map(|i| i * 7 % 5).collect();
        check(&sparse);
        // Hubs make their blocks wide; the blocks around stay narrow.
        let mut hubs = sparse.clone();
        hubs[70] = 70_000;
        hubs[64 * 5 + 62] = 65_536;
        hubs[999] = 1 << 20;
        check(&hubs);
        let (o, _) = Offsets::from_counts(&hubs);
        let wide = o.blocks.iter().filter(|w| **w & WIDE != 0).count();
        assert_eq!(wide, 3, "the hubs' blocks (and only those) are wide");
        // A block whose entries sum to exactly 65,535 still fits.
        let mut edge = vec![0u32; 64];
        edge[10] = 65_535;
        check(&edge);
        assert_eq!(Offsets::from_counts(&edge).0.wide.len(), 0);
    }
}
