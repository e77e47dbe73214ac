//! The in-memory state of the database: every table's buffers, segments,
//! deletion vectors and key index, plus the metadata map. Changed only by
//! applying WAL ops ([`State::apply`]) — the same code for live commits and
//! for replay, so recovery rebuilds exactly what was acknowledged — and by
//! checkpoint/compaction installs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};

use arrow::array::RecordBatch;
use roaring::RoaringBitmap;
use tracing::debug;

use crate::error::{Result, StorageError};
use crate::memtable::Memtable;
use crate::pk::{PkIndex, PkKey, RowAddr};
use crate::record::{Freeze, WalOp};
use crate::segment::{SegmentFile, SegmentMeta};
use crate::table::{SourceId, TableDef, TableId};

/// A persisted segment and its current deletion vector.
#[derive(Debug, Clone)]
pub struct SegmentState {
    pub file: Arc<SegmentFile>,
    pub dv: Arc<RoaringBitmap>,
    /// The deletion vector changed since it was last persisted.
    pub dv_dirty: bool,
}

/// Everything about one table.
#[derive(Debug)]
pub struct TableState {
    pub def: TableDef,
    /// LSN of the commit that created it (0 if it predates the manifest).
    pub created_lsn: u64,
    pub active: Memtable,
    /// Frozen buffers waiting to be written to Parquet, oldest first.
    pub frozen: Vec<Memtable>,
    pub segments: Vec<SegmentState>,
    pub pk: Option<PkIndex>,
    /// LSN of the last commit that inserted or deleted rows here (not
    /// persisted: 0 after a restart until the next change). Lets a cache
    /// built from this table notice writes it did not make.
    pub data_lsn: u64,
}

impl TableState {
    pub fn new(def: TableDef, source: SourceId, created_lsn: u64) -> Result<Self> {
        let pk = if def.primary_key.is_empty() {
            None
        } else {
            Some(PkIndex::new(&def.schema_ref(), &def.primary_key)?)
        };
        Ok(TableState {
            def,
            created_lsn,
            active: Memtable::new(source),
            frozen: Vec::new(),
            segments: Vec::new(),
            pk,
            data_lsn: 0,
        })
    }

    /// Bytes held in memory by this table's buffers.
    pub fn memory_bytes(&self) -> usize {
        self.active.bytes() + self.frozen.iter().map(Memtable::bytes).sum::<usize>()
    }

    fn memtable_mut(&mut self, id: SourceId) -> Option<&mut Memtable> {
        if self.active.id == id {
            return Some(&mut self.active);
        }
        self.frozen.iter_mut().find(|m| m.id == id)
    }

    /// Mark positions of a source deleted (idempotent).
    fn delete(&mut self, source: SourceId, positions: &RoaringBitmap) -> bool {
        if let Some(m) = self.memtable_mut(source) {
            m.delete(positions);
            return true;
        }
        if let Some(s) = self.segments.iter_mut().find(|s| s.file.meta.id == source) {
            let before = s.dv.len();
            Arc::make_mut(&mut s.dv).extend(positions.iter());
            s.dv_dirty |= s.dv.len() != before;
            return true;
        }
        false
    }

    /// Whether `source` is one of this table's sources.
    pub fn has_source(&self, source: SourceId) -> bool {
        self.active.id == source
            || self.frozen.iter().any(|m| m.id == source)
            || self.segments.iter().any(|s| s.file.meta.id == source)
    }

    pub fn live_rows(&self) -> u64 {
        self.active.live_rows()
            + self.frozen.iter().map(Memtable::live_rows).sum::<u64>()
            + self
                .segments
                .iter()
                .map(|s| s.file.meta.rows - s.dv.len())
                .sum::<u64>()
    }
}

