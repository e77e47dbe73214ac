//! Primary-key index: each row's key to the row's address. Enforces
//! uniqueness on every commit and serves point lookups.
//!
//! A key of one integer column (the usual `id BIGINT PRIMARY KEY`) is kept as
//! an `i64`: no allocation per row and a map entry of 24 bytes. Any other key
//! is kept as the Arrow row-format bytes of its columns, which compare equal
//! exactly when the keys do.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use tracing::error;

use crate::error::{Result, StorageError};
use crate::table::SourceId;

/// Where a row lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowAddr {
    pub source: SourceId,
    pub pos: u32,
}

/// One row's primary key, as the index compares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PkKey {
    /// The value of a single integer key column.
    Int(i64),
    /// The Arrow row format of the key columns.
    Bytes(Box<[u8]>),
}

/// The map, typed by the key's encoding (fixed when the index is created),
/// with what encodes byte keys. hashbrown's default hasher (foldhash, seeded
/// per map): SipHash, the std default, was a quarter of a COPY's time.
#[derive(Debug)]
enum KeyMap {
    Int(hashbrown::HashMap<i64, RowAddr>),
    Bytes(Arc<RowConverter>, hashbrown::HashMap<Box<[u8]>, RowAddr>),
}

/// Unique index over a table's primary-key columns.
#[derive(Debug)]
pub struct PkIndex {
    /// Key column indices in the table schema.
    pub columns: Vec<usize>,
    map: KeyMap,
}

/// Integer types whose every value is an `i64`.
fn is_small_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

impl PkIndex {
    pub fn new(schema: &SchemaRef, columns: &[usize]) -> Result<Self> {
        let types: Vec<&DataType> = columns
            .iter()
            .map(|&i| schema.field(i).data_type())
            .collect();
        let map = match types.as_slice() {
            [t] if is_small_int(t) => KeyMap::Int(Default::default()),
            _ => {
                let fields = types.iter().map(|&t| SortField::new(t.clone())).collect();
                KeyMap::Bytes(Arc::new(RowConverter::new(fields)?), Default::default())
            }
        };
        Ok(PkIndex {
            columns: columns.to_vec(),
            map,
        })
    }

    pub fn len(&self) -> usize {
        match &self.map {
            KeyMap::Int(m) => m.len(),
            KeyMap::Bytes(_, m) => m.len(),
        }
    }

    /// Make room for `additional` more keys.
    pub fn reserve(&mut self, additional: usize) {
        match &mut self.map {
            KeyMap::Int(m) => m.reserve(additional),
            KeyMap::Bytes(_, m) => m.reserve(additional),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encode the key of every row of `batch` (a batch of the full table
    /// schema, or of the key columns only when `key_only`).
    pub fn keys(&self, batch: &RecordBatch, key_only: bool) -> Result<Vec<PkKey>> {
        let cols: Vec<ArrayRef> = if key_only {
            batch.columns().to_vec()
        } else {
            self.columns
                .iter()
                .map(|&i| Arc::clone(batch.column(i)))
                .collect()
        };
        match &self.map {
            KeyMap::Int(_) => int_keys(&cols),
            KeyMap::Bytes(converter, _) => {
                let rows = converter.convert_columns(&cols)?;
                Ok(rows
                    .iter()
                    .map(|r| PkKey::Bytes(r.as_ref().into()))
                    .collect())
            }
        }
    }

    /// The address of the row whose key is the first row of `key` (a batch
    /// of the key columns).
    pub fn addr_of(&self, key: &RecordBatch) -> Result<Option<RowAddr>> {
        Ok(self.keys(key, true)?.first().and_then(|k| self.get(k)))
    }

    pub fn get(&self, key: &PkKey) -> Option<RowAddr> {
        match (&self.map, key) {
            (KeyMap::Int(m), PkKey::Int(k)) => m.get(k).copied(),
            (KeyMap::Bytes(_, m), PkKey::Bytes(k)) => m.get(k).copied(),
            _ => None,
        }
    }

    pub fn insert(&mut self, key: PkKey, addr: RowAddr) {
        match (&mut self.map, key) {
            (KeyMap::Int(m), PkKey::Int(k)) => {
                m.insert(k, addr);
            }
            (KeyMap::Bytes(_, m), PkKey::Bytes(k)) => {
                m.insert(k, addr);
            }
            (_, key) => error!(?key, "a key of the wrong encoding was not indexed"),
        }
    }

    pub fn remove(&mut self, key: &PkKey) -> Option<RowAddr> {
        match (&mut self.map, key) {
            (KeyMap::Int(m), PkKey::Int(k)) => m.remove(k),
            (KeyMap::Bytes(_, m), PkKey::Bytes(k)) => m.remove(k),
            _ => None,
        }
    }

    /// Human-readable rendering of row `i`'s key, for error messages.
    pub fn render_key(&self, batch: &RecordBatch, i: usize, key_only: bool) -> String {
        let opts = FormatOptions::default();
        let idx: Vec<usize> = if key_only {
            (0..batch.num_columns()).collect()
        } else {
            self.columns.clone()
        };
        idx.iter()
            .map(|&c| {
                ArrayFormatter::try_new(batch.column(c).as_ref(), &opts)
                    .map(|f| f.value(i).to_string())
                    .unwrap_or_else(|_| "?".into())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The keys of a one-integer-column key, widened to `i64`.
fn int_keys(cols: &[ArrayRef]) -> Result<Vec<PkKey>> {
    let [col] = cols else {
        return Err(StorageError::Invalid(format!(
            "an integer primary key has one column, {} given",
            cols.len()
        )));
    };
    if col.null_count() > 0 {
        return Err(StorageError::Invalid(
            "a primary-key column holds NULL".into(),
        ));
    }
    let wide = cast(col, &DataType::Int64)?;
    let ints = wide
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| StorageError::Invalid("a key column did not widen to BIGINT".into()))?;
    Ok(ints.values().iter().map(|&v| PkKey::Int(v)).collect())
}
