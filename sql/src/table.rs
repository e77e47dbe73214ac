//! [`ProvTable`]: the DataFusion table provider over a storage table, as one
//! session sees it (committed rows plus the session's uncommitted writes).
//!
//! - `scan` unions the Parquet segments (deletion vectors applied as row
//!   selections, filters pushed into the Parquet reader for statistics
//!   pruning) with the in-memory buffers and cached segments (batches
//!   whose min/max rule the filters out left out).
//! - `insert_into` returns a [`DataSinkExec`] whose sink stages rows in the
//!   session's statement write set.
//! - `delete_from` / `update` return a [`DmlExec`] that finds the matching
//!   rows' addresses and stages deletes (and new row versions).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{and, cast, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, conjunction_opt};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use provdb_storage::segment::{SegmentFile, SegmentMeta};
use provdb_storage::{
    KeyedRow, RowAddr, SegmentSnapshot, SourceId, Storage, TableDef, TableId, TableSnapshot,
    slice_row,
};
use roaring::RoaringBitmap;

use crate::batches::batch_of;
use crate::eq_index;
use crate::error::SqlError;
use crate::key_join::KeyFilter;
use crate::live_source::LiveSource;
use crate::scaled_columns::ScaledColumns;
use crate::scan_casts::ScanCast;
use crate::session::SessionShared;
use crate::txn::{PENDING_SOURCE, WriteSet};
use crate::zone_map::{self, Bound};

/// A stored table as seen by one session.
#[derive(Debug)]
pub struct ProvTable {
    pub(crate) storage: Storage,
    pub(crate) store_url: ObjectStoreUrl,
    pub(crate) def: TableDef,
    pub(crate) defaults: HashMap<String, Expr>,
    pub(crate) session: Arc<SessionShared>,
}