/// The whole in-memory database state.
#[derive(Debug, Default)]
pub struct State {
    pub tables: HashMap<TableId, TableState>,
    pub by_name: HashMap<(String, String), TableId>,
    pub meta: BTreeMap<String, serde_json::Value>,
    pub next_source_id: u64,
    pub next_table_id: u64,
    /// Highest LSN applied (and so visible).
    pub applied_lsn: u64,
    /// Bumped by every DDL op, so layers above can cache schemas.
    pub ddl_version: u64,
    /// Every segment file in memory, held weakly: a file the manifest no
    /// longer names is deleted only once no snapshot holds it.
    pub files: HashMap<String, Weak<SegmentFile>>,
}

impl State {
    pub fn table(&self, id: TableId) -> Result<&TableState> {
        self.tables
            .get(&id)
            .ok_or_else(|| StorageError::NoSuchTable(id.to_string()))
    }

    pub fn alloc_source(&mut self) -> SourceId {
        let id = SourceId(self.next_source_id);
        self.next_source_id += 1;
        id
    }

    /// The in-memory handle of a segment file, registered in [`State::files`]
    /// (whose dead entries the garbage collector prunes).
    pub fn segment_file(&mut self, meta: SegmentMeta) -> Arc<SegmentFile> {
        let path = meta.path.clone();
        let file = Arc::new(SegmentFile { meta });
        self.files.insert(path, Arc::downgrade(&file));
        file
    }

    fn note_source(&mut self, id: SourceId) {
        self.next_source_id = self.next_source_id.max(id.0 + 1);
    }

    /// Apply every op of one logged commit, in order.
    pub fn apply_commit(&mut self, lsn: u64, ops: Vec<WalOp>) -> Result<()> {
        self.reserve_keys(&ops);
        ops.into_iter().try_for_each(|op| self.apply(lsn, op))
    }

    /// Grow each key index once for all the rows a commit inserts: growing
    /// batch by batch rehashed a 10M-row COPY's keys again at every doubling.
    fn reserve_keys(&mut self, ops: &[WalOp]) {
        let mut rows: HashMap<TableId, usize> = HashMap::new();
        for op in ops {
            if let WalOp::Insert { table, batch } = op {
                *rows.entry(*table).or_default() += batch.num_rows();
            }
        }
        for (table, n) in rows {
            if let Some(pk) = self.tables.get_mut(&table).and_then(|t| t.pk.as_mut()) {
                pk.reserve(n);
            }
        }
    }

    /// Apply one committed op. Never fails on ops that passed validation; on
    /// replay, ops naming tables or sources that no longer exist are skipped.
    pub fn apply(&mut self, lsn: u64, op: WalOp) -> Result<()> {
        match op {
            WalOp::CreateTable { def, source } => self.apply_create(lsn, def, source)?,
            WalOp::DropTable { table } => {
                if let Some(t) = self.tables.remove(&table) {
                    self.by_name
                        .remove(&(t.def.namespace.clone(), t.def.name.clone()));
                }
                self.ddl_version += 1;
            }
            WalOp::AlterTable { def } => {
                if let Some(t) = self.tables.get_mut(&def.id) {
                    let key = (t.def.namespace.clone(), t.def.name.clone());
                    self.by_name.remove(&key);
                    self.by_name
                        .insert((def.namespace.clone(), def.name.clone()), def.id);
                    t.def = def;
                }
                self.ddl_version += 1;
            }
            WalOp::Insert { table, batch } => self.apply_insert(lsn, table, batch)?,
            WalOp::Delete {
                table,
                source,
                positions,
                keys,
            } => self.apply_delete(lsn, table, source, &positions, keys.as_ref())?,
            WalOp::PutMeta { key, value } => {
                self.meta.insert(key, value);
            }
            WalOp::DeleteMeta { key } => {
                self.meta.remove(&key);
            }
            WalOp::Checkpoint { freezes } => self.apply_freezes(&freezes),
            WalOp::AttachSegment { table, segment } => self.apply_attach(lsn, table, segment),
        }
        self.applied_lsn = self.applied_lsn.max(lsn);
        Ok(())
    }

