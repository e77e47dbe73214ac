//! [`Storage`]: the storage engine's public handle. Opening it recovers the
//! database (manifest + WAL replay); commits go through the group-commit
//! writer; readers take consistent snapshots; a background task flushes
//! buffers to Parquet and compacts segments (see [`crate::maintenance`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender};

use arrow::array::RecordBatch;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;
use tokio::sync::oneshot;
use tracing::info;
use url::Url;

use crate::error::{IoContext, Result, StorageError};
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::observer::CommitObserver;
use crate::pk::RowAddr;
use crate::record::WalOp;
use crate::segment::{self, SegmentFile, SegmentMeta};
use crate::state::{SegmentState, State, TableState};
use crate::table::{SourceId, TableDef, TableId};
use crate::wal::{self, WalWriter};
use crate::writer::{CommitInfo, Request, Writer, WriterSlot};

/// How to open storage.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Local directory for the WAL, the manifest and (by default) segments.
    pub data_dir: PathBuf,
    /// Object-store URL for segments; `None` = `<data_dir>/segments`.
    pub object_store_url: Option<String>,
    /// fsync the WAL before acknowledging.
    pub fsync: bool,
    /// Freeze and flush buffers once a table's buffer is this large.
    pub flush_threshold_bytes: usize,
    /// Also flush when all buffers together exceed this.
    pub memory_limit_bytes: usize,
    /// Run background compaction.
    pub compaction: bool,
    /// Segments smaller than this (rows) are compaction candidates.
    pub compaction_target_rows: u64,
    /// Run background maintenance at all (tests may drive it by hand).
    pub background: bool,
    /// Bytes of decoded segments kept in memory ([`crate::cache`]); 0 turns
    /// the cache off.
    pub segment_cache_bytes: usize,
}

impl StorageOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StorageOptions {
            data_dir: data_dir.into(),
            object_store_url: None,
            fsync: true,
            flush_threshold_bytes: 64 << 20,
            memory_limit_bytes: 512 << 20,
            compaction: true,
            compaction_target_rows: 1 << 20,
            background: true,
            segment_cache_bytes: 1 << 30,
        }
    }
}

/// A consistent, immutable view of one table at one moment.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub def: TableDef,
    /// Persisted segments, oldest first.
    pub segments: Vec<SegmentSnapshot>,
    /// In-memory buffers (frozen ones, then the active one).
    pub memtables: Vec<MemSnapshot>,
}

#[derive(Debug, Clone)]
pub struct SegmentSnapshot {
    pub file: Arc<SegmentFile>,
    pub dv: Arc<RoaringBitmap>,
}

#[derive(Debug, Clone)]
pub struct MemSnapshot {
    pub id: SourceId,
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
    pub dv: Arc<RoaringBitmap>,
}

impl TableSnapshot {
    pub fn live_rows(&self) -> u64 {
        let seg: u64 = self
            .segments
            .iter()
            .map(|s| s.file.meta.rows - s.dv.len())
            .sum();
        let mem: u64 = self.memtables.iter().map(|m| m.rows - m.dv.len()).sum();
        seg + mem
    }
}

/// Statistics for monitoring and tests.
#[derive(Debug, Clone, Default)]
pub struct StorageStats {
    pub tables: usize,
    pub segments: usize,
    pub memtable_bytes: usize,
    pub frozen_memtables: usize,
    pub applied_lsn: u64,
    pub checkpoint_lsn: u64,
    pub wal_files: usize,
    /// Commits since open written and synced by their caller, finding the
    /// writer idle (see [`crate::writer`]).
    pub inline_commits: u64,
    /// Commits since open handed to the writer thread and grouped there.
    pub grouped_commits: u64,
}