pub(crate) fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl ProvTable {
    fn id(&self) -> TableId {
        self.def.id
    }

    /// Committed rows still live in memory buffers plus the open
    /// transaction's inserts, with deleted rows removed (and committed
    /// rows `narrowing` rules out left out).
    fn memory_batches(
        &self,
        snap: &TableSnapshot,
        txn: &WriteSet,
        narrowing: &Narrowing,
        proj: &Projector,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for m in &snap.memtables {
            let extra = txn.deletes.get(&(self.id(), m.id)).map(|(p, _)| p);
            self.push_live(
                &mut out,
                &m.batches,
                &merged_dv(&m.dv, extra),
                narrowing,
                proj,
            )?;
        }
        for b in pending_rows(txn, self.id())? {
            let (b, late) = proj.project(&b)?;
            out.push(if late { proj.add_casts(&b)? } else { b });
        }
        out.retain(|b| b.num_rows() > 0);
        Ok(out)
    }

    /// Append the rows of `batches` (one source, in position order) not in
    /// `dv`, in the table's current schema projected by `proj`, leaving out
    /// the batches whose min/max rule out a bound of `narrowing` (checked
    /// before deleted rows are removed: the batch's arrays are the ones
    /// whose min/max is kept). A scan runs this over every cached batch of
    /// the table, so a batch already in the current schema (compared once
    /// per schema object, not per batch) is neither copied nor adapted.
    /// An equality bound on a text or integer column keeps only the rows
    /// its index finds ([`eq_index`]); otherwise a join's keys, if any,
    /// filter the rows.
    fn push_live(
        &self,
        out: &mut Vec<RecordBatch>,
        batches: &[RecordBatch],
        dv: &RoaringBitmap,
        narrowing: &Narrowing<'_>,
        proj: &Projector,
    ) -> Result<()> {
        let schema = self.def.schema_ref();
        let mut current: Option<(SchemaRef, bool)> = None;
        let mut pos = 0u32;
        for b in batches {
            let n = b.num_rows();
            let first = pos;
            pos += n as u32;
            let fits = match &current {
                Some((s, fits)) if Arc::ptr_eq(s, b.schema_ref()) => *fits,
                _ => {
                    let fits = b.schema_ref() == &schema;
                    current = Some((b.schema(), fits));
                    fits
                }
            };
            let adapted;
            let b = if fits {
                b
            } else {
                adapted = provdb_storage::maintenance::adapt_batch(b, &schema)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                &adapted
            };
            if !zone_map::may_match(b, &narrowing.bounds) {
                continue;
            }
            let rows = eq_index::eq_rows(b, &narrowing.bounds).or_else(|| {
                let (column, values) = narrowing.any_of?;
                eq_index::rows_in(b, column, values)
            });
            let mut live = provdb_storage::dv::live_mask(dv, first, n);
            if let (None, Some(keys)) = (&rows, narrowing.keys) {
                // A NULL key matches nothing: `and` keeps the NULL, the
                // filter drops it.
                let matching = keys.rows()?.evaluate(b)?.into_array(n)?;
                let matching = matching.as_boolean();
                live = Some(match live {
                    Some(l) => and(&l, matching)?,
                    None => matching.clone(),
                });
            }
            let rows: Option<Vec<u32>> = rows.map(|rows| {
                rows.into_iter()
                    .filter(|&r| live.as_ref().is_none_or(|m| m.value(r as usize)))
                    .collect()
            });
            // (before a keyed scan's casts of the batch's whole arrays)
            let none_kept = match (&rows, &live) {
                (Some(rows), _) => rows.is_empty(),
                (None, Some(mask)) => mask.true_count() == 0,
                (None, None) => false,
            };
            if none_kept {
                continue;
            }
            let (b, late) = proj.project(b)?;
            let kept = match (rows, live) {
                (Some(rows), _) => take_record_batch(&b, &UInt32Array::from(rows))?,
                (None, Some(mask)) => filter_record_batch(&b, &mask)?,
                (None, None) => b,
            };
            out.push(if late { proj.add_casts(&kept)? } else { kept });
        }
        Ok(())
    }

    /// The snapshot's segments as live rows read through the segment cache,
    /// or, when the cache is off, as segments to scan from Parquet.
    async fn cached_segments(
        &self,
        snap: &TableSnapshot,
        txn: &WriteSet,
        narrowing: &Narrowing<'_>,
        proj: &Projector,
    ) -> Result<(Vec<RecordBatch>, Vec<SegmentSnapshot>)> {
        if !self.storage.segment_cache_enabled() {
            return Ok((Vec::new(), snap.segments.clone()));
        }
        let mut rows = Vec::new();
        for seg in &snap.segments {
            let meta = &seg.file.meta;
            let batches = self
                .storage
                .segment_batches(meta)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let extra = txn.deletes.get(&(self.id(), meta.id)).map(|(p, _)| p);
            self.push_live(
                &mut rows,
                &batches,
                &merged_dv(&seg.dv, extra),
                narrowing,
                proj,
            )?;
        }
        rows.retain(|b| b.num_rows() > 0);
        Ok((rows, Vec::new()))
    }

    /// A Parquet source over this table's segments whose file footers are
    /// kept in the runtime's metadata cache: a segment never changes once
    /// written, so repeated reads of it (key lookups, scans of segments the
    /// segment cache does not hold) parse its footer once.
    fn parquet_source(&self, runtime: &RuntimeEnv) -> Result<ParquetSource> {
        let store = runtime.object_store(&self.store_url)?;
        let footers = runtime.cache_manager.get_file_metadata_cache();
        let readers = CachedParquetFileReaderFactory::new(store, footers);
        Ok(ParquetSource::new(self.def.schema_ref())
            .with_parquet_file_reader_factory(Arc::new(readers)))
    }

    fn parquet_scan(
        &self,
        runtime: &RuntimeEnv,
        segments: &[SegmentSnapshot],
        txn: &WriteSet,
        projection: Option<&Vec<usize>>,
        predicate: Option<&Arc<dyn PhysicalExpr>>,
        limit: Option<usize>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if segments.is_empty() {
            return Ok(None);
        }
        let mut source = self.parquet_source(runtime)?;
        if let Some(p) = predicate {
            source = source.with_predicate(Arc::clone(p));
        }
        let mut builder = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_expr_adapter(Some(Arc::new(ScaledColumns)))
            .with_limit(limit)
            .with_projection_indices(projection.cloned())?;
        let mut any = false;
        for seg in segments {
            let meta = &seg.file.meta;
            let extra = txn.deletes.get(&(self.id(), meta.id)).map(|(p, _)| p);
            let dv = merged_dv(&seg.dv, extra);
            if dv.len() >= meta.rows {
                continue;
            }
            let mut file = PartitionedFile::new(meta.path.clone(), meta.bytes);
            if !dv.is_empty() {
                file = file
                    .with_extension(ParquetRowSelection::new(selection_from_dv(&dv, meta.rows)));
            }
            builder = builder.with_file(file);
            any = true;
        }
        if !any {
            return Ok(None);
        }
        Ok(Some(DataSourceExec::from_data_source(builder.build())))
    }
}

/// What a scan reads, fixed when the statement's plan is built: the
/// statement's snapshot and transaction, the filters in physical form. A
/// kept plan's probe-side scan is gathered from it later, once the keys of
/// the join's build side are known ([`crate::key_join`]).
pub(crate) struct ScanPlan {
    snap: TableSnapshot,
    txn: WriteSet,
    runtime: Arc<RuntimeEnv>,
    partitions: usize,
    projection: Option<Vec<usize>>,
    predicate: Option<Arc<dyn PhysicalExpr>>,
    limit: Option<usize>,
}

impl ProvTable {
    /// The statement's snapshot of this table and its transaction's writes.
    fn scan_input(&self) -> Result<(TableSnapshot, WriteSet)> {
        let snap = self
            .session
            .snapshot(&self.storage, self.id())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let txn = self.session.txn.lock().clone();
        Ok((snap, txn))
    }

    /// A scan to gather later (see [`ProvTable::gather`]).
    pub(crate) fn plan_scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<ScanPlan> {
        let input = self.scan_input()?;
        Ok(self.plan_scan_of(state, input, projection, filters, limit))
    }

