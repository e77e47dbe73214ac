//! [`Database`]: the embeddable handle. Opens storage (a local directory or an
//! object-store URL), registers the segment store with DataFusion, and hands
//! out [`Session`]s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;
use provdb_engine::dlprov::Dlprov;
use provdb_engine::lineage::Lineage;
use provdb_storage::{Storage, StorageOptions, TableDef, TableId};

use crate::error::{SqlResult, from_storage};
use crate::sequence::{SeqFn, SequenceUdf, Sequences};
use crate::session::{Session, SessionShared};
use crate::table::ProvTable;

/// How to open a database. `Default` gives the embedded defaults.
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// Directory holding the WAL and (by default) the Parquet segments.
    pub data_dir: PathBuf,
    /// Where segments live: `None` = `<data_dir>/segments` on local disk, or any
    /// object_store URL this build supports (`file:///...`, `memory://`).
    pub object_store_url: Option<String>,
    /// fsync the WAL before acknowledging a commit. Turning this off speeds up
    /// bulk loads but a crash may lose the last acknowledged commits.
    pub fsync: bool,
    /// Flush a table's in-memory buffer to a Parquet segment at this size.
    pub flush_threshold_bytes: usize,
    /// Run background compaction of small segments.
    pub compaction: bool,
    /// Memory for decoded segments, so queries over flushed data skip
    /// Parquet decoding (0 = off).
    pub segment_cache_bytes: usize,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            data_dir: PathBuf::from("provdb-data"),
            object_store_url: None,
            fsync: true,
            flush_threshold_bytes: 64 << 20,
            compaction: true,
            segment_cache_bytes: 1 << 30,
        }
    }
}

/// Parsed column defaults of a table, tagged with the DDL version they match.
type DefaultsEntry = (u64, HashMap<String, Expr>);

/// State shared by every session of a database.
pub struct DbShared {
    pub storage: Storage,
    pub store_url: ObjectStoreUrl,
    pub runtime: Arc<RuntimeEnv>,
    pub sequences: Arc<Sequences>,
    /// The DfAnalyzer/DLProv ingest, sharing sequences with SQL.
    pub dlprov: Dlprov,
    /// The lineage index, current with every acknowledged commit.
    pub lineage: Lineage,
    /// Derived rows of the `prov` tables, per graph version.
    pub derived: Arc<crate::lineage::DerivedCache>,
    /// Parsed column defaults per (table, DDL version).
    defaults: Mutex<HashMap<TableId, DefaultsEntry>>,
    /// A bare context used to parse default expressions.
    expr_ctx: SessionContext,
}

impl std::fmt::Debug for DbShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbShared")
            .field("storage", &self.storage)
            .field("store_url", &self.store_url)
            .finish()
    }
}

impl DbShared {
    /// The provider for a stored table, as `session` sees it.
    pub fn table_provider(
        &self,
        def: TableDef,
        session: &Arc<SessionShared>,
    ) -> Result<Arc<dyn TableProvider>> {
        let defaults = self.defaults_of(&def)?;
        let part = crate::lineage::graph_table::Part::of(&def.namespace, &def.name);
        let stored = Arc::new(ProvTable {
            storage: self.storage.clone(),
            store_url: self.store_url.clone(),
            def,
            defaults,
            session: Arc::clone(session),
        });
        Ok(match part {
            Some(part) => Arc::new(crate::lineage::GraphTable {
                stored,
                part,
                lineage: self.lineage.clone(),
                cache: Arc::clone(&self.derived),
            }),
            None => stored,
        })
    }

    fn defaults_of(&self, def: &TableDef) -> Result<HashMap<String, Expr>> {
        let version = self.storage.ddl_version();
        if let Some((v, d)) = self.defaults.lock().get(&def.id)
            && *v == version
        {
            return Ok(d.clone());
        }
        let mut out = HashMap::new();
        if let Some(map) = def.properties.get("defaults").and_then(|d| d.as_object()) {
            let df_schema = DFSchema::try_from(def.schema.as_ref().clone())?;
            for (col, sql) in map {
                if let Some(sql) = sql.as_str() {
                    out.insert(col.clone(), self.expr_ctx.parse_sql_expr(sql, &df_schema)?);
                }
            }
        }
        self.defaults.lock().insert(def.id, (version, out.clone()));
        Ok(out)
    }
}

/// An open provdb database. Cheap to share (`Arc`); every session created
/// from it sees every acknowledged write.
#[derive(Debug)]
pub struct Database {
    pub(crate) shared: Arc<DbShared>,
}