pub(crate) struct Inner {
    pub opts: StorageOptions,
    pub store: Arc<dyn ObjectStore>,
    pub store_url: Url,
    pub prefix: ObjPath,
    pub state: Arc<RwLock<State>>,
    pub writer: Mutex<Option<SyncSender<Request>>>,
    pub writer_slot: Arc<WriterSlot>,
    pub writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Serializes checkpoints and compactions.
    pub maintenance: tokio::sync::Mutex<()>,
    /// The manifest last saved.
    pub manifest: Mutex<Manifest>,
    /// Per-table locks held by UPDATE/DELETE (and compaction installs), so row
    /// positions computed from a snapshot stay valid until committed.
    pub write_locks: Mutex<HashMap<TableId, Arc<tokio::sync::Mutex<()>>>>,
    /// Files no longer in the manifest, deleted once no snapshot holds them.
    pub garbage: Mutex<Vec<crate::maintenance::Garbage>>,
    /// Decoded segments kept in memory.
    pub cache: crate::cache::SegmentCache,
    /// Held (locked) while open; released by `close`.
    pub lock_file: Mutex<Option<File>>,
    pub background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub observer: crate::observer::ObserverSlot,
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Drop for Inner {
    /// Dropped without [`Storage::close`]: stop the writer before the
    /// directory lock (a field, released after this) lets another process
    /// in. The writer may still be finishing a group, and as it ends it cuts
    /// the log's preallocated zeros, which a new opener's replay is reading.
    fn drop(&mut self) {
        self.writer.lock().take();
        if let Some(h) = self.writer_thread.lock().take()
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }
}

/// The storage engine. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("data_dir", &self.inner.opts.data_dir)
            .finish()
    }
}

fn open_store(opts: &StorageOptions) -> Result<(Arc<dyn ObjectStore>, Url, ObjPath)> {
    match &opts.object_store_url {
        None => {
            let dir = opts.data_dir.join("segments");
            fs::create_dir_all(&dir).at(&dir)?;
            let store = LocalFileSystem::new_with_prefix(&dir)?;
            let url = Url::parse("provdb://segments/")
                .map_err(|e| StorageError::Invalid(e.to_string()))?;
            Ok((Arc::new(store), url, ObjPath::default()))
        }
        Some(raw) => {
            let url = Url::parse(raw).map_err(|e| StorageError::InvalidUrl {
                url: raw.clone(),
                detail: e.to_string(),
            })?;
            let (store, prefix) =
                object_store::parse_url(&url).map_err(|e| StorageError::InvalidUrl {
                    url: raw.clone(),
                    detail: format!("{e} (this build supports file:// and memory://)"),
                })?;
            let mut root = url.clone();
            root.set_path("/");
            Ok((Arc::from(store), root, prefix))
        }
    }
}

fn lock_data_dir(dir: &Path) -> Result<File> {
    fs::create_dir_all(dir).at(dir)?;
    let path = dir.join("LOCK");
    let f = File::create(&path).at(&path)?;
    f.try_lock().map_err(|_| {
        StorageError::Invalid(format!(
            "data directory {} is in use by another provdb process",
            dir.display()
        ))
    })?;
    Ok(f)
}

impl Storage {
    /// Open or create storage, recovering from the manifest and the WAL.
    pub async fn open(opts: StorageOptions) -> Result<Storage> {
        let lock = lock_data_dir(&opts.data_dir)?;
        let (store, store_url, prefix) = open_store(&opts)?;
        let manifest = Manifest::load(&opts.data_dir)?.unwrap_or_else(Manifest::empty);
        let mut state = recover_from_manifest(&store, &manifest).await?;
        let wal_dir = opts.data_dir.join("wal");
        let stats = wal::replay(&wal_dir, manifest.checkpoint_lsn, |lsn, ops| {
            state.apply_commit(lsn, ops)
        })?;
        info!(
            dir = %opts.data_dir.display(),
            tables = state.tables.len(),
            replayed = stats.commits_applied,
            dropped_tail_bytes = stats.dropped_tail_bytes,
            "storage opened"
        );
        let wal = WalWriter::open(&wal_dir, stats.next_lsn, opts.fsync)?;
        let state = Arc::new(RwLock::new(state));
        let (tx, rx) = mpsc::sync_channel(4096);
        let observer: crate::observer::ObserverSlot = Arc::default();
        let writer = Writer {
            wal,
            state: Arc::clone(&state),
            poisoned: None,
            observer: Arc::clone(&observer),
        };
        let writer_slot = WriterSlot::new(writer);
        let slot = Arc::clone(&writer_slot);
        let handle = std::thread::Builder::new()
            .name("provdb-wal".into())
            .spawn(move || slot.run(rx))
            .map_err(|e| StorageError::io("wal writer thread", e))?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let cache = crate::cache::SegmentCache::new(opts.segment_cache_bytes);
        let storage = Storage {
            inner: Arc::new(Inner {
                opts,
                store,
                store_url,
                prefix,
                state,
                writer: Mutex::new(Some(tx)),
                writer_slot,
                writer_thread: Mutex::new(Some(handle)),
                maintenance: tokio::sync::Mutex::new(()),
                manifest: Mutex::new(manifest),
                write_locks: Mutex::new(HashMap::new()),
                garbage: Mutex::new(Vec::new()),
                cache,
                lock_file: Mutex::new(Some(lock)),
                background: Mutex::new(None),
                observer,
                shutdown,
            }),
        };
        storage.collect_orphans().await?;
        if storage.inner.opts.background {
            let handle = crate::maintenance::spawn_background(storage.clone());
            *storage.inner.background.lock() = Some(handle);
        }
        Ok(storage)
    }