    /// [`ProvTable::plan_scan`] of a snapshot already taken.
    fn plan_scan_of(
        &self,
        state: &dyn Session,
        (snap, txn): (TableSnapshot, WriteSet),
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> ScanPlan {
        ScanPlan {
            snap,
            txn,
            runtime: Arc::clone(state.runtime_env()),
            partitions: state.config().target_partitions(),
            projection: projection.cloned(),
            // The filters as one predicate (none when one cannot be planned
            // alone, a subquery say).
            predicate: self.physical_filter(state, filters.to_vec()).ok().flatten(),
            limit,
        }
    }

    /// The scan `plan` describes: Parquet segments the cache does not hold
    /// plus the in-memory batches (cached segments, buffers, the
    /// transaction's inserts). With `keys` (a join's build-side keys on
    /// one column), a scan that may leave out the rows without one of
    /// them: found through the key index when the column is the primary
    /// key and there is one key, otherwise the batches whose min/max rule
    /// every key out are left out and the other rows are filtered.
    pub(crate) async fn gather(
        &self,
        plan: &ScanPlan,
        keys: Option<&KeyFilter>,
        casts: &[ScanCast],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projection = plan.projection.as_ref();
        if let Some(found) = keys
            .map(|k| self.lookup_keys(plan, k))
            .transpose()?
            .flatten()
        {
            return with_casts(found, casts);
        }
        // Min/max bounds for in-memory batches, row-group pruning for
        // Parquet segments. A limit is pushed down only without filters,
        // but do not rely on it.
        let mut bounds = match (&plan.predicate, plan.limit) {
            (Some(p), None) => zone_map::bounds(p),
            _ => Vec::new(),
        };
        if plan.limit.is_none() {
            bounds.extend(keys.map(KeyFilter::bounds).unwrap_or_default());
        }
        let narrowing = Narrowing {
            bounds,
            keys,
            // several keys found through the column's index too
            any_of: keys
                .filter(|k| !k.values.is_empty())
                .map(|k| (k.column, k.values.as_slice())),
        };
        // In-memory batches are projected as they are gathered (one schema
        // for all), not by the memory source per batch and per run.
        let proj = Projector::new(self.def.schema_ref(), projection, casts)?;
        let (snap, txn) = (&plan.snap, &plan.txn);
        let (mut mem, files) = self.cached_segments(snap, txn, &narrowing, &proj).await?;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        // The keys' expressions are made only for segments read from
        // Parquet (the segment cache is off).
        let predicate = match (files.is_empty(), keys) {
            (false, Some(k)) => conjunction_opt(
                plan.predicate
                    .iter()
                    .cloned()
                    .chain([Arc::clone(k.predicate()?)]),
            ),
            _ => plan.predicate.clone(),
        };
        let parquet = self.parquet_scan(
            &plan.runtime,
            &files,
            txn,
            projection,
            predicate.as_ref(),
            plan.limit,
        )?;
        inputs.extend(parquet.map(|p| with_casts(p, casts)).transpose()?);
        mem.extend(self.memory_batches(snap, txn, &narrowing, &proj)?);
        if !mem.is_empty() || inputs.is_empty() {
            let parts = partitions(mem, plan.partitions);
            let src = MemorySourceConfig::try_new(&parts, Arc::clone(&proj.schema), None)?
                .with_limit(plan.limit);
            inputs.push(DataSourceExec::from_data_source(LiveSource::new(src)));
        }
        if inputs.len() == 1 {
            return Ok(inputs.remove(0));
        }
        UnionExec::try_new(inputs)
    }

    /// One key on the one-column primary key: the row through the key
    /// index. `None`: scan.
    fn lookup_keys(
        &self,
        plan: &ScanPlan,
        keys: &KeyFilter,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let ([value], Some(pk)) = (keys.values.as_slice(), self.single_key_field()) else {
            return Ok(None);
        };
        if self.def.schema.index_of(pk.name()).ok() != Some(keys.column) {
            return Ok(None);
        }
        let (snap, txn) = (&plan.snap, &plan.txn);
        self.key_scan(&plan.runtime, snap, txn, value, plan.projection.as_ref())
    }
}

impl ProvTable {
    /// The live rows of `snap` and `txn` that may hold one of `keys` (none
    /// NULL, of the column's type) in table column `column`, with the
    /// table columns `projection`: the batches whose min/max rule every key
    /// out are left out, and where the column's index can answer
    /// ([`eq_index`]) only the rows it finds are kept. Candidates, to be
    /// filtered exactly by the caller. `None` when segments would have to
    /// be scanned from Parquet (the segment cache is off).
    pub(crate) async fn rows_with_keys(
        &self,
        snap: &TableSnapshot,
        txn: &WriteSet,
        column: usize,
        keys: &[ScalarValue],
        projection: &[usize],
    ) -> Result<Option<Vec<RecordBatch>>> {
        let narrowing = Narrowing {
            bounds: crate::key_join::key_bounds(column, keys),
            keys: None,
            any_of: Some((column, keys)),
        };
        let proj = Projector::new(self.def.schema_ref(), Some(&projection.to_vec()), &[])?;
        let (mut rows, files) = self.cached_segments(snap, txn, &narrowing, &proj).await?;
        if !files.is_empty() {
            return Ok(None);
        }
        rows.extend(self.memory_batches(snap, txn, &narrowing, &proj)?);
        Ok(Some(rows))
    }
}

/// What an in-memory scan leaves out besides deleted rows.
struct Narrowing<'a> {
    /// Batches whose min/max rule a bound out are left out.
    bounds: Vec<Bound>,
    /// Rows of the kept batches must hold one of these (a join's keys),
    /// unless an index found them already.
    keys: Option<&'a KeyFilter>,
    /// A column and values: where the column's index can answer, only the
    /// rows holding one of the values are kept.
    any_of: Option<(usize, &'a [ScalarValue])>,
}

impl ProvTable {
    /// `pk = literal` on a single-column primary key: read only that row,
    /// found through the storage key index, instead of scanning. Returns
    /// `None` (scan normally) when the row's address is not in the
    /// statement's snapshot or the session has uncommitted rows here.
    fn point_lookup(
        &self,
        runtime: &RuntimeEnv,
        snap: &TableSnapshot,
        txn: &WriteSet,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(pk) = self.single_key_field() else {
            return Ok(None);
        };
        let Some(value) = filters.iter().find_map(|f| pk_literal(f, pk.name())) else {
            return Ok(None);
        };
        self.key_scan(runtime, snap, txn, &value, projection)
    }

