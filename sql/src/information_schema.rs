//! Schema `information_schema`: DataFusion's views of the catalog, with
//! PostgreSQL's type names in `columns.data_type` (`integer`, `text`,
//! `double precision`) where DataFusion writes Arrow's (`Int32`, `Utf8`),
//! for the tools that read types from there rather than from `pg_catalog`.
//!
//! DataFusion serves the schema itself only when its `information_schema`
//! option is on, and then ahead of any catalog; provdb turns the option off
//! and registers this schema in the session's catalog instead. Every table
//! but `columns` is DataFusion's as is.

use std::str::FromStr;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::{ExecutionPlan, collect};

/// The schema's name.
pub const INFORMATION_SCHEMA: &str = "information_schema";

/// `information_schema` for one session's catalogs.
#[derive(Debug)]
pub struct PgInformationSchema {
    /// Weak: the catalog list holds the catalog that holds this schema.
    catalogs: Weak<dyn CatalogProviderList>,
}

impl PgInformationSchema {
    pub fn new(catalogs: &Arc<dyn CatalogProviderList>) -> Self {
        PgInformationSchema {
            catalogs: Arc::downgrade(catalogs),
        }
    }

    fn inner(&self) -> Option<InformationSchemaProvider> {
        self.catalogs.upgrade().map(InformationSchemaProvider::new)
    }
}

#[async_trait]
impl SchemaProvider for PgInformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner().map(|i| i.table_names()).unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(inner) = self.inner() else {
            return Ok(None);
        };
        let table = inner.table(name).await?;
        Ok(match (name, table) {
            ("columns", Some(t)) => Some(Arc::new(PgColumns { inner: t })),
            (_, t) => t,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner().is_some_and(|i| i.table_exist(name))
    }
}

/// `information_schema.columns` with PostgreSQL type names.
#[derive(Debug)]
struct PgColumns {
    inner: Arc<dyn TableProvider>,
}

#[async_trait]
impl TableProvider for PgColumns {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The catalog's columns are few: read them all, rename the types,
        // and serve the result from memory.
        let plan = self.inner.scan(state, None, &[], None).await?;
        let batches = collect(plan, state.task_ctx()).await?;
        let batches = batches
            .into_iter()
            .map(pg_type_names)
            .collect::<Result<Vec<_>>>()?;
        MemTable::try_new(self.schema(), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// `batch` with its `data_type` column in PostgreSQL's names.
fn pg_type_names(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let Ok(at) = schema.index_of("data_type") else {
        return Ok(batch);
    };
    let arrow_names = batch.column(at).as_string_opt::<i32>().ok_or_else(|| {
        DataFusionError::Internal("information_schema.columns.data_type is not text".into())
    })?;
    let pg: StringArray = arrow_names
        .iter()
        .map(|name| name.map(pg_name_of_arrow))
        .collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[at] = Arc::new(pg) as ArrayRef;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// PostgreSQL's `information_schema` name for an Arrow type written as
/// text; Arrow's own name for types PostgreSQL has no name for.
fn pg_name_of_arrow(arrow: &str) -> String {
    let Ok(t) = DataType::from_str(arrow) else {
        return arrow.to_string();
    };
    match t {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            "ARRAY".to_string()
        }
        DataType::Time64(_) | DataType::Time32(_) => "time without time zone".to_string(),
        other => match crate::types::pg_type_name(&other) {
            "unknown" => arrow.to_string(),
            name => name.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::pg_name_of_arrow;

    #[test]
    fn arrow_names_become_postgres_names() {
        use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
        let list = DataType::List(std::sync::Arc::new(Field::new(
            "item",
            DataType::Int32,
            true,
        )));
        for (t, pg) in [
            (DataType::Int32, "integer"),
            (DataType::Int64, "bigint"),
            (DataType::Utf8, "text"),
            (DataType::Float64, "double precision"),
            (DataType::Boolean, "boolean"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "timestamp without time zone",
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "timestamp with time zone",
            ),
            (list, "ARRAY"),
            (DataType::UInt8, "UInt8"),
        ] {
            assert_eq!(pg_name_of_arrow(&t.to_string()), pg, "{t}");
        }
        assert_eq!(pg_name_of_arrow("not a type"), "not a type");
    }
}
