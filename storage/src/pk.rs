//! Primary-key index: key bytes (Arrow row format of the key columns) to the
//! row's address. Enforces uniqueness on every commit and serves point lookups.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::Result;
use crate::table::SourceId;

/// Where a row lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowAddr {
    pub source: SourceId,
    pub pos: u32,
}

/// Unique index over a table's primary-key columns.
#[derive(Debug)]
pub struct PkIndex {
    /// Key column indices in the table schema.
    pub columns: Vec<usize>,
    converter: Arc<RowConverter>,
    /// hashbrown's default hasher (foldhash, seeded per map): SipHash, the
    /// std default, was a quarter of a COPY's time across the key checks.
    map: hashbrown::HashMap<Box<[u8]>, RowAddr>,
}

impl PkIndex {
    pub fn new(schema: &SchemaRef, columns: &[usize]) -> Result<Self> {
        let fields = columns
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect();
        Ok(PkIndex {
            columns: columns.to_vec(),
            converter: Arc::new(RowConverter::new(fields)?),
            map: hashbrown::HashMap::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Encode the key of every row of `batch` (a batch of the full table
    /// schema, or of the key columns only when `key_only`).
    pub fn keys(&self, batch: &RecordBatch, key_only: bool) -> Result<Vec<Box<[u8]>>> {
        let cols: Vec<ArrayRef> = if key_only {
            batch.columns().to_vec()
        } else {
            self.columns
                .iter()
                .map(|&i| Arc::clone(batch.column(i)))
                .collect()
        };
        let rows = self.converter.convert_columns(&cols)?;
        Ok(rows
            .iter()
            .map(|r| r.as_ref().to_vec().into_boxed_slice())
            .collect())
    }

    /// The address of the row whose key is the first row of `key` (a batch
    /// of the key columns).
    pub fn addr_of(&self, key: &RecordBatch) -> Result<Option<RowAddr>> {
        Ok(self.keys(key, true)?.first().and_then(|k| self.get(k)))
    }

    pub fn get(&self, key: &[u8]) -> Option<RowAddr> {
        self.map.get(key).copied()
    }

    pub fn insert(&mut self, key: Box<[u8]>, addr: RowAddr) {
        self.map.insert(key, addr);
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<RowAddr> {
        self.map.remove(key)
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
