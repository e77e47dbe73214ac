//! `pg_catalog` in every session, from static tables decoded once.
//!
//! `datafusion-pg-catalog` serves the `pg_catalog` tables psql, psycopg,
//! JDBC drivers and BI tools read: most of them (`pg_type`, `pg_proc`,
//! `pg_operator`...) are fixed Arrow tables compiled into the library,
//! the rest are built from the session's catalog. Its `setup_pg_catalog`
//! decodes the fixed tables anew for each session it sets up, and provdb
//! sets one up per connection: about twenty milliseconds of every connect,
//! most of it the kernel zeroing fresh pages for the decoded copies. Here
//! the fixed tables are decoded once per process and shared, read-only,
//! by every session's `pg_catalog` schema; the rest of the setup (the
//! schema provider over the session's own catalog list, the functions,
//! the `regclass`-style type names) is the library's, per session, as
//! `setup_pg_catalog` does it in the pinned version, except that the type
//! planner goes into the session's state when it is built.

use std::sync::{Arc, OnceLock};

use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{
    self as lib, PgCatalogSchemaProvider, PgCatalogStaticTables,
};

/// The fixed tables, decoded at the first session; `None` when decoding
/// failed (then sessions have no `pg_catalog`, and a warning says why).
fn static_tables() -> Option<Arc<PgCatalogStaticTables>> {
    static TABLES: OnceLock<Option<Arc<PgCatalogStaticTables>>> = OnceLock::new();
    TABLES
        .get_or_init(|| match PgCatalogStaticTables::try_new() {
            Ok(tables) => Some(Arc::new(tables)),
            Err(e) => {
                tracing::warn!(error = %e, "pg_catalog tables could not be decoded");
                None
            }
        })
        .clone()
}

/// Register `pg_catalog` and its functions in `ctx`, whose catalog
/// `catalog` must already be registered and whose state was built with
/// [`type_planner`].
pub(crate) fn setup(ctx: &SessionContext, catalog: &str) -> Result<()> {
    let Some(tables) = static_tables() else {
        return Ok(());
    };
    let catalogs = Arc::clone(ctx.state_ref().read().catalog_list());
    let schema =
        PgCatalogSchemaProvider::try_new(catalogs, Arc::clone(&tables), EmptyContextProvider)?;
    ctx.catalog(catalog)
        .ok_or_else(|| {
            DataFusionError::Configuration(format!(
                "catalog {catalog} is not registered; pg_catalog goes into it"
            ))
        })?
        .register_schema("pg_catalog", Arc::new(schema))?;
    register_functions(ctx, catalog, &tables);
    lib::generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
    Ok(())
}

/// The planner of the `regclass`-style type names clients cast to. The
/// library's setup rebuilds the session's state to install it; a session
/// is built with it instead (`Session::new`), which saves a copy of the
/// whole state per connection.
pub(crate) fn type_planner() -> Arc<dyn TypePlanner> {
    Arc::new(lib::oid_type_planner::PgOidTypePlanner)
}

/// The functions clients call beside `pg_catalog`'s tables.
fn register_functions(ctx: &SessionContext, catalog: &str, tables: &PgCatalogStaticTables) {
    use lib::has_privilege_udf::create_has_privilege_udf;
    let udfs = [
        lib::create_current_database_udf(catalog),
        lib::create_current_schema_udf(),
        lib::create_current_schemas_udf(),
        lib::create_pg_get_userbyid_udf(),
        create_has_privilege_udf("has_table_privilege"),
        create_has_privilege_udf("has_schema_privilege"),
        create_has_privilege_udf("has_database_privilege"),
        create_has_privilege_udf("has_any_column_privilege"),
        lib::create_pg_table_is_visible(),
        lib::format_type::create_format_type_udf(),
        lib::create_session_user_udf(),
        lib::pg_get_expr_udf::create_pg_get_expr_udf(),
        lib::create_pg_get_partkeydef_udf(),
        lib::create_pg_relation_is_publishable_udf(),
        lib::create_pg_get_statisticsobjdef_columns_udf(),
        lib::create_pg_encoding_to_char_udf(),
        lib::create_pg_backend_pid_udf(),
        lib::create_pg_relation_size_udf(),
        lib::create_pg_total_relation_size_udf(),
        lib::create_pg_stat_get_numscans(),
        lib::create_pg_get_constraintdef(),
        lib::create_pg_get_partition_ancestors_udf(),
        lib::quote_ident_udf::create_quote_ident_udf(),
        lib::quote_ident_udf::create_parse_ident_udf(),
        lib::array_bounds_udf::create_array_upper_udf(),
        lib::array_bounds_udf::create_array_lower_udf(),
    ];
    for udf in udfs {
        ctx.register_udf(udf);
    }
    ctx.register_udtf("pg_get_keywords", tables.pg_get_keywords.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_share_one_decoding_of_the_fixed_tables() {
        let (a, b) = (static_tables(), static_tables());
        let (Some(a), Some(b)) = (a, b) else {
            panic!("pg_catalog tables did not decode");
        };
        assert!(Arc::ptr_eq(&a, &b));
    }
}