impl Database {
    /// Open (creating if needed) the database described by `options`,
    /// replaying the WAL if the last shutdown was not clean.
    pub async fn open(options: DatabaseOptions) -> SqlResult<Arc<Database>> {
        let mut so = StorageOptions::new(&options.data_dir);
        so.object_store_url = options.object_store_url.clone();
        so.fsync = options.fsync;
        so.flush_threshold_bytes = options.flush_threshold_bytes;
        so.compaction = options.compaction;
        so.segment_cache_bytes = options.segment_cache_bytes;
        let storage = Storage::open(so).await.map_err(from_storage)?;
        let (store, url) = storage.object_store();
        let runtime = RuntimeEnvBuilder::new()
            .build_arc()
            .map_err(crate::error::from_datafusion)?;
        runtime.register_object_store(&url, store);
        let store_url =
            ObjectStoreUrl::parse(url.as_str()).map_err(crate::error::from_datafusion)?;
        let sequences = Arc::new(Sequences::default());
        let expr_ctx = SessionContext::new();
        let public = Arc::new(parking_lot::RwLock::new(vec!["public".to_string()]));
        expr_ctx.register_udf(ScalarUDF::new_from_impl(SequenceUdf::new(
            SeqFn::NextVal,
            storage.clone(),
            Arc::clone(&sequences),
            public,
        )));
        // Build the lineage index before anything can write (see
        // `provdb_engine::lineage`).
        let lineage = Lineage::open(&storage)
            .await
            .map_err(crate::error::from_engine)?;
        // Schema `ml` (imported training runs) and the PROV namespace
        // registry exist from the first open.
        provdb_engine::prov::ml::ensure_tables(&storage)
            .await
            .map_err(crate::error::from_engine)?;
        provdb_engine::prov::namespace::Registry::ensure(&storage)
            .await
            .map_err(crate::error::from_engine)?;
        let dlprov = Dlprov::start(storage.clone(), Arc::clone(&sequences));
        Ok(Arc::new(Database {
            shared: Arc::new(DbShared {
                storage,
                store_url,
                runtime,
                sequences,
                dlprov,
                lineage,
                derived: Arc::default(),
                defaults: Mutex::new(HashMap::new()),
                expr_ctx,
            }),
        }))
    }

    /// A new session with default settings (search_path = public).
    pub fn session(self: &Arc<Self>) -> Session {
        Session::new(Arc::clone(self))
    }

    /// The storage engine underneath (for tools and tests).
    pub fn storage(&self) -> &Storage {
        &self.shared.storage
    }

    /// Export a PROV document (`provdb_engine::prov::export`).
    pub async fn prov_export(
        &self,
        scope: &provdb_engine::prov::Scope,
        format: provdb_engine::prov::Format,
    ) -> Result<Vec<u8>, provdb_engine::EngineError> {
        let doc =
            provdb_engine::prov::export(&self.shared.storage, &self.shared.lineage, scope).await?;
        provdb_engine::prov::render(&doc, format)
    }

    /// Import a PROV-JSON document (`provdb_engine::prov::import`).
    pub async fn prov_import(
        &self,
        reader: impl std::io::Read,
        opts: &provdb_engine::prov::ImportOptions,
    ) -> Result<provdb_engine::prov::ImportReport, provdb_engine::EngineError> {
        provdb_engine::prov::import(&self.shared.storage, &self.shared.lineage, reader, opts).await
    }

    /// Import a document already parsed with
    /// `provdb_engine::prov::read_document` (give it
    /// [`Database::prov_spill_dir`]).
    pub async fn prov_import_document(
        &self,
        doc: provdb_engine::prov::RawDoc,
        opts: &provdb_engine::prov::ImportOptions,
    ) -> Result<provdb_engine::prov::ImportReport, provdb_engine::EngineError> {
        provdb_engine::prov::import_document(&self.shared.storage, &self.shared.lineage, doc, opts)
            .await
    }

    /// Where a document being parsed for import sets its metric series
    /// aside once there are many (`tmp/` in the data directory).
    pub fn prov_spill_dir(&self) -> std::path::PathBuf {
        provdb_engine::prov::import::spill_dir(&self.shared.storage)
    }

    /// The DfAnalyzer-compatible ingest (dataflow specs, task messages).
    pub fn dlprov(&self) -> &Dlprov {
        &self.shared.dlprov
    }

    /// The lineage index.
    pub fn lineage(&self) -> &Lineage {
        &self.shared.lineage
    }

    /// Flush buffers and stop background work. Data is durable without this
    /// (the WAL), but a clean close makes the next open faster.
    pub async fn close(&self) -> SqlResult<()> {
        self.shared.storage.close().await.map_err(from_storage)
    }
}
