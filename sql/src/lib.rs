//! provdb's SQL layer, on DataFusion.
//!
//! A [`Database`] owns the storage engine and the shared catalog; a
//! [`Session`] is one client's view of it (search_path, variables, open
//! transaction). Front ends (the pgwire server, the HTTP API, an embedding
//! Rust program) talk only to these two types and get Arrow batches back.
//!
//! Module map:
//! - [`database`] — open/close, state shared by sessions.
//! - [`session`] — per-connection state, statement dispatch, transactions.
//! - [`prepared`] — prepared statements and the optimised plans they keep.
//! - `kept_physical` — the physical plans small prepared queries keep.
//! - `key_join` — hash joins of kept plans narrowing their probe scans.
//! - `scan_casts` — casts of text columns moved into those keyed scans.
//! - [`parallelism`] — one partition for statements over few rows.
//! - [`eager_aggregate`] — aggregate the big side of a join before joining;
//!   [`cast_faults`] carries the values its casts failed on above the join.
//! - [`filter_aggregate`] — a `WHERE` and the aggregation above it in one node.
//! - [`run_aggregate`] — runs of equal grouping values reduced before hashing.
//! - [`catalog`] — schemas, tables and views as DataFusion sees them.
//! - [`table`] — the table provider (scan, insert sink, UPDATE/DELETE).
//! - [`live_source`] — the in-memory scan source, with run-time join filters.
//! - [`zone_map`] — per-batch min/max and the bounds a filter implies.
//! - [`memo_cast`] — casts of stored text columns, computed once per array.
//! - [`array_memo`] — results derived from immutable arrays, kept per array.
//! - `batches` — record batches assembled with their row count.
//! - [`txn`] — uncommitted writes of a statement and of a transaction.
//! - [`ddl`] — `CREATE`/`DROP`/`ALTER`.
//! - [`rewrite`] — statement rewrites for PostgreSQL forms DataFusion lacks.
//! - [`sequence`] — sequences and `nextval`.
//! - [`copy`] / [`copy_stmt`] — `COPY ... FROM STDIN`; `copy_stage` streams a
//!   large one to staged Parquet segments while it is parsed.
//! - [`types`] — SQL types to Arrow types.
//! - [`rounding_casts`] — casts to integers round as PostgreSQL's do.
//! - [`typed_casts`] — casts in calls spelled with their type, when
//!   DataFusion's names for two aggregates would collide.
//! - [`functions`] — PostgreSQL functions clients expect.
//! - [`min_max`] — `min` and `max` in one total order for floating point.
//! - [`error`] — [`SqlError`] with its SQLSTATE.

pub mod array_memo;
mod batches;
pub mod cast_faults;
pub mod catalog;
pub mod copy;
mod copy_stage;
pub mod copy_stmt;
pub mod database;
pub mod ddl;
mod direct;
pub mod eager_aggregate;
pub mod eq_index;
pub mod error;
pub mod filter_aggregate;
pub mod functions;
pub mod information_schema;
mod kept_physical;
mod key_join;
pub mod lineage;
pub mod live_source;
mod lookup_plan;
pub mod memo_cast;
pub mod min_max;
pub mod output_names;
pub mod parallelism;
mod pg_catalog;
mod planning_state;
pub mod prepared;
pub mod prov_export;
pub mod rewrite;
pub mod rounding_casts;
pub mod run_aggregate;
mod scaled_columns;
mod scan_casts;
pub mod sequence;
pub mod session;
pub mod table;
pub mod txn;
pub mod typed_casts;
pub mod types;
pub mod zone_map;

pub use copy::{CopyFormat, CopyIn};
pub use database::{Database, DatabaseOptions};
pub use error::{SqlError, SqlResult};
pub use prepared::Prepared;
pub use session::{CommandTag, QueryOutput, Session, TxnStatus};

/// The PostgreSQL version provdb reports to clients.
pub const SERVER_VERSION: &str = "16.0";

#[cfg(test)]
mod tests;