    /// A plan reading the row whose primary key is `value`
    /// ([`Self::lookup_key`]); `None` when the key index cannot answer.
    fn key_scan(
        &self,
        runtime: &RuntimeEnv,
        snap: &TableSnapshot,
        txn: &WriteSet,
        value: &ScalarValue,
        projection: Option<&Vec<usize>>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        Ok(
            match self.lookup_key(runtime, snap, txn, value, projection)? {
                KeyLookup::Rows(rows) => {
                    let src =
                        MemorySourceConfig::try_new(&[rows], self.schema(), projection.cloned())?;
                    Some(DataSourceExec::from_data_source(src))
                }
                KeyLookup::Parquet(plan, _) => Some(plan),
                KeyLookup::Unanswered => None,
            },
        )
    }

    /// The primary key column, when the key is one column.
    pub(crate) fn single_key_field(&self) -> Option<&Field> {
        match self.def.primary_key.as_slice() {
            [pk_col] => Some(self.def.schema.field(*pk_col)),
            _ => None,
        }
    }

    /// The live row whose (one-column) primary key is `value`, found through
    /// the key index: sliced from a buffer or a cached segment, or read from
    /// its Parquet segment by a one-row selection (scanning `projection`).
    fn lookup_key(
        &self,
        runtime: &RuntimeEnv,
        snap: &TableSnapshot,
        txn: &WriteSet,
        value: &ScalarValue,
        projection: Option<&Vec<usize>>,
    ) -> Result<KeyLookup> {
        let Some(key) = self.lookup_key_batch(txn, value)? else {
            return Ok(KeyLookup::Unanswered);
        };
        let addr = self
            .storage
            .lookup_pk(self.id(), &key)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let schema = self.schema();
        let Some(addr) = addr else {
            return Ok(KeyLookup::Rows(vec![]));
        };
        if deleted_in_txn(txn, self.id(), &addr) {
            return Ok(KeyLookup::Rows(vec![]));
        }
        let rows = |batches: &[RecordBatch]| -> Result<KeyLookup> {
            Ok(KeyLookup::Rows(
                row_at(batches, addr.pos, &schema)?.into_iter().collect(),
            ))
        };
        if let Some(m) = snap.memtables.iter().find(|m| m.id == addr.source) {
            if u64::from(addr.pos) >= m.rows || m.dv.contains(addr.pos) {
                return Ok(KeyLookup::Unanswered);
            }
            return rows(&m.batches);
        }
        let Some(seg) = snap.segments.iter().find(|s| s.file.meta.id == addr.source) else {
            return Ok(KeyLookup::Unanswered);
        };
        let meta = &seg.file.meta;
        if seg.dv.contains(addr.pos) || u64::from(addr.pos) >= meta.rows {
            return Ok(KeyLookup::Unanswered);
        }
        // A segment the cache holds is sliced like a buffer. One it does not
        // hold is not loaded for one row: decoding a whole segment (or, over
        // budget, decoding it at every lookup) costs more than reading the
        // row's page from Parquet.
        if let Some(batches) = self.storage.cached_segment(meta) {
            return rows(&batches);
        }
        Ok(KeyLookup::Parquet(
            self.parquet_row(runtime, meta, addr.pos, projection)?,
            None,
        ))
    }