    fn apply_create(&mut self, lsn: u64, def: TableDef, source: SourceId) -> Result<()> {
        self.note_source(source);
        self.next_table_id = self.next_table_id.max(def.id.0 + 1);
        if self.tables.contains_key(&def.id) {
            return Ok(()); // already in the manifest
        }
        self.by_name
            .insert((def.namespace.clone(), def.name.clone()), def.id);
        let id = def.id;
        self.tables.insert(id, TableState::new(def, source, lsn)?);
        self.ddl_version += 1;
        Ok(())
    }

    fn apply_insert(&mut self, lsn: u64, table: TableId, batch: RecordBatch) -> Result<()> {
        let Some(t) = self.tables.get_mut(&table) else {
            debug!(%table, "skipping insert into a dropped table");
            return Ok(());
        };
        t.data_lsn = lsn;
        let keys = match &t.pk {
            Some(pk) => Some(pk.keys(&batch, false)?),
            None => None,
        };
        let first = t.active.append(batch)?;
        if let (Some(pk), Some(keys)) = (t.pk.as_mut(), keys) {
            let source = t.active.id;
            for (i, k) in keys.into_iter().enumerate() {
                pk.insert(
                    k,
                    RowAddr {
                        source,
                        pos: first + i as u32,
                    },
                );
            }
        }
        Ok(())
    }