    /// The decoded rows of a segment (in the schema it was written with),
    /// in position order: from the segment cache, or read from the object
    /// store (and cached, when the cache is on).
    pub async fn segment_batches(
        &self,
        meta: &crate::segment::SegmentMeta,
    ) -> Result<crate::cache::CachedSegment> {
        let cache = &self.inner.cache;
        if let Some(hit) = cache.get(&meta.path) {
            return Ok(hit);
        }
        let batches = segment::read_segment(&self.inner.store, meta, None).await?;
        Ok(if cache.enabled() {
            cache.insert(&meta.path, batches)
        } else {
            Arc::new(batches)
        })
    }

    /// The decoded rows of a segment if the cache holds them (nothing is
    /// read otherwise).
    pub fn cached_segment(
        &self,
        meta: &crate::segment::SegmentMeta,
    ) -> Option<crate::cache::CachedSegment> {
        self.inner.cache.get(&meta.path)
    }

    /// Whether scans should read segments through [`Self::segment_batches`]
    /// (the cache is on) rather than scan the Parquet files.
    pub fn segment_cache_enabled(&self) -> bool {
        self.inner.cache.enabled()
    }

    /// Segment cache counters.
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.inner.cache.stats()
    }

    /// Register the observer told of every later commit (replacing any
    /// previous one). See [`crate::observer`].
    pub fn set_observer(&self, observer: Option<Arc<dyn CommitObserver>>) {
        *self.inner.observer.write() = observer;
    }

    /// Whether the commit observer reads the rows inserted into `table`
    /// (which then cannot be staged).
    pub fn rows_observed(&self, table: TableId) -> bool {
        self.inner
            .observer
            .read()
            .as_ref()
            .is_some_and(|o| o.reads_rows_of(table))
    }

    pub fn options(&self) -> &StorageOptions {
        &self.inner.opts
    }

    /// The object store holding segments, and the URL DataFusion should
    /// register it under (segment paths are relative to it).
    pub fn object_store(&self) -> (Arc<dyn ObjectStore>, Url) {
        (Arc::clone(&self.inner.store), self.inner.store_url.clone())
    }

    fn send(&self, req: Request) -> Result<()> {
        let guard = self.inner.writer.lock();
        let tx = guard.as_ref().ok_or(StorageError::Closed)?;
        let slot = &self.inner.writer_slot;
        slot.note_queued();
        tx.send(req).map_err(|_| {
            slot.note_unqueued();
            StorageError::Closed
        })
    }

    /// Commit ops atomically: validated, logged (fsync'd unless disabled),
    /// applied. When this returns `Ok` the change is durable and visible.
    /// A small commit finding the writer idle is written and synced on the
    /// calling thread; others are grouped by the writer thread.
    pub async fn commit(&self, ops: Vec<WalOp>) -> Result<CommitInfo> {
        if self.inner.writer.lock().is_none() {
            return Err(StorageError::Closed);
        }
        let ops = match self.inner.writer_slot.try_commit_inline(ops) {
            Ok(result) => return result,
            Err(ops) => ops,
        };
        let (reply, rx) = oneshot::channel();
        self.send(Request::Commit { ops, reply })?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    pub(crate) async fn request_checkpoint(&self) -> Result<(u64, Vec<crate::record::Freeze>)> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Checkpoint { reply })?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    pub(crate) async fn truncate_wal(&self, through_lsn: u64) -> Result<usize> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Truncate { through_lsn, reply })?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Allocate a new table id and the id of its first buffer, for a
    /// `CreateTable` op.
    pub fn allocate_table_ids(&self) -> (TableId, SourceId) {
        let mut st = self.inner.state.write();
        let t = TableId(st.next_table_id);
        st.next_table_id += 1;
        (t, st.alloc_source())
    }

    pub fn table_by_name(&self, namespace: &str, name: &str) -> Option<TableDef> {
        let st = self.inner.state.read();
        let id = st.by_name.get(&(namespace.to_string(), name.to_string()))?;
        st.tables.get(id).map(|t| t.def.clone())
    }

    pub fn table(&self, id: TableId) -> Option<TableDef> {
        self.inner
            .state
            .read()
            .tables
            .get(&id)
            .map(|t| t.def.clone())
    }

    /// Every table's definition.
    pub fn tables(&self) -> Vec<TableDef> {
        let mut v: Vec<TableDef> = self
            .inner
            .state
            .read()
            .tables
            .values()
            .map(|t| t.def.clone())
            .collect();
        v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        v
    }

    /// LSN of the last commit that changed rows of `id` (0 if none since open).
    pub fn table_data_lsn(&self, id: TableId) -> Option<u64> {
        self.inner.state.read().tables.get(&id).map(|t| t.data_lsn)
    }

    /// Changes whenever a table is created, dropped or altered.
    pub fn ddl_version(&self) -> u64 {
        self.inner.state.read().ddl_version
    }

    pub fn meta_get(&self, key: &str) -> Option<serde_json::Value> {
        self.inner.state.read().meta.get(key).cloned()
    }

    /// Metadata entries whose key starts with `prefix`, in key order.
    pub fn meta_scan(&self, prefix: &str) -> Vec<(String, serde_json::Value)> {
        let st = self.inner.state.read();
        st.meta
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A snapshot of one table.
    pub fn snapshot(&self, id: TableId) -> Result<TableSnapshot> {
        let st = self.inner.state.read();
        Ok(snapshot_of(st.table(id)?))
    }

    /// How many live rows `id` holds now (no snapshot taken).
    pub fn live_rows(&self, id: TableId) -> Result<u64> {
        Ok(self.inner.state.read().table(id)?.live_rows())
    }

    /// Snapshots of several tables taken at one instant (one consistent state).
    pub fn snapshot_many(&self, ids: &[TableId]) -> Result<Vec<TableSnapshot>> {
        let st = self.inner.state.read();
        ids.iter()
            .map(|id| Ok(snapshot_of(st.table(*id)?)))
            .collect()
    }

    /// Look up a row address by primary key (`key` holds the key columns of
    /// one row). `None` if the table has no primary key or no such row.
    pub fn lookup_pk(&self, table: TableId, key: &RecordBatch) -> Result<Option<RowAddr>> {
        let st = self.inner.state.read();
        let t = st.table(table)?;
        let Some(pk) = &t.pk else { return Ok(None) };
        pk.addr_of(key)
    }

    /// The live row whose primary key is `key` (one row of the key
    /// columns), read under one lock: the index entry and the row are from
    /// the same moment, as if from a snapshot of that one row, without the
    /// cost of snapshotting the table. `None` when the table has no key.
    pub fn row_by_key(&self, table: TableId, key: &RecordBatch) -> Result<Option<KeyedRow>> {
        let st = self.inner.state.read();
        let t = st.table(table)?;
        let Some(pk) = &t.pk else { return Ok(None) };
        let Some(addr) = pk.addr_of(key)? else {
            return Ok(Some(KeyedRow::Absent));
        };
        let mut in_memory = t.frozen.iter().chain(std::iter::once(&t.active));
        if let Some(m) = in_memory.find(|m| m.id == addr.source) {
            if u64::from(addr.pos) >= m.rows() || m.dv.contains(addr.pos) {
                return Ok(Some(KeyedRow::Absent));
            }
            return Ok(Some(row_in(m.batches(), addr)));
        }
        let Some(seg) = t.segments.iter().find(|s| s.file.meta.id == addr.source) else {
            return Ok(Some(KeyedRow::Absent));
        };
        if seg.dv.contains(addr.pos) || u64::from(addr.pos) >= seg.file.meta.rows {
            return Ok(Some(KeyedRow::Absent));
        }
        if let Some(batches) = self.inner.cache.get(&seg.file.meta.path) {
            return Ok(Some(row_in(&batches, addr)));
        }
        Ok(Some(KeyedRow::InSegment {
            addr,
            file: Arc::clone(&seg.file),
        }))
    }

    /// For each row of `keys` (the key columns), whether a committed live row
    /// has that primary key.
    pub fn keys_present(&self, table: TableId, keys: &RecordBatch) -> Result<Vec<bool>> {
        let st = self.inner.state.read();
        let t = st.table(table)?;
        let Some(pk) = &t.pk else {
            return Ok(vec![false; keys.num_rows()]);
        };
        Ok(pk
            .keys(keys, true)?
            .iter()
            .map(|k| pk.get(k).is_some())
            .collect())
    }

    /// The lock UPDATE/DELETE statements hold on a table from computing row
    /// positions until their commit (or the end of their transaction).
    pub fn write_lock(&self, table: TableId) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.inner.write_locks.lock().entry(table).or_default())
    }

    pub fn stats(&self) -> StorageStats {
        let st = self.inner.state.read();
        let (inline_commits, grouped_commits) = self.inner.writer_slot.commit_counts();
        StorageStats {
            tables: st.tables.len(),
            segments: st.tables.values().map(|t| t.segments.len()).sum(),
            memtable_bytes: st.tables.values().map(TableState::memory_bytes).sum(),
            frozen_memtables: st.tables.values().map(|t| t.frozen.len()).sum(),
            applied_lsn: st.applied_lsn,
            checkpoint_lsn: self.inner.manifest.lock().checkpoint_lsn,
            wal_files: wal::list_files(&self.inner.opts.data_dir.join("wal"))
                .map(|f| f.len())
                .unwrap_or(0),
            inline_commits,
            grouped_commits,
        }
    }

    /// Flush every buffer to Parquet now and truncate the WAL.
    pub async fn checkpoint(&self) -> Result<()> {
        crate::maintenance::checkpoint(self).await
    }

    /// Compact small segments of every table now.
    pub async fn compact(&self) -> Result<usize> {
        crate::maintenance::compact_all(self).await
    }

    /// Stop background work, flush buffers, stop the writer.
    pub async fn close(&self) -> Result<()> {
        let _ = self.inner.shutdown.send(true);
        let background = self.inner.background.lock().take();
        if let Some(h) = background {
            let _ = h.await;
        }
        if self.inner.writer.lock().is_none() {
            return Ok(());
        }
        let res = self.checkpoint().await;
        if let Some(tx) = self.inner.writer.lock().take() {
            let _ = tx.send(Request::Shutdown);
        }
        let thread = self.inner.writer_thread.lock().take();
        if let Some(h) = thread {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        // Another process may open the directory from now on.
        self.inner.lock_file.lock().take();
        res
    }

    /// Make a file written through the object store durable before a
    /// manifest or a log record names it: object_store's local backend
    /// writes without fsync. Remote stores are durable once a put returns.
    pub(crate) async fn sync_file(&self, path: &ObjPath) -> Result<()> {
        let Some(file) = self.local_path(path) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || sync_file_and_dirs(&file))
            .await
            .map_err(|e| StorageError::Invalid(format!("fsync task failed: {e}")))?
    }

    /// Where `path` lives on the local file system, for local stores.
    fn local_path(&self, path: &ObjPath) -> Option<PathBuf> {
        let opts = &self.inner.opts;
        match &opts.object_store_url {
            None => Some(opts.data_dir.join("segments").join(path.as_ref())),
            Some(_) if self.inner.store_url.scheme() == "file" => {
                Some(Path::new("/").join(path.as_ref()))
            }
            Some(_) => None,
        }
    }

    /// Delete segment and deletion-vector files that no manifest names
    /// (left by a crash between writing a file and saving the manifest).
    async fn collect_orphans(&self) -> Result<()> {
        crate::maintenance::collect_orphans(self).await
    }
}

