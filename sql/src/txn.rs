//! Uncommitted writes of a session: the current statement's, and those of an
//! open transaction block. Reads in the session see them through
//! [`crate::table::ProvTable`]; COMMIT turns them into one storage commit.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use provdb_storage::{SourceId, TableId, WalOp};
use roaring::RoaringBitmap;

/// Pseudo source id under which a session's own uncommitted rows are scanned.
pub const PENDING_SOURCE: SourceId = SourceId(u64::MAX);

/// Writes not yet committed.
#[derive(Debug, Default, Clone)]
pub struct WriteSet {
    /// Rows inserted, per table (already in the table's schema).
    pub inserts: HashMap<TableId, Vec<RecordBatch>>,
    /// Committed rows deleted, per (table, source), with the deleted rows'
    /// key columns when the table has a primary key.
    pub deletes: HashMap<(TableId, SourceId), (RoaringBitmap, Vec<RecordBatch>)>,
    /// Positions within `inserts[table]` (concatenated) deleted again.
    pub pending_deletes: HashMap<TableId, RoaringBitmap>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.deletes.is_empty()
    }

    pub fn insert(&mut self, table: TableId, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.inserts.entry(table).or_default().push(batch);
        }
    }

    pub fn delete(
        &mut self,
        table: TableId,
        source: SourceId,
        positions: &RoaringBitmap,
        keys: Option<RecordBatch>,
    ) {
        if source == PENDING_SOURCE {
            *self.pending_deletes.entry(table).or_default() |= positions;
            return;
        }
        let entry = self.deletes.entry((table, source)).or_default();
        entry.0 |= positions;
        entry.1.extend(keys);
    }

    /// Union `other` into this set as is (pending-row deletes stay pending).
    pub fn merge(&mut self, other: WriteSet) {
        for (t, d) in other.pending_deletes {
            *self.pending_deletes.entry(t).or_default() |= d;
        }
        for ((t, s), (pos, keys)) in other.deletes {
            let e = self.deletes.entry((t, s)).or_default();
            e.0 |= pos;
            e.1.extend(keys);
        }
        for (t, batches) in other.inserts {
            self.inserts.entry(t).or_default().extend(batches);
        }
    }

    /// Fold a finished statement's writes into this (transaction) set. The
    /// statement's pending-row positions refer to this set's inserts.
    pub fn absorb(&mut self, stmt: WriteSet) -> datafusion::error::Result<()> {
        for (table, dels) in stmt.pending_deletes {
            self.remove_pending(table, &dels)?;
        }
        for ((t, s), (pos, keys)) in stmt.deletes {
            let e = self.deletes.entry((t, s)).or_default();
            e.0 |= pos;
            e.1.extend(keys);
        }
        for (t, batches) in stmt.inserts {
            self.inserts.entry(t).or_default().extend(batches);
        }
        Ok(())
    }

    fn remove_pending(
        &mut self,
        table: TableId,
        dels: &RoaringBitmap,
    ) -> datafusion::error::Result<()> {
        let Some(batches) = self.inserts.get_mut(&table) else {
            return Ok(());
        };
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let all = concat_batches(&first.schema(), batches.iter())?;
        let keep: datafusion::arrow::array::BooleanArray = (0..all.num_rows() as u32)
            .map(|i| Some(!dels.contains(i)))
            .collect();
        *batches = vec![filter_record_batch(&all, &keep)?];
        Ok(())
    }

    /// The storage ops that commit this set: deletes first, then inserts.
    pub fn into_ops(
        self,
        key_schema: impl Fn(TableId) -> Option<Arc<datafusion::arrow::datatypes::Schema>>,
    ) -> datafusion::error::Result<Vec<WalOp>> {
        let mut ops = Vec::new();
        let mut deletes: Vec<_> = self.deletes.into_iter().collect();
        deletes.sort_by_key(|(k, _)| *k);
        for ((table, source), (positions, keys)) in deletes {
            let keys = match key_schema(table) {
                Some(schema) if !keys.is_empty() => Some(concat_batches(&schema, keys.iter())?),
                _ => None,
            };
            ops.push(WalOp::Delete {
                table,
                source,
                positions,
                keys,
            });
        }
        let mut inserts: Vec<_> = self.inserts.into_iter().collect();
        inserts.sort_by_key(|(t, _)| *t);
        for (table, batches) in inserts {
            for batch in batches {
                if batch.num_rows() > 0 {
                    ops.push(WalOp::Insert { table, batch });
                }
            }
        }
        Ok(ops)
    }
}

impl WriteSet {
    /// Check primary-key uniqueness of this (transaction) write set against
    /// itself and the committed rows, so a duplicate fails at the statement
    /// that adds it rather than at COMMIT.
    pub fn check_keys(&self, storage: &provdb_storage::Storage) -> Result<(), crate::SqlError> {
        use datafusion::arrow::row::{RowConverter, SortField};
        for table in self.inserts.keys() {
            let Some(def) = storage.table(*table) else {
                continue;
            };
            if def.primary_key.is_empty() {
                continue;
            }
            let fields = def
                .primary_key
                .iter()
                .map(|&i| SortField::new(def.schema.field(i).data_type().clone()))
                .collect();
            let conv =
                RowConverter::new(fields).map_err(|e| crate::SqlError::internal(e.to_string()))?;
            let encode =
                |b: &RecordBatch, key_only: bool| -> Result<Vec<Vec<u8>>, crate::SqlError> {
                    let cols: Vec<_> = if key_only {
                        b.columns().to_vec()
                    } else {
                        def.primary_key
                            .iter()
                            .map(|&i| Arc::clone(b.column(i)))
                            .collect()
                    };
                    let rows = conv
                        .convert_columns(&cols)
                        .map_err(|e| crate::SqlError::internal(e.to_string()))?;
                    Ok(rows.iter().map(|r| r.as_ref().to_vec()).collect())
                };
            let mut deleted = std::collections::HashSet::new();
            for ((t, _), (_, keys)) in &self.deletes {
                if t == table {
                    for k in keys {
                        deleted.extend(encode(k, true)?);
                    }
                }
            }
            let mut seen = std::collections::HashSet::new();
            for b in
                crate::table::pending_rows(self, *table).map_err(crate::error::from_datafusion)?
            {
                let keys = encode(&b, false)?;
                let present = storage
                    .keys_present(
                        *table,
                        &b.project(&def.primary_key)
                            .map_err(|e| crate::SqlError::internal(e.to_string()))?,
                    )
                    .map_err(crate::error::from_storage)?;
                for (i, k) in keys.into_iter().enumerate() {
                    let committed = present[i] && !deleted.contains(&k);
                    if committed || !seen.insert(k) {
                        let cols = def
                            .primary_key
                            .iter()
                            .map(|&c| def.schema.field(c).name().clone())
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(crate::SqlError::new(
                            "23505",
                            format!(
                                "duplicate key value violates unique constraint \"{}\"",
                                def.pk_constraint_name()
                            ),
                        )
                        .with_detail(format!("Key ({cols}) already exists.")));
                    }
                }
            }
        }
        Ok(())
    }
}