    /// [`Self::lookup_key`] without a table snapshot: the index entry and
    /// the row are read together ([`Storage::row_by_key`]), which is all a
    /// statement that reads nothing else needs.
    pub(crate) fn lookup_key_now(
        &self,
        txn: &WriteSet,
        value: &ScalarValue,
        projection: &[usize],
        runtime: impl FnOnce() -> Arc<RuntimeEnv>,
    ) -> Result<KeyLookup> {
        let Some(key) = self.lookup_key_batch(txn, value)? else {
            return Ok(KeyLookup::Unanswered);
        };
        let found = self
            .storage
            .row_by_key(self.id(), &key)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(match found {
            None => KeyLookup::Unanswered,
            Some(KeyedRow::Absent) => KeyLookup::Rows(vec![]),
            Some(KeyedRow::Row { addr, .. } | KeyedRow::InSegment { addr, .. })
                if deleted_in_txn(txn, self.id(), &addr) =>
            {
                KeyLookup::Rows(vec![])
            }
            Some(KeyedRow::Row { batch, .. }) => {
                KeyLookup::Rows(vec![in_schema(&batch, &self.schema())?])
            }
            Some(KeyedRow::InSegment { addr, file }) => {
                let projection = Some(projection.to_vec());
                let plan =
                    self.parquet_row(&runtime(), &file.meta, addr.pos, projection.as_ref())?;
                KeyLookup::Parquet(plan, Some(file))
            }
        })
    }

    /// The one-row key batch to look `value` up with, or `None` when the
    /// key index cannot answer alone: no one-column key, a NULL value, or
    /// uncommitted inserts into this table in the transaction.
    fn lookup_key_batch(&self, txn: &WriteSet, value: &ScalarValue) -> Result<Option<RecordBatch>> {
        let Some(field) = self.single_key_field() else {
            return Ok(None);
        };
        if txn.inserts.contains_key(&self.id()) || value.is_null() {
            return Ok(None);
        }
        let key = value.cast_to(field.data_type())?.to_array()?;
        let schema = Arc::new(Schema::new(vec![field.clone().with_nullable(true)]));
        Ok(Some(RecordBatch::try_new(schema, vec![key])?))
    }

    /// A plan reading the row at `pos` of a segment (projected) with a
    /// one-row Parquet selection.
    fn parquet_row(
        &self,
        runtime: &RuntimeEnv,
        meta: &SegmentMeta,
        pos: u32,
        projection: Option<&Vec<usize>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let pos = pos as usize;
        let mut selectors = vec![RowSelector::skip(pos), RowSelector::select(1)];
        if (pos as u64) + 1 < meta.rows {
            selectors.push(RowSelector::skip(meta.rows as usize - pos - 1));
        }
        let file = PartitionedFile::new(meta.path.clone(), meta.bytes)
            .with_extension(ParquetRowSelection::new(RowSelection::from(selectors)));
        let source = self.parquet_source(runtime)?;
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_expr_adapter(Some(Arc::new(ScaledColumns)))
            .with_projection_indices(projection.cloned())?
            .with_file(file)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// Whether the transaction deleted the row at `addr` of `table`.
fn deleted_in_txn(txn: &WriteSet, table: TableId, addr: &RowAddr) -> bool {
    txn.deletes
        .get(&(table, addr.source))
        .is_some_and(|(d, _)| d.contains(addr.pos))
}

/// What a primary-key lookup found.
pub(crate) enum KeyLookup {
    /// The live row (no batch, or one one-row batch in the table schema).
    Rows(Vec<RecordBatch>),
    /// A plan reading the row from its Parquet segment (projected), and
    /// the segment file to hold until the plan has run when no snapshot
    /// holds it.
    Parquet(Arc<dyn ExecutionPlan>, Option<Arc<SegmentFile>>),
    /// The index cannot answer alone (uncommitted inserts, a NULL key, a
    /// row in a buffer this snapshot does not hold): scan instead.
    Unanswered,
}

/// The row at `pos` of one source's batches (in position order), in
/// `schema`; `None` past the end.
fn row_at(batches: &[RecordBatch], pos: u32, schema: &SchemaRef) -> Result<Option<RecordBatch>> {
    slice_row(batches, pos)
        .map(|row| in_schema(&row, schema))
        .transpose()
}

/// `row` (written with an older schema, perhaps) in the table's `schema`.
fn in_schema(row: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    provdb_storage::maintenance::adapt_batch(row, schema)
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The columns a scan outputs, taken from batches in the table's schema,
/// and the casts a keyed scan adds ([`crate::scan_casts`]).
struct Projector {
    /// The output schema (the table's, projected, then the casts).
    schema: SchemaRef,
    /// The projected columns alone (what a batch holds until its casts
    /// are added).
    base: SchemaRef,
    /// Column indices into the table's schema; `None`: every column.
    indices: Option<Vec<usize>>,
    casts: Vec<ScanCast>,
}

impl Projector {
    fn new(table: SchemaRef, projection: Option<&Vec<usize>>, casts: &[ScanCast]) -> Result<Self> {
        let base = match projection {
            Some(p) => Arc::new(table.project(p)?),
            None => table,
        };
        Ok(Projector {
            schema: crate::scan_casts::with_cast_fields(&base, casts),
            base,
            indices: projection.cloned(),
            casts: casts.to_vec(),
        })
    }

    /// `batch` (in the table's schema) with the output columns, the casts
    /// made from its whole arrays (kept for stored ones). When a cast
    /// fails on a whole array, the batch has the projected columns only,
    /// and `true` says its casts are to be added to the rows kept of it
    /// ([`Self::add_casts`]): only their values may fail the query.
    fn project(&self, batch: &RecordBatch) -> Result<(RecordBatch, bool)> {
        let mut columns: Vec<ArrayRef> = match &self.indices {
            Some(indices) => indices
                .iter()
                .map(|&i| Arc::clone(batch.column(i)))
                .collect(),
            None => batch.columns().to_vec(),
        };
        let casts: Result<Vec<ArrayRef>> = self
            .casts
            .iter()
            .map(|c| c.cast.cast_stored(&columns[c.source]))
            .collect();
        let (schema, late) = match casts {
            Ok(casts) => {
                columns.extend(casts);
                (&self.schema, false)
            }
            Err(_) => (&self.base, true),
        };
        Ok((batch_of(schema, columns, batch.num_rows())?, late))
    }

    /// `batch` (of the projected columns) with the casts added.
    fn add_casts(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mut columns = batch.columns().to_vec();
        for c in &self.casts {
            columns.push(c.cast.cast_array(batch.column(c.source))?);
        }
        batch_of(&self.schema, columns, batch.num_rows())
    }
}

/// `plan` (over a scan's projected columns) with the casts added, as a
/// projection.
fn with_casts(plan: Arc<dyn ExecutionPlan>, casts: &[ScanCast]) -> Result<Arc<dyn ExecutionPlan>> {
    if casts.is_empty() {
        return Ok(plan);
    }
    let schema = plan.schema();
    let columns = schema.fields().iter().enumerate().map(|(i, f)| {
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(f.name(), i));
        (column, f.name().clone())
    });
    let added = casts
        .iter()
        .map(|c| (Arc::clone(&c.expr), c.field.name().clone()));
    Ok(Arc::new(ProjectionExec::try_new(
        columns.chain(added).collect::<Vec<_>>(),
        plan,
    )?))
}

/// Deal in-memory batches round-robin into `n` partitions (at least one,
/// none empty unless there is no batch) so scans run on every core.
fn partitions(batches: Vec<RecordBatch>, n: usize) -> Vec<Vec<RecordBatch>> {
    let n = n.clamp(1, batches.len().max(1));
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    for (i, b) in batches.into_iter().enumerate() {
        parts[i % n].push(b);
    }
    parts
}

/// The literal `v` of a filter `column = v` (either side) on `column`.
fn pk_literal(e: &Expr, column: &str) -> Option<datafusion::scalar::ScalarValue> {
    key_operand(e, column).and_then(literal_value)
}

/// The expression `v` of a predicate `column = v` (either side).
pub(crate) fn key_operand<'a>(e: &'a Expr, column: &str) -> Option<&'a Expr> {
    let Expr::BinaryExpr(b) = e else { return None };
    if b.op != datafusion::logical_expr::Operator::Eq {
        return None;
    }
    match (b.left.as_ref(), b.right.as_ref()) {
        (Expr::Column(c), v) | (v, Expr::Column(c)) if c.name == column => Some(v),
        _ => None,
    }
}

/// The value of a literal, or of a cast of one (a bound `$n` parameter the
/// analyzer wrapped in a cast before its value was known).
fn literal_value(e: &Expr) -> Option<datafusion::scalar::ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => literal_value(&c.expr)?.cast_to(c.field.data_type()).ok(),
        _ => None,
    }
}