/// One live row found by its key ([`Storage::row_by_key`]).
#[derive(Debug)]
pub enum KeyedRow {
    /// No live row has the key.
    Absent,
    /// The row, sliced from a buffer or a cached segment (one row, in the
    /// schema its source was written with).
    Row { addr: RowAddr, batch: RecordBatch },
    /// The row is in a segment the cache does not hold: read it from the
    /// file (held here, so it outlives any compaction meanwhile).
    InSegment {
        addr: RowAddr,
        file: Arc<SegmentFile>,
    },
}

/// The row at `addr.pos` of one source's batches (in position order).
fn row_in(batches: &[RecordBatch], addr: RowAddr) -> KeyedRow {
    match slice_row(batches, addr.pos) {
        Some(batch) => KeyedRow::Row { addr, batch },
        None => KeyedRow::Absent,
    }
}

/// The row at position `pos` of one source's batches (in position order),
/// as a one-row slice; `None` past the end.
pub fn slice_row(batches: &[RecordBatch], pos: u32) -> Option<RecordBatch> {
    let mut start = 0usize;
    let pos = pos as usize;
    for b in batches {
        if pos < start + b.num_rows() {
            return Some(b.slice(pos - start, 1));
        }
        start += b.num_rows();
    }
    None
}

fn snapshot_of(t: &TableState) -> TableSnapshot {
    let mem = |m: &Memtable| MemSnapshot {
        id: m.id,
        batches: m.batches().to_vec(),
        rows: m.rows(),
        dv: Arc::clone(&m.dv),
    };
    let mut memtables: Vec<MemSnapshot> = t.frozen.iter().map(mem).collect();
    memtables.push(mem(&t.active));
    TableSnapshot {
        def: t.def.clone(),
        segments: t
            .segments
            .iter()
            .map(|s| SegmentSnapshot {
                file: Arc::clone(&s.file),
                dv: Arc::clone(&s.dv),
            })
            .collect(),
        memtables,
    }
}

