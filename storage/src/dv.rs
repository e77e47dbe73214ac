//! Deletion vectors: which row positions of a source are deleted, as a roaring
//! bitmap. Persisted beside their segment as `<segment>.<version>.dv` files.

use roaring::RoaringBitmap;

use crate::error::{Result, StorageError};

/// Serialize a deletion vector to its portable roaring format.
pub fn encode(dv: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(dv.serialized_size());
    // Writing into a Vec cannot fail.
    dv.serialize_into(&mut out).unwrap_or_default();
    out
}

/// Parse a deletion vector written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<RoaringBitmap> {
    RoaringBitmap::deserialize_from(bytes)
        .map_err(|e| StorageError::corrupt("deletion vector", e.to_string()))
}

/// A boolean mask selecting the live rows in `start..start+len` of a source.
pub fn live_mask(dv: &RoaringBitmap, start: u32, len: usize) -> Option<arrow::array::BooleanArray> {
    if len == 0 {
        return None;
    }
    let last = (start as u64 + len as u64 - 1).min(u32::MAX as u64) as u32;
    if dv.range_cardinality(start..=last) == 0 {
        return None;
    }
    let mask: arrow::array::BooleanArray = (0..len)
        .map(|i| Some(!dv.contains(start + i as u32)))
        .collect();
    Some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dv: RoaringBitmap = [1u32, 5, 1000, 70000].into_iter().collect();
        let back = decode(&encode(&dv)).unwrap();
        assert_eq!(dv, back);
    }

    #[test]
    fn corrupt_bytes_are_an_error() {
        assert!(decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn mask_marks_deleted_rows() {
        let dv: RoaringBitmap = [2u32, 3].into_iter().collect();
        let m = live_mask(&dv, 0, 5).unwrap();
        let v: Vec<bool> = m.iter().map(|b| b.unwrap()).collect();
        assert_eq!(v, vec![true, true, false, false, true]);
        assert!(live_mask(&dv, 4, 10).is_none());
    }
}