    fn apply_delete(
        &mut self,
        lsn: u64,
        table: TableId,
        source: SourceId,
        positions: &RoaringBitmap,
        keys: Option<&RecordBatch>,
    ) -> Result<()> {
        let Some(t) = self.tables.get_mut(&table) else {
            return Ok(());
        };
        t.data_lsn = lsn;
        if !t.delete(source, positions) {
            debug!(%table, %source, "skipping delete on a source that was compacted away");
            return Ok(());
        }
        if let (Some(pk), Some(keys)) = (t.pk.as_mut(), keys) {
            // Keys may come in any order: remove each one whose entry points
            // at a deleted position of this source.
            for k in pk.keys(keys, true)? {
                if pk
                    .get(&k)
                    .is_some_and(|a: RowAddr| a.source == source && positions.contains(a.pos))
                {
                    pk.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn apply_attach(&mut self, lsn: u64, table: TableId, segment: SegmentMeta) {
        self.note_source(segment.id);
        let present = self.tables.get(&table).map(|t| t.has_source(segment.id));
        if present != Some(false) {
            debug!(%table, source = %segment.id, "skipping the attach of a segment already present or of a dropped table");
            return;
        }
        let file = self.segment_file(segment);
        if let Some(t) = self.tables.get_mut(&table) {
            t.data_lsn = lsn;
            t.segments.push(SegmentState {
                file,
                dv: Arc::default(),
                dv_dirty: false,
            });
        }
    }

    fn apply_freezes(&mut self, freezes: &[Freeze]) {
        for f in freezes {
            self.note_source(f.next);
            if let Some(t) = self.tables.get_mut(&f.table) {
                if t.active.id != f.frozen {
                    continue; // already reflected in the manifest
                }
                let old = std::mem::replace(&mut t.active, Memtable::new(f.next));
                if !old.is_empty() {
                    t.frozen.push(old);
                }
            }
        }
    }

    /// Freezes for a checkpoint now: every non-empty active buffer.
    pub fn plan_freezes(&mut self) -> Vec<Freeze> {
        let mut ids: Vec<TableId> = self
            .tables
            .iter()
            .filter(|(_, t)| !t.active.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|table| {
                let next = self.alloc_source();
                let frozen = self.tables[&table].active.id;
                Freeze {
                    table,
                    frozen,
                    next,
                }
            })
            .collect()
    }
}

/// Changes that earlier commits of the same group will make, so that a group
/// is validated as if applied in order.
#[derive(Debug, Default)]
pub struct GroupOverlay {
    pub created: HashMap<(String, String), TableId>,
    pub dropped: HashSet<TableId>,
    pub keys_added: HashMap<TableId, KeySet>,
    pub keys_removed: HashMap<TableId, KeySet>,
}

/// Integer keys the last commit of a group inserts, per table, checked for
/// repeats once the whole commit is read (see [`State::validate`]).
type IntKeys = HashMap<TableId, Vec<i64>>;

/// A key that occurs twice in `keys`, if any: one pass when they are in
/// increasing order, a sort otherwise.
fn first_repeat(mut keys: Vec<i64>) -> Option<i64> {
    if keys.is_sorted_by(|a, b| a < b) {
        return None;
    }
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// Add `more` to `into`, moving the set instead when `into` is empty (a
/// commit of a million rows would otherwise rehash a million keys).
fn merge_keys(into: &mut KeySet, more: KeySet) {
    if into.is_empty() {
        *into = more;
    } else {
        into.extend(more);
    }
}

/// Encoded primary keys (see [`crate::pk::PkIndex`]), with a fast seeded
/// hasher: every row of every commit is checked against these.
pub type KeySet = hashbrown::HashSet<PkKey>;

impl State {
    /// Check a commit against the current state plus the group overlay; on
    /// success record its effects in the overlay.
    ///
    /// `last` says no later commit of the group will be checked against this
    /// one: its integer keys are then checked for repeats by one pass over
    /// them (ordered keys, the usual bulk load, need no set at all) and not
    /// added to the overlay, which nothing reads after it.
    pub fn validate(&self, ops: &[WalOp], overlay: &mut GroupOverlay, last: bool) -> Result<()> {
        let mut local = GroupOverlay::default();
        let mut ints = IntKeys::new();
        for op in ops {
            self.validate_op(op, overlay, &mut local, last.then_some(&mut ints))?;
        }
        for (table, keys) in ints {
            if let Some(dup) = first_repeat(keys) {
                let t = self.table(table)?;
                return Err(unique_violation(t, dup.to_string()));
            }
        }
        if last {
            return Ok(());
        }
        overlay.created.extend(local.created);
        overlay.dropped.extend(local.dropped);
        for (t, ks) in local.keys_added {
            if let Some(removed) = overlay.keys_removed.get_mut(&t) {
                for k in &ks {
                    removed.remove(k);
                }
            }
            merge_keys(overlay.keys_added.entry(t).or_default(), ks);
        }
        for (t, ks) in local.keys_removed {
            merge_keys(overlay.keys_removed.entry(t).or_default(), ks);
        }
        Ok(())
    }

    fn validate_op(
        &self,
        op: &WalOp,
        group: &GroupOverlay,
        local: &mut GroupOverlay,
        ints: Option<&mut IntKeys>,
    ) -> Result<()> {
        match op {
            WalOp::CreateTable { def, .. } => {
                let key = (def.namespace.clone(), def.name.clone());
                let exists = self
                    .by_name
                    .get(&key)
                    .is_some_and(|id| !group.dropped.contains(id) && !local.dropped.contains(id));
                if exists || group.created.contains_key(&key) || local.created.contains_key(&key) {
                    return Err(StorageError::TableExists(def.qualified_name()));
                }
                local.created.insert(key, def.id);
            }
            WalOp::DropTable { table }
            | WalOp::AlterTable {
                def: TableDef { id: table, .. },
            } => {
                if !self.tables.contains_key(table) || group.dropped.contains(table) {
                    return Err(StorageError::NoSuchTable(table.to_string()));
                }
                if matches!(op, WalOp::DropTable { .. }) {
                    local.dropped.insert(*table);
                }
            }
            WalOp::Insert { table, batch } => {
                self.validate_insert(*table, batch, group, local, ints)?
            }
            WalOp::Delete {
                table,
                source,
                positions,
                keys,
            } => {
                let t = self.table(*table)?;
                if !t.has_source(*source) {
                    return Err(StorageError::Invalid(format!(
                        "rows of {} changed concurrently (source {source} is gone); retry the statement",
                        t.def.qualified_name()
                    )));
                }
                if let (Some(pk), Some(keys)) = (&t.pk, keys) {
                    let encoded = pk.keys(keys, true)?;
                    if encoded.len() as u64 != positions.len() {
                        return Err(StorageError::Invalid(
                            "delete keys do not match positions".into(),
                        ));
                    }
                    local
                        .keys_removed
                        .entry(*table)
                        .or_default()
                        .extend(encoded);
                }
            }
            WalOp::AttachSegment { table, segment } => {
                self.validate_attach(*table, segment, group)?
            }
            WalOp::PutMeta { .. } | WalOp::DeleteMeta { .. } | WalOp::Checkpoint { .. } => {}
        }
        Ok(())
    }

    fn validate_attach(
        &self,
        table: TableId,
        segment: &SegmentMeta,
        group: &GroupOverlay,
    ) -> Result<()> {
        let t = self.table(table)?;
        if group.dropped.contains(&table) {
            return Err(StorageError::NoSuchTable(table.to_string()));
        }
        if t.pk.is_some() {
            return Err(StorageError::Invalid(format!(
                "a staged segment cannot be attached to {}: it has a primary key",
                t.def.qualified_name()
            )));
        }
        if t.has_source(segment.id) {
            return Err(StorageError::Invalid(format!(
                "segment {} is attached to {} already",
                segment.path,
                t.def.qualified_name()
            )));
        }
        Ok(())
    }

    fn validate_insert(
        &self,
        table: TableId,
        batch: &RecordBatch,
        group: &GroupOverlay,
        local: &mut GroupOverlay,
        ints: Option<&mut IntKeys>,
    ) -> Result<()> {
        let t = self.table(table)?;
        check_batch(&t.def, batch)?;
        let Some(pk) = &t.pk else { return Ok(()) };
        let keys = pk.keys(batch, false)?;
        let removed_g = group.keys_removed.get(&table);
        let removed_l = local.keys_removed.get(&table);
        let added_g = group.keys_added.get(&table);
        let local_added = local.keys_added.entry(table).or_default();
        let mut local_ints = ints.map(|m| m.entry(table).or_default());
        for (i, k) in keys.into_iter().enumerate() {
            let removed = removed_g.is_some_and(|s| s.contains(&k))
                || removed_l.is_some_and(|s| s.contains(&k));
            let in_index = pk.get(&k).is_some() && !removed;
            let dup_group = added_g.is_some_and(|s| s.contains(&k));
            if in_index || dup_group || local_added.contains(&k) {
                return Err(unique_violation(t, pk.render_key(batch, i, false)));
            }
            match (k, local_ints.as_deref_mut()) {
                (PkKey::Int(v), Some(ints)) => ints.push(v),
                (k, _) => {
                    local_added.insert(k);
                }
            }
        }
        Ok(())
    }
}

/// Whether `batch` has the columns of `def`, with their types, and no NULL
/// where the table forbids one.
pub fn check_batch(def: &TableDef, batch: &RecordBatch) -> Result<()> {
    let schema = def.schema_ref();
    let name = def.qualified_name();
    if batch.num_columns() != schema.fields().len() {
        return Err(StorageError::SchemaMismatch {
            table: name,
            detail: format!(
                "{} columns given, table has {}",
                batch.num_columns(),
                schema.fields().len()
            ),
        });
    }
    for (i, field) in schema.fields().iter().enumerate() {
        let col = batch.column(i);
        if col.data_type() != field.data_type() {
            return Err(StorageError::SchemaMismatch {
                table: name,
                detail: format!(
                    "column {} is {}, got {}",
                    field.name(),
                    field.data_type(),
                    col.data_type()
                ),
            });
        }
        if !field.is_nullable() && col.null_count() > 0 {
            return Err(StorageError::NotNullViolation {
                table: def.name.clone(),
                column: field.name().clone(),
            });
        }
    }
    Ok(())
}

/// The error for a key that already exists (`key` as the client sees it).
fn unique_violation(t: &TableState, key: String) -> StorageError {
    let schema = t.def.schema_ref();
    let columns =
        t.pk.iter()
            .flat_map(|pk| pk.columns.iter())
            .map(|&c| schema.field(c).name().clone())
            .collect::<Vec<_>>()
            .join(", ");
    StorageError::UniqueViolation {
        constraint: t.def.pk_constraint_name(),
        columns,
        key,
    }
}
