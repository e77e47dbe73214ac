//! Background maintenance: checkpoints (freeze buffers → Parquet segments →
//! manifest → WAL truncation), compaction of small segments, and garbage
//! collection of files no manifest and no snapshot needs any more.
//!
//! Checkpoints and compactions are serialized by `Inner::maintenance`. Both
//! swap sources under the state write lock in one step, so a reader's
//! snapshot holds either the old sources or the new ones, never both.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;
use roaring::RoaringBitmap;
use tracing::{debug, info, warn};

use crate::error::Result;
use crate::manifest::{Manifest, ManifestTable};
use crate::memtable::Memtable;
use crate::pk::RowAddr;
use crate::segment::{self, SegmentFile, SegmentMeta};
use crate::state::SegmentState;
use crate::storage::Storage;
use crate::table::{SourceId, TableId};

/// A file to delete once nothing holds it.
#[derive(Debug)]
pub struct Garbage {
    pub path: ObjPath,
    /// The segment it belongs to; `None` = deletable at once.
    pub holder: Option<Weak<SegmentFile>>,
}

/// Start the background loop: flush when buffers are large, compact, collect
/// garbage. Stops when storage closes.
pub fn spawn_background(storage: Storage) -> tokio::task::JoinHandle<()> {
    let mut shutdown = storage.inner.shutdown.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut rounds = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            rounds += 1;
            if needs_checkpoint(&storage)
                && let Err(e) = checkpoint(&storage).await
            {
                warn!(error = %e, "background checkpoint failed");
            }
            if storage.inner.opts.compaction
                && rounds.is_multiple_of(10)
                && let Err(e) = compact_all(&storage).await
            {
                warn!(error = %e, "background compaction failed");
            }
            if let Err(e) = collect_garbage(&storage).await {
                warn!(error = %e, "garbage collection failed");
            }
        }
    })
}

fn needs_checkpoint(storage: &Storage) -> bool {
    let opts = &storage.inner.opts;
    let st = storage.inner.state.read();
    let mut total = 0;
    for t in st.tables.values() {
        if t.active.bytes() >= opts.flush_threshold_bytes || !t.frozen.is_empty() {
            return true;
        }
        total += t.memory_bytes();
    }
    total >= opts.memory_limit_bytes
}

/// Freeze all buffers, write them as segments, persist deletion vectors and a
/// new manifest, then truncate the WAL.
pub async fn checkpoint(storage: &Storage) -> Result<()> {
    let inner = &storage.inner;
    let _m = inner.maintenance.lock().await;
    let (lsn, _freezes) = storage.request_checkpoint().await?;
    // Every frozen buffer (including ones frozen by replay before a crash).
    let frozen: Vec<(TableId, Memtable, arrow::datatypes::SchemaRef)> = {
        let st = inner.state.read();
        st.tables
            .iter()
            .flat_map(|(id, t)| {
                t.frozen
                    .iter()
                    .map(move |m| (*id, m.clone(), t.def.schema_ref()))
            })
            .collect()
    };
    let mut written = Vec::new();
    for (table, mem, schema) in frozen {
        if mem.live_rows() == 0 {
            written.push((table, mem.id, None));
            continue;
        }
        let path = segment::segment_path(&inner.prefix, table, mem.id);
        let batches = adapt_batches(mem.batches(), &schema)?;
        let meta = segment::write_segment(&inner.store, &path, mem.id, &schema, &batches).await?;
        storage.sync_file(&path).await?;
        // the rows are in memory already: keep them hot for queries
        if inner.cache.enabled() {
            inner.cache.insert(&meta.path, batches);
        }
        written.push((table, mem.id, Some(meta)));
    }
    install_flushed(storage, written);
    let dvs = persist_dirty_dvs(storage).await?;
    let manifest = build_checkpoint_manifest(storage, lsn, &dvs);
    save_manifest(storage, manifest).await?;
    let removed = storage.truncate_wal(lsn).await?;
    debug!(lsn, wal_files_removed = removed, "checkpoint done");
    Ok(())
}