/// The session's uncommitted inserts into `table` (minus rows it deleted again).
pub(crate) fn pending_rows(txn: &WriteSet, table: TableId) -> Result<Vec<RecordBatch>> {
    let Some(batches) = txn.inserts.get(&table) else {
        return Ok(Vec::new());
    };
    let Some(dels) = txn.pending_deletes.get(&table) else {
        return Ok(batches.clone());
    };
    let mut out = Vec::new();
    let mut pos = 0u32;
    for b in batches {
        out.push(
            match provdb_storage::dv::live_mask(dels, pos, b.num_rows()) {
                Some(mask) => filter_record_batch(b, &mask)?,
                None => b.clone(),
            },
        );
        pos += b.num_rows() as u32;
    }
    Ok(out)
}

fn merged_dv(dv: &Arc<RoaringBitmap>, extra: Option<&RoaringBitmap>) -> Arc<RoaringBitmap> {
    match extra {
        Some(e) if !e.is_empty() => Arc::new(dv.as_ref() | e),
        _ => Arc::clone(dv),
    }
}

/// Parquet row selection reading every row not in `dv`.
fn selection_from_dv(dv: &RoaringBitmap, rows: u64) -> RowSelection {
    let mut selectors = Vec::new();
    let mut next = 0u64;
    for p in dv.iter().map(u64::from).filter(|p| *p < rows) {
        if p > next {
            selectors.push(RowSelector::select((p - next) as usize));
        }
        selectors.push(RowSelector::skip(1));
        next = p + 1;
    }
    if next < rows {
        selectors.push(RowSelector::select((rows - next) as usize));
    }
    RowSelection::from(selectors)
}

