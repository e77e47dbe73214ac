//! The DataFusion catalog of a session: schemas (namespaces) and their tables
//! and views, read from storage. Views are stored as SQL text and planned when
//! referenced, in the schema they were created in.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::ViewTable;
use parking_lot::RwLock;

use crate::database::DbShared;
use crate::session::SessionShared;

pub use provdb_engine::catalog::{
    DEFAULT_SCHEMA, SCHEMA_PREFIX, SEQUENCE_PREFIX, VIEW_PREFIX, ViewDef, schema_key, view_key,
};

/// The one catalog (database) a session sees.
#[derive(Debug)]
pub struct SessionCatalog {
    pub(crate) db: Arc<DbShared>,
    pub(crate) session: Arc<SessionShared>,
    /// Schemas registered in memory (pg_catalog, information_schema).
    pub(crate) extra: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl SessionCatalog {
    /// Every user schema: `public`, created ones, and those holding tables.
    pub fn user_schemas(db: &DbShared) -> Vec<String> {
        let mut names: Vec<String> = vec![DEFAULT_SCHEMA.to_string()];
        names.extend(
            db.storage
                .meta_scan(SCHEMA_PREFIX)
                .into_iter()
                .map(|(k, _)| k[SCHEMA_PREFIX.len()..].to_string()),
        );
        names.extend(db.storage.tables().into_iter().map(|t| t.namespace));
        names.sort();
        names.dedup();
        names
    }

    pub fn schema_exists(db: &DbShared, name: &str) -> bool {
        name == DEFAULT_SCHEMA || db.storage.meta_get(&schema_key(name)).is_some()
    }
}

impl CatalogProvider for SessionCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = Self::user_schemas(&self.db);
        names.extend(self.extra.read().keys().cloned());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(s) = self.extra.read().get(name) {
            return Some(Arc::clone(s));
        }
        if !Self::schema_exists(&self.db, name)
            && !self.db.storage.tables().iter().any(|t| t.namespace == name)
        {
            return None;
        }
        let path = self.session.search_path.read().clone();
        // The first schema of the search path also resolves names found only
        // in the later ones (see docs/sql.md, "search_path").
        let fallback = if path.first().map(String::as_str) == Some(name) {
            path[1..].to_vec()
        } else {
            Vec::new()
        };
        Some(Arc::new(ProvSchema {
            name: name.to_string(),
            fallback,
            db: Arc::clone(&self.db),
            session: Arc::clone(&self.session),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        Ok(self.extra.write().insert(name.to_string(), schema))
    }
}

/// One schema's tables and views.
#[derive(Debug)]
pub struct ProvSchema {
    name: String,
    fallback: Vec<String>,
    db: Arc<DbShared>,
    session: Arc<SessionShared>,
}

impl ProvSchema {
    fn own_table_names(&self, schema: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .db
            .storage
            .tables()
            .into_iter()
            .filter(|t| t.namespace == schema)
            .map(|t| t.name)
            .collect();
        let prefix = format!("{VIEW_PREFIX}{schema}/");
        names.extend(
            self.db
                .storage
                .meta_scan(&prefix)
                .into_iter()
                .map(|(k, _)| k[prefix.len()..].to_string()),
        );
        names
    }

    async fn resolve(&self, schema: &str, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.session.temp.lock().get(name) {
            return Ok(Some(Arc::clone(t)));
        }
        if let Some(def) = self.db.storage.table_by_name(schema, name) {
            return Ok(Some(self.db.table_provider(def, &self.session)?));
        }
        let Some(v) = self.db.storage.meta_get(&view_key(schema, name)) else {
            return Ok(None);
        };
        let view: ViewDef = serde_json::from_value(v)
            .map_err(|e| DataFusionError::Internal(format!("bad view metadata: {e}")))?;
        let plan = self.session.plan_view(&view).await?;
        Ok(Some(Arc::new(ViewTable::new(plan, Some(view.sql)))))
    }
}

#[async_trait]
impl SchemaProvider for ProvSchema {
    fn table_names(&self) -> Vec<String> {
        self.own_table_names(&self.name)
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.resolve(&self.name, name).await? {
            return Ok(Some(t));
        }
        for schema in &self.fallback {
            if let Some(t) = self.resolve(schema, name).await? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.storage.table_by_name(&self.name, name).is_some()
            || self
                .db
                .storage
                .meta_get(&view_key(&self.name, name))
                .is_some()
    }
}