/// Batches written with an older schema (before columns were added) get NULL
/// columns so the segment has the table's current schema.
pub fn adapt_batches(
    batches: &[RecordBatch],
    schema: &arrow::datatypes::SchemaRef,
) -> Result<Vec<RecordBatch>> {
    batches.iter().map(|b| adapt_batch(b, schema)).collect()
}

/// Give `batch` the columns of `schema` (appended columns read NULL).
pub fn adapt_batch(
    batch: &RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let n = batch.num_rows();
    let cols = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i < batch.num_columns() {
                Arc::clone(batch.column(i))
            } else {
                arrow::array::new_null_array(f.data_type(), n)
            }
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
}

/// Swap flushed buffers for their segments (same id, same positions).
fn install_flushed(storage: &Storage, written: Vec<(TableId, SourceId, Option<SegmentMeta>)>) {
    let mut st = storage.inner.state.write();
    for (table, id, meta) in written {
        let Some(t) = st.tables.get_mut(&table) else {
            continue;
        };
        let Some(idx) = t.frozen.iter().position(|m| m.id == id) else {
            continue;
        };
        let mem = t.frozen.remove(idx);
        if let Some(meta) = meta {
            let dirty = !mem.dv.is_empty();
            let file = st.segment_file(meta);
            let Some(t) = st.tables.get_mut(&table) else {
                continue;
            };
            t.segments.push(SegmentState {
                file,
                dv: mem.dv,
                dv_dirty: dirty,
            });
        }
    }
}

/// Write every changed deletion vector as a new file version. Returns the
/// (table, segment) → path of each file written.
async fn persist_dirty_dvs(storage: &Storage) -> Result<Vec<(TableId, SourceId, String)>> {
    let inner = &storage.inner;
    let version = inner.manifest.lock().version + 1;
    let dirty: Vec<(TableId, SourceId, Arc<RoaringBitmap>)> = {
        let st = inner.state.read();
        st.tables
            .iter()
            .flat_map(|(id, t)| {
                t.segments
                    .iter()
                    .filter(|s| s.dv_dirty)
                    .map(move |s| (*id, s.file.meta.id, Arc::clone(&s.dv)))
            })
            .collect()
    };
    let mut out = Vec::new();
    for (table, seg, dv) in dirty {
        let path = segment::dv_path(&inner.prefix, table, seg, version);
        inner
            .store
            .put(&path, crate::dv::encode(&dv).into())
            .await?;
        storage.sync_file(&path).await?;
        let mut st = inner.state.write();
        if let Some(s) = st
            .tables
            .get_mut(&table)
            .and_then(|t| t.segments.iter_mut().find(|s| s.file.meta.id == seg))
        {
            // Still dirty if deletes arrived while writing (the WAL has them).
            s.dv_dirty = s.dv.len() != dv.len();
        }
        out.push((table, seg, path.to_string()));
    }
    Ok(out)
}

/// The manifest after a checkpoint at `lsn`: tables that existed at `lsn`,
/// their buffers' ids at `lsn`, their segments and latest persisted DVs.
fn build_checkpoint_manifest(
    storage: &Storage,
    lsn: u64,
    dvs: &[(TableId, SourceId, String)],
) -> Manifest {
    let inner = &storage.inner;
    let old = inner.manifest.lock().clone();
    let st = inner.state.read();
    let mut tables = Vec::new();
    let mut ids: Vec<&TableId> = st.tables.keys().collect();
    ids.sort();
    for id in ids {
        let t = &st.tables[id];
        if t.created_lsn > lsn {
            continue; // replay will create it
        }
        let previous = old
            .tables
            .iter()
            .find(|ot| ot.def.id == *id)
            .map(|ot| ot.segments.as_slice())
            .unwrap_or_default();
        let segments = manifest_segments(&t.segments, *id, dvs, previous);
        tables.push(ManifestTable {
            def: t.def.clone(),
            active: t.active.id,
            segments,
        });
    }
    Manifest {
        format: old.format,
        version: old.version + 1,
        checkpoint_lsn: lsn,
        next_source_id: st.next_source_id,
        next_table_id: st.next_table_id,
        tables,
        meta: st.meta.clone(),
    }
}