#[async_trait]
impl TableProvider for ProvTable {
    fn schema(&self) -> SchemaRef {
        self.def.schema_ref()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (snap, txn) = self.scan_input()?;
        let runtime = state.runtime_env();
        if let Some(plan) = self.point_lookup(runtime, &snap, &txn, projection, filters)? {
            return Ok(plan);
        }
        let plan = self.plan_scan_of(state, (snap, txn), projection, filters, limit);
        self.gather(&plan, None, &[]).await
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(external(SqlError::feature_not_supported(format!(
                "{insert_op} is not supported"
            ))));
        }
        let sink = ProvSink {
            def: self.def.clone(),
            session: Arc::clone(&self.session),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let filter = self.physical_filter(state, filters)?;
        Ok(Arc::new(DmlExec::new(self, filter, None)))
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let filter = self.physical_filter(state, filters)?;
        let df_schema = DFSchema::try_from(self.def.schema.as_ref().clone())?;
        let mut exprs = HashMap::new();
        for (col, e) in assignments {
            exprs.insert(
                col,
                state
                    .create_physical_expr(e, &df_schema)
                    .map_err(unsupported_subquery)?,
            );
        }
        let values = self
            .def
            .schema
            .fields()
            .iter()
            .map(|f| exprs.remove(f.name()))
            .collect::<Vec<_>>();
        Ok(Arc::new(DmlExec::new(self, filter, Some(values))))
    }
}

fn unsupported_subquery(e: DataFusionError) -> DataFusionError {
    if e.to_string().to_ascii_lowercase().contains("subquery") {
        external(SqlError::feature_not_supported(
            "subqueries in UPDATE/DELETE are not supported yet",
        ))
    } else {
        e
    }
}

impl ProvTable {
    fn physical_filter(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        let Some(pred) = filters.into_iter().reduce(|a, b| a.and(b)) else {
            return Ok(None);
        };
        let df_schema = DFSchema::try_from(self.def.schema.as_ref().clone())?;
        Ok(Some(
            state
                .create_physical_expr(pred, &df_schema)
                .map_err(unsupported_subquery)?,
        ))
    }
}

/// Stages inserted rows in the session's statement write set.
#[derive(Debug)]
struct ProvSink {
    def: TableDef,
    session: Arc<SessionShared>,
}

impl DisplayAs for ProvSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ProvSink: table={}", self.def.qualified_name())
    }
}

/// Cast `batch` to the table schema and check NOT NULL columns.
pub(crate) fn conform(def: &TableDef, batch: &RecordBatch) -> Result<RecordBatch> {
    conform_columns(def, batch.columns())
}

/// Cast `columns` to the table's column types and check NOT NULL columns.
pub(crate) fn conform_columns(def: &TableDef, columns: &[ArrayRef]) -> Result<RecordBatch> {
    let schema = def.schema_ref();
    if columns.len() != schema.fields().len() {
        return Err(external(SqlError::new(
            "42601",
            format!(
                "INSERT has {} expressions but table {} has {} columns",
                columns.len(),
                def.name,
                schema.fields().len()
            ),
        )));
    }
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (field, col) in schema.fields().iter().zip(columns) {
        if !field.is_nullable() && col.null_count() > 0 {
            return Err(external(SqlError::new(
                "23502",
                format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    field.name(),
                    def.name
                ),
            )));
        }
        cols.push(if col.data_type() == field.data_type() {
            Arc::clone(col)
        } else {
            cast_checked(col, field)?
        });
    }
    Ok(RecordBatch::try_new(schema, cols)?)
}

fn cast_checked(col: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    let opts = datafusion::arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    datafusion::arrow::compute::cast_with_options(col, field.data_type(), &opts).map_err(|e| {
        external(SqlError::new(
            "22P02",
            format!(
                "column \"{}\" is of type {}: {e}",
                field.name(),
                crate::types::pg_type_name(field.data_type())
            ),
        ))
    })
}

#[async_trait]
impl DataSink for ProvSink {
    fn schema(&self) -> &SchemaRef {
        &self.def.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _ctx: &Arc<TaskContext>,
    ) -> Result<u64> {
        let mut staged = Vec::new();
        let mut rows = 0u64;
        while let Some(batch) = data.next().await {
            let batch = conform(&self.def, &batch?)?;
            rows += batch.num_rows() as u64;
            staged.push(batch);
        }
        let mut stmt = self.session.stmt.lock();
        for b in staged {
            stmt.insert(self.def.id, b);
        }
        Ok(rows)
    }
}

/// UPDATE / DELETE: evaluates the filter over every live row of the table
/// (with its address), stages deletes and, for UPDATE, the new row versions.
#[derive(Debug)]
pub struct DmlExec {
    storage: Storage,
    def: TableDef,
    session: Arc<SessionShared>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// For UPDATE: the new value of each column (`None` = unchanged).
    values: Option<Vec<Option<Arc<dyn PhysicalExpr>>>>,
    props: Arc<PlanProperties>,
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl DmlExec {
    fn new(
        t: &ProvTable,
        filter: Option<Arc<dyn PhysicalExpr>>,
        values: Option<Vec<Option<Arc<dyn PhysicalExpr>>>>,
    ) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        DmlExec {
            storage: t.storage.clone(),
            def: t.def.clone(),
            session: Arc::clone(&t.session),
            filter,
            values,
            props: Arc::new(props),
        }
    }
}