/// fsync a file, its directory and the directory above (a table's segment
/// directory is created with its first file).
fn sync_file_and_dirs(file: &Path) -> Result<()> {
    File::open(file).and_then(|f| f.sync_all()).at(file)?;
    for dir in file.ancestors().skip(1).take(2) {
        File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    }
    Ok(())
}

/// Build the in-memory state the manifest describes: tables, segments with
/// their deletion vectors, and primary-key indexes rebuilt from the segments.
async fn recover_from_manifest(store: &Arc<dyn ObjectStore>, m: &Manifest) -> Result<State> {
    let mut state = State {
        meta: m.meta.clone(),
        next_source_id: m.next_source_id,
        next_table_id: m.next_table_id,
        applied_lsn: m.checkpoint_lsn,
        ..Default::default()
    };
    for mt in &m.tables {
        let mut t = TableState::new(mt.def.clone(), mt.active, 0)?;
        for seg in &mt.segments {
            let dv = match &seg.dv_path {
                Some(p) => {
                    let bytes = store.get(&ObjPath::from(p.as_str())).await?.bytes().await?;
                    crate::dv::decode(&bytes)?
                }
                None => RoaringBitmap::new(),
            };
            if t.pk.is_some() {
                rebuild_pk(store, &mut t, seg, &dv).await?;
            }
            t.segments.push(SegmentState {
                file: state.segment_file(seg.clone()),
                dv: Arc::new(dv),
                dv_dirty: false,
            });
        }
        state
            .by_name
            .insert((mt.def.namespace.clone(), mt.def.name.clone()), mt.def.id);
        state.next_source_id = state.next_source_id.max(mt.active.0 + 1);
        state.tables.insert(mt.def.id, t);
    }
    Ok(state)
}

async fn rebuild_pk(
    store: &Arc<dyn ObjectStore>,
    t: &mut TableState,
    seg: &SegmentMeta,
    dv: &RoaringBitmap,
) -> Result<()> {
    let Some(pk) = t.pk.as_mut() else {
        return Ok(());
    };
    let mut sorted = pk.columns.clone();
    sorted.sort_unstable();
    // The reader returns projected columns in file order; put them in key order.
    let order: Vec<usize> = pk
        .columns
        .iter()
        .filter_map(|c| sorted.iter().position(|s| s == c))
        .collect();
    let batches = segment::read_segment(store, seg, Some(&sorted)).await?;
    pk.reserve(batches.iter().map(|b| b.num_rows()).sum());
    let mut pos = 0u32;
    for b in batches {
        let b = b.project(&order)?;
        for (i, k) in pk.keys(&b, true)?.into_iter().enumerate() {
            let p = pos + i as u32;
            if !dv.contains(p) {
                pk.insert(
                    k,
                    RowAddr {
                        source: seg.id,
                        pos: p,
                    },
                );
            }
        }
        pos += b.num_rows() as u32;
    }
    Ok(())
}