/// The manifest entries of a table's segments: each names the deletion
/// vector file just written for it, else the one the previous manifest named.
fn manifest_segments(
    segments: &[SegmentState],
    table: TableId,
    written: &[(TableId, SourceId, String)],
    previous: &[SegmentMeta],
) -> Vec<SegmentMeta> {
    segments
        .iter()
        .map(|s| {
            let mut meta = s.file.meta.clone();
            let id = meta.id;
            meta.dv_path = written
                .iter()
                .find(|(t, sid, _)| *t == table && *sid == id)
                .map(|(_, _, p)| p.clone())
                .or_else(|| {
                    previous
                        .iter()
                        .find(|o| o.id == id)
                        .and_then(|o| o.dv_path.clone())
                })
                .or(meta.dv_path);
            meta
        })
        .collect()
}

/// Save `new` and queue the files the previous manifest named but `new`
/// does not for deletion.
async fn save_manifest(storage: &Storage, new: Manifest) -> Result<()> {
    let inner = &storage.inner;
    let dir = inner.opts.data_dir.clone();
    let to_save = new.clone();
    tokio::task::spawn_blocking(move || to_save.save(&dir))
        .await
        .map_err(|e| {
            crate::error::StorageError::Invalid(format!("manifest writer panicked: {e}"))
        })??;
    let old = std::mem::replace(&mut *inner.manifest.lock(), new.clone());
    let keep = manifest_files(&new);
    let mut garbage = inner.garbage.lock();
    for path in manifest_files(&old).difference(&keep) {
        let holder = find_holder(storage, path);
        garbage.push(Garbage {
            path: ObjPath::from(path.as_str()),
            holder,
        });
    }
    Ok(())
}

fn manifest_files(m: &Manifest) -> HashSet<String> {
    m.tables
        .iter()
        .flat_map(|t| t.segments.iter())
        .flat_map(|s| std::iter::once(s.path.clone()).chain(s.dv_path.clone()))
        .collect()
}

/// Segment files still in memory (in use by the state or by snapshots) are
/// tracked weakly: deleted only once every holder is gone.
fn find_holder(storage: &Storage, path: &str) -> Option<Weak<SegmentFile>> {
    storage.inner.state.read().files.get(path).cloned()
}

/// Delete queued garbage that nothing holds any more.
pub async fn collect_garbage(storage: &Storage) -> Result<()> {
    // Forget files no snapshot holds any more (registered by State::segment_file).
    storage
        .inner
        .state
        .write()
        .files
        .retain(|_, w| w.strong_count() > 0);
    let ready: Vec<ObjPath> = {
        let mut g = storage.inner.garbage.lock();
        let (ready, wait): (Vec<Garbage>, Vec<Garbage>) = g
            .drain(..)
            .partition(|x| x.holder.as_ref().is_none_or(|w| w.strong_count() == 0));
        *g = wait;
        ready.into_iter().map(|x| x.path).collect()
    };
    for path in ready {
        storage.inner.cache.remove(path.as_ref());
        match storage.inner.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                debug!(%path, "deleted unreferenced file")
            }
            Err(e) => warn!(%path, error = %e, "could not delete unreferenced file"),
        }
    }
    Ok(())
}