impl DisplayAs for DmlExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let kind = if self.values.is_some() {
            "Update"
        } else {
            "Delete"
        };
        write!(f, "DmlExec: {kind} table={}", self.def.qualified_name())?;
        if let Some(p) = &self.filter {
            write!(f, " filter={p}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DmlExec {
    fn name(&self) -> &str {
        "DmlExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in self
            .filter
            .iter()
            .chain(self.values.iter().flatten().flatten())
        {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let job = DmlJob {
            storage: self.storage.clone(),
            def: self.def.clone(),
            session: Arc::clone(&self.session),
            filter: self.filter.clone(),
            values: self.values.clone(),
        };
        let fut = async move {
            let n = job.run().await?;
            Ok(RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(UInt64Array::from(vec![n]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(fut),
        )))
    }
}

struct DmlJob {
    storage: Storage,
    def: TableDef,
    session: Arc<SessionShared>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    values: Option<Vec<Option<Arc<dyn PhysicalExpr>>>>,
}

impl DmlJob {
    async fn run(self) -> Result<u64> {
        // Positions must stay valid until commit: hold the table's write lock.
        self.session
            .lock_table(&self.storage, self.def.id)
            .await
            .map_err(external)?;
        let snap = self
            .storage
            .snapshot(self.def.id)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let txn = self.session.txn.lock().clone();
        let mut staged = WriteSet::default();
        let mut count = 0u64;
        for seg in &snap.segments {
            let batches = self
                .storage
                .segment_batches(&seg.file.meta)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let extra = txn
                .deletes
                .get(&(self.def.id, seg.file.meta.id))
                .map(|(p, _)| p);
            count += self.process_source(
                seg.file.meta.id,
                &batches,
                &merged_dv(&seg.dv, extra),
                &mut staged,
            )?;
        }
        for m in &snap.memtables {
            let extra = txn.deletes.get(&(self.def.id, m.id)).map(|(p, _)| p);
            count +=
                self.process_source(m.id, &m.batches, &merged_dv(&m.dv, extra), &mut staged)?;
        }
        if let Some(pending) = txn.inserts.get(&self.def.id) {
            let dv = txn
                .pending_deletes
                .get(&self.def.id)
                .cloned()
                .unwrap_or_default();
            count += self.process_source(PENDING_SOURCE, pending, &Arc::new(dv), &mut staged)?;
        }
        self.session.stmt.lock().merge(staged);
        Ok(count)
    }

    /// Match one source's rows; stage their deletion and new versions.
    fn process_source(
        &self,
        source: SourceId,
        batches: &[RecordBatch],
        dv: &Arc<RoaringBitmap>,
        staged: &mut WriteSet,
    ) -> Result<u64> {
        let schema = self.def.schema_ref();
        let mut pos = 0u32;
        let mut count = 0u64;
        for b in batches {
            let b = provdb_storage::maintenance::adapt_batch(b, &schema)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let n = b.num_rows();
            let live: BooleanArray = (0..n as u32).map(|i| Some(!dv.contains(pos + i))).collect();
            let mask = match &self.filter {
                Some(f) => {
                    let v = f.evaluate(&b)?.into_array(n)?;
                    let v = v
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .cloned()
                        .ok_or_else(|| {
                            external(SqlError::new(
                                "42804",
                                "argument of WHERE must be type boolean",
                            ))
                        })?;
                    // NULL predicate = not matched.
                    let v: BooleanArray = v.iter().map(|x| Some(x == Some(true))).collect();
                    and(&live, &v)?
                }
                None => live,
            };
            let positions: RoaringBitmap = mask
                .iter()
                .enumerate()
                .filter(|(_, m)| *m == Some(true))
                .map(|(i, _)| pos + i as u32)
                .collect();
            pos += n as u32;
            if positions.is_empty() {
                continue;
            }
            count += positions.len();
            let matched = filter_record_batch(&b, &mask)?;
            let keys = if self.def.primary_key.is_empty() {
                None
            } else {
                Some(matched.project(&self.def.primary_key)?)
            };
            staged.delete(self.def.id, source, &positions, keys);
            if let Some(values) = &self.values {
                staged.insert(self.def.id, self.new_versions(&matched, values)?);
            }
        }
        Ok(count)
    }

    fn new_versions(
        &self,
        matched: &RecordBatch,
        values: &[Option<Arc<dyn PhysicalExpr>>],
    ) -> Result<RecordBatch> {
        let schema = self.def.schema_ref();
        let mut cols = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let col = match v {
                Some(e) => e.evaluate(matched)?.into_array(matched.num_rows())?,
                None => Arc::clone(matched.column(i)),
            };
            let field = schema.field(i);
            cols.push(if col.data_type() == field.data_type() {
                col
            } else {
                cast(&col, field.data_type())?
            });
        }
        conform(&self.def, &RecordBatch::try_new(schema, cols)?)
    }
}