/// On open: delete files under `tables/` that neither the manifest nor the
/// replayed log names (left by an interrupted flush, compaction or staged
/// write).
pub async fn collect_orphans(storage: &Storage) -> Result<()> {
    let inner = &storage.inner;
    let mut keep = manifest_files(&inner.manifest.lock());
    // segments attached by commits replayed after the manifest
    keep.extend(inner.state.read().files.keys().cloned());
    let prefix = inner.prefix.clone().join("tables");
    let mut listing = inner.store.list(Some(&prefix));
    let mut orphans = Vec::new();
    while let Some(item) = listing.next().await {
        let meta = item?;
        if !keep.contains(&meta.location.to_string()) {
            orphans.push(meta.location);
        }
    }
    for path in orphans {
        info!(%path, "deleting orphaned file left by an interrupted flush or compaction");
        inner.store.delete(&path).await?;
    }
    Ok(())
}

/// Compact every table that has enough small segments. Returns how many
/// compactions ran.
pub async fn compact_all(storage: &Storage) -> Result<usize> {
    let ids: Vec<TableId> = storage.inner.state.read().tables.keys().copied().collect();
    let mut n = 0;
    for id in ids {
        if compact_table(storage, id).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// Segments chosen for compaction: small ones (at least two), or any with
/// more than a fifth of its rows deleted.
fn pick_inputs(storage: &Storage, table: TableId) -> Vec<SegmentState> {
    let target = storage.inner.opts.compaction_target_rows;
    let st = storage.inner.state.read();
    let Some(t) = st.tables.get(&table) else {
        return Vec::new();
    };
    let small: Vec<SegmentState> = t
        .segments
        .iter()
        .filter(|s| s.file.meta.rows < target)
        .cloned()
        .collect();
    if small.len() >= 4 {
        return small;
    }
    t.segments
        .iter()
        .filter(|s| s.dv.len() * 5 > s.file.meta.rows)
        .cloned()
        .collect()
}

async fn compact_table(storage: &Storage, table: TableId) -> Result<bool> {
    let inner = &storage.inner;
    let _m = inner.maintenance.lock().await;
    let inputs = pick_inputs(storage, table);
    if inputs.is_empty() {
        return Ok(false);
    }
    let Some(def) = storage.table(table) else {
        return Ok(false);
    };
    let schema = def.schema_ref();
    // Read surviving rows and remember where each input row went.
    let mut out_batches = Vec::new();
    let mut new_pos_of: Vec<Vec<Option<u32>>> = Vec::new();
    let mut next = 0u32;
    for input in &inputs {
        let batches = segment::read_segment(&inner.store, &input.file.meta, None).await?;
        let mut map = Vec::with_capacity(input.file.meta.rows as usize);
        let mut pos = 0u32;
        for b in batches {
            let b = adapt_batch(&b, &schema)?;
            let mask = crate::dv::live_mask(&input.dv, pos, b.num_rows());
            for i in 0..b.num_rows() as u32 {
                if input.dv.contains(pos + i) {
                    map.push(None);
                } else {
                    map.push(Some(next));
                    next += 1;
                }
            }
            pos += b.num_rows() as u32;
            out_batches.push(match mask {
                Some(m) => filter_record_batch(&b, &m)?,
                None => b,
            });
        }
        new_pos_of.push(map);
    }
    let new_id = inner.state.write().alloc_source();
    let path = segment::segment_path(&inner.prefix, table, new_id);
    let meta = if next > 0 {
        let meta =
            segment::write_segment(&inner.store, &path, new_id, &schema, &out_batches).await?;
        storage.sync_file(&path).await?;
        Some(meta)
    } else {
        None
    };
    // UPDATE/DELETE hold this lock while their row positions are in flight.
    let lock = storage.write_lock(table);
    let Ok(_w) = lock.try_lock() else {
        debug!(%table, "compaction skipped: table is being updated");
        if meta.is_some() {
            inner.garbage.lock().push(Garbage { path, holder: None });
        }
        return Ok(false);
    };
    let installed = install_compacted(storage, table, &inputs, &new_pos_of, meta, &out_batches)?;
    if !installed {
        return Ok(false);
    }
    let dvs = persist_dirty_dvs(storage).await?;
    let manifest = compaction_manifest(storage, table, &dvs);
    save_manifest(storage, manifest).await?;
    info!(%table, inputs = inputs.len(), rows = next, "compacted segments");
    Ok(true)
}

/// Replace the inputs by the compacted segment, carrying over deletes that
/// arrived meanwhile and re-pointing the primary-key index.
fn install_compacted(
    storage: &Storage,
    table: TableId,
    inputs: &[SegmentState],
    new_pos_of: &[Vec<Option<u32>>],
    meta: Option<SegmentMeta>,
    out_batches: &[RecordBatch],
) -> Result<bool> {
    let mut st = storage.inner.state.write();
    if !st.tables.contains_key(&table) {
        return Ok(false);
    }
    let file = meta.map(|m| st.segment_file(m));
    let Some(t) = st.tables.get_mut(&table) else {
        return Ok(false);
    };
    let input_ids: Vec<SourceId> = inputs.iter().map(|s| s.file.meta.id).collect();
    if !input_ids
        .iter()
        .all(|id| t.segments.iter().any(|s| s.file.meta.id == *id))
    {
        return Ok(false);
    }
    let mut dv = RoaringBitmap::new();
    for (input, map) in inputs.iter().zip(new_pos_of) {
        let now = t
            .segments
            .iter()
            .find(|s| s.file.meta.id == input.file.meta.id)
            .map(|s| Arc::clone(&s.dv));
        if let Some(now) = now {
            for p in now.iter().filter(|p| !input.dv.contains(*p)) {
                if let Some(Some(np)) = map.get(p as usize) {
                    dv.insert(*np);
                }
            }
        }
    }
    let first_idx = t
        .segments
        .iter()
        .position(|s| input_ids.contains(&s.file.meta.id))
        .unwrap_or(0);
    t.segments.retain(|s| !input_ids.contains(&s.file.meta.id));
    if let Some(file) = file {
        let new_id = file.meta.id;
        if let Some(pk) = t.pk.as_mut() {
            let mut pos = 0u32;
            for b in out_batches {
                for (i, k) in pk.keys(b, false)?.into_iter().enumerate() {
                    let p = pos + i as u32;
                    if !dv.contains(p) {
                        pk.insert(
                            k,
                            RowAddr {
                                source: new_id,
                                pos: p,
                            },
                        );
                    }
                }
                pos += b.num_rows() as u32;
            }
        }
        let dirty = !dv.is_empty();
        let seg = SegmentState {
            file,
            dv: Arc::new(dv),
            dv_dirty: dirty,
        };
        t.segments.insert(first_idx.min(t.segments.len()), seg);
    }
    Ok(true)
}

/// The last manifest with this table's segment list replaced (checkpoint
/// position and buffer ids unchanged: replay still starts where it did).
fn compaction_manifest(
    storage: &Storage,
    table: TableId,
    dvs: &[(TableId, SourceId, String)],
) -> Manifest {
    let inner = &storage.inner;
    let mut m = inner.manifest.lock().clone();
    let st = inner.state.read();
    m.version += 1;
    m.next_source_id = m.next_source_id.max(st.next_source_id);
    if let (Some(mt), Some(t)) = (
        m.tables.iter_mut().find(|mt| mt.def.id == table),
        st.tables.get(&table),
    ) {
        let old = std::mem::take(&mut mt.segments);
        // Serialized with checkpoints: the state's segments are the last
        // manifest's, minus the inputs, plus the compacted one.
        mt.segments = manifest_segments(&t.segments, table, dvs, &old);
    }
    for (tid, sid, path) in dvs {
        if *tid == table {
            continue;
        }
        if let Some(seg) = m
            .tables
            .iter_mut()
            .find(|t| t.def.id == *tid)
            .and_then(|t| t.segments.iter_mut().find(|s| s.id == *sid))
        {
            seg.dv_path = Some(path.clone());
        }
    }
    m
}
